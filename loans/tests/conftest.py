"""The personas: one per party, each a Django user, an EVM account and a Bitcoin key (``Persona``).

The EVM accounts come from ``evm.testing`` (``borrower_account``, ``lender_account``, ``operator_account``: anvil's
keys, no node needed); the Bitcoin keys of the borrower and the lender are PROTOCOL.md's test vector (the lender's
is the ``lender_btc_pubkey`` the test contracts are deployed with). ``borrower``, ``lender`` and ``operator`` are the
personas' Django users, for tests that need no more.

``desk`` is the app's side of a test on anvil: the session's contracts recorded as a ``ContractDeployment``, drafts
of the borrower persona's, driven on chain with ``loan_flow`` and followed by the EVM watcher.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from bitcoin.keys import PrivateKey
from bitcoin.rpc import BitcoinRPC
from bitcoin.tests.loan_vectors import borrower_key, lender_key
from evm.client import LoanContractClient
from evm.testing import LoanFlow, new_secret
from loans.models import ContractDeployment, Loan, User
from loans.services import contract_deployment_record
from loans.sync.bitcoin import BitcoinSyncReport, sync_bitcoin
from loans.sync.evm import EvmSyncReport, sync_evm

from .factories import Persona, make_loan, make_persona

AMOUNT = 10**16


@pytest.fixture
def borrower_persona(db, borrower_account: LocalAccount) -> Persona:
    return make_persona(User.Role.BORROWER, borrower_account, borrower_key(), username="borrower")


@pytest.fixture
def lender_persona(db, lender_account: LocalAccount) -> Persona:
    return make_persona(User.Role.LENDER, lender_account, lender_key(), username="lender")


@pytest.fixture
def operator_persona(db, operator_account: LocalAccount) -> Persona:
    return make_persona(User.Role.OPERATOR, operator_account, PrivateKey.generate(), username="operator")


@pytest.fixture
def borrower(borrower_persona: Persona) -> User:
    return borrower_persona.user


@pytest.fixture
def lender(lender_persona: Persona) -> User:
    return lender_persona.user


@pytest.fixture
def operator(operator_persona: Persona) -> User:
    return operator_persona.user


@dataclass
class Desk:
    """The app's side of a test: the deployment as recorded, the personas' drafts, driven on chain by `flow`."""

    w3: Web3
    client: LoanContractClient
    flow: LoanFlow
    record: ContractDeployment
    borrower: Persona
    lender: Persona
    stranger: LocalAccount
    secrets: dict[int, bytes] = field(default_factory=dict)  # app loan pk -> pB

    def draft(self, amount: int = AMOUNT, **overrides) -> Loan:
        """A draft of the borrower persona's (what the app stores before the borrower signs requestLoan)."""
        preimage, digest = new_secret()
        overrides.setdefault("parameters", self.record.parameters)
        loan = make_loan(
            borrower=self.borrower.user,
            deployment=self.record,
            amount_wei=amount,
            borrower_btc_pubkey=self.borrower.btc_pubkey,
            borrower_hash=digest.hex(),
            **overrides,
        )
        self.secrets[loan.pk] = preimage
        return loan

    def request(self, loan: Loan, *, account: LocalAccount | None = None, escrow_txid: bytes | None = None) -> int:
        """requestLoan for the draft's terms, signed by ``account`` (the borrower's by default); the contract id."""
        account = account or self.borrower.account
        terms = self.client.borrower_terms(
            borrower=account.address,
            amount=loan.amount_wei,
            borrower_btc_pubkey=bytes.fromhex(loan.borrower_btc_pubkey),
            borrower_hash=bytes.fromhex(loan.borrower_hash),
            escrow_txid=escrow_txid or os.urandom(32),
            escrow_vout=1,
            escrow_sats=1_500_000,
        )
        receipt = self.client.send(self.client.request_loan_with_terms(terms, sender=account.address), account)
        contract_id = self.client.loan_id_from_receipt(receipt)
        self.flow.terms[contract_id] = terms
        return contract_id

    def signed(self, account: LocalAccount, function: str, args: list, *, value: int = 0) -> bytes:
        """A signed call of the loan contract, not sent (for a reorg's new blocks)."""
        base_fee = int(self.w3.eth.get_block("latest")["baseFeePerGas"])
        tx = {
            "to": self.client.loan_address,
            "data": self.client.loan.encode_abi(function, args=args),
            "value": value,
            "gas": 500_000,
            "nonce": self.w3.eth.get_transaction_count(account.address),
            "chainId": self.client.chain_id,
            "type": 2,
            "maxPriorityFeePerGas": 10**9,
            "maxFeePerGas": 4 * base_fee + 10**9,
        }
        return bytes(account.sign_transaction(tx).raw_transaction)

    def sync(self, **options) -> EvmSyncReport:
        options.setdefault("w3", self.w3)
        options.setdefault("confirmations", 1)
        return sync_evm(**options)


@pytest.fixture
def desk(w3, deployment, loan_client, loan_flow, borrower_persona, lender_persona, stranger_account) -> Desk:
    record = contract_deployment_record(deployment=deployment)
    return Desk(w3, loan_client, loan_flow, record, borrower_persona, lender_persona, stranger_account)


@pytest.fixture
def node(settings, btc_rpc: BitcoinRPC) -> BitcoinRPC:
    """The regtest node, as the desk's Bitcoin node (settings.BITCOIN_RPC_URL)."""
    settings.BITCOIN_RPC_URL = btc_rpc.url
    return btc_rpc


@pytest.fixture
def watch(node: BitcoinRPC) -> Callable[[], BitcoinSyncReport]:
    """One Bitcoin watcher run (one confirmation) from the block after the test started; it must not be skipped or
    refuse a fact."""
    start = node.getblockcount() + 1

    def run() -> BitcoinSyncReport:
        report = sync_bitcoin(rpc=node, confirmations=1, start_height=start)
        assert not report.skipped and not report.refused, report
        return report

    return run
