"""The EVM watcher: follows both contracts' logs from a stored cursor, stores every event once and applies each one
once when it is final.

One run (``sync_evm``), under the ``evm`` run lock (another run holding it: this one is skipped) and outside the
cursor's backoff:

1. **Reorg.** If the chain's block at the cursor's height is not the cursor's block, the watcher walks back over the
   blocks it stored (``ChainBlock``) to the highest one still on the chain (the fork point). In one database
   transaction it marks every unapplied event above it orphaned (``orphaned_at``), puts the sent or reported
   transactions (``EvmTransaction``) mined above it back to pending, deletes the stored blocks above it and moves
   the cursor back to it. An applied event above the fork point whose block is no longer the chain's
   raises ``DeepReorgError`` and changes nothing: it was final, money may have moved on its strength, an operator
   decides. (An applied event above the fork point whose block is still the chain's stays as it is: the stored
   blocks are one per scanned chunk, so the fork point found may lie below the real one.)
2. **Scan.** Logs of every recorded deployment's two contracts (or of ``deployment``), from the cursor + 1 to the
   chain's head, in chunks of ``chunk_size`` blocks (``evm.events.iter_event_chunks``: the raw ``eth_getLogs``
   answer decoded directly, halved when the node refuses a range). Each chunk is one database transaction: its
   events (one statement on PostgreSQL; an event already stored is left alone, one stored as orphaned and seen
   again gets its new block and is revived; a sent or reported ``EvmTransaction`` a reorg put back to pending is
   mined again where its events are seen), a ``ChainBlock`` for its last block and the cursor. A watcher killed
   at any point has scanned a chunk completely or not at all: it loses nothing and repeats nothing.
3. **Apply.** Every stored event that is neither orphaned nor applied and is final (block <= head - confirmations
   + 1) is applied through ``evm_event_apply`` in (block, log index) order, a batch of ``APPLY_BATCH`` events per
   database transaction (a savepoint per event). Before a batch, the blocks of its events are checked against the
   chain once more (one batched JSON-RPC call): a scan that raced a reorg would otherwise apply a fact of a block
   that is gone; a mismatch rewinds as in 1 and the run scans again. Events that cannot change any loan of ours
   (no service for their name, about a contract loan id the app does not know, or a request no draft of ours
   matches: another app's loan, a copy of a request taken from the mempool) are marked applied in one UPDATE per
   batch, exactly as ``evm_event_apply`` would mark them; the others go through the service one by one. A refusal
   (``LoanServiceError``, or a database constraint the fact would break: ``integrity_error``) is logged with the
   loan id, reported, and does not stop the others; the event stays unapplied and is tried again next run, and the
   later events of the same contract loan wait behind it (applied out of order, they would be lost or refused).

Where the first run starts: the lowest block of the deployments scanned (the cursor is created just below it, with
an all-zero hash meaning "nothing scanned yet"). After that the cursor alone decides; the cursor is per chain, so
every deployment on it is scanned together.

A run that fails (a node that cannot be reached or answers nonsense, a deep reorg) records ``failures`` + 1,
``last_error`` and ``retry_after = now + min(2**failures, 300)`` seconds on the cursor and raises again for the
task runner (django-q2 records the failure); runs before ``retry_after`` are skipped, and the next successful run
resets them. Chunks already scanned stay scanned, events already applied stay applied: nothing is lost.

Cost (``benchmarks/bench_sync.py``): scanning, decoding and storing take a handful of queries per chunk and per
apply batch, whatever their number of events; an event that moves a loan costs what its service costs (a
transition with its audit row, about fifteen queries).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from web3 import Web3
from web3.exceptions import BlockNotFound

from evm.connection import check_chain_id, connect
from evm.errors import NodeUnavailable
from evm.events import (
    BlockRef,
    ChainEvent,
    ReorgDuringScan,
    default_decoder,
    get_block_ref,
    iter_event_chunks,
)

from ..errors import DeepReorgError, LoanServiceError
from ..logging import loan_context
from ..models import ChainBlock, ChainCursor, ContractDeployment, EvmEvent, EvmTransaction, Loan
from ..services import evm_event_apply
from ..services.evm_facts import EVENT_SERVICES
from .cursors import backing_off, record_failure
from .locks import exclusive_run

logger = logging.getLogger(__name__)

CHAIN = ChainCursor.Chain.EVM
#: Final events applied per database transaction.
APPLY_BATCH = 1000
#: Stored blocks kept to find a fork point (one per scanned chunk).
KEPT_BLOCKS = 256
#: Blocks asked for in one batched JSON-RPC call when checking hashes.
HASH_BATCH = 200
#: Rewinds one run accepts before it stops (a chain that keeps switching branches under it).
MAX_REWINDS_PER_RUN = 10
#: The cursor's hash before anything was scanned: there is no block to check for a reorg yet.
UNSCANNED = "00" * 32


@dataclass(frozen=True)
class Refusal:
    """A final event the loan services refused (nothing changed; tried again next run)."""

    loan_id: int | None
    event: str  # "LoanOffered @123:0"
    code: str

    def __str__(self) -> str:
        return f"loan {self.loan_id} {self.event} ({self.code})"


@dataclass(frozen=True)
class EvmSyncReport:
    """What one run did. ``skipped`` says why a run did nothing (no deployment, lock held, backing off)."""

    skipped: str = ""
    block: int | None = None  # the cursor after the run: the last block scanned
    head: int | None = None  # the chain's head when the run scanned
    final_block: int | None = None  # events up to this block were final
    blocks: int = 0  # blocks scanned
    stored: int = 0  # new events stored
    revived: int = 0  # orphaned events seen again in a new block
    rewinds: int = 0  # reorgs found
    orphaned: int = 0  # events marked orphaned by them
    applied: int = 0  # final events applied (through a service, or marked: about no loan of ours)
    moved: int = 0  # of which were about a loan of ours (applied through its service)
    refused: tuple[Refusal, ...] = ()
    held: int = 0  # later events of a loan with a refused one, left unapplied behind it
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        parts = [f"scanned {self.blocks} blocks to block {self.block} (head {self.head}, final {self.final_block})"]
        if self.rewinds:
            parts.append(f"{self.rewinds} reorgs rewound ({self.orphaned} events orphaned)")
        stored = f"stored {self.stored} new events"
        if self.revived:
            stored += f" and revived {self.revived}"
        parts.append(stored)
        parts.append(f"applied {self.applied} ({self.moved} through the loan services)")
        if self.refused:
            parts.append(f"refused {', '.join(map(str, self.refused))}")
        if self.held:
            parts.append(f"held {self.held} later events of those loans back")
        return ", ".join(parts) + f" in {self.seconds:.2f} s"


@dataclass
class _Tally:
    blocks: int = 0
    stored: int = 0
    revived: int = 0
    rewinds: int = 0
    orphaned: int = 0
    applied: int = 0
    moved: int = 0
    held: int = 0


# -- the chain ---------------------------------------------------------------------------------------------------


def _hex(value: Any) -> str:
    if isinstance(value, str):
        return value.removeprefix("0x").lower()
    return bytes(value).hex()


def canonical_hashes(w3: Web3, numbers: Iterable[int]) -> dict[int, str | None]:
    """The chain's block hash at each height (None above the head), in batched JSON-RPC calls."""
    wanted = sorted(set(numbers))
    found: dict[int, str | None] = {}
    for start in range(0, len(wanted), HASH_BATCH):
        part = wanted[start : start + HASH_BATCH]
        responses: Any = None
        try:
            responses = w3.provider.make_batch_request([("eth_getBlockByNumber", [hex(n), False]) for n in part])
        except (AttributeError, NotImplementedError, ValueError):  # a provider without batches
            responses = None
        if isinstance(responses, list) and len(responses) == len(part) and all("result" in r for r in responses):
            for number, response in zip(part, responses, strict=True):
                block = response["result"]
                found[number] = _hex(block["hash"]) if block else None
            continue
        if isinstance(responses, Mapping) and responses.get("error"):
            raise NodeUnavailable(f"eth_getBlockByNumber (batch) failed: {responses['error']}")
        for number in part:  # one by one
            try:
                found[number] = get_block_ref(w3, number).hash.hex()
            except BlockNotFound:
                found[number] = None
    return found


