"""The Bitcoin watcher: follows the node block by block from a stored cursor, records every transaction of the
app's loans once, and applies each one once when it is final.

One run (``sync_bitcoin``), under the ``bitcoin`` run lock (another run holding it: this one is skipped) and
outside the cursor's backoff:

1. **Reorg.** If the node's block at the cursor's height is not the cursor's block, the watcher walks back over
   the blocks it stored (``ChainBlock``) to the highest one still on the active chain, un-confirms the loan
   transactions of every block above it (``bitcoin_block_disconnect``) and moves the cursor back to it, in one
   database transaction. A reorg that would take back a fact already applied (final) raises ``DeepReorgError``:
   money may have moved on its strength, so an operator decides (the error stays in the cursor's ``last_error``).
2. **Follow.** Each block above the cursor, up to the node's tip (at most ``max_blocks`` per run), is read with
   ``getblockhash`` and ``getblock`` (verbosity 2): the only calls, so a run costs the same on mainnet as on
   regtest (no ``scantxoutset``, no wallet, no index beyond Bitcoin Core's defaults); the next block is read in a
   thread while the current one is written (``BlockReader``). In it the watcher records,
   for every watched loan, each output paying the loan's escrow script (its funding: outpoint and value) and each
   input spending the loan's escrow or collateral outpoint, whoever built it, classified by the leaf its witness
   reveals (TX_1 / TX_exit / TX_release / TX_capture, ``bitcoin.chain.parse_loan_spend``) with the preimage it
   reveals. A block's facts, its ``ChainBlock`` row and the cursor are written in one database transaction: a
   watcher killed at any point has either followed a block completely or not at all, and repeats nothing.
3. **Apply.** Every recorded, unapplied transaction at least ``confirmations`` deep (block height <= followed
   height - confirmations + 1) is applied once through ``bitcoin_transaction_apply``, in chain order. A refusal
   (``LoanServiceError``: e.g. an escrow holding another value than the loan claims) is logged with the loan id,
   reported, and does not stop the others; it is tried again next run and changes nothing until the facts agree.
4. **Push.** When the run followed or rewound a block, the open pages of every watched loan with a Bitcoin
   transaction are pushed their re-rendered partial (``push_loan_pages``: the confirmations moved; ``bitcoin_seen``
   for the loans whose transaction the run recorded), once per loan and run, as a transition pushes its own.

What is watched is built once per run (``WatchSet``), then grown as the run records fundings and TX_1s:
- every loan not closed; and a closed loan on which nothing was ever locked on Bitcoin (a request cancelled or an
  offer lapsed before its escrow was funded), so that a late funding reopens it until the borrower reclaims it,
  unless a live loan has the same escrow (a borrower who cancelled may request again with the same escrow);
- its escrow script (built from the loan's keys, hash and t_0, as ``LoanFacts.escrow`` builds it, so a draft
  without payout addresses is watched too);
- its escrow outpoint: the one the loan claims, or while it claims none (a draft), every funding recorded for it;
- its collateral outpoint: output 1 of every TX_1 recorded for it (``PROTOCOL.md``: B's and L's signatures fix it).

Where the first run starts: ``start_height`` when given, else ``settings.BITCOIN_SYNC_START_HEIGHT`` when set,
else ``FIRST_RUN_BLOCKS_BELOW_TIP`` blocks below the node's tip (a day of blocks: escrows funded that recently
are found). After that the cursor alone decides.

Confirmations are derived from heights, never stored (``loans.selectors``). A node that cannot be reached (or
answers nonsense) fails the run: ``failures`` + 1, ``last_error``, ``retry_after = now + min(2**failures, 300)``
seconds on the cursor, and the error is raised again for the task runner; the next successful run resets them.
Blocks already followed stay followed: nothing is lost, nothing is repeated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from bitcoin.chain import Block, BlockTx, ChainDataError, parse_loan_spend
from bitcoin.errors import BitcoinProtocolError
from bitcoin.rpc import RPC_INVALID_PARAMETER, BitcoinRPC, RPCError
from bitcoin.scripts import TwoLeafTaprootOutput, collateral_output, escrow_output
from bitcoin.transactions import OutPoint, SpendKind

from ..chains import bitcoin_rpc
from ..errors import DeepReorgError, LoanServiceError
from ..logging import loan_context
from ..models import BitcoinTransaction, ChainBlock, ChainCursor, Loan
from ..services import bitcoin_block_disconnect, bitcoin_transaction_apply, bitcoin_transaction_record
from ..services.transitions import NOTHING_LOCKED, loan_fact_push
from .cursors import backing_off, record_failure
from .locks import exclusive_run

logger = logging.getLogger(__name__)

CHAIN = ChainCursor.Chain.BITCOIN
Role = BitcoinTransaction.Role
#: First run without a start height: this many blocks below the node's tip (144: about a day).
FIRST_RUN_BLOCKS_BELOW_TIP = 144
#: Followed blocks kept to find a fork point; a reorg deeper than this raises ``DeepReorgError``.
KEPT_BLOCKS = 288
#: Rewinds one run accepts before it stops (a chain that keeps switching branches under it).
MAX_REWINDS_PER_RUN = 10
#: TX_1's output that holds the collateral (PROTOCOL.md: [0] fee, [1] collateral, [2] change).
COLLATERAL_VOUT = 1
#: Which spends each watched outpoint can have, and the role each one records.
ESCROW_SPENDS = {SpendKind.TX_1: Role.COLLATERAL_LOCK, SpendKind.TX_EXIT: Role.ESCROW_EXIT}
COLLATERAL_SPENDS = {SpendKind.TX_RELEASE: Role.COLLATERAL_RELEASE, SpendKind.TX_CAPTURE: Role.COLLATERAL_CAPTURE}
#: What ChainCursor.parent_hash holds for the genesis block, which has no parent.
NO_PARENT = "00" * 32


@dataclass(frozen=True)
class Refusal:
    """A final transaction the loan services refused (nothing changed; tried again next run)."""

    loan_id: int
    txid: str
    code: str

    def __str__(self) -> str:
        return f"loan {self.loan_id} {self.txid[:16]}… ({self.code})"


@dataclass(frozen=True)
class BitcoinSyncReport:
    """What one run did. ``skipped`` says why a run did nothing (lock held, backing off)."""

    skipped: str = ""
    height: int | None = None  # the cursor after the run: the last block followed
    tip_height: int | None = None  # the node's tip when the run started
    blocks: int = 0  # blocks followed
    orphaned: int = 0  # blocks rewound (reorg)
    unconfirmed: int = 0  # loan transactions un-confirmed by the rewind
    recorded: int = 0  # loan transactions found in the blocks followed
    applied: int = 0  # final transactions applied
    refused: tuple[Refusal, ...] = ()
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        parts = [f"followed {self.blocks} blocks to height {self.height} (node tip {self.tip_height})"]
        if self.orphaned:
            parts.append(f"rewound {self.orphaned} orphaned blocks ({self.unconfirmed} transactions unconfirmed)")
        parts.append(f"recorded {self.recorded} and applied {self.applied} loan transactions")
        if self.refused:
            parts.append(f"refused {', '.join(map(str, self.refused))}")
        return ", ".join(parts) + f" in {self.seconds:.2f} s"


# -- what is watched ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchedLoan:
    loan: Loan
    escrow: TwoLeafTaprootOutput
    collateral: TwoLeafTaprootOutput | None  # None until the lender's hash is known


@dataclass
class WatchSet:
    """The loans one run watches, by escrow script and by outpoint (escrow and collateral)."""

    scripts: dict[bytes, list[WatchedLoan]] = field(default_factory=dict)
    escrow_outpoints: dict[OutPoint, list[WatchedLoan]] = field(default_factory=dict)
    collateral_outpoints: dict[OutPoint, list[WatchedLoan]] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)  # loans with a transaction recorded by this run

    @property
    def loans(self) -> int:
        return sum(len(watched) for watched in self.scripts.values())

    @property
    def loan_ids(self) -> set[int]:
        return {watched.loan.pk for holders in self.scripts.values() for watched in holders}

    def watch_escrow(self, outpoint: OutPoint, watched: WatchedLoan) -> None:
        _add(self.escrow_outpoints, outpoint, watched)

    def watch_collateral(self, outpoint: OutPoint, watched: WatchedLoan) -> None:
        _add(self.collateral_outpoints, outpoint, watched)


def _add(index: dict[Any, list[WatchedLoan]], key: object, watched: WatchedLoan) -> None:
    entries = index.setdefault(key, [])
    if all(entry.loan.pk != watched.loan.pk for entry in entries):
        entries.append(watched)


@lru_cache(maxsize=8192)
def _escrow(borrower_pubkey: str, lender_pubkey: str, borrower_hash: str, t_0: int) -> TwoLeafTaprootOutput:
    return escrow_output(
        borrower_pubkey=borrower_pubkey, lender_pubkey=lender_pubkey, borrower_hash=borrower_hash, escrow_timelock=t_0
    )


@lru_cache(maxsize=8192)
def _collateral(borrower_pubkey: str, lender_pubkey: str, lender_hash: str, t_1: int) -> TwoLeafTaprootOutput:
    return collateral_output(
        borrower_pubkey=borrower_pubkey, lender_pubkey=lender_pubkey, lender_hash=lender_hash, collateral_timelock=t_1
    )


def _watched(loan: Loan) -> WatchedLoan:
    escrow = _escrow(
        loan.borrower_btc_pubkey, loan.lender_btc_pubkey, loan.borrower_hash, loan.escrow_timelock_btc_blocks
    )
    collateral = None
    if loan.lender_hash:
        collateral = _collateral(
            loan.borrower_btc_pubkey, loan.lender_btc_pubkey, loan.lender_hash, loan.collateral_timelock_btc_blocks
        )
    return WatchedLoan(loan, escrow, collateral)


def watch_set() -> WatchSet:
    """Every loan the watcher follows, with its scripts and outpoints (two queries, whatever the number)."""
    open_loans = Q(closed_at__isnull=True)
    # Closed with nothing locked on Bitcoin: a late funding must still be seen (it reopens the loan).
    nothing_locked = Q(bitcoin_status=Loan.BitcoinStatus.NONE, status__in=NOTHING_LOCKED)
    loans = Loan.objects.filter(open_loans | nothing_locked).order_by(F("closed_at").desc(nulls_first=True), "-pk")
    watch = WatchSet()
    by_pk: dict[int, WatchedLoan] = {}
    for loan in loans:  # open loans first, then the latest closed ones
        try:
            watched = _watched(loan)
        except BitcoinProtocolError as error:
            logger.error("loan %s cannot be watched: %s", loan.pk, error, extra={"loan_id": loan.pk})
            continue
        holders = watch.scripts.setdefault(watched.escrow.script_pubkey, [])
        if loan.closed_at is not None and holders:
            continue  # a live loan (or a later request) has this escrow now
        holders.append(watched)
        by_pk[loan.pk] = watched
        if loan.escrow_txid is not None:
            watch.watch_escrow(OutPoint(loan.escrow_txid, loan.escrow_vout), watched)
    rows = BitcoinTransaction.objects.filter(
        loan_id__in=by_pk, role__in=[Role.ESCROW_FUNDING, Role.COLLATERAL_LOCK]
    ).values_list("loan_id", "role", "txid", "vout")
    for loan_id, role, txid, vout in rows:
        watched = by_pk[loan_id]
        if role == Role.COLLATERAL_LOCK:
            watch.watch_collateral(OutPoint(txid, COLLATERAL_VOUT), watched)
        elif watched.loan.escrow_txid is None:  # a draft: whichever funding it ends up with
            watch.watch_escrow(OutPoint(txid, vout), watched)
    return watch


# -- one block ---------------------------------------------------------------------------------------------------


def _record(
    watch: WatchSet,
    watched: WatchedLoan,
    role: str,
    block: Block,
    tx: BlockTx,
    raw_tx: Mapping[str, Any],
    **fields: Any,
) -> None:
    with loan_context(watched.loan.pk):
        bitcoin_transaction_record(
            loan=watched.loan,
            role=role,
            txid=tx.txid,
            block_hash=block.hash,
            block_height=block.height,
            raw_hex=str(raw_tx.get("hex", "")),
            **fields,
        )
    watch.seen.add(watched.loan.pk)
    logger.info(
        "loan %s: %s %s in block %s at height %s",
        watched.loan.pk,
        role,
        tx.txid,
        block.hash,
        block.height,
        extra={"loan_id": watched.loan.pk},
    )


def _record_block(block: Block, raw: Mapping[str, Any], watch: WatchSet) -> int:
    """Record every watched loan's transaction in ``block`` (inside the caller's transaction); grow the watch
    set with the outpoints they create. Returns how many were recorded."""
    recorded = 0
    watched_spends = ((ESCROW_SPENDS, watch.escrow_outpoints), (COLLATERAL_SPENDS, watch.collateral_outpoints))
    for tx, raw_tx in zip(block.txs, raw["tx"], strict=True):
        for txin in tx.inputs:
            for spends, index in watched_spends:
                for watched in index.get(txin.outpoint, ()):
                    spend = parse_loan_spend(witness=txin.witness, escrow=watched.escrow, collateral=watched.collateral)
                    role = None if spend is None else spends.get(spend.kind)
                    if spend is None or role is None:
                        logger.error(
                            "loan %s: %s spends %s with a witness that is none of the loan's spends of it",
                            watched.loan.pk,
                            tx.txid,
                            txin.outpoint,
                            extra={"loan_id": watched.loan.pk},
                        )
                        continue
                    preimage = None if spend.preimage is None else spend.preimage.hex()
                    _record(watch, watched, role, block, tx, raw_tx, revealed_preimage=preimage, spent=txin.outpoint)
                    recorded += 1
                    if role == Role.COLLATERAL_LOCK and len(tx.outputs) > COLLATERAL_VOUT:
                        watch.watch_collateral(tx.outpoint(COLLATERAL_VOUT), watched)
        for vout, output in enumerate(tx.outputs):
            for watched in watch.scripts.get(output.script_pubkey, ()):
                if BitcoinTransaction.objects.filter(loan=watched.loan, txid=tx.txid).exclude(vout=vout).exists():
                    continue  # a second output to the same escrow in one transaction: one fact per (loan, txid)
                _record(watch, watched, Role.ESCROW_FUNDING, block, tx, raw_tx, vout=vout, value_sats=output.value_sats)
                recorded += 1
                if watched.loan.escrow_txid is None:
                    watch.watch_escrow(tx.outpoint(vout), watched)
    return recorded


def _read_block(rpc: BitcoinRPC, height: int) -> tuple[Block, Mapping[str, Any]] | None:
    """The active chain's block at ``height`` (and the node's JSON, for the raw transactions), or None when the
    chain is shorter."""
    try:
        block_hash = rpc.getblockhash(height)
    except RPCError as error:
        if error.code == RPC_INVALID_PARAMETER:  # "Block height out of range"
            return None
        raise
    raw = rpc.getblock(block_hash, 2)
    if not isinstance(raw, Mapping):
        raise ChainDataError(f"getblock {block_hash} 2 did not answer a block object")
    block = Block.from_json(raw)
    if (block.hash, block.height) != (block_hash, height):
        raise ChainDataError(f"asked for block {block_hash} at {height}, got {block.hash} at {block.height}")
    return block, raw


class BlockReader:
    """Reads the next block in a thread while the current one is written to the database, so the node's work
    (and the JSON decoding) overlaps the database's. Only the RPC client runs in the thread; a block read ahead
    is checked against the cursor like any other (a branch switch in between shows as a parent mismatch)."""

    def __init__(self, rpc: BitcoinRPC) -> None:
        self.rpc = rpc
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bitcoin-block-reader")
        self.ahead: tuple[int, Future[tuple[Block, Mapping[str, Any]] | None]] | None = None

    def read(self, height: int, *, prefetch: bool) -> tuple[Block, Mapping[str, Any]] | None:
        if self.ahead is not None and self.ahead[0] == height:
            future = self.ahead[1]
        else:
            if self.ahead is not None:
                self.ahead[1].cancel()
            future = self.pool.submit(_read_block, self.rpc, height)
        self.ahead = None
        found = future.result()
        if prefetch and found is not None:
            self.ahead = (height + 1, self.pool.submit(_read_block, self.rpc, height + 1))
        return found

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _follow(
    block: Block, raw: Mapping[str, Any], watch: WatchSet, cursor: ChainCursor | None, tip: int
) -> tuple[ChainCursor, int]:
    """Record the block's facts, store it and move the cursor to it, in one database transaction."""
    parent = block.previous_hash or NO_PARENT
    with transaction.atomic():
        recorded = _record_block(block, raw, watch)
        ChainBlock.objects.bulk_create(  # one upsert: a row left at this height by a lost cursor is replaced
            [ChainBlock(chain=CHAIN, number=block.height, hash=block.hash, parent_hash=parent)],
            update_conflicts=True,
            unique_fields=["chain", "number"],
            update_fields=["hash", "parent_hash"],
        )
        if cursor is None:
            cursor = ChainCursor(chain=CHAIN)
        cursor.block_number, cursor.block_hash, cursor.parent_hash = block.height, block.hash, parent
        cursor.tip_number = max(tip, block.height)
        cursor.save()
    return cursor, recorded


