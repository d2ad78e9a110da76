"""JSON-RPC over HTTP for the embedded regtest node, with Bitcoin Core's method names and errors."""

from __future__ import annotations

import base64
import hmac
import inspect
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bitcoin.regtest.node import (
    DEFAULT_MAX_FEE_RATE,
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_MISC_ERROR,
    RPC_TYPE_ERROR,
    NodeRPCError,
    RegtestNode,
    Tx,
    parse_output_target,
)
from bitcoin.regtest.serialize import MAX_MONEY, DeserializationError

log = logging.getLogger(__name__)

RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_REQUEST = -32600
RPC_PARSE_ERROR = -32700
RPC_INVALID_PARAMS = -32602
MAX_REQUEST_BYTES = 32 * 1024 * 1024
# Decimals travel through json.dumps as marked strings, then lose their quotes; the random marker cannot be forged
# by text a client sends (which error messages may echo).
_MARKER = secrets.token_hex(16)
_DECIMAL_MARK = re.compile(rf'"{_MARKER}(-?[0-9]+(?:\.[0-9]+)?){_MARKER}"')


def encode_response(payload: object) -> bytes:
    """JSON with Decimals written as exact numbers (like Core's amounts, e.g. 0.00010000)."""

    def mark(value: object) -> object:
        if isinstance(value, Decimal):
            return f"{_MARKER}{format(value, 'f')}{_MARKER}"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(payload), separators=(",", ":"))
    return _DECIMAL_MARK.sub(lambda m: m.group(1), text).encode()


# -- argument parsing (clear errors before anything reaches the node or the kernel) --------------------------


def _hash_arg(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise NodeRPCError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(str(value))}, for '{value}')")
    return bytes.fromhex(value)[::-1]