# -- storing -----------------------------------------------------------------------------------------------------


def _rows(events: Sequence[ChainEvent], chain_id: int) -> list[dict[str, Any]]:
    rows = []
    for event in events:
        record = event.record(chain_id)
        record.pop("contract_loan_id")
        rows.append(record)
    return rows


def _store_events(rows: Sequence[Mapping[str, Any]], chain_id: int) -> tuple[int, int]:
    """Store each event once: new ones in bulk; one stored before as orphaned (or, not yet applied, in a block that
    is gone) is revived in its new block; any other one already stored is left alone. Returns (new, revived). Call
    inside the chunk's transaction."""
    if not rows:
        return 0, 0
    if connection.vendor in ONE_STATEMENT_VENDORS:
        return _upsert_events_postgresql(rows, chain_id)
    existing = {
        (tx_hash, log_index): (pk, block_hash, orphaned_at, applied_at)
        for pk, tx_hash, log_index, block_hash, orphaned_at, applied_at in EvmEvent.objects.filter(
            chain_id=chain_id, tx_hash__in={row["tx_hash"] for row in rows}
        ).values_list("pk", "tx_hash", "log_index", "block_hash", "orphaned_at", "applied_at")
    }
    new: list[EvmEvent] = []
    revived: list[EvmEvent] = []
    for row in rows:
        found = existing.get((row["tx_hash"], row["log_index"]))
        if found is None:
            new.append(EvmEvent(**row))
            continue
        pk, block_hash, orphaned_at, applied_at = found
        if applied_at is None and (orphaned_at is not None or block_hash != row["block_hash"]):
            revived.append(EvmEvent(pk=pk, orphaned_at=None, **row))
    EvmEvent.objects.bulk_create(new, batch_size=500)
    EvmEvent.objects.bulk_update(revived, REVIVED_FIELDS, batch_size=500)
    return len(new), len(revived)


