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
from datetime import datetime

from django.db.models import QuerySet

from .models import BitcoinTransaction, ChainCursor, EvmEvent, Loan, LoanStatusChange, ProtocolParameters

Role = BitcoinTransaction.Role


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

    @classmethod
    def of(cls, *, block: int | None, head: int | None) -> Deadline:
        if block is None or head is None:
            return cls(block, None)
        return cls(block, max(0, block - (head + 1)))


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
    return LoanDeadlines(
        head=head,
        offer=Deadline.of(block=loan.offer_deadline_evm_block, head=head),
        repayment=Deadline.of(block=loan.repayment_deadline_evm_block, head=head),
        acceptance=Deadline.of(block=loan.acceptance_deadline_evm_block, head=head),
    )


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
