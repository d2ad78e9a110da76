"""The stage of the contract-call tests: the session's contracts on anvil with small windows (a parameters update
by the owner, recorded as the version new drafts take), drafts of the borrower persona's with an escrow (funded on
the regtest node, or a stand-in outpoint when the test needs no Bitcoin), the lender's EVM key in the vault, and
helpers that sign what the services prepare with the personas' anvil accounts, as their wallets would."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from cryptography.fernet import Fernet
from eth_account.signers.local import LocalAccount

from bitcoin.psbt import create_psbt, sign_psbt
from bitcoin.rpc import BitcoinRPC
from bitcoin.testing import fund_output
from bitcoin.tests.loan_vectors import REGTEST_P2TR, REGTEST_P2WPKH
from bitcoin.transactions import build_tx1
from evm.client import Loan as ChainLoan
from evm.client import PreparedTransaction
from evm.testing import mine
from loans import vault
from loans.facts import loan_facts
from loans.models import PARAMETER_FIELDS, EvmTransaction, LenderKey, LenderPreimage, Loan, ProtocolParameters
from loans.services import evm_calls as calls
from loans.services import presignature_upload
from loans.services.lender_secrets import lender_key_store

from .conftest import Desk

# Small windows (EVM blocks) and t_0 (BTC blocks) under PROTOCOL.md's ordering rules: room for an offer while the
# escrow has at most 2 confirmations (t_0 10 - ceil(30 * 1.1 / 20) - 6 safety).
SMALL = {
    "offer_window_blocks": 30,
    "request_to_offer_allowance_blocks": 10,
    "escrow_timelock_btc_blocks": 10,
    "loan_duration_blocks": 40,
    "repayment_window_blocks": 20,
    "accept_cutoff_blocks": 7,
}
# SMALL with t_1 small enough to reach TX_capture: t_1 * 20 > (t_D + t_L) * 1.1 + safety * 20 (the whole loans of
# the API end-to-end tests, the browser scenarios and the happy-path benchmark).
SMALL_WITH_CAPTURE = {**SMALL, "collateral_timelock_btc_blocks": 12}
ROOM_CONFIRMATIONS = 2
ESCROW_SATS = 1_200_000


@dataclass
class Scene:
    desk: Desk
    btc: BitcoinRPC
    parameters: ProtocolParameters  # the small version, in force on chain and in the database

    @property
    def client(self):
        return self.desk.client

    @property
    def borrower(self):
        return self.desk.borrower.user

    @property
    def lender(self):
        return self.desk.lender.user

    def draft(self, *, funded: bool = False, **overrides) -> Loan:
        """A draft of the borrower persona's whose escrow is confirmed: on regtest (``funded``) or a stand-in."""
        overrides.setdefault("parameters", self.parameters)
        overrides.setdefault("borrower_payout_address", REGTEST_P2TR)
        overrides.setdefault("lender_payout_address", REGTEST_P2WPKH)
        loan = self.desk.draft(**overrides)
        if funded:
            output = fund_output(self.btc, loan_facts(loan=loan).escrow.script_pubkey, ESCROW_SATS, 1)
            escrow = {"escrow_txid": output.txid, "escrow_vout": output.vout, "escrow_btc_height": output.height}
        else:
            escrow = {"escrow_txid": os.urandom(32).hex(), "escrow_vout": 1}
        Loan.objects.filter(pk=loan.pk).update(
            escrow_sats=ESCROW_SATS, bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED, **escrow
        )  # what the Bitcoin watcher writes when the escrow confirms
        loan.refresh_from_db()
        return loan

    def sign(self, call: calls.EvmCall, account: LocalAccount, *, append: bytes = b""):
        """Sign and send a prepared call as the wallet would (``append``: pB for the accept)."""
        prepared = call.prepared
        if append:
            prepared = PreparedTransaction(
                to=prepared.to,
                data=prepared.data + append.hex(),
                value=prepared.value,
                chain_id=prepared.chain_id,
                method=prepared.method,
            )
        return self.client.send(prepared, account)

    def chain(self, loan: Loan) -> ChainLoan:
        loan.refresh_from_db()
        return self.client.get_loan(loan.contract_loan_id)

    def sync(self, loan: Loan) -> Loan:
        self.desk.sync()
        loan.refresh_from_db()
        return loan

    def requested(self, **draft) -> Loan:
        loan = self.draft(**draft)
        self.sign(calls.loan_request_prepare(loan=loan, actor=self.borrower), self.desk.borrower.account)
        loan = self.sync(loan)
        assert loan.status == Loan.Status.REQUESTED
        return loan

    def committed(self, **draft) -> Loan:
        loan = self.requested(**draft)
        calls.lender_hash_commit(loan=loan, actor=self.lender, send=True)
        return self.sync(loan)

    def presigned(self, loan: Loan) -> None:
        psbt = create_psbt(build_tx1(loan_facts(loan=loan), fee_rate_sat_vb=2))
        sign_psbt(psbt, self.desk.borrower.btc_key)
        presignature_upload(loan=loan, actor=self.borrower, psbt=psbt.to_base64())

    def offered(self) -> Loan:
        loan = self.committed(funded=True)
        self.presigned(loan)
        calls.loan_offer_extend(loan=loan, actor=self.lender, send=True)
        return self.sync(loan)

    def active(self) -> Loan:
        loan = self.offered()
        call = calls.loan_offer_accept_prepare(loan=loan, actor=self.borrower)
        self.sign(call, self.desk.borrower.account, append=self.desk.secrets[loan.pk])
        return self.sync(loan)

    def repaying(self) -> Loan:
        loan = self.active()
        self.sign(calls.loan_repayment_prepare(loan=loan, actor=self.borrower), self.desk.borrower.account)
        return self.sync(loan)

    def mine_evm(self, blocks: int) -> None:
        mine(self.desk.w3, blocks)


def state(loan: Loan) -> tuple:
    """What a refused call must leave as it was: the row, its secrets and transactions."""
    loan.refresh_from_db()
    return (
        loan.status,
        loan.lender_hash,
        loan.updated_at,
        EvmTransaction.objects.count(),
        LenderPreimage.objects.count(),
    )


def make_scene(settings, anvil, btc_rpc, desk, *, windows: dict[str, int] = SMALL) -> Scene:
    """The desk on the session's nodes with ``windows`` in force: the parameters updated on chain by the owner and
    recorded as the version new drafts take, the lender's EVM key in the vault (a new vault key each time)."""
    settings.EVM_RPC_URL = anvil.url
    settings.EVM_CHAIN_ID = desk.client.chain_id
    settings.BITCOIN_RPC_URL = btc_rpc.url
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB = "1"
    settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "500"
    settings.LOAN_VAULT_KEYS_FILE = ""
    settings.LOAN_VAULT_KEYS = Fernet.generate_key().decode()
    client = desk.client
    small = client.parameters().replace(**windows)
    client.send(client.update_parameters(small), desk.lender.account)
    parameters = ProtocolParameters.objects.create(
        version=client.parameters_version(),
        lender_btc_pubkey=small.lender_btc_pubkey.hex(),
        **{name: getattr(small, name) for name in PARAMETER_FIELDS},
    )
    lender_key_store(
        lender=desk.lender.user,
        kind=LenderKey.Kind.EVM,
        private_key=vault.Secret(bytes(desk.lender.account.key)),
        actor=None,
    )
    return Scene(desk, btc_rpc, parameters)


@pytest.fixture(name="scene")
def scene_fixture(settings, anvil, btc_rpc, desk) -> Scene:
    return make_scene(settings, anvil, btc_rpc, desk)