def _transactions_seen_mined(rows: Sequence[Mapping[str, Any]], chain_id: int) -> None:
    """A sent or reported transaction (``EvmTransaction``) a reorg put back to pending is mined again where its
    events are now seen (only a successful transaction has events). Call inside the chunk's transaction."""
    blocks = {row["tx_hash"]: row["block_number"] for row in rows}
    pending = EvmTransaction.objects.filter(
        chain_id=chain_id, tx_hash__in=blocks, status=EvmTransaction.Status.PENDING
    ).values_list("pk", "tx_hash")
    for pk, tx_hash in pending:
        EvmTransaction.objects.filter(pk=pk).update(
            status=EvmTransaction.Status.MINED, block_number=blocks[tx_hash], updated_at=timezone.now()
        )


#: Where events are stored with one statement per chunk (elsewhere: a query for the stored ones, then bulk writes).
ONE_STATEMENT_VENDORS = frozenset({"postgresql"})
REVIVED_FIELDS = ["contract_address", "block_number", "block_hash", "name", "args", "orphaned_at"]
_UPSERT = """
INSERT INTO {table} (chain_id, contract_address, block_number, block_hash, tx_hash, log_index, name, args, created_at)
SELECT %s, r.contract_address, r.block_number, r.block_hash, r.tx_hash, r.log_index, r.name, r.args, %s
FROM jsonb_to_recordset(%s::jsonb) AS r(
    contract_address text, block_number bigint, block_hash text, tx_hash text, log_index integer, name text, args jsonb
)
ON CONFLICT (chain_id, tx_hash, log_index) DO UPDATE SET {revive}, orphaned_at = NULL
WHERE {table}.applied_at IS NULL
    AND ({table}.orphaned_at IS NOT NULL OR {table}.block_hash <> EXCLUDED.block_hash)
RETURNING xmax = 0
"""


