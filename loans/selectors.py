"""Reads that derive what the database does not store: confirmations and timelock maturity, from heights.

Confirmations are never stored. A Bitcoin transaction's block height and the Bitcoin watcher's followed height
(the cursor: the last block it checked as one chain with the others, ``ChainCursor.block_number``) give them:
``followed height - block height + 1``, 0 while unconfirmed. The followed height, not the node's head: a fact is
only as deep as the chain the watcher has verified, so while the watcher catches up these figures lag the node
and never run ahead of it (a timelock never shows as matured early).

A relative timelock of ``t`` blocks (BIP-68, the leaves' ``OP_CHECKSEQUENCEVERIFY``) lets a block at height
``h + t`` hold the spend of an output confirmed at height ``h``: the spend enters the mempool once the output has
``t`` confirmations and is mined in the next block. So with the watcher at height ``tip``, the blocks still to be
mined before one may hold the spend are ``max(0, h + t - (tip + 1))``; 0 means it may go in the next block.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import BigIntegerField, Case, F, Q, QuerySet, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from .models import BitcoinTransaction, ChainCursor, EvmEvent, Loan, LoanStatusChange, ProtocolParameters

Role = BitcoinTransaction.Role

# Bitcoin's target block spacing (a consensus constant); an EVM block is this over the loan's own
# ``evm_blocks_per_btc_block``. Estimated times are for people: every rule is in blocks.
BITCOIN_TARGET_BLOCK_SECONDS = 600


def estimated_time(*, blocks: int | None, seconds_per_block: float, now: datetime | None = None) -> datetime | None:
    """When ``blocks`` more blocks will probably have been mined, at ``seconds_per_block`` each (None if unknown)."""
    if blocks is None:
        return None
    return (now or timezone.now()) + timedelta(seconds=blocks * seconds_per_block)


def bitcoin_followed_height() -> int | None:
    """The last Bitcoin block the watcher followed, or None before its first run."""
    return ChainCursor.objects.filter(chain=ChainCursor.Chain.BITCOIN).values_list("block_number", flat=True).first()


def bitcoin_confirmations(*, block_height: int | None, tip_height: int | None) -> int:
    """Confirmations of a transaction at ``block_height`` seen from ``tip_height``: 0 when unconfirmed."""
    if block_height is None or tip_height is None or tip_height < block_height:
        return 0
    return tip_height - block_height + 1


def bitcoin_transaction_confirmations(*, bitcoin_transaction: BitcoinTransaction, tip_height: int | None = None) -> int:
    """Confirmations of a loan's Bitcoin transaction, from the watcher's followed height unless ``tip_height``."""
    tip = bitcoin_followed_height() if tip_height is None else tip_height
    return bitcoin_confirmations(block_height=bitcoin_transaction.block_height, tip_height=tip)


@dataclass(frozen=True)
class TimelockPath:
    """One timelock spend path of a loan output: the output's height, the first height a block may hold the
    spend, and the blocks still to be mined before one may (None while the output is not confirmed)."""

    timelock_blocks: int
    output_height: int | None
    mature_height: int | None
    blocks_remaining: int | None

    @classmethod
    def of(cls, *, output_height: int | None, timelock_blocks: int, tip_height: int | None) -> TimelockPath:
        if output_height is None or tip_height is None:
            return cls(timelock_blocks, output_height, None, None)
        mature = output_height + timelock_blocks
        return cls(timelock_blocks, output_height, mature, max(0, mature - (tip_height + 1)))

    @property
    def estimated_mature_at(self) -> datetime | None:
        """When the spend may probably be broadcast (``blocks_remaining`` Bitcoin blocks from now)."""
        return estimated_time(blocks=self.blocks_remaining, seconds_per_block=BITCOIN_TARGET_BLOCK_SECONDS)

    @property
    def is_mature(self) -> bool:
        """The spend may be broadcast now (the next block may hold it)."""
        return self.blocks_remaining == 0


@dataclass(frozen=True)
class LoanTimelocks:
    """Blocks until TX_exit (t_0 after the escrow confirmed) and TX_capture (t_1 after TX_1 confirmed) may be
    mined, seen from ``tip_height``."""

    tip_height: int | None
    exit: TimelockPath
    capture: TimelockPath


def _confirmed_height(loan: Loan, role: str, **match: object) -> int | None:
    """The height of the loan's confirmed transaction with ``role`` (the lowest, when several)."""
    return (
        BitcoinTransaction.objects.filter(loan=loan, role=role, block_height__isnull=False, **match)
        .order_by("block_height")
        .values_list("block_height", flat=True)
        .first()
    )


