"""Bitcoin Core JSON-RPC client: the one way this codebase talks to a Bitcoin node.

It works unchanged against a real `bitcoind` and against the embedded regtest node (`bitcoin.regtest`).

* Amounts in node JSON are parsed as `Decimal` (never float); convert at the edge with `btc_to_sats` /
  `sats_to_btc`, which refuse fractional satoshis.
* JSON-RPC errors raise `RPCError(code, message)` carrying Bitcoin Core's numeric error code (see `RPC_*`).
* Transport failures raise `NodeUnavailableError` after `retries` extra attempts with exponential backoff.

Retry policy (decided here, relied upon by callers):

* A *connection refused* error, or Core's -28 "in warmup" answer, means the request was not executed, so every
  call is retried.
* After a timeout or a dropped connection the node may already have executed the request. Then only calls in
  `IDEMPOTENT_METHODS` are retried: the read calls, and `sendrawtransaction`/`testmempoolaccept`, because
  submitting the same bytes twice names the same txid: a second submission of a transaction already in the
  mempool returns the same txid, one already confirmed raises `RPCError(-27, "Transaction outputs already in
  utxo set")`. `BitcoinRPC.broadcast(tx_hex, txid)` wraps this for workers: a refusal of a transaction the node
  already knows (mempool or tx index) counts as success. Mining calls and `sendtoaddress` are never retried
  after the request may have been delivered.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import time
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

SATS_PER_BTC = 100_000_000
MAX_MONEY_SATS = 21_000_000 * SATS_PER_BTC

# Bitcoin Core's RPC error codes (src/rpc/protocol.h) that callers are expected to handle.
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27
RPC_IN_WARMUP = -28
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_REQUEST = -32600
RPC_PARSE_ERROR = -32700
RPC_INTERNAL_ERROR = -32603
RPC_WALLET_INSUFFICIENT_FUNDS = -6

IDEMPOTENT_METHODS = frozenset(
    {
        "getblockchaininfo",
        "getblockcount",
        "getbestblockhash",
        "getblockhash",
        "getblock",
        "getblockheader",
        "getrawtransaction",
        "gettxout",
        "getrawmempool",
        "getmempoolentry",
        "estimatesmartfee",
        "scantxoutset",
        "testmempoolaccept",
        "sendrawtransaction",
        "getnetworkinfo",
        "uptime",
    }
)


class BitcoinRPCError(Exception):
    """Base class of every error raised by this module."""


class NodeUnavailableError(BitcoinRPCError):
    """The node could not be reached (refused, timed out, or answered with something that is not JSON-RPC)."""


class RPCError(BitcoinRPCError):
    """The node answered with a JSON-RPC error; `code` is Bitcoin Core's error code."""

    def __init__(self, code: int, message: str, method: str = "") -> None:
        self.code = code
        self.message = message
        self.method = method
        super().__init__(f"{method or 'RPC'} failed ({code}): {message}")


def btc_to_sats(amount: Decimal | int | str) -> int:
    """Convert a BTC amount (as the node reports it) to integer satoshis; refuse fractional satoshis."""
    if isinstance(amount, float):
        raise TypeError("BTC amounts must be Decimal, int or str, never float")
    if isinstance(amount, bool):
        raise TypeError("a bool is not an amount")
    value = Decimal(amount)
    if not value.is_finite():
        raise ValueError(f"amount is not finite: {amount!r}")
    sats = value * SATS_PER_BTC
    if sats != sats.to_integral_value():
        raise ValueError(f"amount {amount} BTC is not a whole number of satoshis")
    result = int(sats)
    if abs(result) > MAX_MONEY_SATS:
        raise ValueError(f"amount {amount} BTC exceeds the 21 million BTC supply")
    return result


def sats_to_btc(sats: int) -> Decimal:
    """Convert integer satoshis to a BTC `Decimal` with exactly 8 decimal places."""
    if isinstance(sats, bool) or not isinstance(sats, int):
        raise TypeError(f"satoshis must be an int, got {type(sats).__name__}")
    if abs(sats) > MAX_MONEY_SATS:
        raise ValueError(f"{sats} sats exceeds the 21 million BTC supply")
    return (Decimal(sats) / SATS_PER_BTC).quantize(Decimal("0.00000001"))


def encode_json(payload: object) -> bytes:
    """Encode a JSON-RPC payload; Decimals go as exact strings, which Bitcoin Core accepts for amounts."""
    return json.dumps(_replace_decimals(payload), separators=(",", ":")).encode()


