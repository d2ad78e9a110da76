"""The lender's automation on anvil and the regtest node: each duty acts exactly once when its trigger happens and not
one block before its deadline, only when the deployment's policy says so, and two workers racing act once."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from bitcoin.addresses import encode_segwit_address
from bitcoin.keypath import bip86_output_key
from bitcoin.testing import mine_blocks
from bitcoin.tests.loan_vectors import lender_key
from bitcoin.transactions import Transaction
from evm.client import LoanStatus
from loans import vault
from loans.models import (
    PARAMETER_FIELDS,
    Automation,
    BitcoinBroadcast,
    DeploymentPolicy,
    EvmTransaction,
    LenderKey,
    Loan,
    ProtocolParameters,
)
from loans.services import evm_calls as calls
from loans.services.automation import automation_run
from loans.services.lender_secrets import lender_key_store
from loans.sync.bitcoin import sync_bitcoin

from .evm_calls_scene import SMALL, Scene, scene_fixture  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def policy(scene: Scene, **switches: bool) -> None:
    DeploymentPolicy.objects.update_or_create(deployment=scene.desk.record, defaults=switches)


def sent(function: str, loan: Loan) -> list[EvmTransaction]:
    return list(EvmTransaction.objects.filter(loan=loan, function=function))


def to_block_before(scene: Scene, deadline: int) -> None:
    """Mine until a transaction sent now is mined in block ``deadline - 1``."""
    scene.mine_evm(deadline - 2 - scene.desk.w3.eth.block_number)


def test_withdraw_offer_not_one_block_early_then_exactly_once(scene: Scene):
    policy(scene, auto_withdraw_offer=True)
    loan = scene.offered()
    deadline = scene.chain(loan).offer_deadline_block
    to_block_before(scene, deadline)
    automation_run()
    assert not Automation.objects.filter(loan=loan, action="withdraw-offer").exists()
    assert sent("withdrawLoanOffer", loan) == []
    assert scene.chain(loan).status is LoanStatus.OFFERED

    scene.mine_evm(1)  # a transaction sent now is mined in the deadline block
    report = automation_run()
    assert (loan.pk, "withdraw-offer") in [(loan_id, action) for loan_id, action, _ in report.done]
    row = Automation.objects.get(loan=loan, action="withdraw-offer")
    assert (row.state, row.party, row.attempts, row.consecutive_failures) == ("done", "lender", 1, 0)
    [tx] = sent("withdrawLoanOffer", loan)
    assert (tx.tx_hash, tx.status, tx.block_number) == (row.evm_tx_hash, "mined", deadline)
    assert row.evm_signed_tx is None and row.evm_nonce is not None and row.done_at is not None
    assert scene.chain(loan).status is LoanStatus.OFFER_EXPIRED

    automation_run()
    automation_run()
    assert len(sent("withdrawLoanOffer", loan)) == 1
    assert Automation.objects.get(pk=row.pk).attempts == 1


def test_nothing_happens_while_the_policy_is_off(scene: Scene):
    policy(scene, auto_withdraw_offer=False, auto_mark_default=True)  # another switch on: not this one
    loan = scene.offered()
    scene.mine_evm(scene.chain(loan).offer_deadline_block - 1 - scene.desk.w3.eth.block_number)
    automation_run()
    assert not Automation.objects.filter(loan=loan).exclude(action="collateral-lock").exists()
    assert sent("withdrawLoanOffer", loan) == []
    assert scene.chain(loan).status is LoanStatus.OFFERED


def test_mark_default_not_one_block_before_activation_plus_t_d(scene: Scene):
    policy(scene, auto_mark_default=True)
    loan = scene.active()
    deadline = scene.chain(loan).repayment_deadline_block
    to_block_before(scene, deadline)
    automation_run()
    assert sent("markAsDefaulted", loan) == []
    assert not Automation.objects.filter(loan=loan, action="mark-default").exists()
    scene.mine_evm(1)
    automation_run()
    [tx] = sent("markAsDefaulted", loan)
    assert tx.block_number == deadline
    assert scene.chain(loan).status is LoanStatus.DEFAULTED
    automation_run()
    assert len(sent("markAsDefaulted", loan)) == 1


def test_accept_repayment_before_its_deadline(scene: Scene):
    policy(scene, auto_accept_repayment=True)
    loan = scene.repaying()
    automation_run()
    [tx] = sent("acceptLoanRepayment", loan)
    assert tx.status == "mined"
    assert scene.chain(loan).status is LoanStatus.REPAID
    row = Automation.objects.get(loan=loan, action="accept-repayment")
    assert row.state == "done" and row.evm_signed_tx is None  # the signed bytes (they held pL) are not kept
    automation_run()
    assert len(sent("acceptLoanRepayment", loan)) == 1


def test_accept_repayment_too_late_is_a_failure_for_operators(scene: Scene):
    loan = scene.repaying()
    scene.mine_evm(scene.chain(loan).acceptance_deadline_block - 1 - scene.desk.w3.eth.block_number)
    policy(scene, auto_accept_repayment=True)
    automation_run()
    row = Automation.objects.get(loan=loan, action="accept-repayment")
    assert (row.state, row.consecutive_failures) == ("failed", 1)
    assert row.last_error.startswith("too_late")
    assert sent("acceptLoanRepayment", loan) == []
    assert scene.chain(loan).status is LoanStatus.REPAYMENT_IN_PROGRESS


def test_offer_commits_the_hash_then_offers_once_the_tx1_presignature_is_stored(scene: Scene):
    policy(scene, auto_offer=True)
    loan = scene.requested(funded=True)
    automation_run()
    assert [t.function for t in EvmTransaction.objects.filter(loan=loan)] == ["commitLenderHash"]
    assert Automation.objects.get(loan=loan, action="commit-lender-hash").state == "done"
    loan = scene.sync(loan)
    automation_run()  # no pre-signature yet: no offer
    assert not Automation.objects.filter(loan=loan, action="offer").exists()
    assert scene.chain(loan).status is LoanStatus.REQUESTED
    scene.presigned(loan)
    automation_run()
    assert scene.chain(loan).status is LoanStatus.OFFERED
    automation_run()
    assert sorted(t.function for t in EvmTransaction.objects.filter(loan=loan)) == [
        "commitLenderHash",
        "extendLoanOffer",
    ]


def test_a_node_failure_counts_and_the_next_success_resets_it(scene: Scene, settings):
    policy(scene, auto_withdraw_offer=True)
    loan = scene.offered()
    scene.mine_evm(scene.chain(loan).offer_deadline_block - 1 - scene.desk.w3.eth.block_number)
    row = Automation.objects.create(loan=loan, action="withdraw-offer", party="lender")
    good = settings.EVM_RPC_URL
    settings.EVM_RPC_URL = "http://127.0.0.1:9"  # nothing listens
    automation_run()
    automation_run()
    row.refresh_from_db()
    assert (row.state, row.consecutive_failures) == ("pending", 2)
    assert row.last_error.startswith("evm_node_unavailable")
    settings.EVM_RPC_URL = good
    automation_run()
    row.refresh_from_db()
    assert (row.state, row.consecutive_failures, row.last_error) == ("done", 0, "")
    assert len(sent("withdrawLoanOffer", loan)) == 1


def test_two_workers_racing_act_once(scene: Scene):
    policy(scene, auto_withdraw_offer=True, auto_mark_default=True)
    offered = scene.offered()
    scene.mine_evm(scene.chain(offered).offer_deadline_block - 1 - scene.desk.w3.eth.block_number)
    nonce = scene.desk.w3.eth.get_transaction_count(scene.desk.lender.address)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            automation_run()
        except BaseException as error:  # pragma: no cover - shown by the assertion below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(sent("withdrawLoanOffer", offered)) == 1
    assert scene.desk.w3.eth.get_transaction_count(scene.desk.lender.address) == nonce + 1
    row = Automation.objects.get(loan=offered, action="withdraw-offer")
    assert (row.state, row.attempts) == ("done", 1)


# ------------------------------------------------------------------------------------------------ Bitcoin


def active_with(scene: Scene, **draft) -> Loan:
    """``scene.active()`` for a draft with ``draft`` overrides."""
    loan = scene.committed(funded=True, **draft)
    scene.presigned(loan)
    calls.loan_offer_extend(loan=loan, actor=scene.lender, send=True)
    loan = scene.sync(loan)
    scene.sign(
        calls.loan_offer_accept_prepare(loan=loan, actor=scene.borrower),
        scene.desk.borrower.account,
        append=scene.desk.secrets[loan.pk],
    )
    return scene.sync(loan)


def _store_lender_btc_key(scene: Scene) -> None:
    lender_key_store(
        lender=scene.lender, kind=LenderKey.Kind.BITCOIN, private_key=vault.Secret(lender_key().secret), actor=None
    )


def test_collateral_lock_broadcasts_tx1_at_once_resends_it_and_is_done_when_the_watcher_sees_it(scene: Scene, settings):
    settings.AUTOMATION_TX1_LINGER_BLOCKS = 100
    _store_lender_btc_key(scene)
    sync_bitcoin(start_height=scene.btc.getblockcount())
    loan = scene.active()  # pB public: no policy needed
    assert loan.borrower_preimage is not None
    automation_run()
    row = Automation.objects.get(loan=loan, action="collateral-lock")
    broadcast = BitcoinBroadcast.objects.get(loan=loan)
    assert (row.state, row.bitcoin_broadcast_id, broadcast.kind) == ("sent", broadcast.pk, "tx_1")
    assert broadcast.txid in scene.btc.call("getrawmempool")
    automation_run()  # unconfirmed: the same TX_1 again, no second transaction
    broadcast.refresh_from_db()
    assert (BitcoinBroadcast.objects.filter(loan=loan).count(), broadcast.attempts) == (1, 2)
    mine_blocks(scene.btc, 1)
    sync_bitcoin()
    automation_run()
    row.refresh_from_db()
    assert (row.state, Loan.objects.get(pk=loan.pk).bitcoin_status) == ("done", "collateral_locked")
    automation_run()
    assert BitcoinBroadcast.objects.filter(loan=loan).count() == 1


def test_a_lingering_tx1_without_a_payout_key_keeps_the_reason(scene: Scene, settings):
    settings.AUTOMATION_TX1_LINGER_BLOCKS = 0
    _store_lender_btc_key(scene)
    loan = scene.active()  # the lender's payout address is a P2WPKH: no key-path key in the vault
    automation_run()
    row = Automation.objects.get(loan=loan, action="collateral-lock")
    assert row.state == "sent"
    assert "no CPFP" in row.last_error and "BIP-86" in row.last_error


def test_a_lingering_tx1_is_bumped_by_cpfp_from_its_fee_output(scene: Scene, settings):
    settings.AUTOMATION_TX1_LINGER_BLOCKS = 0
    _store_lender_btc_key(scene)
    payout = encode_segwit_address("regtest", 1, bip86_output_key(lender_key().xonly_pubkey))
    loan = active_with(scene, lender_payout_address=payout)
    before = set(scene.btc.call("getrawmempool"))
    automation_run()
    row = Automation.objects.get(loan=loan, action="collateral-lock")
    assert row.last_error == ""
    tx1 = BitcoinBroadcast.objects.get(loan=loan).txid
    [child] = set(scene.btc.call("getrawmempool")) - before - {tx1}
    child_tx = Transaction.parse(scene.btc.call("getrawtransaction", child, False))
    assert [str(i.outpoint) for i in child_tx.inputs] == [f"{tx1}:0"]
    assert scene.btc.get_utxo(tx1, 0) is None  # spent by the child in the mempool
    automation_run()  # already bumped: no second child
    assert set(scene.btc.call("getrawmempool")) - before == {tx1, child}
    assert Automation.objects.get(pk=row.pk).last_error == ""
    mine_blocks(scene.btc, 1)
    assert scene.btc.get_utxo(child, 0).confirmations == 1


def test_collateral_capture_not_one_block_before_t1_matured_then_once(scene: Scene, settings):
    settings.AUTOMATION_TX1_LINGER_BLOCKS = 100
    client = scene.client
    small = client.parameters().replace(**SMALL)
    ratio = small.evm_blocks_per_btc_block * 10_000
    loan_blocks = SMALL["loan_duration_blocks"] + SMALL["repayment_window_blocks"]
    t_1 = (loan_blocks * small.drift_factor_bps + small.safety_btc_blocks * ratio) // ratio + 1  # the smallest
    short = small.replace(collateral_timelock_btc_blocks=t_1)
    client.send(client.update_parameters(short), scene.desk.lender.account)
    parameters = ProtocolParameters.objects.create(
        version=client.parameters_version(),
        lender_btc_pubkey=short.lender_btc_pubkey.hex(),
        **{name: getattr(short, name) for name in PARAMETER_FIELDS},
    )
    policy(scene, auto_mark_default=True, auto_capture=True)
    _store_lender_btc_key(scene)
    sync_bitcoin(start_height=scene.btc.getblockcount())
    loan = active_with(scene, parameters=parameters)
    automation_run()  # TX_1
    mine_blocks(scene.btc, 1)
    sync_bitcoin()
    automation_run()
    assert Automation.objects.get(loan=loan, action="collateral-lock").state == "done"
    scene.mine_evm(scene.chain(loan).repayment_deadline_block - 1 - scene.desk.w3.eth.block_number)
    automation_run()  # the default, marked at activation + t_D
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.DEFAULTED
    tx1_height = scene.btc.getblockcount()  # TX_1 was mined in the block after it was broadcast, the tip then
    tx1_height = Loan.objects.get(pk=loan.pk).collateral_btc_height or tx1_height
    mine_blocks(scene.btc, tx1_height + t_1 - 2 - scene.btc.getblockcount())  # the next block is one too early
    sync_bitcoin()
    automation_run()
    assert not BitcoinBroadcast.objects.filter(loan=loan, kind="tx_capture").exists()
    assert not Automation.objects.filter(loan=loan, action="collateral-capture").exists()
    mine_blocks(scene.btc, 1)  # the next block may hold TX_capture
    sync_bitcoin()
    automation_run()
    [capture] = BitcoinBroadcast.objects.filter(loan=loan, kind="tx_capture")
    assert capture.accepted_at is not None
    assert Automation.objects.get(loan=loan, action="collateral-capture").state == "sent"
    automation_run()
    assert BitcoinBroadcast.objects.filter(loan=loan, kind="tx_capture").count() == 1
    mine_blocks(scene.btc, 1)
    sync_bitcoin()
    automation_run()
    assert Automation.objects.get(loan=loan, action="collateral-capture").state == "done"
    assert Loan.objects.get(pk=loan.pk).bitcoin_status == "captured"


@pytest.mark.django_db
def test_one_loans_trouble_never_stops_the_pass(settings, monkeypatch):
    """A duty that raises something unexpected is logged and reported for its loan; the other loans are visited."""
    from loans.services import automation as module

    from .factories import make_loan

    settings.EVM_RPC_URL = "http://127.0.0.1:9"  # no node: the pass still visits every loan
    first, second = make_loan(status=Loan.Status.REQUESTED), make_loan(status=Loan.Status.REQUESTED)
    visited = []

    def visit(loan, *args):
        visited.append(loan.pk)
        if loan.pk == first.pk:
            raise RuntimeError("something unexpected")

    monkeypatch.setattr(module, "_visit", visit)
    report = automation_run()
    assert visited == [first.pk, second.pk]
    assert report.failed == [(first.pk, "", "RuntimeError: something unexpected")]