def _upsert_events_postgresql(rows: Sequence[Mapping[str, Any]], chain_id: int) -> tuple[int, int]:
    """``_store_events`` in one statement: the rows as one JSON parameter (psycopg adapts a list parameter element
    by element, in Python; PostgreSQL parses JSON in C), ``ON CONFLICT`` on the natural key; ``xmax = 0`` tells an
    inserted row from a revived one."""
    table = connection.ops.quote_name(EvmEvent._meta.db_table)
    revive = ", ".join(f"{name} = EXCLUDED.{name}" for name in REVIVED_FIELDS[:-1])
    payload = json.dumps([{key: value for key, value in row.items() if key != "chain_id"} for row in rows])
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT.format(table=table, revive=revive), [chain_id, timezone.now(), payload])
        inserted = [row[0] for row in cursor.fetchall()]
    new = sum(inserted)
    return new, len(inserted) - new


def _save_block(ref: BlockRef) -> None:
    ChainBlock.objects.update_or_create(
        chain=CHAIN, number=ref.number, defaults={"hash": ref.hash.hex(), "parent_hash": ref.parent_hash.hex()}
    )


# -- applying ----------------------------------------------------------------------------------------------------


def _unapplied(chain_id: int) -> QuerySet[EvmEvent]:
    return EvmEvent.objects.filter(chain_id=chain_id, applied_at__isnull=True, orphaned_at__isnull=True)


def _pending(chain_id: int, final_block: int, after: tuple[int, int]) -> list[dict[str, Any]]:
    """The next batch of final, unapplied, not orphaned events after position ``after``, in chain order."""
    block, log_index = after
    return list(
        _unapplied(chain_id)
        .filter(
            Q(block_number__gt=block) | Q(block_number=block, log_index__gt=log_index), block_number__lte=final_block
        )
        .order_by("block_number", "log_index")
        .values("pk", "block_number", "block_hash", "log_index", "name", "contract_address", "args")[:APPLY_BATCH]
    )


def _between(chain_id: int, first: Mapping[str, Any], last: Mapping[str, Any]) -> QuerySet[EvmEvent]:
    """The unapplied events from position ``first`` to ``last``, both included: a batch ``_pending`` returned."""
    return _unapplied(chain_id).filter(
        Q(block_number__gt=first["block_number"])
        | Q(block_number=first["block_number"], log_index__gte=first["log_index"]),
        Q(block_number__lt=last["block_number"])
        | Q(block_number=last["block_number"], log_index__lte=last["log_index"]),
    )