def _hex_arg(value: Any, name: str, code: int = RPC_DESERIALIZATION_ERROR) -> bytes:
    if not isinstance(value, str):
        raise NodeRPCError(RPC_TYPE_ERROR, f"{name} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise NodeRPCError(code, f"{name} is not hex") from exc


def _int_arg(value: Any, name: str, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NodeRPCError(RPC_TYPE_ERROR, f"{name} must be an integer")
    if not minimum <= value <= maximum:
        raise NodeRPCError(RPC_INVALID_PARAMETER, f"{name} out of range [{minimum}, {maximum}]")
    return value


def _bool_arg(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise NodeRPCError(RPC_TYPE_ERROR, f"{name} must be a boolean")


def _amount_arg(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise NodeRPCError(RPC_TYPE_ERROR, f"{name}: amount is not a number or string")
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise NodeRPCError(RPC_TYPE_ERROR, f"{name}: invalid amount") from exc
    if not amount.is_finite() or amount < 0:
        raise NodeRPCError(RPC_TYPE_ERROR, f"{name}: amount out of range")
    return amount


def _sats_arg(value: Any, name: str) -> int:
    amount = _amount_arg(value, name) * 100_000_000
    if amount != amount.to_integral_value() or amount <= 0:
        raise NodeRPCError(RPC_TYPE_ERROR, f"{name}: invalid amount (positive, whole satoshis)")
    if amount > MAX_MONEY:
        raise NodeRPCError(RPC_TYPE_ERROR, f"{name}: amount out of range")
    return int(amount)


def _tx_arg(value: Any) -> bytes:
    raw = _hex_arg(value, "hexstring")
    try:
        Tx.from_bytes(raw)
    except DeserializationError as exc:
        raise NodeRPCError(RPC_DESERIALIZATION_ERROR, f"TX decode failed. {exc}") from exc
    return raw


class RPCHandlers:
    """The RPC methods. Each validates its arguments, then calls one node method."""

    def __init__(self, node: RegtestNode, on_stop: Callable[[], None] | None = None) -> None:
        self.node = node
        self.on_stop = on_stop

    def methods(self) -> dict[str, Callable[..., Any]]:
        """Method name -> bound handler."""
        return {name.removeprefix("rpc_"): getattr(self, name) for name in dir(self) if name.startswith("rpc_")}

    def rpc_getblockchaininfo(self) -> dict[str, Any]:
        return self.node.get_blockchain_info()

    def rpc_getblockcount(self) -> int:
        return self.node.get_block_count()

    def rpc_getbestblockhash(self) -> str:
        return self.node.get_best_block_hash()

    def rpc_getblockhash(self, height: Any) -> str:
        return self.node.get_block_hash(_int_arg(height, "height"))

    def rpc_getblock(self, blockhash: Any, verbosity: Any = 1) -> Any:
        if isinstance(verbosity, bool):
            verbosity = int(verbosity)
        return self.node.get_block(_hash_arg(blockhash, "blockhash"), _int_arg(verbosity, "verbosity", 0, 2))

    def rpc_getblockheader(self, blockhash: Any, verbose: Any = True) -> Any:
        return self.node.get_block_header(_hash_arg(blockhash, "blockhash"), _bool_arg(verbose, "verbose"))

    def rpc_getrawtransaction(self, txid: Any, verbose: Any = False, blockhash: Any = None) -> Any:
        block_hash = None if blockhash is None else _hash_arg(blockhash, "blockhash")
        if isinstance(verbose, int) and not isinstance(verbose, bool):
            verbose = _int_arg(verbose, "verbosity", 0, 2) > 0
        return self.node.get_raw_transaction(_hash_arg(txid, "txid"), _bool_arg(verbose, "verbose"), block_hash)

    def rpc_gettxout(self, txid: Any, n: Any, include_mempool: Any = True) -> Any:
        return self.node.get_tx_out(
            _hash_arg(txid, "txid"),
            _int_arg(n, "n", 0, 2**32 - 1),
            _bool_arg(include_mempool, "include_mempool"),
        )

    def rpc_sendrawtransaction(self, hexstring: Any, maxfeerate: Any = DEFAULT_MAX_FEE_RATE) -> str:
        return self.node.send_raw_transaction(_tx_arg(hexstring), _amount_arg(maxfeerate, "maxfeerate"))

    def rpc_testmempoolaccept(self, rawtxs: Any, maxfeerate: Any = DEFAULT_MAX_FEE_RATE) -> list[dict]:
        if not isinstance(rawtxs, list) or not rawtxs:
            raise NodeRPCError(RPC_TYPE_ERROR, "rawtxs must be a non-empty array")
        return self.node.test_mempool_accept([_tx_arg(t) for t in rawtxs], _amount_arg(maxfeerate, "maxfeerate"))

    def rpc_getrawmempool(self, verbose: Any = False, mempool_sequence: Any = False) -> Any:
        return self.node.get_raw_mempool(_bool_arg(verbose, "verbose"))

    def rpc_getmempoolentry(self, txid: Any) -> Any:
        return self.node.get_mempool_entry(_hash_arg(txid, "txid"))

    def rpc_estimatesmartfee(self, conf_target: Any, estimate_mode: Any = "conservative") -> Any:
        if not isinstance(estimate_mode, str) or estimate_mode.lower() not in (
            "unset",
            "economical",
            "conservative",
        ):
            raise NodeRPCError(RPC_INVALID_PARAMETER, "Invalid estimate_mode parameter")
        return self.node.estimate_smart_fee(_int_arg(conf_target, "conf_target", 1, 1008))

    def rpc_scantxoutset(self, action: Any, scanobjects: Any = None) -> Any:
        if action in ("status", "abort"):
            return None if action == "status" else False
        if action != "start":
            raise NodeRPCError(RPC_INVALID_PARAMETER, f"Invalid action '{action}'")
        if not isinstance(scanobjects, list):
            raise NodeRPCError(RPC_INVALID_PARAMETER, "scanobjects argument is required for the start action")
        scripts = []
        for item in scanobjects:
            desc = item.get("desc") if isinstance(item, dict) else item
            scripts.append(parse_output_target(desc))
        return self.node.scan_tx_out_set(scripts)

    def rpc_generatetoaddress(self, nblocks: Any, address: Any, maxtries: Any = None) -> list[str]:
        return self.node.generate_to_script(_int_arg(nblocks, "nblocks", 0, 10_000), parse_output_target(address))

    def rpc_generateblock(self, output: Any, transactions: Any, submit: Any = True) -> dict[str, Any]:
        script = parse_output_target(output)
        if not isinstance(transactions, list):
            raise NodeRPCError(RPC_TYPE_ERROR, "transactions must be an array")
        txs = []
        for item in transactions:
            if isinstance(item, str) and len(item) == 64 and re.fullmatch(r"[0-9a-fA-F]{64}", item):
                raw = self.node.get_raw_transaction_from_mempool(bytes.fromhex(item)[::-1])
                if raw is None:
                    raise NodeRPCError(RPC_INVALID_ADDRESS_OR_KEY, f"Transaction {item} not in mempool.")
                txs.append(Tx.from_bytes(raw))
            else:
                txs.append(Tx.from_bytes(_tx_arg(item)))
        return self.node.generate_block(script, txs, _bool_arg(submit, "submit"))

    def rpc_submitblock(self, hexdata: Any, dummy: Any = None) -> str | None:
        return self.node.submit_block(_hex_arg(hexdata, "hexdata"))

    def rpc_sendtoaddress(self, address: Any, amount: Any, *ignored: Any) -> str:
        return self.node.send_to_script(parse_output_target(address), _sats_arg(amount, "amount"))

    def rpc_getnewaddress(self, label: Any = "", address_type: Any = None) -> str:
        """The faucet's address (this node has one key, not an HD wallet)."""
        return self.node.faucet.address

    def rpc_getbalance(self, *ignored: Any) -> Decimal:
        return (Decimal(self.node.faucet_balance()) / 100_000_000).quantize(Decimal("0.00000001"))

    def rpc_getnetworkinfo(self) -> dict[str, Any]:
        return {
            "version": 290000,
            "subversion": "/pbk-regtest:0.1/",
            "protocolversion": 70016,
            "connections": 0,
        }

    def rpc_uptime(self) -> int:
        return self.node.uptime()

    def rpc_help(self, command: Any = None) -> str:
        return "\n".join(sorted(self.methods()))

    def rpc_stop(self) -> str:
        if self.on_stop is not None:
            threading.Thread(target=self.on_stop, daemon=True).start()
        return "Bitcoin Core stopping"


class RegtestRPCServer:
    """ThreadingHTTPServer serving `RPCHandlers`; optional basic auth (user/password or cookie file)."""

    def __init__(
        self,
        node: RegtestNode,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        user: str = "",
        password: str = "",
        cookie_file: Path | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.node = node
        self._credentials: bytes | None = None
        if cookie_file is not None:
            cookie = f"__cookie__:{secrets.token_hex(32)}"
            cookie_file.write_text(cookie)
            cookie_file.chmod(0o600)
            self._credentials = cookie.encode()
        elif user or password:
            self._credentials = f"{user}:{password}".encode()
        self.cookie_file = cookie_file
        self.handlers = RPCHandlers(node, on_stop=on_stop or self.shutdown)
        self._methods = self.handlers.methods()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if not server._authorized(self.headers.get("Authorization")):
                    self._send(401, b"", "text/plain")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_REQUEST_BYTES:
                    self._send(400, b"bad content length", "text/plain")
                    return
                status, body = server.handle_body(self.rfile.read(length))
                self._send(status, body, "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("rpc: " + fmt, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        bound_host, bound_port = self.httpd.server_address[:2]
        self.host, self.port = str(bound_host), int(bound_port)
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._serving = False

    @property
    def url(self) -> str:
        """`http://host:port` of this server."""
        return f"http://{self.host}:{self.port}"

    def _authorized(self, header: str | None) -> bool:
        if self._credentials is None:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:], validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(given, self._credentials)

    def handle_body(self, body: bytes) -> tuple[int, bytes]:
        """Run a JSON-RPC request (single or batch); return (HTTP status, body)."""
        try:
            request = json.loads(body, parse_float=Decimal)
        except ValueError:
            return 500, encode_response(_error_response(None, RPC_PARSE_ERROR, "Parse error"))
        if isinstance(request, list):
            return 200, encode_response([self._dispatch(item)[1] for item in request])
        status, response = self._dispatch(request)
        return status, encode_response(response)

    def _dispatch(self, request: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return 400, _error_response(None, RPC_INVALID_REQUEST, "Invalid Request object")
        request_id = request.get("id")
        method = self._methods.get(request["method"])
        if method is None:
            return 404, _error_response(request_id, RPC_METHOD_NOT_FOUND, "Method not found")
        params = request.get("params") or []
        try:
            if isinstance(params, dict):
                result = method(**params)
            elif isinstance(params, list):
                inspect.signature(method).bind(*params)
                result = method(*params)
            else:
                raise NodeRPCError(RPC_INVALID_REQUEST, "Params must be an array or object")
        except NodeRPCError as exc:
            return 500, _error_response(request_id, exc.code, exc.message)
        except TypeError as exc:
            return 500, _error_response(request_id, RPC_MISC_ERROR, f"wrong parameters for {request['method']}: {exc}")
        except Exception as exc:  # an internal bug must not kill the server thread
            log.exception("internal error in %s", request["method"])
            return 500, _error_response(request_id, RPC_MISC_ERROR, f"internal error: {exc!r}")
        return 200, {"result": result, "error": None, "id": request_id}

    def serve_in_thread(self) -> None:
        """Serve requests on a daemon thread."""
        self._serving = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="regtest-rpc", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve requests on this thread until `shutdown()`."""
        self._serving = True
        self.httpd.serve_forever(poll_interval=0.1)

    def shutdown(self) -> None:
        """Stop serving (idempotent); does not close the node."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._serving:
            self.httpd.shutdown()
        self.httpd.server_close()
        if self.cookie_file is not None:
            self.cookie_file.unlink(missing_ok=True)


def _error_response(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"result": None, "error": {"code": code, "message": message}, "id": request_id}
