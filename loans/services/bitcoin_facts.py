"""Bitcoin facts, applied to the app's loans: one service per spend path, each applied once, when final.

The Bitcoin watcher records every transaction of an open loan it finds in a block (``bitcoin_transaction_record``:
the escrow's funding, and every spend of the escrow or the collateral, including spends the platform did not
broadcast), un-confirms them when their block leaves the chain (``bitcoin_block_disconnect``), and applies each
one once it is final (``bitcoin_transaction_apply``). Confirmations are derived from heights, never stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from bitcoin.transactions import COLLATERAL_OUTPUT_INDEX, OutPoint

from ..errors import ChainFactError, DeepReorgError
from ..models import BitcoinTransaction, Loan
from .transitions import loan_status_transition

logger = logging.getLogger(__name__)
Role = BitcoinTransaction.Role


def bitcoin_transaction_record(
    *,
    loan: Loan,
    role: str,
    txid: str,
    block_hash: str,
    block_height: int,
    vout: int | None = None,
    value_sats: int | None = None,
    spent: OutPoint | None = None,
    revealed_preimage: str | None = None,
    raw_hex: str = "",
) -> BitcoinTransaction:
    """Store a loan's transaction as found in a block, once (natural key: loan and txid); a transaction seen
    again in another block (after a reorg) moves to that block. A funding gives ``vout`` and ``value_sats`` of
    the escrow output; a spend gives the outpoint it ``spent``."""
    with transaction.atomic():
        recorded = BitcoinTransaction.objects.select_for_update().filter(loan=loan, txid=txid).first()
        if recorded is None:
            recorded = BitcoinTransaction(
                loan=loan,
                role=role,
                txid=txid,
                vout=vout,
                value_sats=value_sats,
                spent_txid=None if spent is None else spent.txid,
                spent_vout=None if spent is None else spent.vout,
                revealed_preimage=revealed_preimage,
                raw_hex=raw_hex,
                block_hash=block_hash,
                block_height=block_height,
            )
            recorded.full_clean(validate_unique=False, validate_constraints=False)
            recorded.save()
        elif (recorded.block_hash, recorded.block_height) != (block_hash, block_height):
            recorded.block_hash, recorded.block_height = block_hash, block_height
            recorded.save(update_fields=["block_hash", "block_height", "updated_at"])
    return recorded


def bitcoin_block_disconnect(*, block_hash: str) -> int:
    """A block left the chain: its transactions are unconfirmed again. Refuses (``DeepReorgError``) if one of
    them was already final and applied. Returns how many transactions were un-confirmed."""
    with transaction.atomic():
        rows = BitcoinTransaction.objects.select_for_update().filter(block_hash=block_hash)
        applied = [row.txid for row in rows if row.applied_at is not None]
        if applied:
            raise DeepReorgError(
                f"block {block_hash} left the chain with final transactions {', '.join(applied)}: "
                "BITCOIN_CONFIRMATIONS is too small for this chain"
            )
        return rows.update(block_hash=None, block_height=None, updated_at=timezone.now())


def _move(row: BitcoinTransaction, to_status: str, **changes: object) -> Loan:
    loan = row.loan
    if loan.bitcoin_status == to_status:
        return loan
    return loan_status_transition(
        loan_id=loan.pk,
        side="bitcoin",
        to_status=to_status,
        cause=f"{row.get_role_display()} {row.txid} final at height {row.block_height}",
        bitcoin_transaction=row,
        changes=changes,
    )


def escrow_funding_confirmed(*, row: BitcoinTransaction) -> Loan:
    """The escrow output is final. A draft takes its outpoint and value from the chain; a requested loan's
    claimed outpoint must be this output with exactly the claimed value. Another payment to the same escrow
    address is recorded and changes nothing (its owner reclaims it with the escrow's timelock leaf)."""
    loan = row.loan
    if loan.escrow_txid is None:
        return _move(
            row,
            Loan.BitcoinStatus.ESCROW_CONFIRMED,
            escrow_txid=row.txid,
            escrow_vout=row.vout,
            escrow_sats=row.value_sats,
            escrow_btc_height=row.block_height,
        )
    if (loan.escrow_txid, loan.escrow_vout) != (row.txid, row.vout):
        logger.warning(
            "loan %s: another payment to its escrow address, %s:%s",
            loan.pk,
            row.txid,
            row.vout,
            extra={"loan_id": loan.pk},
        )
        return loan
    if loan.escrow_sats != row.value_sats:
        raise ChainFactError(
            f"loan {loan.pk}'s escrow {row.txid}:{row.vout} holds {row.value_sats} sat on chain, "
            f"not the {loan.escrow_sats} sat it was requested with",
            code="escrow_value_mismatch",
        )
    return _move(row, Loan.BitcoinStatus.ESCROW_CONFIRMED, escrow_btc_height=row.block_height)


def _spends_the_loans_output(row: BitcoinTransaction) -> bool:
    """A spend moves the loan only if it spends the loan's own escrow (TX_1, TX_exit) or the collateral output of
    the loan's final TX_1 (TX_release, TX_capture): the same escrow script may hold a stray second payment, and a
    cancelled loan's escrow may serve a new request."""
    loan = row.loan
    if row.role in (Role.COLLATERAL_LOCK, Role.ESCROW_EXIT):
        expected = (loan.escrow_txid, loan.escrow_vout)
    else:
        lock = loan.bitcoin_transactions.filter(role=Role.COLLATERAL_LOCK, applied_at__isnull=False).first()
        expected = (lock.txid if lock else None, COLLATERAL_OUTPUT_INDEX)
    if (row.spent_txid, row.spent_vout) == expected:
        return True
    logger.warning(
        "loan %s: %s %s spends %s:%s, not the loan's output", loan.pk, row.role, row.txid, row.spent_txid,
        row.spent_vout, extra={"loan_id": loan.pk},
    )  # fmt: skip
    return False


def collateral_lock_confirmed(*, row: BitcoinTransaction) -> Loan:
    """TX_1 is final: the collateral is locked; its witness revealed pB (kept if the EVM side has not yet)."""
    if not _spends_the_loans_output(row):
        return row.loan
    changes: dict[str, object] = {"collateral_btc_height": row.block_height}
    if row.loan.borrower_preimage is None and row.revealed_preimage is not None:
        changes["borrower_preimage"] = row.revealed_preimage
    return _move(row, Loan.BitcoinStatus.COLLATERAL_LOCKED, **changes)


def escrow_exit_confirmed(*, row: BitcoinTransaction) -> Loan:
    if not _spends_the_loans_output(row):
        return row.loan
    return _move(row, Loan.BitcoinStatus.EXITED)


def collateral_release_confirmed(*, row: BitcoinTransaction) -> Loan:
    """TX_release is final: the borrower has the collateral back; its witness revealed pL."""
    if not _spends_the_loans_output(row):
        return row.loan
    changes: dict[str, object] = {}
    if row.loan.lender_preimage is None and row.revealed_preimage is not None:
        changes["lender_preimage"] = row.revealed_preimage
    return _move(row, Loan.BitcoinStatus.RELEASED, **changes)


def collateral_capture_confirmed(*, row: BitcoinTransaction) -> Loan:
    if not _spends_the_loans_output(row):
        return row.loan
    return _move(row, Loan.BitcoinStatus.CAPTURED)


ROLE_SERVICES: dict[str, Callable[..., Loan]] = {
    Role.ESCROW_FUNDING: escrow_funding_confirmed,
    Role.COLLATERAL_LOCK: collateral_lock_confirmed,
    Role.ESCROW_EXIT: escrow_exit_confirmed,
    Role.COLLATERAL_RELEASE: collateral_release_confirmed,
    Role.COLLATERAL_CAPTURE: collateral_capture_confirmed,
}


def bitcoin_transaction_apply(*, transaction_id: int) -> Loan:
    """Apply one recorded, final transaction to its loan, once (row locked: racing workers apply it once)."""
    with transaction.atomic():
        row = BitcoinTransaction.objects.select_for_update().select_related("loan").get(pk=transaction_id)
        if row.applied_at is not None:
            return row.loan
        if row.block_height is None:
            raise ChainFactError(f"{row.txid} is not in a block: nothing final to apply", code="not_confirmed")
        loan = ROLE_SERVICES[row.role](row=row)
        row.applied_at = timezone.now()
        row.save(update_fields=["applied_at", "updated_at"])
    return loan