def loan_timelocks(*, loan: Loan, tip_height: int | None = None) -> LoanTimelocks:
    """Where each timelock path of ``loan`` stands. The outputs' heights come from the transactions as the chain
    holds them now (a reorg moves them), else from the heights the loan kept when they were applied."""
    tip = bitcoin_followed_height() if tip_height is None else tip_height
    if loan.escrow_txid is not None:
        escrow_height = _confirmed_height(loan, Role.ESCROW_FUNDING, txid=loan.escrow_txid, vout=loan.escrow_vout)
    else:
        escrow_height = _confirmed_height(loan, Role.ESCROW_FUNDING)
    collateral_height = _confirmed_height(loan, Role.COLLATERAL_LOCK)
    return _timelocks(loan, tip, escrow_height, collateral_height)


def applied_tx1_txid(*, loan: Loan) -> str | None:
    """TX_1's txid as the watcher applied it (the loan's collateral lock), None before."""
    return (
        BitcoinTransaction.objects.filter(loan=loan, role=Role.COLLATERAL_LOCK, applied_at__isnull=False)
        .order_by("applied_at")
        .values_list("txid", flat=True)
        .first()
    )


def loans_timelocks(*, loans: list[Loan], tip_height: int | None) -> dict[int, LoanTimelocks]:
    """``loan_timelocks`` of many loans in one query (by loan id), seen from ``tip_height``: the same heights, the
    lowest confirmed escrow funding (of the loan's own outpoint once it names one) and TX_1 of each."""
    escrow: dict[int, int] = {}
    collateral: dict[int, int] = {}
    by_id = {loan.pk: loan for loan in loans}
    confirmed = (
        BitcoinTransaction.objects.filter(
            loan_id__in=by_id, role__in=(Role.ESCROW_FUNDING, Role.COLLATERAL_LOCK), block_height__isnull=False
        )
        .order_by("block_height")
        .values_list("loan_id", "role", "txid", "vout", "block_height")
    )
    for loan_id, role, txid, vout, height in confirmed if by_id else ():
        loan = by_id[loan_id]
        if role == Role.COLLATERAL_LOCK:
            collateral.setdefault(loan_id, height)
        elif loan.escrow_txid is None or (txid, vout) == (loan.escrow_txid, loan.escrow_vout):
            escrow.setdefault(loan_id, height)
    return {loan.pk: _timelocks(loan, tip_height, escrow.get(loan.pk), collateral.get(loan.pk)) for loan in loans}


def _timelocks(loan: Loan, tip: int | None, escrow_height: int | None, collateral_height: int | None) -> LoanTimelocks:
    return LoanTimelocks(
        tip_height=tip,
        exit=TimelockPath.of(
            output_height=escrow_height if escrow_height is not None else loan.escrow_btc_height,
            timelock_blocks=loan.escrow_timelock_btc_blocks,
            tip_height=tip,
        ),
        capture=TimelockPath.of(
            output_height=collateral_height if collateral_height is not None else loan.collateral_btc_height,
            timelock_blocks=loan.collateral_timelock_btc_blocks,
            tip_height=tip,
        ),
    )


@dataclass(frozen=True)
class FollowedChain:
    """How far a watcher has followed its chain, for people: the height (None before its first block), and how
    many of its runs failed in a row (the node not answering: what the pages show of that chain may be stale)."""

    name: str  # "EVM", "Bitcoin"
    height: int | None
    failures: int = 0
    last_error: str = ""

    @property
    def node_down(self) -> bool:
        return self.failures > 0

    @property
    def unknown_reason(self) -> str:
        """Why the height is unknown, in words (only meaningful while ``height`` is None)."""
        return (
            f"the desk has not read the {self.name} chain yet: its watcher has not run, "
            f"or the {self.name} node is not answering"
        )


def followed_chains() -> dict[str, FollowedChain]:
    """Both watchers' cursors (one query): ``{"evm": ..., "bitcoin": ...}``, a chain without a cursor unknown."""
    names = dict(ChainCursor.Chain.choices)
    found = {
        cursor.chain: FollowedChain(names[cursor.chain], cursor.block_number, cursor.failures, cursor.last_error)
        for cursor in ChainCursor.objects.all()
    }
    return {chain: found.get(chain, FollowedChain(names[chain], None)) for chain in names}


