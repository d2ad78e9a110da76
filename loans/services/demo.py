"""The development demo's lender (``manage.py demo setup``, run by ``manage.py devstack``): development only.

``demo_lender_setup`` makes the desk able to lend unattended on the development chains: a lender user for anvil's
account 0 (the contracts' owner and deployer), that account's EVM key and the development lender's Bitcoin key (the
``lender_btc_pubkey`` the contracts were deployed with) sealed in the vault through ``lender_key_store``, and the
deployment's ``DeploymentPolicy`` with every automation switch on. Running it again changes nothing.

``demo_payout_address``: the BIP-86 key-path P2TR address of an x-only key, the lender's payout address in
development when ``LENDER_BTC_PAYOUT_ADDRESS`` is unset (the automation can then bump TX_1 by CPFP from its output 0,
since the vault holds that address's key).

Refused outside development (``DEBUG``, EVM chain 31337, regtest: ``not_development``), when the Bitcoin key is not
the one the contracts' parameters name (``demo_key_mismatch``), and when the EVM address or the demo username
already belongs to another kind of user (``demo_user_conflict``); a refusal writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.views.decorators.debug import sensitive_variables
from eth_account import Account
from eth_utils import to_checksum_address

from bitcoin.addresses import encode_segwit_address
from bitcoin.keypath import bip86_output_key
from bitcoin.keys import PrivateKey

from .. import vault
from ..chains import loan_contract_client
from ..errors import LoanServiceError
from ..models import ContractDeployment, DeploymentPolicy, LenderKey, ProtocolParameters, User
from ..selectors import parameters_in_force
from .lender_secrets import lender_key_store
from .parameters import protocol_parameters_matching

DEMO_LENDER_USERNAME = "demo-lender"
DEV_EVM_CHAIN_ID = 31337
#: The policy switches the demo turns on: every duty of the lender's automation.
DEMO_AUTOMATION_SWITCHES: tuple[str, ...] = (
    "auto_offer",
    "auto_accept_repayment",
    "auto_withdraw_offer",
    "auto_mark_default",
    "auto_capture",
)
DEMO_SETUP_CODES: tuple[str, ...] = ("not_development", "demo_key_mismatch", "demo_user_conflict")
#: The windows ``demo windows`` puts in force on the development contracts: every deadline a few dozen blocks away,
#: so each way out of a loan is reached by mining in seconds (the defaults' t_D is 540,000 EVM blocks). Under
#: PROTOCOL.md's ordering rules (the contract checks them); t_0 leaves an offer room until the escrow has 22
#: confirmations.
DEMO_WINDOWS: dict[str, int] = {
    "offer_window_blocks": 30,
    "request_to_offer_allowance_blocks": 10,
    "accept_cutoff_blocks": 7,
    "loan_duration_blocks": 40,
    "repayment_window_blocks": 20,
    "escrow_timelock_btc_blocks": 30,
    "collateral_timelock_btc_blocks": 40,
}


@dataclass(frozen=True)
class DemoLender:
    """What ``demo_lender_setup`` left in place (``created`` / ``policy_changed``: whether this run wrote them)."""

    user: User
    created: bool
    evm_key: LenderKey
    bitcoin_key: LenderKey
    policy: DeploymentPolicy
    policy_changed: bool


def is_development() -> bool:
    return bool(settings.DEBUG) and settings.EVM_CHAIN_ID == DEV_EVM_CHAIN_ID and settings.BITCOIN_NETWORK == "regtest"


def require_development(what: str) -> None:
    if not is_development():
        raise LoanServiceError(
            f"{what} is for development only: DJANGO_DEBUG=1, EVM_CHAIN_ID={DEV_EVM_CHAIN_ID}, regtest",
            code="not_development",
        )


def demo_payout_address(*, xonly_pubkey: bytes, network: str) -> str:
    """The BIP-86 (key path only) P2TR address of ``xonly_pubkey`` on ``network``."""
    return encode_segwit_address(network, 1, bip86_output_key(xonly_pubkey))


@sensitive_variables("evm_key", "bitcoin_key")
def demo_lender_setup(
    *, deployment: ContractDeployment, evm_key: vault.Secret, bitcoin_key: vault.Secret
) -> DemoLender:
    """The demo lender for ``evm_key``'s address with both keys sealed, and ``deployment``'s automation on
    (idempotent; see the module docstring)."""
    require_development("the demo lender")
    address = to_checksum_address(Account.from_key(evm_key.reveal()).address)
    xonly = PrivateKey(bitcoin_key.reveal()).xonly_pubkey.hex()
    parameters = parameters_in_force() or deployment.parameters
    if xonly != parameters.lender_btc_pubkey.lower():
        raise LoanServiceError(
            f"the development lender's Bitcoin key {xonly} is not the contracts' lender key "
            f"{parameters.lender_btc_pubkey} (parameters version {parameters.version})",
            code="demo_key_mismatch",
        )
    with transaction.atomic():
        user = User.objects.select_for_update().filter(evm_address__iexact=address).first()
        created = user is None
        if user is None:
            if User.objects.filter(username=DEMO_LENDER_USERNAME).exists():
                raise LoanServiceError(
                    f"user {DEMO_LENDER_USERNAME!r} exists with another EVM address than {address}",
                    code="demo_user_conflict",
                )
            user = User(username=DEMO_LENDER_USERNAME, evm_address=address, role=User.Role.LENDER)
            user.set_unusable_password()
            user.save()
        elif user.role != User.Role.LENDER or not user.is_active:
            raise LoanServiceError(
                f"{address} is user {user.username!r} ({user.role}{'' if user.is_active else ', inactive'}); the demo "
                "lender needs that address (anvil's account 0, the contracts' owner): sign in as a borrower with "
                "another account on a fresh database",
                code="demo_user_conflict",
            )
        evm_row = lender_key_store(lender=user, kind=LenderKey.Kind.EVM, private_key=evm_key, actor=None)
        bitcoin_row = lender_key_store(lender=user, kind=LenderKey.Kind.BITCOIN, private_key=bitcoin_key, actor=None)
        ContractDeployment.objects.select_for_update().get(pk=deployment.pk)  # one policy change at a time
        policy = DeploymentPolicy.objects.filter(deployment=deployment).first() or DeploymentPolicy(
            deployment=deployment
        )
        policy_changed = policy.pk is None or not all(getattr(policy, name) for name in DEMO_AUTOMATION_SWITCHES)
        if policy_changed:
            for name in DEMO_AUTOMATION_SWITCHES:
                setattr(policy, name, True)
            policy.updated_by = user
            policy.save()
    return DemoLender(user, created, evm_row, bitcoin_row, policy, policy_changed)


@sensitive_variables("owner_key")
def demo_windows_shorten(*, deployment: ContractDeployment, owner_key: vault.Secret) -> tuple[ProtocolParameters, bool]:
    """Put ``DEMO_WINDOWS`` in force on ``deployment``'s contract (``updateParameters``, sent by its owner) and
    record them as the desk's parameters in force. Loans already made keep their own windows. Idempotent: the
    second value says whether the contract was changed."""
    require_development("short demo windows")
    client = loan_contract_client(deployment=deployment)
    current = client.parameters()
    wanted = current.replace(**DEMO_WINDOWS)
    changed = current != wanted
    if changed:
        client.send(client.update_parameters(wanted), Account.from_key(owner_key.reveal()))
    return protocol_parameters_matching(client.parameters()), changed


__all__ = [
    "DEMO_AUTOMATION_SWITCHES",
    "DEMO_LENDER_USERNAME",
    "DEMO_SETUP_CODES",
    "DEMO_WINDOWS",
    "DemoLender",
    "demo_lender_setup",
    "demo_payout_address",
    "demo_windows_shorten",
    "is_development",
    "require_development",
]