def _for_a_service(events: Sequence[Mapping[str, Any]], chain_id: int) -> set[int]:
    """The events of a batch that may change a loan of ours (the rest would change nothing: they are marked applied
    in bulk). Errs on the side of the service: a request matching a draft's hB of any borrower goes to it."""
    loan_contracts = {
        address.lower(): pk
        for pk, address in ContractDeployment.objects.filter(chain_id=chain_id).values_list(
            "pk", "loan_contract_address"
        )
    }
    candidates = [
        (event, loan_contracts[event["contract_address"].lower()])
        for event in events
        if event["name"] in EVENT_SERVICES
        and event["contract_address"].lower() in loan_contracts
        and "loan_id" in event["args"]
    ]
    if not candidates:
        return set()
    deployments = {deployment for _, deployment in candidates}
    contract_ids = [int(event["args"]["loan_id"]) for event, _ in candidates]
    # Ranges and small tables rather than IN lists of a thousand values (slow to send, slower to plan).
    known = set(
        Loan.objects.filter(
            deployment_id__in=deployments,
            contract_loan_id__gte=min(contract_ids),
            contract_loan_id__lte=max(contract_ids),
        ).values_list("deployment_id", "contract_loan_id")
    )
    drafts: set[tuple[int, str]] = set()
    if any(event["name"] == "LoanRequested" for event, _ in candidates):
        drafts = set(
            Loan.objects.filter(deployment_id__in=deployments, status=Loan.Status.DRAFT).values_list(
                "deployment_id", "borrower_hash"
            )
        )
    chosen: set[int] = set()
    for event, deployment in candidates:
        key = (deployment, int(event["args"]["loan_id"]))
        if key in known or (
            event["name"] == "LoanRequested" and (deployment, event["args"]["borrower_hash"]) in drafts
        ):
            chosen.add(event["pk"])
            known.add(key)  # the request may link it: the loan's later events in this batch go to their services
    return chosen


def _contract_loan(event: Mapping[str, Any]) -> tuple[str, int] | None:
    """(contract address, contract loan id) of an event about one loan."""
    if "loan_id" not in event["args"]:
        return None
    return event["contract_address"].lower(), int(event["args"]["loan_id"])


def _event_name(event: Mapping[str, Any]) -> str:
    return f"{event['name']} @{event['block_number']}:{event['log_index']}"


# -- a run -------------------------------------------------------------------------------------------------------


