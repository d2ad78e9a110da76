"""The one place a loan's status changes, on either side: lock, check, write, audit, broadcast after commit.

``loan_status_transition`` is the private primitive under the named services (``evm_facts``, ``bitcoin_facts``,
the user actions): they decide *what* happened and call it; it enforces *whether* the state machine allows it.
A loan is closed (``closed_at``) in the same transaction that settles its second chain, and reopened if a late
fact unsettles it (a request cancelled before its escrow was funded is closed; a funding seen afterwards reopens
it until the escrow is reclaimed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from ..errors import TransitionError
from ..models import BitcoinTransaction, EvmEvent, Loan, LoanStatusChange, User

logger = logging.getLogger(__name__)

SIDES = {
    LoanStatusChange.Side.CONTRACT: ("status", Loan.Status.values, Loan.ALLOWED_TRANSITIONS),
    LoanStatusChange.Side.BITCOIN: ("bitcoin_status", Loan.BitcoinStatus.values, Loan.ALLOWED_BITCOIN_TRANSITIONS),
}
#: Terminal contract statuses that leave nothing to settle on Bitcoin when no escrow was ever confirmed.
NOTHING_LOCKED = frozenset({Loan.Status.CANCELLED, Loan.Status.OFFER_EXPIRED})


def loan_group_name(loan_id: int) -> str:
    return f"loan-{loan_id}"


def _push_to_loan_pages(loan_id: int, event: dict[str, Any]) -> None:
    """Send ``event`` to the loan's group: every open page of the loan re-renders its partial
    (``consumers.LoanConsumer``). A courtesy: a failure is logged, never raised (the committed fact stands, and a
    page that missed it catches up with its htmx poll)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(loan_group_name(loan_id), {**event, "loan_id": loan_id})
    except Exception:
        logger.exception("push of %s to loan %s's pages failed", event.get("type"), loan_id, extra={"loan_id": loan_id})


def _broadcast_loan_status(loan_id: int, side: str, status: str) -> None:
    _push_to_loan_pages(loan_id, {"type": "loan.status", "side": side, "status": status})


#: The facts that change a loan's pages without changing its status (``loan_fact_push``).
PAGE_FACTS = frozenset({"bitcoin_seen", "bitcoin_confirmations", "bitcoin_broadcast"})


def loan_fact_push(*, loan_ids: Iterable[int], fact: str) -> None:
    """Push the pages of ``loan_ids`` for a fact that is no status change (a Bitcoin transaction of the loan seen in
    a block or taken back by a reorg, its confirmations moved on, a broadcast handed to the node), after the
    current transaction commits (at once outside one). The same push as a transition's, another event type."""
    if fact not in PAGE_FACTS:
        raise ValueError(f"unknown page fact {fact!r}")
    ids = sorted(set(loan_ids))
    if not ids:
        return

    def push() -> None:
        for loan_id in ids:
            _push_to_loan_pages(loan_id, {"type": "loan.fact", "fact": fact})

    transaction.on_commit(push)


def is_settled(loan: Loan) -> bool:
    """Both chains settled: the contract terminal, and the bitcoin paid out as that status calls for (or never
    locked, for a request cancelled or an offer that lapsed before any escrow was confirmed)."""
    if loan.status not in Loan.TERMINAL_STATUSES:
        return False
    if loan.bitcoin_status in Loan.TERMINAL_BITCOIN_STATUSES:
        return True
    return loan.bitcoin_status == Loan.BitcoinStatus.NONE and loan.status in NOTHING_LOCKED


def loan_status_transition(
    *,
    loan_id: int,
    to_status: str,
    cause: str,
    side: str = LoanStatusChange.Side.CONTRACT,
    actor: User | None = None,
    evm_event: EvmEvent | None = None,
    bitcoin_transaction: BitcoinTransaction | None = None,
    changes: dict[str, Any] | None = None,
) -> Loan:
    """Move a loan to ``to_status`` on ``side`` if that state machine allows it, with an audit row, atomically.

    ``changes`` are the fields the calling service writes with it (e.g. the block the offer was made in);
    the named services pass them, nothing else should call this.
    """
    if side not in SIDES:
        raise TransitionError(f"unknown side {side!r}")
    field, values, allowed_table = SIDES[side]
    if to_status not in values:
        raise TransitionError(f"unknown {side} status {to_status!r}")
    if not cause.strip():
        raise TransitionError("a status change needs a cause")
    with transaction.atomic():
        loan = Loan.objects.select_for_update().get(pk=loan_id)
        old_status = getattr(loan, field)
        allowed = allowed_table.get(old_status, frozenset())
        if to_status not in allowed:
            raise TransitionError(
                f"loan {loan.pk} is {old_status}; it cannot become {to_status} "
                f"(allowed: {', '.join(sorted(allowed)) or 'none, it is final'})"
            )
        setattr(loan, field, to_status)
        update_fields = [field, "updated_at"]
        for name, value in (changes or {}).items():
            if name in {"status", "bitcoin_status", "closed_at", "id", "pk"}:
                raise TransitionError(f"{name} cannot be changed alongside a transition")
            setattr(loan, name, value)
            update_fields.append(name)
        settled = is_settled(loan)
        if settled != (loan.closed_at is not None):
            # Closed when both chains settle; reopened if a late fact unsettles it (an escrow funded after its
            # request was cancelled must still come back to the borrower).
            loan.closed_at = timezone.now() if settled else None
            update_fields.append("closed_at")
        loan.full_clean(validate_unique=False, validate_constraints=False)
        loan.save(update_fields=update_fields)
        LoanStatusChange.objects.create(
            loan=loan,
            side=side,
            from_status=old_status,
            to_status=to_status,
            actor=actor,
            cause=cause,
            evm_event=evm_event,
            bitcoin_transaction=bitcoin_transaction,
        )
        transaction.on_commit(lambda: _broadcast_loan_status(loan.pk, side, to_status))
    logger.info("loan %s %s: %s -> %s (%s)", loan.pk, side, old_status, to_status, cause, extra={"loan_id": loan.pk})
    return loan


def loan_fields_update(*, loan_id: int, cause: str, changes: dict[str, Any]) -> Loan:
    """Write facts that change no status (e.g. hL committed), under the same row lock; for the named services."""
    with transaction.atomic():
        loan = Loan.objects.select_for_update().get(pk=loan_id)
        for name, value in changes.items():
            if name in {"status", "bitcoin_status", "closed_at", "id", "pk"}:
                raise TransitionError(f"{name} changes only through a transition")
            setattr(loan, name, value)
        loan.full_clean(validate_unique=False, validate_constraints=False)
        loan.save(update_fields=[*changes, "updated_at"])
    logger.info("loan %s: %s", loan.pk, cause, extra={"loan_id": loan.pk})
    return loan