# -- reorgs ------------------------------------------------------------------------------------------------------


def _canonical_hash(rpc: BitcoinRPC, height: int) -> str | None:
    try:
        return rpc.getblockhash(height)
    except RPCError as error:
        if error.code == RPC_INVALID_PARAMETER:
            return None
        raise


def _rewind(rpc: BitcoinRPC, cursor: ChainCursor) -> tuple[ChainCursor, int, int]:
    """Walk back to the highest stored block still on the active chain; un-confirm every block above it and move
    the cursor there, atomically. Returns (cursor, blocks orphaned, transactions un-confirmed)."""
    stored = list(ChainBlock.objects.filter(chain=CHAIN, number__lte=cursor.block_number).order_by("-number"))
    orphaned: list[ChainBlock] = []
    fork: ChainBlock | None = None
    for block in stored:
        if _canonical_hash(rpc, block.number) == block.hash:
            fork = block
            break
        orphaned.append(block)
    if fork is None and stored:
        # Every kept block left the chain: the fork may be the parent of the lowest (the block below the first
        # one followed, or the last one pruned), which the watcher knows by hash only.
        lowest = stored[-1]
        if lowest.number > 0 and _canonical_hash(rpc, lowest.number - 1) == lowest.parent_hash:
            header = rpc.getblockheader(lowest.parent_hash)
            parent = header.get("previousblockhash") if isinstance(header, Mapping) else None
            fork = ChainBlock(
                chain=CHAIN, number=lowest.number - 1, hash=lowest.parent_hash, parent_hash=parent or NO_PARENT
            )
    if fork is None:
        raise DeepReorgError(
            f"no block of the {len(stored)} the Bitcoin watcher kept (down from height {cursor.block_number}) "
            "is on the node's active chain any more: the reorg is deeper than it can rewind"
        )
    unconfirmed = 0
    with transaction.atomic():
        for block in orphaned:
            unconfirmed += bitcoin_block_disconnect(block_hash=block.hash)
        ChainBlock.objects.filter(chain=CHAIN, number__gt=fork.number).delete()
        cursor.block_number, cursor.block_hash, cursor.parent_hash = fork.number, fork.hash, fork.parent_hash
        cursor.save(update_fields=["block_number", "block_hash", "parent_hash", "updated_at"])
    logger.warning(
        "bitcoin reorg: rewound %s blocks to height %s (%s), %s loan transactions unconfirmed",
        len(orphaned),
        fork.number,
        fork.hash,
        unconfirmed,
    )
    return cursor, len(orphaned), unconfirmed


