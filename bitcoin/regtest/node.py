"""An embedded regtest node whose blocks are validated by Bitcoin Core's consensus code (libbitcoinkernel).

The kernel (`pbk`) stores blocks, validates them (scripts included) and follows the most-work chain.
Everything else a wallet-less `bitcoind` offers to this project is built here, in Python, around it:

* a UTXO index, a transaction index and per-block undo data, updated on every connect *and* disconnect
  (reorg), re-synchronised from the kernel's active chain after it changes (the kernel is the truth);
* a mempool with Core's checks and reject reasons (missing inputs, conflicts, coinbase maturity, value,
  absolute locktime, BIP-68 relative locks, dust, minimum relay fee), each input verified with the kernel's
  script interpreter (`ScriptPubkey.verify`, all prevouts supplied for taproot); a conflicting transaction
  replaces the ones it conflicts with (and their descendants) under Core 28's full-RBF rules (no signalling
  needed; higher fee rate than each direct conflict, more absolute fee plus the incremental relay fee for its
  own size, no new unconfirmed inputs, at most 100 evictions), refused with Core's reasons otherwise;
* block assembly (BIP-34 height, BIP-141 witness commitment, merkle root, regtest proof of work, time above
  the median time past) for `generatetoaddress` / `generateblock`, and `submitblock`;
* a development faucet (`sendtoaddress`) spending the node's own coinbase outputs.

Durability: the kernel flushes its block index and chainstate only when it is closed cleanly, although every
block is written to its `blk*.dat` files at once. A marker file (`node.dirty`) exists while the node runs; a clean
`close()` writes an index snapshot and removes it. On start after an unclean exit (marker present) the kernel
reindexes: its databases are wiped and rebuilt from the block files (Bitcoin Core's `-reindex`), then this node's
indexes are rebuilt from the kernel's active chain; they are also rebuilt when the snapshot is missing or stale.
The mempool survives only a clean shutdown (like Core's mempool.dat).

All public methods take one re-entrant lock, so the node may be shared by the threads of an HTTP server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pbk

from bitcoin.regtest.address import InvalidAddressError, address_to_script, script_to_address, script_type
from bitcoin.regtest.mining import REGTEST_BITS, assemble_block, block_subsidy
from bitcoin.regtest.serialize import (
    LOCKTIME_THRESHOLD,
    MAX_MONEY,
    SEQUENCE_FINAL,
    Block,
    BlockHeader,
    DeserializationError,
    OutPoint,
    Tx,
    TxIn,
    TxOut,
)
from bitcoin.regtest.wallet import OUTPUT_VBYTES, P2WPKH_INPUT_VBYTES, TX_OVERHEAD_VBYTES, FaucetKey

log = logging.getLogger(__name__)

# Bitcoin Core RPC error codes used by the node.
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27

COIN = 100_000_000
COINBASE_MATURITY = 100
MAX_BLOCK_WEIGHT = 4_000_000
BLOCK_RESERVED_WEIGHT = 8_000  # header, transaction count and coinbase, as Core's miner reserves
MAX_STANDARD_TX_WEIGHT = 400_000
MAX_STANDARD_VERSION = 3
MIN_STANDARD_TX_NONWITNESS_SIZE = 65
MAX_STANDARD_SCRIPTSIG_SIZE = 1650
MAX_OP_RETURN_RELAY = 83
MIN_RELAY_FEE_SAT_PER_KVB = 1000
INCREMENTAL_RELAY_FEE_SAT_PER_KVB = 1000  # Core's -incrementalrelayfee default (BIP-125 rule 4)
MAX_REPLACEMENT_CANDIDATES = 100  # Core's limit on transactions one replacement evicts (BIP-125 rule 5)
DEFAULT_MAX_FEE_RATE = Decimal("0.10")  # BTC/kvB, sendrawtransaction's default maxfeerate
FAUCET_FEE_SAT_PER_VB = 2
SEQUENCE_LOCKTIME_DISABLE_FLAG = 1 << 31
SEQUENCE_LOCKTIME_TYPE_FLAG = 1 << 22
SEQUENCE_LOCKTIME_MASK = 0x0000FFFF
SEQUENCE_LOCKTIME_GRANULARITY = 9
MEMPOOL_HEIGHT = 0x7FFFFFFF
MAX_PACKAGE_COUNT = 25
SNAPSHOT_VERSION = 1

_VERIFY_FLAGS = pbk.ScriptVerificationFlags.ALL


class NodeRPCError(Exception):
    """An error to be returned to the RPC caller with Bitcoin Core's code and message."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"({code}) {message}")


class TxRejected(Exception):
    """A transaction failed a mempool or block check; `reason` is Core's reject reason."""

    def __init__(self, reason: str, debug: str = "", code: int = RPC_VERIFY_REJECTED) -> None:
        self.reason = reason
        self.debug = debug
        self.code = code
        super().__init__(f"{reason}, {debug}" if debug else reason)


@dataclass(frozen=True)
class Coin:
    """An unspent output with the height of the block that created it (MEMPOOL_HEIGHT if unconfirmed)."""

    value: int
    script_pubkey: bytes
    height: int
    coinbase: bool


@dataclass
class MempoolEntry:
    """A transaction waiting in the mempool."""

    tx: Tx
    fee: int
    vsize: int
    time: int
    height: int


def dust_threshold(script_pubkey: bytes) -> int:
    """Bitcoin Core's dust threshold at the default 3 sat/vB dust relay fee."""
    if script_pubkey[:1] == b"\x6a":
        return 0
    size = 8 + len(_compact(len(script_pubkey))) + len(script_pubkey)
    is_witness = (
        4 <= len(script_pubkey) <= 42
        and (script_pubkey[0] == 0 or 0x51 <= script_pubkey[0] <= 0x60)
        and script_pubkey[1] + 2 == len(script_pubkey)
    )
    size += 67 if is_witness else 148
    return size * 3


def _compact(n: int) -> bytes:
    return bytes([n]) if n < 0xFD else b"\xfd" + n.to_bytes(2, "little")


def btc(sats: int) -> Decimal:
    """Sats as a BTC Decimal with 8 places (how Core prints amounts)."""
    return (Decimal(sats) / COIN).quantize(Decimal("0.00000001"))


class CoinView:
    """Coins visible to a transaction check: a base lookup plus coins created/spent on top of it."""

    def __init__(self, base: Callable[[OutPoint], Coin | None]) -> None:
        self._base = base
        self.added: dict[OutPoint, Coin] = {}
        self.spent: set[OutPoint] = set()

    def get(self, outpoint: OutPoint) -> Coin | None:
        """The coin at `outpoint` if it exists and is unspent in this view."""
        if outpoint in self.spent:
            return None
        coin = self.added.get(outpoint)
        return coin if coin is not None else self._base(outpoint)

    def apply(self, tx: Tx, height: int) -> None:
        """Spend the inputs of `tx` and add its outputs."""
        for txin in tx.vin:
            self.spent.add(txin.prevout)
        txid = tx.txid
        for index, txout in enumerate(tx.vout):
            self.added[OutPoint(txid, index)] = Coin(txout.value, txout.script_pubkey, height, False)