# --- The API's reads ----------------------------------------------------------------------------------------------


def evm_followed_block() -> int | None:
    """The last EVM block the watcher followed, or None before its first run."""
    return ChainCursor.objects.filter(chain=ChainCursor.Chain.EVM).values_list("block_number", flat=True).first()


@dataclass(frozen=True)
class Deadline:
    """An EVM deadline: the first block at which the step is no longer open (``block``) and the blocks still to be
    mined before it, seen from the watcher's followed block (0: the next block is the deadline, or it passed;
    None while unknown)."""

    block: int | None
    blocks_remaining: int | None
    estimated_at: datetime | None = None  # when ``block`` will probably be mined

    @classmethod
    def of(cls, *, block: int | None, head: int | None, seconds_per_block: float | None = None) -> Deadline:
        if block is None or head is None:
            return cls(block, None)
        remaining = max(0, block - (head + 1))
        estimate = None
        if seconds_per_block is not None:
            estimate = estimated_time(blocks=max(0, block - head), seconds_per_block=seconds_per_block)
        return cls(block, remaining, estimate)


@dataclass(frozen=True)
class LoanDeadlines:
    head: int | None
    offer: Deadline
    repayment: Deadline
    acceptance: Deadline


def loan_deadlines(*, loan: Loan, head: int | None = None) -> LoanDeadlines:
    """The loan's three EVM deadlines (offer window, loan duration, repayment window), from ``head`` or the
    watcher's followed block."""
    head = evm_followed_block() if head is None else head
    spacing = evm_seconds_per_block(loan=loan)
    return LoanDeadlines(
        head=head,
        offer=Deadline.of(block=loan.offer_deadline_evm_block, head=head, seconds_per_block=spacing),
        repayment=Deadline.of(block=loan.repayment_deadline_evm_block, head=head, seconds_per_block=spacing),
        acceptance=Deadline.of(block=loan.acceptance_deadline_evm_block, head=head, seconds_per_block=spacing),
    )


def evm_seconds_per_block(*, loan: Loan) -> float:
    """The EVM block spacing the loan's parameters assume (Bitcoin's over ``evm_blocks_per_btc_block``)."""
    return BITCOIN_TARGET_BLOCK_SECONDS / loan.evm_blocks_per_btc_block


def loans_visible_to(*, user: object) -> QuerySet[Loan]:
    """The loans ``user`` may see (``permissions.can_view_loan``): all for the lender and operators, the user's
    own for a borrower, none for anyone else; with what a list shows joined in."""
    from .permissions import is_lender, is_operator

    loans = Loan.objects.select_related("borrower", "lender", "parameters", "deployment")
    if is_lender(user) or is_operator(user):
        return loans
    if getattr(user, "is_active", False) and getattr(user, "pk", None) is not None:
        return loans.filter(borrower_id=user.pk)
    return loans.none()


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened to a loan: an audit row, a contract event or a Bitcoin transaction."""

    at: datetime
    kind: str  # "status_change", "evm_event", "bitcoin_transaction"
    item: object


def loan_timeline(*, loan: Loan) -> list[TimelineEntry]:
    """The loan's audit trail, contract events and Bitcoin transactions, oldest first (three queries)."""
    entries = [
        TimelineEntry(change.created_at, "status_change", change)
        for change in LoanStatusChange.objects.filter(loan=loan).select_related("actor")
    ]
    entries += [TimelineEntry(event.created_at, "evm_event", event) for event in EvmEvent.objects.filter(loan=loan)]
    entries += [
        TimelineEntry(tx.first_seen_at, "bitcoin_transaction", tx)
        for tx in BitcoinTransaction.objects.filter(loan=loan)
    ]
    order = {"evm_event": 0, "bitcoin_transaction": 1, "status_change": 2}  # a fact before the change it made
    entries.sort(key=lambda entry: (entry.at, order[entry.kind], entry.item.pk))
    return entries


def parameters_in_force() -> ProtocolParameters | None:
    """The newest protocol parameters version (the one new loans take), or None before the first."""
    return ProtocolParameters.objects.order_by("-version").first()