# -- applying final facts ----------------------------------------------------------------------------------------


def apply_final_transactions(*, final_height: int) -> tuple[int, tuple[Refusal, ...]]:
    """Apply every recorded, unapplied transaction at or below ``final_height``, in chain order."""
    applied, refused = 0, []
    pending = (
        BitcoinTransaction.objects.filter(
            applied_at__isnull=True, block_height__isnull=False, block_height__lte=final_height
        )
        .order_by("block_height", "pk")
        .values_list("pk", "loan_id", "txid", "role")
    )
    for pk, loan_id, txid, role in pending:
        try:
            with loan_context(loan_id):  # the log lines of its apply name the loan
                bitcoin_transaction_apply(transaction_id=pk)
        except LoanServiceError as error:
            logger.warning(
                "loan %s: final %s %s not applied: %s", loan_id, role, txid, error, extra={"loan_id": loan_id}
            )
            refused.append(Refusal(loan_id, txid, error.code))
            continue
        applied += 1
    return applied, tuple(refused)


# -- the loan pages ----------------------------------------------------------------------------------------------


def push_loan_pages(watch: WatchSet) -> None:
    """The chain moved (blocks followed or rewound): the open pages of every watched loan with a Bitcoin transaction
    re-render their funding box, since its confirmations changed; the loans whose transaction this run recorded
    (an escrow payment seen, a spend found) as ``bitcoin_seen``. Once per run and loan, after the run's commits.
    (Status changes the run applied push on their own, from the transition.)"""
    with_transactions = set(
        BitcoinTransaction.objects.filter(loan_id__in=watch.loan_ids).values_list("loan_id", flat=True).distinct()
    )
    loan_fact_push(loan_ids=watch.seen, fact="bitcoin_seen")
    loan_fact_push(loan_ids=with_transactions - watch.seen, fact="bitcoin_confirmations")


