"""Contract events, applied to the app's loans: one service per event, each applied once.

The EVM watcher stores every log of both contracts (``EvmEvent``, unique by its natural key) and calls
``evm_event_apply`` for each one that is final, in chain order. Applying an event that was already applied returns
the loan unchanged (no second audit row); an event about no loan of ours (a copy of a request from the mempool,
another app's loan, EtherSwap's own logs) is marked applied and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from ..errors import ChainFactError
from ..models import ContractDeployment, EvmEvent, Loan
from .transitions import loan_fields_update, loan_status_transition

logger = logging.getLogger(__name__)


def _deployment(event: EvmEvent) -> ContractDeployment | None:
    return ContractDeployment.objects.filter(
        chain_id=event.chain_id, loan_contract_address__iexact=event.contract_address
    ).first()


def _loan(event: EvmEvent) -> Loan | None:
    """The app's loan an event is about: the deployment's loan with the contract's loan id."""
    deployment = _deployment(event)
    if deployment is None or "loan_id" not in event.args:
        return None
    return Loan.objects.filter(deployment=deployment, contract_loan_id=int(event.args["loan_id"])).first()


def _move(event: EvmEvent, loan: Loan, to_status: str, **changes: object) -> Loan:
    """The loan in ``to_status`` because of ``event``; unchanged if it is there already (applied before)."""
    if loan.status == to_status:
        return loan
    return loan_status_transition(
        loan_id=loan.pk,
        to_status=to_status,
        cause=f"{event.name} in EVM block {event.block_number}",
        evm_event=event,
        changes=changes,
    )


def loan_request_recorded(*, event: EvmEvent) -> Loan | None:
    """LoanRequested: the draft it comes from becomes requested, with the contract's loan id.

    Linked only to a draft of this deployment whose borrower is the event's borrower address and whose hB, xB and
    amount are the event's: anyone can copy a request from the mempool, and a copy is not the app's loan.
    """
    args = event.args
    deployment = _deployment(event)
    if deployment is None:
        return None
    contract_loan_id = int(args["loan_id"])
    linked = Loan.objects.filter(deployment=deployment, contract_loan_id=contract_loan_id).first()
    if linked is not None:
        return linked
    draft = Loan.objects.filter(
        deployment=deployment,
        status=Loan.Status.DRAFT,
        borrower__evm_address__iexact=args["borrower"],
        borrower_hash=args["borrower_hash"],
    ).first()
    if draft is None:
        return None
    if (draft.amount_wei, draft.borrower_btc_pubkey) != (int(args["amount"]), args["borrower_btc_pubkey"]):
        logger.warning(
            "LoanRequested %s matches loan %s's borrower and hB but not its amount or key: not linked",
            contract_loan_id,
            draft.pk,
            extra={"loan_id": draft.pk},
        )
        return None
    escrow = (args["escrow_txid"], int(args["escrow_vout"]), int(args["escrow_sats"]))
    if draft.escrow_txid is not None and (draft.escrow_txid, draft.escrow_vout, draft.escrow_sats) != escrow:
        raise ChainFactError(
            f"loan {draft.pk} was requested with escrow {escrow[0]}:{escrow[1]} ({escrow[2]} sat), "
            f"not the escrow seen on Bitcoin {draft.escrow_txid}:{draft.escrow_vout} ({draft.escrow_sats} sat)",
            code="escrow_mismatch",
        )
    return _move(
        event,
        draft,
        Loan.Status.REQUESTED,
        contract_loan_id=contract_loan_id,
        requested_evm_block=event.block_number,
        repayment_wei=int(args["repayment_amount"]),
        escrow_txid=escrow[0],
        escrow_vout=escrow[1],
        escrow_sats=escrow[2],
    )


def lender_hash_committed(*, event: EvmEvent) -> Loan | None:
    """LenderHashCommitted: hL on the loan (no status change)."""
    loan = _loan(event)
    if loan is None:
        return None
    lender_hash = event.args["lender_hash"]
    if loan.lender_hash == lender_hash:
        return loan
    if loan.lender_hash is not None:
        raise ChainFactError(f"loan {loan.pk} has hL {loan.lender_hash}, the contract says {lender_hash}")
    return loan_fields_update(loan_id=loan.pk, cause=event.name, changes={"lender_hash": lender_hash})


def loan_offered(*, event: EvmEvent) -> Loan | None:
    loan = _loan(event)
    return loan and _move(event, loan, Loan.Status.OFFERED, offered_evm_block=event.block_number)


def loan_activated(*, event: EvmEvent) -> Loan | None:
    """LoanActivated reveals pB: it is captured here (the lender completes TX_1 with it)."""
    loan = _loan(event)
    return loan and _move(
        event,
        loan,
        Loan.Status.ACTIVE,
        activated_evm_block=event.block_number,
        borrower_preimage=event.args["borrower_preimage"],
    )


def loan_request_cancelled(*, event: EvmEvent) -> Loan | None:
    loan = _loan(event)
    return loan and _move(event, loan, Loan.Status.CANCELLED)


def loan_offer_withdrawn(*, event: EvmEvent) -> Loan | None:
    loan = _loan(event)
    return loan and _move(event, loan, Loan.Status.OFFER_EXPIRED)


def repayment_attempted(*, event: EvmEvent) -> Loan | None:
    loan = _loan(event)
    return loan and _move(event, loan, Loan.Status.REPAYMENT_IN_PROGRESS, repayment_evm_block=event.block_number)


def repayment_accepted(*, event: EvmEvent) -> Loan | None:
    """RepaymentAccepted reveals pL: it is captured here (the borrower releases the collateral with it)."""
    loan = _loan(event)
    return loan and _move(event, loan, Loan.Status.REPAID, lender_preimage=event.args["lender_preimage"])


def repayment_withdrawn(*, event: EvmEvent) -> Loan | None:
    loan = _loan(event)
    return loan and _move(event, loan, Loan.Status.REPAYMENT_REFUNDED)


def loan_defaulted(*, event: EvmEvent) -> Loan | None:
    loan = _loan(event)
    return loan and _move(event, loan, Loan.Status.DEFAULTED)


#: The service of each event that changes a loan; other events (parameters, ownership, EtherSwap's) are stored.
EVENT_SERVICES: dict[str, Callable[..., Loan | None]] = {
    "LoanRequested": loan_request_recorded,
    "LenderHashCommitted": lender_hash_committed,
    "LoanOffered": loan_offered,
    "LoanActivated": loan_activated,
    "LoanRequestCancelled": loan_request_cancelled,
    "LoanOfferWithdrawn": loan_offer_withdrawn,
    "RepaymentAttempted": repayment_attempted,
    "RepaymentAccepted": repayment_accepted,
    "RepaymentWithdrawn": repayment_withdrawn,
    "LoanDefaulted": loan_defaulted,
}


def evm_event_apply(*, event_id: int) -> Loan | None:
    """Apply one stored, final, not orphaned event to its loan, once (the EVM watcher calls it in chain order).

    The event row is locked, so two workers racing apply it once; a refusal (``LoanServiceError``) rolls back and
    leaves the event unapplied.
    """
    with transaction.atomic():
        event = EvmEvent.objects.select_for_update().get(pk=event_id)
        if event.applied_at is not None or event.orphaned_at is not None:
            return event.loan
        service = EVENT_SERVICES.get(event.name)
        loan = service(event=event) if service is not None else None
        event.applied_at = timezone.now()
        event.loan = loan if loan is not None else event.loan
        event.save(update_fields=["applied_at", "loan"])
    return loan