# --- What each party may do next ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NextAction:
    """One step a party may take on a loan, as the watchers' view of both chains shows it (the step's own service
    checks again against the chains when it is asked for).

    ``name`` is the step (the API names its endpoint), ``party`` "borrower" or "lender", ``kind`` where it happens
    ("evm_call": a contract call to prepare for a wallet or send with the lender's key; "bitcoin": a transaction
    or PSBT; "upload": signatures to hand over; "payment": pay the escrow from any wallet). ``open`` is False when
    it is not open yet; ``opens`` then says when (an EVM deadline or a Bitcoin timelock path), ``closes`` when an
    open step stops being possible."""

    name: str
    party: str
    kind: str
    open: bool = True
    opens: Deadline | TimelockPath | None = None
    closes: Deadline | None = None


def _borrower_next_actions(loan: Loan, deadlines: LoanDeadlines, timelocks: LoanTimelocks) -> list[NextAction]:
    status, btc = loan.status, loan.bitcoin_status
    escrow_confirmed = btc == Loan.BitcoinStatus.ESCROW_CONFIRMED
    actions: list[NextAction] = []
    if status == Loan.Status.DRAFT:
        if btc == Loan.BitcoinStatus.NONE:
            actions.append(NextAction("fund-escrow", "borrower", "payment"))
        elif escrow_confirmed:
            actions.append(NextAction("request", "borrower", "evm_call"))
    elif status == Loan.Status.REQUESTED:
        actions.append(NextAction("cancel-request", "borrower", "evm_call"))
        if loan.lender_hash is not None and escrow_confirmed:
            signed = set(loan.borrower_signatures.values_list("kind", flat=True))
            if "tx_1" not in signed:
                actions.append(NextAction("presignature", "borrower", "upload"))
            else:
                actions.append(NextAction("ladders", "borrower", "upload"))
    elif status == Loan.Status.OFFERED:
        offer = deadlines.offer
        cutoff_block = None if offer.block is None else offer.block - loan.accept_cutoff_blocks + 1
        closes = Deadline.of(
            block=cutoff_block, head=deadlines.head, seconds_per_block=evm_seconds_per_block(loan=loan)
        )
        is_open = deadlines.head is None or cutoff_block is None or deadlines.head + 1 < cutoff_block
        actions.append(NextAction("accept-offer", "borrower", "evm_call", open=is_open, closes=closes))
    elif status == Loan.Status.ACTIVE:
        actions.append(NextAction("repay", "borrower", "evm_call", closes=deadlines.repayment))
    elif status == Loan.Status.REPAYMENT_IN_PROGRESS:
        actions.append(
            NextAction(
                "withdraw-repayment",
                "borrower",
                "evm_call",
                open=deadlines.acceptance.blocks_remaining == 0,
                opens=deadlines.acceptance,
            )
        )
    if loan.lender_preimage is not None and btc == Loan.BitcoinStatus.COLLATERAL_LOCKED:
        actions.append(NextAction("release-psbt", "borrower", "bitcoin"))
    if escrow_confirmed and status not in Loan.ESCROW_OWED_TO_LENDER_STATUSES and status != Loan.Status.DRAFT:
        exit_path = timelocks.exit
        actions.append(NextAction("exit-psbt", "borrower", "bitcoin", open=exit_path.is_mature, opens=exit_path))
    return actions


def _lender_next_actions(loan: Loan, deadlines: LoanDeadlines, timelocks: LoanTimelocks) -> list[NextAction]:
    status, btc = loan.status, loan.bitcoin_status
    actions: list[NextAction] = []
    if status == Loan.Status.REQUESTED and btc == Loan.BitcoinStatus.ESCROW_CONFIRMED:
        if loan.lender_hash is None:
            actions.append(NextAction("commit-lender-hash", "lender", "evm_call"))
        elif loan.borrower_signatures.filter(kind="tx_1").exists():
            actions.append(NextAction("offer", "lender", "evm_call"))
    elif status == Loan.Status.OFFERED:
        offer = deadlines.offer
        actions.append(
            NextAction("withdraw-offer", "lender", "evm_call", open=offer.blocks_remaining == 0, opens=offer)
        )
    elif status == Loan.Status.ACTIVE:
        repayment = deadlines.repayment
        actions.append(
            NextAction("mark-default", "lender", "evm_call", open=repayment.blocks_remaining == 0, opens=repayment)
        )
    elif status == Loan.Status.REPAYMENT_IN_PROGRESS:
        actions.append(NextAction("accept-repayment", "lender", "evm_call", closes=deadlines.acceptance))
    if loan.borrower_preimage is not None and btc == Loan.BitcoinStatus.ESCROW_CONFIRMED:
        actions.append(NextAction("collateral-lock", "lender", "bitcoin"))
    if (
        status in (Loan.Status.DEFAULTED, Loan.Status.REPAYMENT_REFUNDED)
        and btc == Loan.BitcoinStatus.COLLATERAL_LOCKED
    ):
        capture = timelocks.capture
        actions.append(NextAction("collateral-capture", "lender", "bitcoin", open=capture.is_mature, opens=capture))
    return actions