class RegtestNode:
    """A regtest node: kernel-validated chain, UTXO/tx indexes, mempool, miner and faucet."""

    def __init__(self, datadir: str | Path) -> None:
        self.datadir = Path(datadir).absolute()
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._checked: dict[bytes, tuple[pbk.ValidationMode, pbk.BlockValidationResult]] = {}
        self._closed = False
        self._started = time.monotonic()
        self._extranonce = int(time.time() * 1000) & 0xFFFFFFFF
        self.faucet = FaucetKey.load_or_create(self.datadir / "faucet.key")
        self._marker = self.datadir / "node.dirty"
        self._snapshot = self.datadir / "indexes.json"
        unclean = self._marker.exists()
        self._callbacks = pbk.ValidationInterfaceCallbacks(block_checked=self._on_block_checked)
        self._chainman = self._open_kernel(reindex=unclean)
        self._marker.write_text(str(os.getpid()))
        self._reset_indexes()
        self.rebuilt_indexes = unclean or not self._load_snapshot()
        if self.rebuilt_indexes:
            log.info("rebuilding indexes from the kernel's active chain (unclean exit or no snapshot)")
            self._reset_indexes()
            self._sync_with_kernel()
        with self._lock:
            self._sync_with_kernel()

    def _open_kernel(self, *, reindex: bool) -> pbk.ChainstateManager:
        """Open the kernel's chainstate; with `reindex`, rebuild its databases from the block files."""
        kernel_dir = self.datadir / "kernel"
        context = pbk.make_context(pbk.ChainType.REGTEST, self._callbacks)
        options = pbk.ChainstateManagerOptions(context, str(kernel_dir), str(kernel_dir / "blocks"))
        if reindex:
            log.warning("unclean shutdown detected: reindexing the kernel from its block files")
            options.set_wipe_dbs(True, True)
        chainman = pbk.ChainstateManager(options)
        if reindex:
            chainman.import_blocks([])
            self._checked.clear()
            log.warning("reindex done at height %d", chainman.get_active_chain().height)
        return chainman

    # -- lifecycle -------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Persist the indexes and mempool, flush and release the kernel, remove the dirty marker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._write_snapshot()
            chainman = self._chainman
            del self._chainman
            chainman.__del__()  # destroys the ChainstateManager: the kernel flushes its state to disk
            self._snapshot_tmp().replace(self._snapshot)
            self._marker.unlink(missing_ok=True)

    def __enter__(self) -> RegtestNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise NodeRPCError(RPC_MISC_ERROR, "node is shut down")

    def _on_block_checked(self, user_data: object, block: pbk.Block, state: pbk.BlockValidationState) -> None:
        self._checked[bytes(block.block_hash)] = (state.validation_mode, state.block_validation_result)

    # -- indexes ---------------------------------------------------------------------------------------------

    def _reset_indexes(self) -> None:
        self._hashes: list[bytes] = []
        self._times: list[int] = []
        self._utxos: dict[OutPoint, Coin] = {}
        self._txindex: dict[bytes, tuple[bytes, int]] = {}
        self._undo: dict[bytes, list[tuple[OutPoint, Coin]]] = {}
        self._feerates: dict[bytes, list[Decimal]] = {}
        self._mempool: dict[bytes, MempoolEntry] = {}
        self._mempool_spends: dict[OutPoint, bytes] = {}

    def _snapshot_tmp(self) -> Path:
        return self._snapshot.with_suffix(".tmp")

    def _write_snapshot(self) -> None:
        data = {
            "version": SNAPSHOT_VERSION,
            "hashes": [h.hex() for h in self._hashes],
            "times": self._times,
            "utxos": [
                [op.txid.hex(), op.vout, c.value, c.script_pubkey.hex(), c.height, c.coinbase]
                for op, c in self._utxos.items()
            ],
            "txindex": [[txid.hex(), bh.hex(), pos] for txid, (bh, pos) in self._txindex.items()],
            "undo": {
                bh.hex(): [
                    [op.txid.hex(), op.vout, c.value, c.script_pubkey.hex(), c.height, c.coinbase] for op, c in u
                ]
                for bh, u in self._undo.items()
            },
            "feerates": {bh.hex(): [str(r) for r in rates] for bh, rates in self._feerates.items()},
            "mempool": [[e.tx.serialize().hex(), e.time] for e in self._mempool.values()],
        }
        self._snapshot_tmp().write_text(json.dumps(data))

    def _load_snapshot(self) -> bool:
        """Load the clean-shutdown snapshot if it matches the kernel's tip; False when a rebuild is needed."""
        try:
            data = json.loads(self._snapshot.read_text())
        except (OSError, ValueError):
            return False
        if data.get("version") != SNAPSHOT_VERSION:
            return False
        chain = self._chainman.get_active_chain()
        hashes = [bytes.fromhex(h) for h in data["hashes"]]
        if len(hashes) != chain.height + 1 or hashes[-1] != bytes(chain.block_tree_entries[chain.height].block_hash):
            return False

        def coin(row: list[Any]) -> tuple[OutPoint, Coin]:
            return OutPoint(bytes.fromhex(row[0]), row[1]), Coin(row[2], bytes.fromhex(row[3]), row[4], row[5])

        self._hashes = hashes
        self._times = list(data["times"])
        self._utxos = dict(coin(row) for row in data["utxos"])
        self._txindex = {bytes.fromhex(t): (bytes.fromhex(b), p) for t, b, p in data["txindex"]}
        self._undo = {bytes.fromhex(b): [coin(row) for row in rows] for b, rows in data["undo"].items()}
        self._feerates = {bytes.fromhex(b): [Decimal(r) for r in rates] for b, rates in data["feerates"].items()}
        for raw_hex, entered in data["mempool"]:
            try:
                self._accept_to_mempool(Tx.from_hex(raw_hex), entered_at=entered, allow_replacement=False)
            except TxRejected as exc:
                log.info("dropping persisted mempool transaction: %s", exc)
        return True

    def _tip_height(self) -> int:
        return len(self._hashes) - 1

    def _median_time_past(self, height: int) -> int:
        """Median time of the 11 blocks ending at `height` (Core's GetMedianTimePast)."""
        if height < 0:
            return 0
        times = sorted(self._times[max(0, height - 10) : height + 1])
        return times[len(times) // 2]

    def _read_block(self, entry: pbk.BlockTreeEntry) -> Block:
        return Block.from_bytes(bytes(self._chainman.blocks[entry]))

    def _entry(self, block_hash: bytes) -> pbk.BlockTreeEntry | None:
        if len(block_hash) != 32:
            return None
        try:
            return self._chainman.block_tree_entries[pbk.BlockHash(block_hash)]
        except KeyError:
            return None

    def _connect(self, block: Block, height: int) -> None:
        block_hash = block.hash
        undo: list[tuple[OutPoint, Coin]] = []
        rates: list[Decimal] = []
        for position, tx in enumerate(block.txs):
            coinbase = position == 0
            txid = tx.txid
            spent_value = 0
            if not coinbase:
                for txin in tx.vin:
                    coin = self._utxos.pop(txin.prevout)
                    undo.append((txin.prevout, coin))
                    spent_value += coin.value
                fee = spent_value - sum(o.value for o in tx.vout)
                rates.append(Decimal(fee * 1000) / tx.vsize)
            for index, txout in enumerate(tx.vout):
                if txout.script_pubkey[:1] == b"\x6a" or height == 0:
                    continue  # provably unspendable (OP_RETURN, genesis coinbase): never in the UTXO set
                self._utxos[OutPoint(txid, index)] = Coin(txout.value, txout.script_pubkey, height, coinbase)
            self._txindex[txid] = (block_hash, position)
        self._undo[block_hash] = undo
        self._feerates[block_hash] = rates
        self._hashes.append(block_hash)
        self._times.append(block.header.time)

    def _disconnect_tip(self) -> Block:
        block_hash = self._hashes[-1]
        entry = self._entry(block_hash)
        if entry is None:
            raise RuntimeError("kernel lost a block the index still has")
        block = self._read_block(entry)
        for tx in block.txs:
            txid = tx.txid
            for index in range(len(tx.vout)):
                self._utxos.pop(OutPoint(txid, index), None)
            self._txindex.pop(txid, None)
        for outpoint, coin in reversed(self._undo.pop(block_hash)):
            self._utxos[outpoint] = coin
        self._feerates.pop(block_hash, None)
        self._hashes.pop()
        self._times.pop()
        return block

    def _sync_with_kernel(self) -> bool:
        """Make the indexes follow the kernel's active chain; return True when the chain changed."""
        chain = self._chainman.get_active_chain()
        kernel_height = chain.height
        entries = chain.block_tree_entries
        fork = min(self._tip_height(), kernel_height)
        while fork >= 0 and bytes(entries[fork].block_hash) != self._hashes[fork]:
            fork -= 1
        if fork == self._tip_height() and fork == kernel_height:
            return False
        disconnected: list[Block] = []
        while self._tip_height() > fork:
            disconnected.append(self._disconnect_tip())
        for height in range(fork + 1, kernel_height + 1):
            self._connect(self._read_block(entries[height]), height)
        self._refill_mempool(reversed(disconnected))
        return True

    def _refill_mempool(self, disconnected: Iterable[Block]) -> None:
        """After a chain change: re-add transactions of disconnected blocks, then re-check the old mempool."""
        now = int(time.time())
        candidates: list[tuple[Tx, int, int | None]] = [
            (tx, now, None) for block in disconnected for tx in block.txs[1:]
        ]
        # A transaction still waiting keeps its entry time and height (getmempoolentry's "time" and "height").
        candidates += [(entry.tx, entry.time, entry.height) for entry in self._mempool.values()]
        self._mempool.clear()
        self._mempool_spends.clear()
        for tx, entered, entered_height in candidates:
            if tx.txid in self._txindex:
                continue
            try:
                self._accept_to_mempool(tx, entered_at=entered, entered_height=entered_height, allow_replacement=False)
            except TxRejected as exc:
                log.info("transaction %s leaves the mempool: %s", tx.txid_hex, exc)

    # -- transaction checks ----------------------------------------------------------------------------------

    def _confirmed_coin(self, outpoint: OutPoint) -> Coin | None:
        return self._utxos.get(outpoint)

    def _mempool_coin(self, outpoint: OutPoint) -> Coin | None:
        coin = self._utxos.get(outpoint)
        if coin is not None:
            return coin
        entry = self._mempool.get(outpoint.txid)
        if entry is not None and outpoint.vout < len(entry.tx.vout):
            txout = entry.tx.vout[outpoint.vout]
            return Coin(txout.value, txout.script_pubkey, MEMPOOL_HEIGHT, False)
        return None

    @staticmethod
    def _check_tx_sanity(tx: Tx) -> None:
        """Core's CheckTransaction (context-free)."""
        if not tx.vin:
            raise TxRejected("bad-txns-vin-empty")
        if not tx.vout:
            raise TxRejected("bad-txns-vout-empty")
        if len(tx.serialize(with_witness=False)) * 4 > MAX_BLOCK_WEIGHT:
            raise TxRejected("bad-txns-oversize")
        total = 0
        for txout in tx.vout:
            if txout.value < 0:
                raise TxRejected("bad-txns-vout-negative")
            if txout.value > MAX_MONEY:
                raise TxRejected("bad-txns-vout-toolarge")
            total += txout.value
            if total > MAX_MONEY:
                raise TxRejected("bad-txns-txouttotal-toolarge")
        if len({txin.prevout for txin in tx.vin}) != len(tx.vin):
            raise TxRejected("bad-txns-inputs-duplicate")
        if tx.is_coinbase():
            if not 2 <= len(tx.vin[0].script_sig) <= 100:
                raise TxRejected("bad-cb-length")
        elif any(txin.prevout.is_null() for txin in tx.vin):
            raise TxRejected("bad-txns-prevout-null")

    def _check_final(self, tx: Tx, height: int, block_time: int, reason: str) -> None:
        """Core's IsFinalTx against the block being built at `height` (time = median time past)."""
        if tx.locktime == 0:
            return
        limit = height if tx.locktime < LOCKTIME_THRESHOLD else block_time
        if tx.locktime < limit:
            return
        if all(txin.sequence == SEQUENCE_FINAL for txin in tx.vin):
            return
        raise TxRejected(reason, f"locktime {tx.locktime} not reached")

    def _check_sequence_locks(self, tx: Tx, coins: list[Coin], height: int, reason: str) -> None:
        """BIP-68: relative locks of version >= 2 transactions, against the block being built at `height`."""
        if tx.version < 2:
            return
        min_height = -1
        min_time = -1
        for txin, coin in zip(tx.vin, coins, strict=True):
            if txin.sequence & SEQUENCE_LOCKTIME_DISABLE_FLAG:
                continue
            coin_height = height if coin.height == MEMPOOL_HEIGHT else coin.height
            value = txin.sequence & SEQUENCE_LOCKTIME_MASK
            if txin.sequence & SEQUENCE_LOCKTIME_TYPE_FLAG:
                coin_time = self._median_time_past(max(coin_height - 1, 0))
                min_time = max(min_time, coin_time + (value << SEQUENCE_LOCKTIME_GRANULARITY) - 1)
            else:
                min_height = max(min_height, coin_height + value - 1)
        if min_height >= height:
            raise TxRejected(reason, f"relative lock needs height {min_height + 1}, next block is {height}")
        if min_time >= self._median_time_past(height - 1):
            raise TxRejected(reason, f"relative lock needs median time past > {min_time}")

    @staticmethod
    def _verify_scripts(tx: Tx, coins: list[Coin]) -> None:
        """Run Bitcoin Core's script interpreter on every input, with all spent outputs (taproot)."""
        for coin in coins:
            if not 0 <= coin.value <= MAX_MONEY:
                raise TxRejected("bad-txns-inputvalues-outofrange")
        kernel_tx = pbk.Transaction(tx.serialize())
        spent = [pbk.TransactionOutput(pbk.ScriptPubkey(c.script_pubkey), c.value) for c in coins]
        precomputed = pbk.script.PrecomputedTransactionData(kernel_tx, spent)
        for index, coin in enumerate(coins):
            script = pbk.ScriptPubkey(coin.script_pubkey)
            try:
                ok = script.verify(coin.value, kernel_tx, precomputed, index, _VERIFY_FLAGS)
            except pbk.ScriptVerifyException as exc:
                raise TxRejected(f"mandatory-script-verify-flag-failed ({exc}, input {index})") from exc
            if not ok:
                # Like Core, the reason carries the detail in parentheses; the kernel reports no script error code.
                raise TxRejected(f"mandatory-script-verify-flag-failed (Script evaluation failed, input {index})")

    def _check_inputs(self, tx: Tx, view: CoinView, height: int) -> tuple[list[Coin], int]:
        """Look up every input, check maturity and value balance; return (spent coins, fee)."""
        coins: list[Coin] = []
        for txin in tx.vin:
            coin = view.get(txin.prevout)
            if coin is None:
                raise TxRejected(
                    "bad-txns-inputs-missingorspent",
                    f"{txin.prevout.txid_hex}:{txin.prevout.vout} is missing or spent",
                    RPC_VERIFY_ERROR,
                )
            coins.append(coin)
        for coin in coins:
            if coin.coinbase and height - coin.height < COINBASE_MATURITY:
                raise TxRejected(
                    "bad-txns-premature-spend-of-coinbase",
                    f"tried to spend coinbase at depth {height - coin.height}",
                )
        value_in = sum(c.value for c in coins)
        value_out = sum(o.value for o in tx.vout)
        if value_in > MAX_MONEY:
            raise TxRejected("bad-txns-inputvalues-outofrange")
        if value_in < value_out:
            raise TxRejected("bad-txns-in-belowout", f"value in ({btc(value_in)}) < value out ({btc(value_out)})")
        return coins, value_in - value_out

    def _check_for_mempool(
        self, tx: Tx, max_fee_rate: Decimal | None, *, allow_replacement: bool = True
    ) -> tuple[int, list[OutPoint], set[bytes]]:
        """Every mempool check of `tx` (chain + mempool), in Core's order; return (fee, spent outpoints, mempool
        transactions it replaces); no side effects. Without `allow_replacement` a conflict is refused at once."""
        self._check_tx_sanity(tx)
        if tx.is_coinbase():
            raise TxRejected("coinbase")
        _check_standard(tx)
        txid = tx.txid
        if txid in self._mempool:
            raise TxRejected("txn-already-in-mempool")
        if any(OutPoint(txid, i) in self._utxos for i in range(len(tx.vout))):
            raise TxRejected("txn-already-known", code=RPC_VERIFY_ALREADY_IN_CHAIN)
        height = self._tip_height() + 1
        self._check_final(tx, height, self._median_time_past(height - 1), "non-final")
        conflicts: set[bytes] = set()
        for txin in tx.vin:
            conflict = self._mempool_spends.get(txin.prevout)
            if conflict is not None:
                if not allow_replacement:
                    raise TxRejected("txn-mempool-conflict", f"spends an output spent by {conflict[::-1].hex()}")
                conflicts.add(conflict)
        coins, fee = self._check_inputs(tx, CoinView(self._mempool_coin), height)
        self._check_sequence_locks(tx, coins, height, "non-BIP68-final")
        vsize = tx.vsize
        min_fee = (vsize * MIN_RELAY_FEE_SAT_PER_KVB + 999) // 1000
        if fee < min_fee:
            raise TxRejected("min relay fee not met", f"{fee} < {min_fee}")
        if max_fee_rate is not None and max_fee_rate > 0 and Decimal(fee) > max_fee_rate * COIN * vsize / 1000:
            raise TxRejected("max-fee-exceeded", f"fee {fee} sats is above maxfeerate {max_fee_rate} BTC/kvB")
        replaced = self._replacement_checks(tx, fee, vsize, conflicts) if conflicts else set()
        self._verify_scripts(tx, coins)
        return fee, [txin.prevout for txin in tx.vin], replaced

    def _descendants(self, txids: Iterable[bytes]) -> set[bytes]:
        """`txids` and every mempool transaction spending their outputs, recursively."""
        found: set[bytes] = set()
        queue = list(txids)
        while queue:
            txid = queue.pop()
            if txid in found:
                continue
            found.add(txid)
            for index in range(len(self._mempool[txid].tx.vout)):
                spender = self._mempool_spends.get(OutPoint(txid, index))
                if spender is not None:
                    queue.append(spender)
        return found

    def _mempool_ancestors(self, tx: Tx) -> set[bytes]:
        """Every mempool transaction `tx` spends from, recursively."""
        found: set[bytes] = set()
        queue = [txin.prevout.txid for txin in tx.vin]
        while queue:
            txid = queue.pop()
            entry = self._mempool.get(txid)
            if entry is None or txid in found:
                continue
            found.add(txid)
            queue.extend(txin.prevout.txid for txin in entry.tx.vin)
        return found

    def _replacement_checks(self, tx: Tx, fee: int, vsize: int, conflicts: set[bytes]) -> set[bytes]:
        """Core 28's full-RBF ReplacementChecks (BIP-125 rules 2 to 6, no signalling); return every mempool
        transaction the replacement evicts (its direct conflicts and their descendants)."""
        txid_hex = tx.txid_hex
        if self._mempool_ancestors(tx) & conflicts:  # Core's PreChecks (EntriesAndTxidsDisjoint)
            raise TxRejected("bad-txns-spends-conflicting-tx", f"{txid_hex} spends conflicting transaction")
        new_rate = fee * 1000 // vsize  # CFeeRate: sat/kvB, truncated
        for conflict in sorted(conflicts):
            entry = self._mempool[conflict]
            old_rate = entry.fee * 1000 // entry.vsize
            if new_rate <= old_rate:  # rule 6
                raise TxRejected(
                    "insufficient fee",
                    f"rejecting replacement {txid_hex}; new feerate {btc(new_rate)} BTC/kvB <= "
                    f"old feerate {btc(old_rate)} BTC/kvB",
                )
        evicted = self._descendants(conflicts)
        if len(evicted) > MAX_REPLACEMENT_CANDIDATES:  # rule 5
            raise TxRejected(
                "too many potential replacements",
                f"rejecting replacement {txid_hex}; too many potential replacements "
                f"({len(evicted)} > {MAX_REPLACEMENT_CANDIDATES})",
            )
        parents_of_conflicts = {txin.prevout.txid for c in conflicts for txin in self._mempool[c].tx.vin}
        for index, txin in enumerate(tx.vin):  # rule 2
            if txin.prevout.txid not in parents_of_conflicts and txin.prevout.txid in self._mempool:
                raise TxRejected(
                    "replacement-adds-unconfirmed", f"replacement {txid_hex} adds unconfirmed input, idx {index}"
                )
        evicted_fees = sum(self._mempool[t].fee for t in evicted)
        if fee < evicted_fees:  # rule 3
            raise TxRejected(
                "insufficient fee",
                f"rejecting replacement {txid_hex}, less fees than conflicting txs; {btc(fee)} < {btc(evicted_fees)}",
            )
        relay_fee = vsize * INCREMENTAL_RELAY_FEE_SAT_PER_KVB // 1000
        if fee - evicted_fees < relay_fee:  # rule 4
            raise TxRejected(
                "insufficient fee",
                f"rejecting replacement {txid_hex}, not enough additional fees to relay; "
                f"{btc(fee - evicted_fees)} < {btc(relay_fee)}",
            )
        return evicted

    def _remove_from_mempool(self, txids: Iterable[bytes]) -> None:
        for txid in txids:
            entry = self._mempool.pop(txid)
            for txin in entry.tx.vin:
                if self._mempool_spends.get(txin.prevout) == txid:
                    del self._mempool_spends[txin.prevout]

    def _accept_to_mempool(
        self,
        tx: Tx,
        *,
        entered_at: int | None = None,
        entered_height: int | None = None,
        max_fee_rate: Decimal | None = None,
        allow_replacement: bool = True,
    ) -> MempoolEntry:
        fee, spends, replaced = self._check_for_mempool(tx, max_fee_rate, allow_replacement=allow_replacement)
        if replaced:
            log.info("transaction %s replaces %s", tx.txid_hex, ", ".join(t[::-1].hex() for t in sorted(replaced)))
            self._remove_from_mempool(replaced)
        height = self._tip_height() if entered_height is None else min(entered_height, self._tip_height())
        entry = MempoolEntry(tx, fee, tx.vsize, entered_at or int(time.time()), height)
        txid = tx.txid
        self._mempool[txid] = entry
        for outpoint in spends:
            self._mempool_spends[outpoint] = txid
        return entry

    # -- public API: transactions ----------------------------------------------------------------------------

    def send_raw_transaction(self, raw: bytes, max_fee_rate: Decimal | None = DEFAULT_MAX_FEE_RATE) -> str:
        """Add a transaction to the mempool (idempotent for one already there); return its txid."""
        tx = _parse_tx(raw)
        with self._lock:
            self._check_open()
            if tx.txid in self._mempool:
                return tx.txid_hex
            try:
                self._accept_to_mempool(tx, max_fee_rate=max_fee_rate)
            except TxRejected as exc:
                if exc.reason == "txn-already-known":
                    raise NodeRPCError(RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction outputs already in utxo set") from exc
                if exc.reason == "max-fee-exceeded":
                    raise NodeRPCError(
                        RPC_VERIFY_ERROR,
                        "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)",
                    ) from exc
                raise NodeRPCError(exc.code, str(exc)) from exc
            return tx.txid_hex

    def test_mempool_accept(self, raws: list[bytes], max_fee_rate: Decimal | None = DEFAULT_MAX_FEE_RATE) -> list[dict]:
        """Core's testmempoolaccept. A package (up to 25, parents first) is checked in order, each transaction
        against the chain, the mempool and the package's earlier transactions; nothing is kept."""
        if not 1 <= len(raws) <= MAX_PACKAGE_COUNT:
            raise NodeRPCError(
                RPC_INVALID_PARAMETER, f"Array must contain between 1 and {MAX_PACKAGE_COUNT} transactions."
            )
        txs = [_parse_tx(raw) for raw in raws]
        results: list[dict[str, Any]] = []
        with self._lock:
            self._check_open()
            saved = (dict(self._mempool), dict(self._mempool_spends))
            try:
                for tx in txs:
                    result: dict[str, Any] = {"txid": tx.txid_hex, "wtxid": tx.wtxid[::-1].hex()}
                    try:
                        entry = self._accept_to_mempool(tx, max_fee_rate=max_fee_rate)
                    except TxRejected as exc:
                        reason = "missing-inputs" if exc.reason == "bad-txns-inputs-missingorspent" else exc.reason
                        result.update({"allowed": False, "reject-reason": reason})
                        if exc.debug:
                            result["reject-details"] = str(exc)
                    else:
                        result.update({"allowed": True, "vsize": entry.vsize, "fees": {"base": btc(entry.fee)}})
                    results.append(result)
            finally:
                self._mempool, self._mempool_spends = saved
        return results

    def get_raw_transaction(self, txid: bytes, verbose: bool, block_hash: bytes | None = None) -> Any:
        """A transaction from the mempool or the tx index, Core-style (`confirmations`, `blockhash`)."""
        with self._lock:
            self._check_open()
            if block_hash is not None:
                entry = self._entry(block_hash)
                if entry is None:
                    raise NodeRPCError(RPC_INVALID_ADDRESS_OR_KEY, "Block hash not found")
                block = self._read_block(entry)
                for tx in block.txs:
                    if tx.txid == txid:
                        if not verbose:
                            return tx.serialize().hex()
                        result = self._tx_json(tx, block_hash)
                        return {"in_active_chain": self._in_active_chain(block_hash, entry.height), **result}
                raise NodeRPCError(RPC_INVALID_ADDRESS_OR_KEY, "No such transaction found in the provided block")
            entry_ = self._mempool.get(txid)
            if entry_ is not None:
                return self._tx_json(entry_.tx, None) if verbose else entry_.tx.serialize().hex()
            located = self._txindex.get(txid)
            if located is None:
                raise NodeRPCError(
                    RPC_INVALID_ADDRESS_OR_KEY,
                    "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
                )
            bhash, position = located
            tx = self._read_block(self._entry(bhash)).txs[position]
            return self._tx_json(tx, bhash) if verbose else tx.serialize().hex()

    def get_raw_transaction_from_mempool(self, txid: bytes) -> bytes | None:
        """Raw bytes of a mempool transaction, or None."""
        with self._lock:
            self._check_open()
            entry = self._mempool.get(txid)
            return None if entry is None else entry.tx.serialize()

    def uptime(self) -> int:
        """Seconds since this node object started."""
        return int(time.monotonic() - self._started)

    def get_tx_out(self, txid: bytes, vout: int, include_mempool: bool = True) -> dict | None:
        """The unspent output, or None when spent (in the mempool too if `include_mempool`) or unknown."""
        outpoint = OutPoint(txid, vout)
        with self._lock:
            self._check_open()
            if include_mempool:
                if outpoint in self._mempool_spends:
                    return None
                coin = self._mempool_coin(outpoint)
            else:
                coin = self._confirmed_coin(outpoint)
            if coin is None:
                return None
            confirmations = 0 if coin.height == MEMPOOL_HEIGHT else self._tip_height() - coin.height + 1
            return {
                "bestblock": self._hashes[-1][::-1].hex(),
                "confirmations": confirmations,
                "value": btc(coin.value),
                "scriptPubKey": _script_json(coin.script_pubkey),
                "coinbase": coin.coinbase,
            }

    def get_raw_mempool(self, verbose: bool = False) -> list[str] | dict[str, Any]:
        """Txids in the mempool, or Core-like entries when verbose."""
        with self._lock:
            self._check_open()
            if not verbose:
                return [txid[::-1].hex() for txid in self._mempool]
            return {txid[::-1].hex(): self._mempool_entry_json(e) for txid, e in self._mempool.items()}

    def get_mempool_entry(self, txid: bytes) -> dict[str, Any]:
        """One mempool entry."""
        with self._lock:
            self._check_open()
            entry = self._mempool.get(txid)
            if entry is None:
                raise NodeRPCError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
            return self._mempool_entry_json(entry)

    def _mempool_entry_json(self, entry: MempoolEntry) -> dict[str, Any]:
        depends = sorted({i.prevout.txid[::-1].hex() for i in entry.tx.vin if i.prevout.txid in self._mempool})
        return {
            "vsize": entry.vsize,
            "weight": entry.tx.weight,
            "time": entry.time,
            "height": entry.height,
            "fees": {"base": btc(entry.fee)},
            "depends": depends,
            "wtxid": entry.tx.wtxid[::-1].hex(),
        }

    def scan_tx_out_set(self, scripts: list[bytes]) -> dict[str, Any]:
        """Confirmed unspent outputs paying any of `scripts` (Core's `scantxoutset start`)."""
        wanted = set(scripts)
        with self._lock:
            self._check_open()
            unspents = []
            total = 0
            for outpoint, coin in self._utxos.items():
                if coin.script_pubkey in wanted:
                    total += coin.value
                    unspents.append(
                        {
                            "txid": outpoint.txid_hex,
                            "vout": outpoint.vout,
                            "scriptPubKey": coin.script_pubkey.hex(),
                            "desc": f"raw({coin.script_pubkey.hex()})",
                            "amount": btc(coin.value),
                            "coinbase": coin.coinbase,
                            "height": coin.height,
                            "confirmations": self._tip_height() - coin.height + 1,
                        }
                    )
            unspents.sort(key=lambda u: (u["height"], u["txid"], u["vout"]))
            return {
                "success": True,
                "txouts": len(self._utxos),
                "height": self._tip_height(),
                "bestblock": self._hashes[-1][::-1].hex(),
                "unspents": unspents,
                "total_amount": btc(total),
            }

    def estimate_smart_fee(self, conf_target: int) -> dict[str, Any]:
        """Median fee rate of the last max(conf_target, 6) blocks' transactions; Core's error when none."""
        with self._lock:
            self._check_open()
            depth = max(conf_target, 6)
            rates = [r for h in self._hashes[-depth:] for r in self._feerates.get(h, [])]
            if not rates:
                return {"errors": ["Insufficient data or no feerate found"], "blocks": 0}
            rates.sort()
            median = max(rates[len(rates) // 2], Decimal(MIN_RELAY_FEE_SAT_PER_KVB))
            return {"feerate": btc(int(median)), "blocks": conf_target}

    # -- public API: chain -----------------------------------------------------------------------------------

    def get_block_count(self) -> int:
        """Height of the tip."""
        with self._lock:
            self._check_open()
            return self._tip_height()

    def get_best_block_hash(self) -> str:
        """Hash of the tip."""
        with self._lock:
            self._check_open()
            return self._hashes[-1][::-1].hex()

    def get_block_hash(self, height: int) -> str:
        """Hash of the active-chain block at `height`."""
        with self._lock:
            self._check_open()
            if not 0 <= height <= self._tip_height():
                raise NodeRPCError(RPC_INVALID_PARAMETER, "Block height out of range")
            return self._hashes[height][::-1].hex()

    def get_blockchain_info(self) -> dict[str, Any]:
        """Core's getblockchaininfo (the fields that make sense here)."""
        with self._lock:
            self._check_open()
            height = self._tip_height()
            return {
                "chain": "regtest",
                "blocks": height,
                "headers": self._chainman.best_entry.height,
                "bestblockhash": self._hashes[-1][::-1].hex(),
                "bits": f"{REGTEST_BITS:08x}",
                "difficulty": Decimal("4.656542373906925E-10"),
                "time": self._times[-1],
                "mediantime": self._median_time_past(height),
                "verificationprogress": 1,
                "initialblockdownload": False,
                "pruned": False,
                "warnings": [],
            }

    def get_block(self, block_hash: bytes, verbosity: int = 1) -> Any:
        """A block as hex (0), with txids (1) or decoded transactions (2)."""
        with self._lock:
            self._check_open()
            entry = self._entry(block_hash)
            if entry is None:
                raise NodeRPCError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
            block = self._read_block(entry)
            if verbosity == 0:
                return block.serialize().hex()
            result = self._header_json(entry, block.header)
            raw = block.serialize()
            stripped = 80 + len(_compact(len(block.txs))) + sum(len(t.serialize(False)) for t in block.txs)
            result.update({"nTx": len(block.txs), "size": len(raw), "strippedsize": stripped})
            result["weight"] = stripped * 3 + len(raw)
            if verbosity == 1:
                result["tx"] = [tx.txid_hex for tx in block.txs]
            else:
                result["tx"] = [self._tx_json(tx, None) for tx in block.txs]
                undo = self._undo.get(block_hash) if self._in_active_chain(block_hash, entry.height) else None
                if undo is not None:  # Core adds each transaction's fee when it has the undo data
                    spent = iter(undo)
                    for tx, tx_json in zip(block.txs[1:], result["tx"][1:], strict=True):
                        value_in = sum(next(spent)[1].value for _ in tx.vin)
                        tx_json["fee"] = btc(value_in - sum(o.value for o in tx.vout))
            return result

    def get_block_header(self, block_hash: bytes, verbose: bool = True) -> Any:
        """A block header (JSON or hex)."""
        with self._lock:
            self._check_open()
            entry = self._entry(block_hash)
            if entry is None:
                raise NodeRPCError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
            header = BlockHeader.from_bytes(bytes(entry.block_header))
            return self._header_json(entry, header) if verbose else header.serialize().hex()

    def _in_active_chain(self, block_hash: bytes, height: int) -> bool:
        return height <= self._tip_height() and self._hashes[height] == block_hash

    def _header_json(self, entry: pbk.BlockTreeEntry, header: BlockHeader) -> dict[str, Any]:
        height = entry.height
        block_hash = bytes(entry.block_hash)
        active = self._in_active_chain(block_hash, height)
        result: dict[str, Any] = {
            "hash": block_hash[::-1].hex(),
            "confirmations": self._tip_height() - height + 1 if active else -1,
            "height": height,
            "version": header.version,
            "versionHex": f"{header.version & 0xFFFFFFFF:08x}",
            "merkleroot": header.merkle_root[::-1].hex(),
            "time": header.time,
            "nonce": header.nonce,
            "bits": f"{header.bits:08x}",
        }
        if active:
            result["mediantime"] = self._median_time_past(height)
        if height > 0:
            result["previousblockhash"] = header.prev_hash[::-1].hex()
        if active and height < self._tip_height():
            result["nextblockhash"] = self._hashes[height + 1][::-1].hex()
        return result

    def _tx_json(self, tx: Tx, block_hash: bytes | None) -> dict[str, Any]:
        vin = []
        for txin in tx.vin:
            if tx.is_coinbase():
                item: dict[str, Any] = {"coinbase": txin.script_sig.hex()}
            else:
                item = {
                    "txid": txin.prevout.txid_hex,
                    "vout": txin.prevout.vout,
                    "scriptSig": {"hex": txin.script_sig.hex()},
                }
            if txin.witness:
                item["txinwitness"] = [w.hex() for w in txin.witness]
            item["sequence"] = txin.sequence
            vin.append(item)
        raw = tx.serialize()
        result: dict[str, Any] = {
            "txid": tx.txid_hex,
            "hash": tx.wtxid[::-1].hex(),
            "version": tx.version,
            "size": len(raw),
            "vsize": tx.vsize,
            "weight": tx.weight,
            "locktime": tx.locktime,
            "vin": vin,
            "vout": [
                {"value": btc(o.value), "n": n, "scriptPubKey": _script_json(o.script_pubkey)}
                for n, o in enumerate(tx.vout)
            ],
            "hex": raw.hex(),
        }
        if block_hash is not None:
            entry = self._entry(block_hash)
            if entry is not None:
                height = entry.height
                result["blockhash"] = block_hash[::-1].hex()
                if self._in_active_chain(block_hash, height):
                    result["confirmations"] = self._tip_height() - height + 1
                    result["time"] = result["blocktime"] = self._times[height]
                else:  # only reachable with an explicit blockhash: Core reports no confirmations then
                    result["time"] = result["blocktime"] = BlockHeader.from_bytes(bytes(entry.block_header)).time
        return result

    # -- mining ----------------------------------------------------------------------------------------------

    def _build_block(self, coinbase_script: bytes, txs: list[Tx], fees: int) -> Block:
        height = self._tip_height() + 1
        self._extranonce = (self._extranonce + 1) & 0xFFFFFFFF
        return assemble_block(
            prev_hash=self._hashes[-1],
            height=height,
            block_time=max(self._median_time_past(height - 1) + 1, int(time.time())),
            coinbase_script=coinbase_script,
            txs=txs,
            fees=fees,
            extranonce=self._extranonce,
        )

    def _explain_block_txs(self, txs: list[Tx], height: int) -> tuple[int, str | None]:
        """Run this node's own checks on `txs` as the next block: (total fees, first failure or None)."""
        view = CoinView(self._confirmed_coin)
        fees = 0
        mtp = self._median_time_past(height - 1)
        for tx in txs:
            try:
                self._check_tx_sanity(tx)
                if tx.is_coinbase():
                    raise TxRejected("bad-cb-multiple")
                self._check_final(tx, height, mtp, "bad-txns-nonfinal")
                coins, fee = self._check_inputs(tx, view, height)
                self._check_sequence_locks(tx, coins, height, "bad-txns-nonfinal")
                self._verify_scripts(tx, coins)
            except TxRejected as exc:
                return fees, f"{exc} (tx {tx.txid_hex})"
            fees += fee
            view.apply(tx, height)
        return fees, None

    def _submit(self, block: Block) -> tuple[bool, str | None]:
        """Give a block to the kernel; return (accepted, reason if rejected)."""
        kernel_block = pbk.Block(block.serialize())
        # A failure (e.g. a cached invalid block) raises; its reason is in the block_checked callback.
        with contextlib.suppress(pbk.ProcessBlockException):
            self._chainman.process_block(kernel_block)
        verdict = self._checked.pop(block.hash, None)
        self._sync_with_kernel()
        if verdict is None:
            entry = self._entry(block.hash)
            return (entry is not None), (None if entry is not None else "inconclusive")
        mode, result = verdict
        if mode == pbk.ValidationMode.VALID:
            return True, None
        return False, result.name.lower().replace("_", "-")

    def generate_block(self, coinbase_script: bytes, txs: list[Tx], submit: bool = True) -> dict[str, Any]:
        """Mine one block with exactly `txs` after the coinbase; the kernel must accept it."""
        with self._lock:
            self._check_open()
            height = self._tip_height() + 1
            fees, problem = self._explain_block_txs(txs, height)
            block = self._build_block(coinbase_script, txs, fees)
            if not submit:
                return {"hash": block.hash[::-1].hex(), "hex": block.serialize().hex()}
            accepted, reason = self._submit(block)
            if not accepted:
                raise NodeRPCError(
                    RPC_VERIFY_ERROR,
                    f"block rejected by Bitcoin Core consensus ({reason}): {problem or 'see kernel log'}",
                )
            if problem:
                log.warning("kernel accepted a block this node's checks reject: %s", problem)
            return {"hash": block.hash[::-1].hex()}

    def generate_to_script(self, nblocks: int, coinbase_script: bytes) -> list[str]:
        """Mine `nblocks` blocks, each taking the mempool in arrival order (parents before children) up to
        the block weight limit."""
        hashes = []
        with self._lock:
            self._check_open()
            for _ in range(nblocks):
                txs: list[Tx] = []
                fees = 0
                weight = BLOCK_RESERVED_WEIGHT
                for entry in self._mempool.values():
                    if weight + entry.tx.weight > MAX_BLOCK_WEIGHT:
                        break  # an arrival-order prefix never leaves a child without its parent
                    txs.append(entry.tx)
                    fees += entry.fee
                    weight += entry.tx.weight
                block = self._build_block(coinbase_script, txs, fees)
                accepted, reason = self._submit(block)
                if not accepted:
                    raise NodeRPCError(RPC_MISC_ERROR, f"mined block rejected by consensus ({reason})")
                hashes.append(block.hash[::-1].hex())
        return hashes

    def submit_block(self, raw: bytes) -> str | None:
        """Core's submitblock: None when valid (connected or stored on a side branch), else a reason."""
        try:
            block = Block.from_bytes(raw)
        except DeserializationError as exc:
            raise NodeRPCError(RPC_DESERIALIZATION_ERROR, "Block decode failed") from exc
        if not block.txs or not block.txs[0].is_coinbase():
            raise NodeRPCError(RPC_DESERIALIZATION_ERROR, "Block does not start with a coinbase")
        with self._lock:
            self._check_open()
            if block.hash in self._hashes:
                return "duplicate"
            if self._entry(block.header.prev_hash) is None:
                return "prev-blk-not-found"
            extends_tip = block.header.prev_hash == self._hashes[-1]
            problem = None
            if extends_tip:
                height = self._tip_height() + 1
                fees, problem = self._explain_block_txs(block.txs[1:], height)
                claimed, limit = sum(o.value for o in block.txs[0].vout), block_subsidy(height) + fees
                if problem is None and claimed > limit:
                    problem = f"bad-cb-amount, coinbase pays too much (actual={claimed} vs limit={limit})"
            accepted, reason = self._submit(block)
            if accepted:
                return None
            return f"{reason}: {problem}" if problem else reason

    # -- faucet ----------------------------------------------------------------------------------------------

    def faucet_balance(self) -> int:
        """Spendable faucet sats (mature confirmed coins and unspent own change in the mempool)."""
        with self._lock:
            self._check_open()
            return sum(c.value for _, c in self._faucet_coins())

    def _faucet_coins(self) -> list[tuple[OutPoint, Coin]]:
        height = self._tip_height() + 1
        script = self.faucet.script_pubkey
        coins = [
            (op, c)
            for op, c in self._utxos.items()
            if c.script_pubkey == script
            and op not in self._mempool_spends
            and not (c.coinbase and height - c.height < COINBASE_MATURITY)
        ]
        for txid, entry in self._mempool.items():
            for index, txout in enumerate(entry.tx.vout):
                outpoint = OutPoint(txid, index)
                if txout.script_pubkey == script and outpoint not in self._mempool_spends:
                    coins.append((outpoint, Coin(txout.value, script, MEMPOOL_HEIGHT, False)))
        coins.sort(key=lambda item: (item[1].height, -item[1].value))
        return coins

    def send_to_script(self, script_pubkey: bytes, sats: int) -> str:
        """Pay `sats` to `script_pubkey` from the faucet into the mempool; return the txid."""
        if sats < dust_threshold(script_pubkey):
            raise NodeRPCError(RPC_TYPE_ERROR, "Transaction amount too small")
        with self._lock:
            self._check_open()
            selected: list[tuple[OutPoint, Coin]] = []
            total = 0
            fee = 0
            for outpoint, coin in self._faucet_coins():
                selected.append((outpoint, coin))
                total += coin.value
                vsize = TX_OVERHEAD_VBYTES + P2WPKH_INPUT_VBYTES * len(selected) + OUTPUT_VBYTES * 2
                fee = vsize * FAUCET_FEE_SAT_PER_VB
                if total >= sats + fee:
                    break
            if total < sats + fee or not selected:
                raise NodeRPCError(RPC_WALLET_INSUFFICIENT_FUNDS, "Insufficient funds")
            outputs = [TxOut(sats, script_pubkey)]
            change = total - sats - fee
            if change >= dust_threshold(self.faucet.script_pubkey):
                outputs.append(TxOut(change, self.faucet.script_pubkey))
            tx = Tx(2, [TxIn(op, b"", 0xFFFFFFFD) for op, _ in selected], outputs, 0)
            self.faucet.sign_p2wpkh_inputs(tx, [c.value for _, c in selected])
            try:
                self._accept_to_mempool(tx)
            except TxRejected as exc:
                raise NodeRPCError(RPC_MISC_ERROR, f"faucet transaction rejected: {exc}") from exc
            return tx.txid_hex


def _is_push_only(script: bytes) -> bool:
    index = 0
    while index < len(script):
        opcode = script[index]
        index += 1
        if opcode > 0x60:  # above OP_16: not a push
            return False
        if 0x01 <= opcode <= 0x4B:
            index += opcode
        elif opcode in (0x4C, 0x4D, 0x4E):
            width = {0x4C: 1, 0x4D: 2, 0x4E: 4}[opcode]
            if index + width > len(script):
                return False
            index += width + int.from_bytes(script[index : index + width], "little")
        if index > len(script):
            return False
    return True


def _check_standard(tx: Tx) -> None:
    """Bitcoin Core's IsStandardTx (v29 defaults, any dust refused) and its minimum non-witness size."""
    if not 1 <= tx.version <= MAX_STANDARD_VERSION:
        raise TxRejected("version")
    if tx.weight > MAX_STANDARD_TX_WEIGHT:
        raise TxRejected("tx-size")
    for txin in tx.vin:
        if len(txin.script_sig) > MAX_STANDARD_SCRIPTSIG_SIZE:
            raise TxRejected("scriptsig-size")
        if not _is_push_only(txin.script_sig):
            raise TxRejected("scriptsig-not-pushonly")
    data_outputs = 0
    for txout in tx.vout:
        kind = script_type(txout.script_pubkey)
        if kind == "nulldata":
            if len(txout.script_pubkey) > MAX_OP_RETURN_RELAY or not _is_push_only(txout.script_pubkey[1:]):
                raise TxRejected("scriptpubkey")
            data_outputs += 1
        elif kind == "nonstandard":
            raise TxRejected("scriptpubkey")
    for txout in tx.vout:
        if txout.value < dust_threshold(txout.script_pubkey):
            raise TxRejected("dust", f"output of {txout.value} sats is below the dust threshold")
    if data_outputs > 1:
        raise TxRejected("multi-op-return")
    if len(tx.serialize(with_witness=False)) < MIN_STANDARD_TX_NONWITNESS_SIZE:
        raise TxRejected("tx-size-small")


def _parse_tx(raw: bytes) -> Tx:
    try:
        return Tx.from_bytes(raw)
    except DeserializationError as exc:
        raise NodeRPCError(RPC_DESERIALIZATION_ERROR, f"TX decode failed: {exc}") from exc


def _script_json(script: bytes) -> dict[str, Any]:
    result: dict[str, Any] = {"hex": script.hex(), "type": script_type(script)}
    address = script_to_address(script)
    if address is not None:
        result["address"] = address
    return result


def parse_output_target(target: object) -> bytes:
    """scriptPubKey for an address, `addr(ADDRESS)` or `raw(HEX)` descriptor (checksums after # ignored)."""
    if not isinstance(target, str) or not target:
        raise NodeRPCError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid address or descriptor")
    text = target.split("#", 1)[0]
    try:
        if text.startswith("raw(") and text.endswith(")"):
            script = bytes.fromhex(text[4:-1])
            if not script:
                raise ValueError("empty script")
            return script
        if text.startswith("addr(") and text.endswith(")"):
            return address_to_script(text[5:-1])
        return address_to_script(text)
    except (InvalidAddressError, ValueError) as exc:
        raise NodeRPCError(RPC_INVALID_ADDRESS_OR_KEY, f"Invalid address or descriptor: {exc}") from exc
