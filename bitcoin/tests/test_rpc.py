"""Unit tests of the JSON-RPC client against a tiny local HTTP server (the node side is faked here only)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bitcoin.regtest.serialize import OutPoint, Tx, TxIn, TxOut
from bitcoin.rpc import (
    BitcoinRPC,
    NodeUnavailableError,
    RPCError,
    Utxo,
    _strip_witness,
    btc_to_sats,
    encode_json,
    sats_to_btc,
)

TXID = "aa" * 32


class FakeNode:
    """Records requests and answers them with `reply(method, params) -> (http_status, body_bytes)`."""

    def __init__(self, reply: Callable[[str, list[Any]], tuple[int, bytes]]) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                node.requests.append(request)
                node.auth_headers.append(self.headers.get("Authorization"))
                status, payload = node.reply(request["method"], request["params"])
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ok(result: Any) -> tuple[int, bytes]:
    return 200, json.dumps({"result": result, "error": None, "id": 1}).encode()


@pytest.fixture
def fake_node() -> Iterator[Callable[..., FakeNode]]:
    nodes: list[FakeNode] = []

    def start(reply: Callable[[str, list[Any]], tuple[int, bytes]]) -> FakeNode:
        node = FakeNode(reply)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.close()


def free_closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_btc_to_sats_exact() -> None:
    assert btc_to_sats(Decimal("0.00000001")) == 1
    assert btc_to_sats(Decimal("50")) == 5_000_000_000
    assert btc_to_sats("20999999.97690000") == 2_099_999_997_690_000
    assert btc_to_sats(Decimal("-0.5")) == -50_000_000


def test_btc_to_sats_rejects_fractional_and_float() -> None:
    with pytest.raises(ValueError, match="whole number of satoshis"):
        btc_to_sats(Decimal("0.000000001"))
    with pytest.raises(TypeError):
        btc_to_sats(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="21 million"):
        btc_to_sats(Decimal("21000001"))
    with pytest.raises(ValueError, match="not finite"):
        btc_to_sats(Decimal("NaN"))


def test_sats_to_btc_round_trip() -> None:
    assert sats_to_btc(1) == Decimal("0.00000001")
    assert str(sats_to_btc(123_456_789)) == "1.23456789"
    for sats in (0, 1, 99, 546, 10**8, 2_100_000_000_000_000):
        assert btc_to_sats(sats_to_btc(sats)) == sats
    with pytest.raises(TypeError):
        sats_to_btc(Decimal(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sats_to_btc(True)


def test_amounts_parsed_as_decimal(fake_node: Callable[..., FakeNode]) -> None:
    raw = b'{"result":{"value":0.30000001,"confirmations":3},"error":null,"id":1}'
    node = fake_node(lambda method, params: (200, raw))
    rpc = BitcoinRPC(node.url)
    utxo = rpc.gettxout(TXID, 1)
    assert utxo == {"value": Decimal("0.30000001"), "confirmations": 3}
    assert isinstance(utxo["value"], Decimal)
    assert rpc.gettxout_sats(TXID, 1) == 30_000_001
    assert node.requests[0]["method"] == "gettxout"
    assert node.requests[0]["params"] == [TXID, 1, True]


def test_decimal_params_sent_exactly() -> None:
    body = json.loads(encode_json({"params": [Decimal("0.10000000"), [Decimal("1E-8")]]}))
    assert body["params"] == ["0.10000000", ["0.00000001"]]


def test_rpc_error_carries_core_code(fake_node: Callable[..., FakeNode]) -> None:
    error = {"code": -26, "message": "txn-mempool-conflict"}
    node = fake_node(lambda m, p: (500, json.dumps({"result": None, "error": error, "id": 1}).encode()))
    rpc = BitcoinRPC(node.url, retries=2, backoff=0)
    with pytest.raises(RPCError) as info:
        rpc.sendrawtransaction("00")
    assert info.value.code == -26
    assert info.value.message == "txn-mempool-conflict"
    assert info.value.method == "sendrawtransaction"
    assert len(node.requests) == 1  # a JSON-RPC error is an answer: never retried


def test_basic_auth_header(fake_node: Callable[..., FakeNode]) -> None:
    node = fake_node(lambda m, p: ok(101))
    assert BitcoinRPC(node.url, user="alice", password="s3cret").getblockcount() == 101
    assert node.auth_headers[-1] == "Basic " + base64.b64encode(b"alice:s3cret").decode()


def test_cookie_auth_reread_each_call(fake_node: Callable[..., FakeNode], tmp_path: Any) -> None:
    node = fake_node(lambda m, p: ok(7))
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:abc\n")
    rpc = BitcoinRPC(node.url, cookie_file=cookie)
    rpc.getblockcount()
    cookie.write_text("__cookie__:def")
    rpc.getblockcount()
    assert node.auth_headers == [
        "Basic " + base64.b64encode(b"__cookie__:abc").decode(),
        "Basic " + base64.b64encode(b"__cookie__:def").decode(),
    ]


def test_missing_cookie_file_is_unavailable(tmp_path: Any) -> None:
    rpc = BitcoinRPC("http://127.0.0.1:1/", cookie_file=tmp_path / "none", retries=0)
    with pytest.raises(NodeUnavailableError, match="cookie"):
        rpc.getblockcount()


def test_unauthorized_is_unavailable(fake_node: Callable[..., FakeNode]) -> None:
    node = fake_node(lambda m, p: (401, b""))
    with pytest.raises(NodeUnavailableError, match="401"):
        BitcoinRPC(node.url, retries=0).getblockcount()


def test_connection_refused_retries_with_backoff_then_fails() -> None:
    rpc = BitcoinRPC(f"http://127.0.0.1:{free_closed_port()}/", retries=2, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(NodeUnavailableError, match="3 attempts"):
        rpc.getblockcount()
    assert time.monotonic() - started >= 0.05 + 0.1  # backoff 0.05 then 0.1


def test_refused_mining_call_is_also_retried() -> None:
    # Refused means the request never arrived, so even a non-idempotent call may be retried.
    rpc = BitcoinRPC(f"http://127.0.0.1:{free_closed_port()}/", retries=1, backoff=0)
    with pytest.raises(NodeUnavailableError, match="2 attempts"):
        rpc.generatetoaddress(1, "bcrt1qxyz")


def test_timeout_retries_reads_only(fake_node: Callable[..., FakeNode]) -> None:
    def slow(method: str, params: list[Any]) -> tuple[int, bytes]:
        time.sleep(0.4)
        return ok(["hash"])

    node = fake_node(slow)
    rpc = BitcoinRPC(node.url, timeout=0.1, retries=1, backoff=0)
    with pytest.raises(NodeUnavailableError, match="2 attempts"):
        rpc.getrawmempool()
    with pytest.raises(NodeUnavailableError, match="not retried"):
        rpc.generatetoaddress(1, "bcrt1qxyz")
    time.sleep(0.5)
    methods = [request["method"] for request in node.requests]
    assert methods.count("getrawmempool") == 2
    assert methods.count("generatetoaddress") == 1


def test_recovers_when_node_comes_back(fake_node: Callable[..., FakeNode]) -> None:
    calls = {"n": 0}

    def flaky(method: str, params: list[Any]) -> tuple[int, bytes]:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(0.3)
        return ok(5)

    node = fake_node(flaky)
    assert BitcoinRPC(node.url, timeout=0.1, retries=2, backoff=0).getblockcount() == 5


def test_non_json_answer_is_unavailable(fake_node: Callable[..., FakeNode]) -> None:
    node = fake_node(lambda m, p: (502, b"<html>bad gateway</html>"))
    with pytest.raises(NodeUnavailableError, match="not JSON"):
        BitcoinRPC(node.url, retries=0).getblockcount()


def test_arguments_validated_before_sending(fake_node: Callable[..., FakeNode]) -> None:
    node = fake_node(lambda m, p: ok(None))
    rpc = BitcoinRPC(node.url)
    with pytest.raises(ValueError):
        rpc.getrawtransaction("zz" * 32)
    with pytest.raises(ValueError):
        rpc.gettxout("aa" * 31, 0)
    with pytest.raises(ValueError):
        rpc.gettxout(TXID, -1)
    with pytest.raises(TypeError):
        rpc.testmempoolaccept("00")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rpc.getblock(TXID, verbosity=3)
    with pytest.raises(ValueError):
        BitcoinRPC("ftp://x")
    assert node.requests == []


def test_url_credentials_and_wallet_path(fake_node: Callable[..., FakeNode]) -> None:
    node = fake_node(lambda m, p: ok({"chain": "regtest"}))
    host_port = node.url.removeprefix("http://").rstrip("/")
    rpc = BitcoinRPC(f"http://bob:pw%40x@{host_port}/wallet/w1")
    assert rpc.getblockchaininfo() == {"chain": "regtest"}
    assert node.auth_headers[-1] == "Basic " + base64.b64encode(b"bob:pw@x").decode()


def test_typed_methods_send_core_parameters(fake_node: Callable[..., FakeNode]) -> None:
    node = fake_node(lambda m, p: ok([]) if m != "scantxoutset" else ok({"unspents": []}))
    rpc = BitcoinRPC(node.url)
    rpc.getblock(TXID, 2)
    rpc.getrawtransaction(TXID)
    rpc.testmempoolaccept(["0200"], Decimal("0.1"))
    rpc.estimatesmartfee(6)
    rpc.scan_script_utxos("5120" + "11" * 32)
    rpc.generateblock("bcrt1qxyz", ["0200"], submit=False)
    assert [(r["method"], r["params"]) for r in node.requests] == [
        ("getblock", [TXID, 2]),
        ("getrawtransaction", [TXID, 1]),
        ("testmempoolaccept", [["0200"], "0.1"]),
        ("estimatesmartfee", [6, "conservative"]),
        ("scantxoutset", ["start", ["raw(5120" + "11" * 32 + ")"]]),
        ("generateblock", ["bcrt1qxyz", ["0200"], False]),
    ]


def test_warmup_answer_is_retried_then_reported_unavailable(fake_node: Callable[..., FakeNode]) -> None:
    answers = iter([(-28, "Loading block index..."), (-28, "Verifying blocks...")])

    def warming(method: str, params: list[Any]) -> tuple[int, bytes]:
        code, message = next(answers, (0, ""))
        if code:
            return 500, json.dumps({"result": None, "error": {"code": code, "message": message}, "id": 1}).encode()
        return ok(12)

    node = fake_node(warming)
    assert BitcoinRPC(node.url, retries=2, backoff=0).call("generatetoaddress", 1, "bcrt1qxyz") == 12
    assert len(node.requests) == 3
    always = fake_node(lambda m, p: (500, b'{"result":null,"error":{"code":-28,"message":"Loading"},"id":1}'))
    with pytest.raises(NodeUnavailableError, match="Loading"):
        BitcoinRPC(always.url, retries=1, backoff=0).getblockcount()


def test_strip_witness_matches_the_txid_serialization() -> None:
    tx = Tx(
        2,
        [
            TxIn(OutPoint(b"\x01" * 32, 3), b"", 0xFFFFFFFD, [b"\x02" * 64, b"\x03" * 300]),
            TxIn(OutPoint(b"\x04" * 32, 0), b"\x51", 5, []),
        ],
        [TxOut(1_000, b"\x51\x20" + b"\x05" * 32), TxOut(0, b"\x6a" + b"\x00" * 260)],
        17,
    )
    assert _strip_witness(tx.serialize()) == tx.serialize(with_witness=False)
    legacy = tx.serialize(with_witness=False)
    assert _strip_witness(legacy) == legacy


def test_get_utxo_converts_at_the_edge(fake_node: Callable[..., FakeNode]) -> None:
    raw = (
        b'{"result":{"bestblock":"00","confirmations":6,"value":1.00000001,'
        b'"scriptPubKey":{"hex":"5120' + b"ab" * 32 + b'","type":"witness_v1_taproot"},"coinbase":false},'
        b'"error":null,"id":1}'
    )
    node = fake_node(lambda m, p: (200, raw))
    utxo = BitcoinRPC(node.url).get_utxo(TXID, 1)
    assert utxo == Utxo(TXID, 1, 100_000_001, bytes.fromhex("5120" + "ab" * 32), 6, False)
    empty = fake_node(lambda m, p: ok(None))
    assert BitcoinRPC(empty.url).get_utxo(TXID, 1) is None