class _Run:
    """One run's state: the node, what is scanned, the cursor and the tally."""

    def __init__(
        self,
        w3: Web3,
        deployments: Sequence[ContractDeployment],
        cursor: ChainCursor,
        confirmations: int,
        chunk_size: int,
    ) -> None:
        self.w3 = w3
        self.chain_id = deployments[0].chain_id
        self.addresses = sorted(
            {address for d in deployments for address in (d.loan_contract_address, d.ether_swap_address)}
        )
        self.start_block = _start_block(deployments)
        self.cursor = cursor
        self.confirmations = confirmations
        self.chunk_size = chunk_size
        self.tally = _Tally()
        self.refused: list[Refusal] = []
        self.blocked: set[tuple[str, int]] = set()  # contract loans with a refused event: their later ones wait
        self.decoder = default_decoder()

    def run(self) -> tuple[int, int]:
        """Rewind, scan, apply; again after a rewind found while applying. Returns (head, final block)."""
        while True:
            self.rewind_if_reorged()
            head = self.scan()
            final_block = head - self.confirmations + 1
            mismatch = self.apply(final_block)
            if mismatch is None:
                return head, final_block
            self.rewind(mismatch - 1)

    # -- 1. reorg

    def rewind_if_reorged(self) -> None:
        cursor = self.cursor
        if cursor.block_hash == UNSCANNED:
            return
        if canonical_hashes(self.w3, [cursor.block_number])[cursor.block_number] == cursor.block_hash:
            return
        self.rewind(self._fork_point())

    def _fork_point(self) -> int:
        """The highest stored block still on the chain (the start when none is)."""
        stored = list(
            ChainBlock.objects.filter(chain=CHAIN, number__lt=self.cursor.block_number)
            .order_by("-number")
            .values_list("number", "hash")
        )
        for start in range(0, len(stored), 32):
            part = stored[start : start + 32]
            chain = canonical_hashes(self.w3, [number for number, _ in part])
            for number, hash_ in part:
                if chain[number] == hash_:
                    return number
        return self.start_block - 1

    def rewind(self, fork: int) -> None:
        """Orphan the unapplied events above ``fork`` and move the cursor back to it, atomically; refuse (deep
        reorg) when an applied event above it is in a block the chain no longer has."""
        self.tally.rewinds += 1
        if self.tally.rewinds > MAX_REWINDS_PER_RUN:
            raise ReorgDuringScan(f"the chain switched branches {MAX_REWINDS_PER_RUN} times during one run")
        fork = max(fork, self.start_block - 1)
        applied = list(
            EvmEvent.objects.filter(
                chain_id=self.chain_id, block_number__gt=fork, orphaned_at__isnull=True, applied_at__isnull=False
            )
            .values_list("block_number", "block_hash")
            .distinct()
        )
        chain = canonical_hashes(self.w3, [number for number, _ in applied] + [fork])
        gone = sorted((number, hash_) for number, hash_ in applied if chain[number] != hash_)
        if gone:
            events = EvmEvent.objects.filter(
                chain_id=self.chain_id, block_hash__in=[hash_ for _, hash_ in gone], applied_at__isnull=False
            )
            loans = sorted({pk for pk in events.values_list("loan_id", flat=True) if pk is not None})
            raise DeepReorgError(
                f"a reorg removed EVM block {gone[0][0]} ({gone[0][1]}) and {len(gone) - 1} more whose "
                f"{events.count()} events were final and applied (loans {loans or 'none of ours'}): deeper than "
                f"EVM_CONFIRMATIONS = {self.confirmations}; nothing was rewound, an operator must decide"
            )
        if fork < self.start_block or chain[fork] is None:
            ref = None
        else:
            ref = get_block_ref(self.w3, fork)
            if ref.hash.hex() != chain[fork]:  # it changed again just now: rewind further next time round
                raise ReorgDuringScan(f"block {fork} changed while the watcher rewound to it")
        with transaction.atomic():
            orphaned = EvmEvent.objects.filter(
                chain_id=self.chain_id, block_number__gt=fork, orphaned_at__isnull=True, applied_at__isnull=True
            ).update(orphaned_at=timezone.now())
            # The receipts read when they were sent or reported name blocks that are gone: no receipt until the
            # transaction's events are seen again (a dropped one stays pending; a wallet may report it again).
            EvmTransaction.objects.filter(chain_id=self.chain_id, block_number__gt=fork).update(
                status=EvmTransaction.Status.PENDING, block_number=None, updated_at=timezone.now()
            )
            ChainBlock.objects.filter(chain=CHAIN, number__gt=fork).delete()
            cursor = ChainCursor.objects.select_for_update().get(pk=self.cursor.pk)
            cursor.block_number = fork
            cursor.block_hash = UNSCANNED if ref is None else ref.hash.hex()
            cursor.parent_hash = UNSCANNED if ref is None else ref.parent_hash.hex()
            cursor.save(update_fields=["block_number", "block_hash", "parent_hash", "updated_at"])
        self.cursor = cursor
        self.tally.orphaned += orphaned
        logger.warning("evm reorg: rewound to block %s (%s), %s events orphaned", fork, cursor.block_hash, orphaned)

    # -- 2. scan

    def scan(self) -> int:
        head = int(self.w3.eth.block_number)
        start = self.cursor.block_number + 1
        if start > head:
            return head
        chunks = iter_event_chunks(
            self.w3, self.addresses, start, head, chunk_size=self.chunk_size, decoder=self.decoder
        )
        for chunk in chunks:
            rows = _rows(chunk.events, self.chain_id)
            with transaction.atomic():
                stored, revived = _store_events(rows, self.chain_id)
                if rows:
                    _transactions_seen_mined(rows, self.chain_id)
                _save_block(chunk.last_block)
                cursor = ChainCursor.objects.select_for_update().get(pk=self.cursor.pk)
                cursor.block_number = chunk.last_block.number
                cursor.block_hash = chunk.last_block.hash.hex()
                cursor.parent_hash = chunk.last_block.parent_hash.hex()
                cursor.tip_number = head
                cursor.save(update_fields=["block_number", "block_hash", "parent_hash", "tip_number", "updated_at"])
            self.cursor = cursor
            self.tally.blocks += chunk.to_block - chunk.from_block + 1
            self.tally.stored += stored
            self.tally.revived += revived
        return head

    # -- 3. apply

    def apply(self, final_block: int) -> int | None:
        """Apply the final events; the lowest block found no longer on the chain (rewind to below it), or None."""
        position = (-1, -1)
        while True:
            events = _pending(self.chain_id, final_block, position)
            if not events:
                return None
            blocks = {(event["block_number"], event["block_hash"]) for event in events}
            chain = canonical_hashes(self.w3, [number for number, _ in blocks])
            gone = [number for number, hash_ in blocks if chain[number] != hash_]
            if gone:
                return min(gone)
            for_service = _for_a_service(events, self.chain_id)
            linked = _linked_loans([event for event in events if event["pk"] in for_service])
            held: set[int] = set()
            first, last = events[0], events[-1]
            with transaction.atomic():
                for event in events:
                    loan_key = _contract_loan(event)
                    if loan_key is not None and loan_key in self.blocked:
                        held.add(event["pk"])  # a later event of a loan whose earlier one was refused: wait for it
                    elif event["pk"] in for_service:
                        with loan_context(linked.get(loan_key)):  # the log lines of its apply name the loan
                            if not self._apply_one(event) and loan_key is not None:
                                self.blocked.add(loan_key)
                # The rest of the batch would change nothing: marked applied at once (the refused stay unapplied).
                inert = _between(self.chain_id, first, last).exclude(pk__in=for_service | held)
                self.tally.applied += inert.update(applied_at=timezone.now())
            self.tally.held += len(held)
            position = (last["block_number"], last["log_index"])

    def _apply_one(self, event: Mapping[str, Any]) -> bool:
        """Apply one event through its service; False when refused."""
        try:
            loan = evm_event_apply(event_id=event["pk"])
        except LoanServiceError as error:
            self._refused(event, error.code, error)
            return False
        except IntegrityError as error:  # a fact the database refuses (rolled back to the event's savepoint)
            self._refused(event, "integrity_error", error)
            return False
        self.tally.applied += 1
        self.tally.moved += int(loan is not None)
        return True

    def _refused(self, event: Mapping[str, Any], code: str, error: Exception) -> None:
        """Logged with the loan id and reported; the event stays unapplied (tried again next run)."""
        loan_id = _loan_pk(event)
        logger.warning(
            "loan %s: final %s not applied: %s", loan_id, _event_name(event), error, extra={"loan_id": loan_id}
        )
        self.refused.append(Refusal(loan_id, _event_name(event), code))


