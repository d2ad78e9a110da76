"""Test data builders: valid by default, every field overridable."""

from __future__ import annotations

import hashlib
import itertools
import secrets
from typing import Any

from loans.models import ContractDeployment, Loan, ProtocolParameters, User

_sequence = itertools.count(1)

# PROTOCOL.md's defaults.
DEFAULT_PARAMETERS: dict[str, Any] = {
    "offer_window_blocks": 1000,
    "request_to_offer_allowance_blocks": 100,
    "escrow_timelock_btc_blocks": 100,
    "loan_duration_blocks": 540_000,
    "repayment_window_blocks": 1500,
    "collateral_timelock_btc_blocks": 27_150,
    "evm_blocks_per_btc_block": 20,
    "safety_btc_blocks": 6,
    "processing_fee_wei": 10**15,
    "bond_percent": 10,
    "origination_fee_bps": 100,
    "interest_bps": 500,
    "blocks_per_year": 1_051_200,
    "min_amount_wei": 5 * 10**15,
    "max_amount_wei": 100 * 10**18,
    "min_collateral_ratio_percent": 100,
}


def hex32() -> str:
    return secrets.token_bytes(32).hex()


def evm_address() -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(secrets.token_bytes(20))


def make_user(role: str = User.Role.BORROWER, **fields: Any) -> User:
    n = next(_sequence)
    fields.setdefault("username", f"{role}-{n}")
    fields.setdefault("evm_address", evm_address())
    return User.objects.create_user(role=role, password="correct horse battery staple", **fields)


def make_parameters(**overrides: Any) -> ProtocolParameters:
    values = {**DEFAULT_PARAMETERS, **overrides}
    values.setdefault("version", next(_sequence))
    return ProtocolParameters.objects.create(**values)


def make_deployment(**overrides: Any) -> ContractDeployment:
    values = {
        "chain_id": 31337,
        "loan_contract_address": evm_address(),
        "ether_swap_address": evm_address(),
        "block_number": 1,
        "block_hash": hex32(),
        **overrides,
    }
    return ContractDeployment.objects.create(**values)


def make_loan(**overrides: Any) -> Loan:
    parameters = overrides.pop("parameters", None) or make_parameters()
    snapshot = {name: getattr(parameters, name) for name in DEFAULT_PARAMETERS}
    preimage = bytes.fromhex(hex32())
    amount = overrides.get("amount_wei", 10**17)
    values = {
        **snapshot,
        "parameters": parameters,
        "borrower": overrides.pop("borrower", None) or make_user(User.Role.BORROWER),
        "deployment": overrides.pop("deployment", None) or make_deployment(),
        "amount_wei": amount,
        "bond_wei": amount * snapshot["bond_percent"] // 100,
        "repayment_wei": amount
        + amount
        * snapshot["interest_bps"]
        * snapshot["loan_duration_blocks"]
        // (10_000 * snapshot["blocks_per_year"]),
        "borrower_btc_pubkey": hex32(),
        "lender_btc_pubkey": hex32(),
        "borrower_hash": hashlib.sha256(preimage).hexdigest(),
        **overrides,
    }
    return Loan.objects.create(**values)