def loan_next_actions(
    *, loan: Loan, user: object, deadlines: LoanDeadlines | None = None, timelocks: LoanTimelocks | None = None
) -> list[NextAction]:
    """What ``user`` may do next on ``loan``: the borrower's steps for its borrower, the lender's for the lender and
    operators (an operator acts for the desk), nothing for anyone else or on a closed loan."""
    from .permissions import is_lender, is_loan_borrower, is_operator

    if loan.is_closed:
        return []
    deadlines = deadlines or loan_deadlines(loan=loan)
    timelocks = timelocks or loan_timelocks(loan=loan)
    actions: list[NextAction] = []
    if is_loan_borrower(user, loan):
        actions += _borrower_next_actions(loan, deadlines, timelocks)
    if is_lender(user) or is_operator(user):
        actions += _lender_next_actions(loan, deadlines, timelocks)
    return actions


# --- The lender's desk: the deadlines coming up -------------------------------------------------------------------


@dataclass(frozen=True)
class DeskCountdowns:
    """The open loans whose lender's step counts down, the nearest ``loans`` first, and how many there are."""

    loans: list[Loan]
    total: int


def _lender_countdown_blocks(head: int) -> Case:
    """SQL for the blocks remaining (``Deadline.of``, seen from ``head``) of the deadline the lender's step on an
    open loan counts down to, as ``_lender_next_actions`` has it: the offer deadline (t_B) before withdraw-offer
    opens, the repayment deadline (t_D) before mark-default opens, the acceptance deadline (t_L) while
    accept-repayment is open. NULL for a loan in another state or without the block its deadline counts from."""
    after = Value(head + 1)
    return Case(
        When(
            status=Loan.Status.OFFERED,
            offered_evm_block__isnull=False,
            then=F("offered_evm_block") + F("offer_window_blocks") - after,
        ),
        When(
            status=Loan.Status.ACTIVE,
            activated_evm_block__isnull=False,
            then=F("activated_evm_block") + F("loan_duration_blocks") - after,
        ),
        When(
            status=Loan.Status.REPAYMENT_IN_PROGRESS,
            repayment_evm_block__isnull=False,
            then=Greatest(F("repayment_evm_block") + F("repayment_window_blocks") - after, Value(0)),
        ),
        default=None,
        output_field=BigIntegerField(),
    )


def lender_countdown_loans(*, loans: QuerySet[Loan], head: int | None, limit: int) -> DeskCountdowns:
    """Of ``loans``, the open ones (not closed) whose lender's step has a countdown on the desk, nearest first
    (blocks remaining, then id), at most ``limit``, chosen in SQL; and how many there are (two queries, whatever
    the number of loans). A countdown: withdraw-offer and mark-default before they open (blocks remaining > 0;
    once open they have none), accept-repayment while it is open (down to 0). Each such loan has exactly one
    (the states exclude each other), and none with the followed EVM block unknown. The lender's other steps have
    none: commit-lender-hash, offer and collateral-lock have no deadline, and collateral-capture, the one that
    waits for a Bitcoin timelock (t_1), is a step of terminal states (defaulted, repayment refunded), which the
    desk's open loans leave out. (t_0, TX_exit's timelock, is the borrower's.)"""
    if head is None:
        return DeskCountdowns([], 0)
    counting = (
        loans.filter(closed_at__isnull=True)
        .annotate(lender_countdown_blocks=_lender_countdown_blocks(head))
        .filter(
            Q(status__in=(Loan.Status.OFFERED, Loan.Status.ACTIVE), lender_countdown_blocks__gt=0)
            | Q(status=Loan.Status.REPAYMENT_IN_PROGRESS, lender_countdown_blocks__isnull=False)
        )
    )
    return DeskCountdowns(list(counting.order_by("lender_countdown_blocks", "id")[:limit]), counting.count())
