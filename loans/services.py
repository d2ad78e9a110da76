"""Every write to the loan desk's data. Views, the REST API, admin actions and worker tasks all call these.

Each function takes keyword-only arguments, checks who may act, validates before it writes, writes inside one
transaction and only after commit tells the outside world (channels broadcast, queued work).
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from evm.deploy import Deployment
from evm.parameters import ProtocolParameters as OnChainParameters

from .models import PARAMETER_FIELDS, ContractDeployment, EvmEvent, Loan, LoanStatusChange, ProtocolParameters, User
from .permissions import can_set_parameters, require

logger = logging.getLogger(__name__)


class TransitionError(ValidationError):
    """A status change the state machine does not allow; nothing was written."""


def loan_group_name(loan_id: int) -> str:
    return f"loan-{loan_id}"


def _broadcast_loan_status(loan_id: int, status: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            loan_group_name(loan_id), {"type": "loan.status", "loan_id": loan_id, "status": status}
        )
    except Exception:  # a broadcast is a courtesy; the committed change stands
        logger.exception("broadcast of loan %s status %s failed", loan_id, status)


def loan_status_transition(
    *,
    loan_id: int,
    to_status: str,
    cause: str,
    actor: User | None = None,
    evm_event: EvmEvent | None = None,
    changes: dict[str, Any] | None = None,
) -> Loan:
    """Move a loan to `to_status` if the state machine allows it, with an audit row, atomically.

    `changes` are further fields written in the same transaction (e.g. the block the offer was made in).
    """
    if to_status not in Loan.Status.values:
        raise TransitionError(f"unknown loan status {to_status!r}")
    if not cause.strip():
        raise TransitionError("a status change needs a cause")
    with transaction.atomic():
        loan = Loan.objects.select_for_update().get(pk=loan_id)
        allowed = Loan.ALLOWED_TRANSITIONS.get(loan.status, frozenset())
        if to_status not in allowed:
            raise TransitionError(
                f"loan {loan.pk} is {loan.status}; it cannot become {to_status} "
                f"(allowed: {', '.join(sorted(allowed)) or 'none, it is final'})"
            )
        old_status = loan.status
        loan.status = to_status
        update_fields = ["status", "updated_at"]
        for name, value in (changes or {}).items():
            if name in {"status", "id", "pk"}:
                raise TransitionError(f"{name} cannot be changed alongside a transition")
            setattr(loan, name, value)
            update_fields.append(name)
        loan.full_clean(validate_unique=False, validate_constraints=False)
        loan.save(update_fields=update_fields)
        LoanStatusChange.objects.create(
            loan=loan, from_status=old_status, to_status=to_status, actor=actor, cause=cause, evm_event=evm_event
        )
        transaction.on_commit(lambda: _broadcast_loan_status(loan.pk, to_status))
    logger.info("loan %s: %s -> %s (%s)", loan.pk, old_status, to_status, cause)
    return loan


def protocol_parameters_create(*, actor: User, note: str = "", **values: Any) -> ProtocolParameters:
    """Append a new version of the protocol parameters. Existing loans keep their own snapshot."""
    require(can_set_parameters(actor), "only an operator or the lender may set protocol parameters")
    with transaction.atomic():
        # Lock the newest version so two concurrent writers cannot take the same number.
        list(ProtocolParameters.objects.select_for_update().order_by("-version")[:1])
        version = (ProtocolParameters.objects.aggregate(v=Max("version"))["v"] or 0) + 1
        parameters = ProtocolParameters(version=version, created_by=actor, note=note, **values)
        parameters.full_clean()
        parameters.save()
    return parameters


def protocol_parameters_matching(parameters: OnChainParameters) -> ProtocolParameters:
    """The newest stored version equal to `parameters`, or a new version holding them."""
    values = {name: getattr(parameters, name) for name in PARAMETER_FIELDS}
    values["lender_btc_pubkey"] = parameters.lender_btc_pubkey.hex()
    with transaction.atomic():
        list(ProtocolParameters.objects.select_for_update().order_by("-version")[:1])
        existing = ProtocolParameters.objects.filter(**values).order_by("-version").first()
        if existing is not None:
            return existing
        version = (ProtocolParameters.objects.aggregate(v=Max("version"))["v"] or 0) + 1
        created = ProtocolParameters(version=version, note="read from the contract", **values)
        created.full_clean()
        created.save()
    return created


def contract_deployment_record(*, deployment: Deployment) -> ContractDeployment:
    """Record a deployment and its parameters (idempotent: the same deployment twice is one row)."""
    block_hash = deployment.block_hash.hex()
    with transaction.atomic():
        recorded = ContractDeployment.objects.filter(
            chain_id=deployment.chain_id, loan_contract_address=deployment.loan_address
        ).first()
        if recorded is not None:
            if (recorded.ether_swap_address, recorded.block_number, recorded.block_hash) != (
                deployment.ether_swap_address,
                deployment.block_number,
                block_hash,
            ):
                raise ValidationError(
                    f"a different deployment of {deployment.loan_address} on chain {deployment.chain_id} is recorded"
                )
            return recorded
        record = ContractDeployment(
            chain_id=deployment.chain_id,
            loan_contract_address=deployment.loan_address,
            ether_swap_address=deployment.ether_swap_address,
            block_number=deployment.block_number,
            block_hash=block_hash,
            parameters=protocol_parameters_matching(deployment.parameters),
        )
        record.full_clean()
        record.save()
    return record
