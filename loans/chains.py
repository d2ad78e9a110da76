"""The one place that turns settings into node clients. Everything Django-side gets its clients here."""

from __future__ import annotations

from django.conf import settings
from web3 import Web3

from bitcoin.rpc import BitcoinRPC
from evm.client import LoanContractClient
from evm.connection import connect

from .models import ContractDeployment
from .nonces import DATABASE_NONCES


def bitcoin_rpc(*, timeout: float | None = None, retries: int = 2) -> BitcoinRPC:
    return BitcoinRPC(
        settings.BITCOIN_RPC_URL,
        user=settings.BITCOIN_RPC_USER,
        password=settings.BITCOIN_RPC_PASSWORD,
        cookie_file=settings.BITCOIN_RPC_COOKIE_FILE or None,
        timeout=timeout or settings.BITCOIN_RPC_TIMEOUT,
        retries=retries,
    )


def evm_web3() -> Web3:
    """The EVM node at ``EVM_RPC_URL``, checked to serve ``EVM_CHAIN_ID``."""
    return connect(settings.EVM_RPC_URL, expected_chain_id=settings.EVM_CHAIN_ID, timeout=settings.EVM_RPC_TIMEOUT)


def loan_contract_client(*, deployment: ContractDeployment, w3: Web3 | None = None) -> LoanContractClient:
    """The contract client of a recorded deployment; what it sends takes its nonces from the database
    (``loans.nonces``, ADR 0005), so several workers may send with the lender's key."""
    return LoanContractClient(
        w3 or evm_web3(),
        deployment.loan_contract_address,
        deployment.ether_swap_address,
        nonces=DATABASE_NONCES,
    )
