"""Mempool policy and RPC server behaviour of the regtest node, in-process (the kernel runs in this process)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from bitcoin.regtest.mining import assemble_block, block_subsidy
from bitcoin.regtest.node import NodeRPCError, RegtestNode
from bitcoin.regtest.serialize import Block, OutPoint, Tx, TxIn, TxOut, bits_to_target
from bitcoin.regtest.server import RegtestRPCServer
from bitcoin.rpc import BitcoinRPC, NodeUnavailableError, RPCError

pytestmark = pytest.mark.integration

OP_TRUE_SCRIPT = b"\x51"
OP_TRUE_P2WSH = b"\x00\x20" + hashlib.sha256(OP_TRUE_SCRIPT).digest()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegtestNode]:
    regtest = RegtestNode(tmp_path_factory.mktemp("mempool") / "node")
    regtest.generate_to_script(101, regtest.faucet.script_pubkey)
    yield regtest
    regtest.close()


@pytest.fixture(scope="module")
def rpc(node: RegtestNode) -> Iterator[BitcoinRPC]:
    server = RegtestRPCServer(node, user="u", password="p")
    server.serve_in_thread()
    yield BitcoinRPC(server.url, user="u", password="p")
    server.shutdown()


def fund(node: RegtestNode, sats: int) -> OutPoint:
    txid = node.send_to_script(OP_TRUE_P2WSH, sats)
    node.generate_to_script(1, node.faucet.script_pubkey)
    tx = Tx.from_hex(node.get_raw_transaction(bytes.fromhex(txid)[::-1], False))
    vout = next(i for i, o in enumerate(tx.vout) if o.script_pubkey == OP_TRUE_P2WSH and o.value == sats)
    return OutPoint.from_hex(txid, vout)


def spend(outpoint: OutPoint, out_value: int, *, sequence: int = 0xFFFFFFFD, locktime: int = 0, version: int = 2) -> Tx:
    return Tx(version, [TxIn(outpoint, b"", sequence, [OP_TRUE_SCRIPT])], [TxOut(out_value, OP_TRUE_P2WSH)], locktime)


def reject_reason(node: RegtestNode, tx: Tx) -> str:
    [result] = node.test_mempool_accept([tx.serialize()])
    assert result["allowed"] is False
    return str(result["reject-reason"])


def test_absolute_locktime(node: RegtestNode) -> None:
    coin = fund(node, 20_000)
    next_height = node.get_block_count() + 1
    assert reject_reason(node, spend(coin, 19_000, locktime=next_height)) == "non-final"
    # All sequences final: nLockTime is ignored.
    assert node.test_mempool_accept([spend(coin, 19_000, sequence=0xFFFFFFFF, locktime=next_height).serialize()])[0][
        "allowed"
    ]
    assert node.test_mempool_accept([spend(coin, 19_000, locktime=next_height - 1).serialize()])[0]["allowed"]


def test_relative_lock_rules(node: RegtestNode) -> None:
    coin = fund(node, 20_000)
    assert reject_reason(node, spend(coin, 19_000, sequence=2)) == "non-BIP68-final"
    # Version 1 transactions and the disable flag opt out of BIP-68.
    assert node.test_mempool_accept([spend(coin, 19_000, sequence=2, version=1).serialize()])[0]["allowed"]
    assert node.test_mempool_accept([spend(coin, 19_000, sequence=(1 << 31) | 2).serialize()])[0]["allowed"]
    # Time-based lock of 512 seconds: not satisfied by a chain mined in the last second.
    assert reject_reason(node, spend(coin, 19_000, sequence=(1 << 22) | 1)) == "non-BIP68-final"


def test_fee_and_dust_policy(node: RegtestNode) -> None:
    coin = fund(node, 2_000_000)
    assert reject_reason(node, spend(coin, 2_000_000)) == "min relay fee not met"
    assert reject_reason(node, spend(coin, 329)) == "dust"  # P2WSH dust threshold is 330 sats
    # ~20 000 sat/vB is above the default maxfeerate of 0.10 BTC/kvB (10 000 sat/vB).
    expensive = spend(coin, 330)
    assert reject_reason(node, expensive) == "max-fee-exceeded"
    with pytest.raises(NodeRPCError) as info:
        node.send_raw_transaction(expensive.serialize())
    assert info.value.code == -25
    assert node.test_mempool_accept([expensive.serialize()], max_fee_rate=Decimal(0))[0]["allowed"]
    assert node.test_mempool_accept([spend(coin, 1_990_000).serialize()])[0]["allowed"]


def test_mempool_chain_and_mining_order(node: RegtestNode) -> None:
    coin = fund(node, 50_000)
    parent = spend(coin, 49_000)
    child = spend(OutPoint(parent.txid, 0), 48_000)
    assert reject_reason(node, child) == "missing-inputs"
    before = node.get_raw_mempool()
    package = node.test_mempool_accept([parent.serialize(), child.serialize()])
    assert [(r["txid"], r["allowed"]) for r in package] == [(parent.txid_hex, True), (child.txid_hex, True)]
    assert node.get_raw_mempool() == before  # a dry run keeps nothing
    node.send_raw_transaction(parent.serialize())
    node.send_raw_transaction(child.serialize())
    entry = node.get_mempool_entry(child.txid)
    assert entry["depends"] == [parent.txid_hex]
    assert entry["fees"]["base"] == Decimal("0.00001000")
    [block_hash] = node.generate_to_script(1, node.faucet.script_pubkey)
    block = node.get_block(bytes.fromhex(block_hash)[::-1], 1)
    assert block["tx"][1:] == [parent.txid_hex, child.txid_hex]
    decoded = node.get_block(bytes.fromhex(block_hash)[::-1], 2)
    assert [tx.get("fee") for tx in decoded["tx"]] == [None, Decimal("0.00001000"), Decimal("0.00001000")]
    coinbase_value = sum(out["value"] for out in decoded["tx"][0]["vout"])
    assert coinbase_value == Decimal("0.00002000") + Decimal(block_subsidy(decoded["height"])) / 10**8
    assert node.get_raw_mempool() == []


def test_concurrent_rpc_clients(node: RegtestNode, rpc: BitcoinRPC) -> None:
    start_height = rpc.getblockcount()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                rpc.generatetoaddress(1, node.faucet.address)
                rpc.getblockchaininfo()
                rpc.call("sendtoaddress", node.faucet.address, "0.001")
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert rpc.getblockcount() == start_height + 20
    assert len(rpc.getrawmempool()) >= 1


def test_server_rejects_bad_input_before_the_kernel(node: RegtestNode, rpc: BitcoinRPC) -> None:
    height = rpc.getblockcount()
    for method, params, code in [
        ("submitblock", ["00"], -22),
        ("submitblock", ["zz"], -22),
        ("getblock", ["00" * 31], -8),
        ("getblock", ["00" * 32], -5),
        ("gettxout", ["00" * 32, -1], -8),
        ("getrawtransaction", ["xyz"], -8),
        ("generatetoaddress", [-1, node.faucet.address], -8),
        ("generatetoaddress", [1, "raw()"], -5),
        ("generateblock", [node.faucet.address, ["11" * 32]], -5),
        ("testmempoolaccept", [[]], -3),
        ("sendtoaddress", [node.faucet.address, "1e100"], -3),
        ("getblockcount", [1, 2], -1),
    ]:
        with pytest.raises(RPCError) as info:
            rpc.call(method, *params)
        assert info.value.code == code, (method, params, info.value)
    assert rpc.getblockcount() == height
    assert BitcoinRPC(rpc.url, user="u", password="p").call("help").count("\n") > 10
    named = rpc.call("getblockhash", height)
    assert named == rpc.getbestblockhash()


def test_snapshot_round_trip(tmp_path: Path) -> None:
    first = RegtestNode(tmp_path / "n")
    first.generate_to_script(101, first.faucet.script_pubkey)
    txid = first.send_to_script(OP_TRUE_P2WSH, 12_345)
    first.generate_to_script(3, first.faucet.script_pubkey)
    pending = first.send_to_script(OP_TRUE_P2WSH, 5_000)
    utxos = dict(first._utxos)
    first.close()
    first.close()  # idempotent
    for call in (first.get_block_count, first.get_blockchain_info, lambda: first.get_block_header(b"\x00" * 32)):
        with pytest.raises(NodeRPCError, match="shut down"):
            call()
    second = RegtestNode(tmp_path / "n")
    try:
        assert not second.rebuilt_indexes
        assert second._utxos == utxos
        assert second.get_raw_mempool() == [pending]
        assert second.get_raw_transaction(bytes.fromhex(txid)[::-1], True)["confirmations"] == 3
    finally:
        second.close()


def test_generateblock_with_mempool_txid_and_submitblock_orphan(node: RegtestNode, rpc: BitcoinRPC) -> None:
    coin = fund(node, 30_000)
    tx = spend(coin, 29_000)
    txid = rpc.sendrawtransaction(tx.serialize().hex())
    other = rpc.call("sendtoaddress", node.faucet.address, "0.5")
    result = rpc.generateblock(node.faucet.address, [txid])
    block = rpc.getblock(result["hash"], 1)
    assert block["tx"][1:] == [txid]
    assert rpc.getrawmempool() == [other]  # only the listed transaction was mined
    unsubmitted = rpc.generateblock(node.faucet.address, [], submit=False)
    assert rpc.getbestblockhash() == result["hash"]
    assert rpc.submitblock(unsubmitted["hex"]) is None
    assert rpc.getbestblockhash() == unsubmitted["hash"]
    assert rpc.submitblock(unsubmitted["hex"]) == "duplicate"
    orphan = Block.from_bytes(bytes.fromhex(unsubmitted["hex"]))
    orphan.header.prev_hash = b"\x07" * 32
    assert rpc.submitblock(orphan.serialize().hex()) == "prev-blk-not-found"
    assert rpc.getbestblockhash() == unsubmitted["hash"]


def test_mined_blocks_respect_the_weight_limit(node: RegtestNode) -> None:
    coins = [fund(node, 1_000_000) for _ in range(11)]
    outputs = [TxOut(330, OP_TRUE_P2WSH)] * 2150  # ~370 000 weight units per transaction
    txids = []
    for coin in coins:
        tx = Tx(2, [TxIn(coin, b"", 0xFFFFFFFD, [OP_TRUE_SCRIPT])], outputs, 0)
        assert 360_000 < tx.weight < 400_000
        txids.append(node.send_raw_transaction(tx.serialize()))
    [first] = node.generate_to_script(1, node.faucet.script_pubkey)
    block = node.get_block(bytes.fromhex(first)[::-1], 1)
    assert block["weight"] <= 4_000_000
    assert block["tx"][1:] == txids[:10]
    assert node.get_raw_mempool() == txids[10:]
    [second] = node.generate_to_script(1, node.faucet.script_pubkey)
    assert node.get_block(bytes.fromhex(second)[::-1], 1)["tx"][1:] == txids[10:]


def test_cookie_auth(node: RegtestNode, tmp_path: Path) -> None:
    cookie = tmp_path / ".cookie"
    server = RegtestRPCServer(node, cookie_file=cookie)
    server.serve_in_thread()
    try:
        user, password = cookie.read_text().split(":")
        assert user == "__cookie__" and len(password) == 64
        assert cookie.stat().st_mode & 0o777 == 0o600
        assert BitcoinRPC(server.url, cookie_file=cookie).getblockcount() == node.get_block_count()
        with pytest.raises(NodeUnavailableError, match="401"):
            BitcoinRPC(server.url, retries=0).getblockcount()
        with pytest.raises(NodeUnavailableError, match="401"):
            BitcoinRPC(server.url, user="__cookie__", password="0" * 64, retries=0).getblockcount()
    finally:
        server.shutdown()
    assert not cookie.exists()


def test_standardness_policy(node: RegtestNode) -> None:
    coin = fund(node, 50_000)
    base = spend(coin, 40_000)
    assert node.test_mempool_accept([base.serialize()])[0]["allowed"]
    cases = {
        "version": Tx(4, base.vin, base.vout, 0),
        "scriptpubkey": Tx(2, base.vin, [TxOut(40_000, b"\x51\x52\x93")], 0),
        "multi-op-return": Tx(2, base.vin, [*base.vout, TxOut(0, b"\x6a\x01\x01"), TxOut(0, b"\x6a\x01\x02")], 0),
        "tx-size-small": Tx(2, base.vin, [TxOut(40_000, b"\x6a")], 0),
        "scriptsig-not-pushonly": Tx(2, [TxIn(coin, b"\x61", 0xFFFFFFFD, [OP_TRUE_SCRIPT])], base.vout, 0),
    }
    for reason, tx in cases.items():
        assert reject_reason(node, tx) == reason
    big_data = Tx(2, base.vin, [*base.vout, TxOut(0, b"\x6a\x4c\x51" + b"\x00" * 81)], 0)
    assert reject_reason(node, big_data) == "scriptpubkey"  # 84 bytes: above the 83-byte relay limit
    small_data = Tx(2, base.vin, [*base.vout, TxOut(0, b"\x6a\x4c\x50" + b"\x00" * 80)], 0)
    assert node.test_mempool_accept([small_data.serialize()])[0]["allowed"]
    # Consensus still allows a non-standard transaction in a block.
    [block] = [node.generate_block(node.faucet.script_pubkey, [cases["version"]])["hash"]]
    assert node.get_block(bytes.fromhex(block)[::-1], 1)["tx"][1] == cases["version"].txid_hex


def test_batch_and_named_parameters(node: RegtestNode) -> None:
    server = RegtestRPCServer(node)
    server.serve_in_thread()
    try:
        status, body = server.handle_body(
            b'[{"id": 1, "method": "getblockcount"},'
            b' {"id": 2, "method": "getblockhash", "params": {"height": 0}},'
            b' {"id": 3, "method": "nosuch"}]'
        )
        assert status == 200
        replies = json.loads(body)
        assert [r["id"] for r in replies] == [1, 2, 3]
        assert replies[0]["result"] == node.get_block_count()
        assert replies[1]["result"] == "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        assert replies[2]["error"]["code"] == -32601
        status, body = server.handle_body(b"{not json")
        assert status == 500
        assert json.loads(body)["error"]["code"] == -32700
        # Amounts are exact JSON numbers with 8 decimals, as Core writes them.
        status, body = server.handle_body(b'{"id": 4, "method": "getbalance"}')
        assert re.search(rb'"result":\d+\.\d{8},', body)
    finally:
        server.shutdown()


def test_submitblock_reports_the_kernels_header_verdicts(node: RegtestNode) -> None:
    tip_hash = bytes.fromhex(node.get_best_block_hash())[::-1]
    header = node.get_block_header(tip_hash)
    height = header["height"] + 1

    def block_at(block_time: int) -> Block:
        return assemble_block(
            prev_hash=tip_hash, height=height, block_time=block_time, coinbase_script=OP_TRUE_P2WSH, txs=[]
        )

    too_old = block_at(header["mediantime"])  # must be strictly above the median time past
    assert node.submit_block(too_old.serialize()) == "invalid-header"
    high_hash = block_at(header["mediantime"] + 1)
    while int.from_bytes(high_hash.hash, "little") <= bits_to_target(high_hash.header.bits):
        high_hash.header.nonce += 1
    assert node.submit_block(high_hash.serialize()) == "invalid-header"
    too_rich = block_at(header["mediantime"] + 1)
    too_rich.txs[0].vout[0].value += 1
    too_rich.header.merkle_root = too_rich.txs[0].txid
    while int.from_bytes(too_rich.hash, "little") > bits_to_target(too_rich.header.bits):
        too_rich.header.nonce += 1
    assert node.submit_block(too_rich.serialize()).startswith("consensus: bad-cb-amount")
    assert node.get_best_block_hash() == tip_hash[::-1].hex()
    good = block_at(header["mediantime"] + 1)
    assert node.submit_block(good.serialize()) is None
    assert node.get_block_count() == height