def _linked_loans(events: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], int]:
    """The app's loans already linked to the events' contract loans, by ``_contract_loan`` key (one query; a
    request's draft is not linked yet)."""
    keys = {key for event in events if (key := _contract_loan(event)) is not None}
    if not keys:
        return {}
    ids = [contract_id for _, contract_id in keys]
    rows = Loan.objects.filter(contract_loan_id__gte=min(ids), contract_loan_id__lte=max(ids)).values_list(
        "deployment__loan_contract_address", "contract_loan_id", "pk"
    )
    return {key: pk for address, contract_id, pk in rows if (key := (address.lower(), contract_id)) in keys}


def _loan_pk(event: Mapping[str, Any]) -> int | None:
    """The app's loan an event is about, if any (for the log)."""
    args = event["args"]
    if "loan_id" not in args:
        return None
    loans = Loan.objects.filter(deployment__loan_contract_address__iexact=event["contract_address"])
    linked = loans.filter(contract_loan_id=int(args["loan_id"])).values_list("pk", flat=True).first()
    if linked is None and event["name"] == "LoanRequested":  # the borrower's draft it was refused for
        drafts = loans.filter(
            status=Loan.Status.DRAFT,
            borrower_hash=args["borrower_hash"],
            borrower__evm_address__iexact=args["borrower"],
        )
        return drafts.values_list("pk", flat=True).first()
    return linked