def _replace_decimals(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {key: _replace_decimals(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_decimals(item) for item in value]
    return value


class BitcoinRPC:
    """A small, thread-safe Bitcoin Core JSON-RPC client (one HTTP connection per call)."""

    def __init__(
        self,
        url: str,
        user: str = "",
        password: str = "",
        timeout: float = 10.0,
        retries: int = 2,
        *,
        cookie_file: str | Path | None = None,
        backoff: float = 0.25,
    ) -> None:
        """Build a client for `url` (http://host:port[/wallet/NAME]); credentials in the URL are honoured.

        Authentication is HTTP basic with `user`/`password`, or read from Core's `.cookie` file at each call
        (the cookie changes when the node restarts).
        """
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.url = url
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._path = parsed.path or "/"
        self._user = user or urllib.parse.unquote(parsed.username or "")
        self._password = password or urllib.parse.unquote(parsed.password or "")
        self._cookie_file = Path(cookie_file) if cookie_file else None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"BitcoinRPC({self._scheme}://{self._host}:{self._port}{self._path})"

    # -- transport ------------------------------------------------------------------------------------------

    def _auth_header(self) -> str | None:
        if self._cookie_file is not None:
            try:
                cookie = self._cookie_file.read_text().strip()
            except OSError as exc:
                raise NodeUnavailableError(f"cannot read RPC cookie file {self._cookie_file}: {exc}") from exc
            return "Basic " + base64.b64encode(cookie.encode()).decode()
        if self._user or self._password:
            return "Basic " + base64.b64encode(f"{self._user}:{self._password}".encode()).decode()
        return None

    def _post(self, body: bytes) -> tuple[int, bytes]:
        conn_cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(self._host, self._port, timeout=self.timeout)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        auth = self._auth_header()
        if auth:
            headers["Authorization"] = auth
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def call(self, method: str, *params: Any) -> Any:
        """Call any RPC method with positional parameters and return its `result`."""
        if not method or not isinstance(method, str):
            raise ValueError("method must be a non-empty string")
        request_id = next(self._ids)
        body = encode_json({"jsonrpc": "1.0", "id": request_id, "method": method, "params": list(params)})
        attempts = self.retries + 1
        last_error: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                status, raw = self._post(body)
            except ConnectionRefusedError as exc:
                last_error = exc
                continue
            except (TimeoutError, http.client.HTTPException, OSError) as exc:
                last_error = exc
                if method in IDEMPOTENT_METHODS:
                    continue
                raise NodeUnavailableError(
                    f"{method}: {exc!r}; not retried because the node may have executed it"
                ) from exc
            try:
                return self._decode(method, status, raw)
            except RPCError as exc:
                # -28: the node is starting (loading blocks, verifying, ...): a transient refusal, nothing ran.
                if exc.code != RPC_IN_WARMUP:
                    raise
                last_error = exc
        raise NodeUnavailableError(
            f"{method}: {self._host}:{self._port} unreachable after {attempts} attempts: {last_error!r}"
        ) from last_error

    @staticmethod
    def _decode(method: str, status: int, raw: bytes) -> Any:
        if status == 401:
            raise NodeUnavailableError(f"{method}: HTTP 401, RPC credentials rejected")
        try:
            payload = json.loads(raw, parse_float=Decimal)
        except ValueError as exc:
            raise NodeUnavailableError(f"{method}: HTTP {status}, response is not JSON: {raw[:200]!r}") from exc
        if not isinstance(payload, dict) or ("result" not in payload and "error" not in payload):
            raise NodeUnavailableError(f"{method}: HTTP {status}, not a JSON-RPC response: {raw[:200]!r}")
        error = payload.get("error")
        if error:
            raise RPCError(int(error.get("code", RPC_MISC_ERROR)), str(error.get("message", "")), method)
        return payload.get("result")

    # -- chain ----------------------------------------------------------------------------------------------

    def getblockchaininfo(self) -> dict[str, Any]:
        """Chain name, height, best block hash, median time past, ..."""
        return self.call("getblockchaininfo")

    def getblockcount(self) -> int:
        """Height of the active chain's tip."""
        return int(self.call("getblockcount"))

    def getbestblockhash(self) -> str:
        """Hash of the active chain's tip."""
        return str(self.call("getbestblockhash"))

    def getblockhash(self, height: int) -> str:
        """Hash of the active-chain block at `height`."""
        _check_int("height", height, 0)
        return str(self.call("getblockhash", height))

    def getblock(self, blockhash: str, verbosity: int = 1) -> dict[str, Any] | str:
        """Block as hex (0), with txids (1) or with decoded transactions (2)."""
        _check_hex("blockhash", blockhash, 32)
        if verbosity not in (0, 1, 2):
            raise ValueError("verbosity must be 0, 1 or 2")
        return self.call("getblock", blockhash, verbosity)

    def getblockheader(self, blockhash: str, verbose: bool = True) -> dict[str, Any] | str:
        """Block header (JSON, or hex when not verbose)."""
        _check_hex("blockhash", blockhash, 32)
        return self.call("getblockheader", blockhash, verbose)

    # -- transactions ---------------------------------------------------------------------------------------

    def getrawtransaction(self, txid: str, verbose: bool = True, blockhash: str | None = None) -> Any:
        """Decoded transaction with `confirmations`/`blockhash` when confirmed (hex string if not verbose)."""
        _check_hex("txid", txid, 32)
        if blockhash is not None:
            _check_hex("blockhash", blockhash, 32)
            return self.call("getrawtransaction", txid, 1 if verbose else 0, blockhash)
        return self.call("getrawtransaction", txid, 1 if verbose else 0)

    def gettxout(self, txid: str, vout: int, include_mempool: bool = True) -> dict[str, Any] | None:
        """The unspent output `txid:vout`, or None when it is spent or unknown."""
        _check_hex("txid", txid, 32)
        _check_int("vout", vout, 0)
        return self.call("gettxout", txid, vout, include_mempool)

    def sendrawtransaction(self, tx_hex: str, maxfeerate: Decimal | None = None) -> str:
        """Submit a transaction to the mempool and relay it; returns its txid."""
        _check_hex("tx_hex", tx_hex)
        if maxfeerate is None:
            return str(self.call("sendrawtransaction", tx_hex))
        return str(self.call("sendrawtransaction", tx_hex, Decimal(maxfeerate)))

    def testmempoolaccept(self, tx_hexes: list[str], maxfeerate: Decimal | None = None) -> list[dict[str, Any]]:
        """Dry-run mempool acceptance: `{txid, allowed, reject-reason?, vsize?, fees?}` per transaction."""
        if isinstance(tx_hexes, str):
            raise TypeError("testmempoolaccept takes a list of raw transactions")
        for tx_hex in tx_hexes:
            _check_hex("tx_hex", tx_hex)
        if maxfeerate is None:
            return self.call("testmempoolaccept", list(tx_hexes))
        return self.call("testmempoolaccept", list(tx_hexes), Decimal(maxfeerate))

    def getrawmempool(self, verbose: bool = False) -> list[str] | dict[str, Any]:
        """Txids in the mempool (or a dict of entries when verbose)."""
        return self.call("getrawmempool", verbose)

    def estimatesmartfee(self, conf_target: int, estimate_mode: str = "conservative") -> dict[str, Any]:
        """Fee rate estimate in BTC/kvB (`feerate`), or `errors` when the node has no estimate."""
        _check_int("conf_target", conf_target, 1)
        return self.call("estimatesmartfee", conf_target, estimate_mode)

    def scantxoutset(self, descriptors: list[str]) -> dict[str, Any]:
        """Scan the UTXO set for descriptors such as `addr(ADDRESS)` or `raw(SCRIPTHEX)`."""
        if isinstance(descriptors, str):
            raise TypeError("scantxoutset takes a list of descriptors")
        return self.call("scantxoutset", "start", list(descriptors))

    def scan_script_utxos(self, script_pubkey_hex: str) -> list[dict[str, Any]]:
        """Unspent outputs paying exactly `script_pubkey_hex`, each with an extra integer `sats` field."""
        _check_hex("script_pubkey_hex", script_pubkey_hex)
        result = self.scantxoutset([f"raw({script_pubkey_hex})"])
        unspents = []
        for utxo in result.get("unspents", []):
            unspents.append({**utxo, "sats": btc_to_sats(utxo["amount"])})
        return unspents

    # -- mining (regtest) -----------------------------------------------------------------------------------

    def generatetoaddress(self, nblocks: int, address: str) -> list[str]:
        """Mine `nblocks` blocks paying the coinbase to `address`; returns their hashes."""
        _check_int("nblocks", nblocks, 0)
        return list(self.call("generatetoaddress", nblocks, address))

    def generateblock(self, output: str, transactions: list[str], submit: bool = True) -> dict[str, Any]:
        """Mine one block with exactly `transactions` (raw hex or mempool txids); returns `{hash[, hex]}`."""
        if isinstance(transactions, str):
            raise TypeError("generateblock takes a list of transactions")
        return self.call("generateblock", output, list(transactions), submit)

    def submitblock(self, block_hex: str) -> str | None:
        """Submit a serialized block: None when accepted, else Core's reason string."""
        _check_hex("block_hex", block_hex)
        return self.call("submitblock", block_hex)

    # -- helpers ---------------------------------------------------------------------------------------------

    def gettxout_sats(self, txid: str, vout: int, include_mempool: bool = True) -> int | None:
        """Value of the unspent output `txid:vout` in satoshis, or None when spent or unknown."""
        utxo = self.gettxout(txid, vout, include_mempool)
        return None if utxo is None else btc_to_sats(utxo["value"])

    def confirmations(self, txid: str) -> int:
        """Confirmations of `txid` (0 in the mempool); RPCError(-5) when the node does not know it."""
        tx = self.getrawtransaction(txid, True)
        return int(tx.get("confirmations", 0))

    def get_utxo(self, txid: str, vout: int, include_mempool: bool = True) -> Utxo | None:
        """The unspent output `txid:vout` as integers and bytes, or None when it is spent or unknown."""
        result = self.gettxout(txid, vout, include_mempool)
        if result is None:
            return None
        return Utxo(
            txid=txid,
            vout=vout,
            sats=btc_to_sats(result["value"]),
            script_pubkey=bytes.fromhex(result["scriptPubKey"]["hex"]),
            confirmations=int(result["confirmations"]),
            coinbase=bool(result.get("coinbase", False)),
        )

    def broadcast(self, tx_hex: str, txid: str) -> str:
        """Idempotent `sendrawtransaction` for workers that may run twice: when the node refuses the
        transaction but already knows it (in its mempool, or confirmed: needs `-txindex` on a real bitcoind),
        return `txid`; otherwise re-raise the refusal. A copy with another witness (same txid) counts as known.
        """
        _check_hex("txid", txid, 32)
        try:
            return self.sendrawtransaction(tx_hex)
        except RPCError as refusal:
            try:
                known = self.getrawtransaction(txid, False)
            except RPCError:
                raise refusal from None
            if not isinstance(known, str) or not _same_txid(known, tx_hex):
                raise
            return txid


@dataclass(frozen=True)
class Utxo:
    """An unspent output as the node reports it, converted at the edge (sats as int, script as bytes)."""

    txid: str
    vout: int
    sats: int
    script_pubkey: bytes
    confirmations: int
    coinbase: bool


def _same_txid(known_hex: str, submitted_hex: str) -> bool:
    """True when both serializations hash to the same txid (they may differ only by witness)."""
    try:
        return _strip_witness(bytes.fromhex(known_hex)) == _strip_witness(bytes.fromhex(submitted_hex))
    except (IndexError, ValueError):
        return False


def _strip_witness(raw: bytes) -> bytes:
    """The non-witness serialization of a (BIP-144) transaction (what its txid hashes)."""
    if len(raw) < 10 or raw[4:6] != b"\x00\x01":
        return raw
    pos = 6

    def compact() -> int:
        nonlocal pos
        first = raw[pos]
        pos += 1
        width = {0xFD: 2, 0xFE: 4, 0xFF: 8}.get(first, 0)
        if not width:
            return first
        value = int.from_bytes(raw[pos : pos + width], "little")
        pos += width
        return value

    n_in = compact()
    for _ in range(n_in):
        pos += 36
        script_len = compact()
        pos += script_len + 4
    n_out = compact()
    for _ in range(n_out):
        pos += 8
        script_len = compact()
        pos += script_len
    body_end = pos
    for _ in range(n_in):
        for _ in range(compact()):
            item_len = compact()
            pos += item_len
    return raw[:4] + raw[6:body_end] + raw[pos : pos + 4]


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}")


def _check_hex(name: str, value: object, length: int | None = None) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise ValueError(f"{name} is not hex") from exc
    if length is not None and len(raw) != length:
        raise ValueError(f"{name} must be {length} bytes")
