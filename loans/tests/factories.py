"""Test data builders: valid by default, every field overridable."""

from __future__ import annotations

import hashlib
import itertools
import secrets
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount

from bitcoin.keys import PrivateKey
from evm.parameters import ProtocolParameters as OnChainParameters
from loans.models import PARAMETER_FIELDS, ContractDeployment, Loan, ProtocolParameters, User

_sequence = itertools.count(1)

# PROTOCOL.md's defaults, from the one place that knows them.
DEFAULT_CHAIN_PARAMETERS = OnChainParameters(lender_btc_pubkey=b"\x01" * 32)
DEFAULT_PARAMETERS: dict[str, Any] = {name: getattr(DEFAULT_CHAIN_PARAMETERS, name) for name in PARAMETER_FIELDS}


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


@dataclass(frozen=True)
class Persona:
    """One party, whole: the Django user (its ``evm_address`` is the account's), the EVM account that signs its
    contract calls (an anvil key) and its Bitcoin key (x-only public key on its loans)."""

    user: User
    account: LocalAccount
    btc_key: PrivateKey

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def btc_pubkey(self) -> str:
        """The x-only public key, as the database holds it (64 hex characters)."""
        return self.btc_key.xonly_pubkey.hex()


def make_persona(role: str, account: LocalAccount, btc_key: PrivateKey | None = None, **fields: Any) -> Persona:
    """A persona for ``account``: a user with ``role`` and the account's address, and ``btc_key`` (a fresh one by
    default)."""
    user = make_user(role, evm_address=account.address, **fields)
    return Persona(user=user, account=account, btc_key=btc_key or PrivateKey.generate())


def make_parameters(**overrides: Any) -> ProtocolParameters:
    values = {**DEFAULT_PARAMETERS, "lender_btc_pubkey": hex32(), **overrides}
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
    values.setdefault("parameters", make_parameters())
    return ContractDeployment.objects.create(**values)


def make_loan(**overrides: Any) -> Loan:
    parameters = overrides.pop("parameters", None) or make_parameters()
    snapshot = {name: getattr(parameters, name) for name in PARAMETER_FIELDS}
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
        "lender_btc_pubkey": parameters.lender_btc_pubkey,
        "borrower_hash": hashlib.sha256(preimage).hexdigest(),
        **overrides,
    }
    return Loan.objects.create(**values)