def _prune_blocks() -> None:
    """Keep the newest ``KEPT_BLOCKS`` stored blocks."""
    oldest_kept = list(
        ChainBlock.objects.filter(chain=CHAIN)
        .order_by("-number")
        .values_list("number", flat=True)[KEPT_BLOCKS - 1 :][:1]
    )
    if oldest_kept:
        ChainBlock.objects.filter(chain=CHAIN, number__lt=oldest_kept[0]).delete()


def _start_block(deployments: Sequence[ContractDeployment]) -> int:
    return max(min(d.block_number for d in deployments), 1)


def _cursor(deployments: Sequence[ContractDeployment]) -> ChainCursor:
    """The EVM cursor; on the first run, just below the first deployment's block (nothing scanned yet)."""
    cursor, _ = ChainCursor.objects.get_or_create(
        chain=CHAIN,
        defaults={
            "block_number": _start_block(deployments) - 1,
            "block_hash": UNSCANNED,
            "parent_hash": UNSCANNED,
        },
    )
    return cursor


def sync_evm(
    *,
    w3: Web3 | None = None,
    deployment: ContractDeployment | None = None,
    confirmations: int | None = None,
    chunk_size: int | None = None,
) -> EvmSyncReport:
    """One run of the EVM watcher (see the module docstring). ``w3`` defaults to ``settings.EVM_RPC_URL`` (checked
    against ``settings.EVM_CHAIN_ID``), ``deployment`` to every deployment recorded on that chain,
    ``confirmations`` to ``settings.EVM_CONFIRMATIONS``, ``chunk_size`` (blocks per ``eth_getLogs``) to
    ``settings.EVM_SCAN_CHUNK_BLOCKS``."""
    started = time.perf_counter()
    confirmations = settings.EVM_CONFIRMATIONS if confirmations is None else confirmations
    if isinstance(confirmations, bool) or not isinstance(confirmations, int) or confirmations < 1:
        raise ValueError(f"confirmations must be a positive integer, got {confirmations!r}")
    if chunk_size is None:
        chunk_size = settings.EVM_SCAN_CHUNK_BLOCKS
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chain_id = settings.EVM_CHAIN_ID if deployment is None else deployment.chain_id
    deployments = (
        [deployment]
        if deployment is not None
        else list(ContractDeployment.objects.filter(chain_id=chain_id).order_by("block_number"))
    )
    if not deployments:
        return EvmSyncReport(skipped=f"no contract deployment is recorded for chain {chain_id}")
    with exclusive_run("evm") as acquired:
        if not acquired:
            return EvmSyncReport(skipped="another EVM watcher run holds the lock")
        cursor = _cursor(deployments)
        if waiting := backing_off(cursor):
            return EvmSyncReport(skipped=waiting)
        try:
            if w3 is None:
                w3 = connect(settings.EVM_RPC_URL, expected_chain_id=chain_id, timeout=settings.EVM_RPC_TIMEOUT)
            else:
                check_chain_id(w3, chain_id)
            run = _Run(w3, deployments, cursor, confirmations, chunk_size)
            head, final_block = run.run()
            _prune_blocks()
            ChainCursor.objects.filter(pk=cursor.pk).update(
                tip_number=head, failures=0, last_error="", retry_after=None, updated_at=timezone.now()
            )
        except Exception as error:
            record_failure(CHAIN, error)
            raise
    tally = run.tally
    report = EvmSyncReport(
        block=run.cursor.block_number,
        head=head,
        final_block=final_block,
        blocks=tally.blocks,
        stored=tally.stored,
        revived=tally.revived,
        rewinds=tally.rewinds,
        orphaned=tally.orphaned,
        applied=tally.applied,
        moved=tally.moved,
        refused=tuple(run.refused),
        held=tally.held,
        seconds=time.perf_counter() - started,
    )
    logger.info("evm: %s", report)
    return report