# -- a run -------------------------------------------------------------------------------------------------------


def _first_height(tip: int, start_height: int | None) -> int:
    if start_height is None:
        start_height = settings.BITCOIN_SYNC_START_HEIGHT
    if start_height is None:
        start_height = tip - FIRST_RUN_BLOCKS_BELOW_TIP
    return min(max(0, int(start_height)), tip)


def _run(
    rpc: BitcoinRPC, confirmations: int, max_blocks: int | None, start_height: int | None, started: float
) -> BitcoinSyncReport:
    tip = rpc.getblockcount()
    cursor = ChainCursor.objects.filter(chain=CHAIN).first()
    orphaned = unconfirmed = 0
    rewinds = 0

    def rewind_if_reorged() -> None:
        nonlocal cursor, orphaned, unconfirmed, rewinds
        if cursor is None or _canonical_hash(rpc, cursor.block_number) == cursor.block_hash:
            return
        rewinds += 1
        if rewinds > MAX_REWINDS_PER_RUN:
            raise ChainDataError(f"the node switched branches {MAX_REWINDS_PER_RUN} times during one run")
        cursor, blocks, transactions = _rewind(rpc, cursor)
        orphaned += blocks
        unconfirmed += transactions

    rewind_if_reorged()
    watch = watch_set()
    height = cursor.block_number + 1 if cursor is not None else _first_height(tip, start_height)
    last = tip if max_blocks is None else min(tip, height + max_blocks - 1)
    followed = recorded = 0
    with BlockReader(rpc) as reader:
        while height <= last:
            found = reader.read(height, prefetch=height < last)
            if found is not None and (cursor is None or found[0].previous_hash == cursor.block_hash):
                block, raw = found
                cursor, count = _follow(block, raw, watch, cursor, tip)
                recorded += count
                followed += 1
                height += 1
                continue
            # The block does not extend the cursor (or the chain got shorter): the branch changed under this run.
            before = rewinds
            rewind_if_reorged()
            if rewinds == before:  # the cursor is still on the chain: a shorter chain, or a switch mid-read
                break  # the next run looks again
            assert cursor is not None
            height = cursor.block_number + 1
            last = tip if max_blocks is None else min(tip, height + max_blocks - followed - 1)

    applied, refused = 0, ()
    if cursor is not None:
        applied, refused = apply_final_transactions(final_height=cursor.block_number - confirmations + 1)
        ChainBlock.objects.filter(chain=CHAIN, number__lte=cursor.block_number - KEPT_BLOCKS).delete()
        ChainCursor.objects.filter(pk=cursor.pk).update(
            tip_number=tip, failures=0, last_error="", retry_after=None, updated_at=timezone.now()
        )
    if followed or orphaned:
        push_loan_pages(watch)
    return BitcoinSyncReport(
        height=None if cursor is None else cursor.block_number,
        tip_height=tip,
        blocks=followed,
        orphaned=orphaned,
        unconfirmed=unconfirmed,
        recorded=recorded,
        applied=applied,
        refused=refused,
        seconds=time.perf_counter() - started,
    )


