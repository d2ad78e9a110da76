"""Contract deployments: where the contracts live on the EVM chain, recorded once."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from evm.deploy import Deployment

from ..models import ContractDeployment
from .parameters import protocol_parameters_matching


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