def sync_bitcoin(
    *,
    rpc: BitcoinRPC | None = None,
    confirmations: int | None = None,
    max_blocks: int | None = None,
    start_height: int | None = None,
) -> BitcoinSyncReport:
    """One run of the Bitcoin watcher (see the module docstring); ``confirmations`` defaults to
    ``settings.BITCOIN_CONFIRMATIONS``, ``start_height`` matters only for the very first run."""
    started = time.perf_counter()
    confirmations = settings.BITCOIN_CONFIRMATIONS if confirmations is None else confirmations
    if isinstance(confirmations, bool) or not isinstance(confirmations, int) or confirmations < 1:
        raise ValueError(f"confirmations must be a positive integer, got {confirmations!r}")
    if max_blocks is not None and max_blocks < 0:
        raise ValueError(f"max_blocks must be >= 0, got {max_blocks!r}")
    with exclusive_run("bitcoin") as acquired:
        if not acquired:
            return BitcoinSyncReport(skipped="another Bitcoin watcher run holds the lock")
        cursor = ChainCursor.objects.filter(chain=CHAIN).first()
        if waiting := backing_off(cursor):
            return BitcoinSyncReport(skipped=waiting)
        try:
            report = _run(rpc or bitcoin_rpc(), confirmations, max_blocks, start_height, started)
        except Exception as error:
            record_failure(CHAIN, error)
            raise
    logger.info("bitcoin: %s", report)
    return report
