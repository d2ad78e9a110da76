"""The borrower's watchtower (``loans.services.watchtower``) and its broadcast path
(``bitcoin_actions.presigned_sweep_broadcast``): the server broadcasts only what the borrower pre-signed.

On the real regtest node: a borrower who went offline after repaying gets the collateral back at their payout
address (and the ladder climbs by full RBF when a rung lingers); a stranded escrow comes back once t_0 matured and
not one block before; an active loan's escrow is never exited; two racing passes broadcast once. Without a node:
the refusals of the broadcast path, each with nothing changed; failures counted; one alert for a borrower who left
no ladder."""

from __future__ import annotations

import threading
from fractions import Fraction

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.utils import timezone

from bitcoin.rpc import BitcoinRPC, btc_to_sats
from bitcoin.testing import faucet_address
from bitcoin.tests.loan_vectors import LENDER_PREIMAGE
from bitcoin.transactions import Transaction
from loans.errors import LoanServiceError
from loans.funding import current_fee_rate_sat_vb
from loans.models import Alert, Automation, BitcoinBroadcast, BitcoinTransaction, BorrowerSignature, Loan
from loans.services.bitcoin_actions import (
    PRESIGNED_SWEEP_CODES,
    STRANDED_ESCROW_STATUSES,
    collateral_lock,
    ladder_rung_amounts,
    presigned_ladder_upload,
    presigned_sweep_broadcast,
)
from loans.services.watchtower import watchtower_exit, watchtower_release, watchtower_run

from .factories import hex32, make_user
from .test_bitcoin_actions import (
    CLOSED_PORT_URL,
    cancelled_loan_with_escrow_at,
    contract,
    escrow_at,
    exit_rung_psbt,
    exit_tx,
    follow,
    funded,
    lock_applied,
    presign,
    release_rung,
    released_loan,
    set_loan,
    store_lender_key,
    upload_tx1,
    vector_loan,
)
from .test_sync_bitcoin import B_PAYOUT, ChainLoan

pytestmark = pytest.mark.django_db

ALL_STATUSES = [status.value for status in Loan.Status]


@pytest.fixture(autouse=True)
def _desk(settings) -> None:
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB = "1"
    settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "500"
    settings.BITCOIN_RPC_URL = CLOSED_PORT_URL  # no node unless a test gives one
    settings.LOAN_VAULT_KEYS_FILE = ""
    settings.LOAN_VAULT_KEYS = Fernet.generate_key().decode()
    settings.WATCHTOWER_CLIMB_AFTER_BLOCKS = 2


@pytest.fixture
def borrower():
    return make_user("borrower", email="borrower@example.org")


@pytest.fixture
def lender():
    return make_user("lender")


def state(loan: Loan) -> tuple:
    loan.refresh_from_db()
    return (
        loan.status,
        loan.bitcoin_status,
        sorted(BitcoinBroadcast.objects.filter(loan=loan).values_list("pk", "txid", "attempts", "last_error")),
        sorted(Automation.objects.filter(loan=loan).values_list("action", "state", "attempts", "last_error")),
        Alert.objects.filter(loan=loan).count(),
    )


def refused(code: str, loan: Loan, rung: BorrowerSignature) -> LoanServiceError:
    before = state(loan)
    with pytest.raises(LoanServiceError) as caught:
        presigned_sweep_broadcast(loan=loan, rung=rung)
    assert caught.value.code == code, caught.value
    assert code in PRESIGNED_SWEEP_CODES
    assert state(loan) == before
    return caught.value


def nothing_happens(loan: Loan) -> None:
    """A pass that neither broadcasts, nor records a duty, nor alerts for ``loan``."""
    before = state(loan)
    watchtower_run()
    assert state(loan) == before
    assert not BitcoinBroadcast.objects.filter(loan=loan, kind__in=["tx_release", "tx_exit"]).exists()
    assert not Automation.objects.filter(loan=loan).exists()


# ------------------------------------------------------------------------------------------------ the broadcast path


def test_a_release_rung_waits_for_pl_and_the_locked_collateral_of_its_own_tx1(borrower):
    loan, tx1_txid = released_loan(borrower)  # repaid, pL public, TX_1 applied at 200
    (rung,) = presigned_ladder_upload(loan=loan, actor=borrower, release=[release_rung(loan, tx1_txid)])
    set_loan(loan, lender_preimage=None)
    refused("lender_preimage_unknown", loan, rung)
    set_loan(loan, lender_preimage=hex32())
    refused("chain_fact_mismatch", loan, rung)  # a pL that is not hL's
    set_loan(loan, lender_preimage=LENDER_PREIMAGE.hex())
    set_loan(loan, bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED)
    refused("collateral_not_locked", loan, rung)
    set_loan(loan, bitcoin_status=Loan.BitcoinStatus.COLLATERAL_LOCKED, closed_at=timezone.now())
    refused("wrong_state", loan, rung)
    set_loan(loan, closed_at=None)
    row = presigned_sweep_broadcast(loan=loan, rung=rung)  # the node is down: kept for a retry, no actor
    assert (row.kind, row.txid, row.requested_by, row.accepted_at) == ("tx_release", rung.txid, None, None)
    tx = Transaction.parse(row.raw_hex)
    assert tx.txid == rung.txid and len(tx.inputs[0].witness) == 4  # sigB, pL, leaf, control: complete


def test_a_release_rung_of_another_tx1_or_not_a_rung_is_refused(borrower):
    loan, _ = released_loan(borrower)
    tx1_row = BorrowerSignature.objects.get(loan=loan, kind="tx_1")
    refused("not_a_ladder_rung", loan, tx1_row)
    other = vector_loan(borrower, fresh=True, status=Loan.Status.CANCELLED)
    (foreign,) = presigned_ladder_upload(loan=other, actor=borrower, exit=[exit_tx(other).hex()])
    refused("not_a_ladder_rung", loan, foreign)
    unverified = BorrowerSignature.objects.filter(pk=foreign.pk)
    unverified.update(verified_at=None)
    refused("not_a_ladder_rung", other, unverified.get())


def test_a_release_rung_that_no_longer_spends_the_applied_tx1_is_refused(borrower):
    loan, tx1_txid = released_loan(borrower)
    (rung,) = presigned_ladder_upload(loan=loan, actor=borrower, release=[release_rung(loan, tx1_txid)])
    BitcoinTransaction.objects.filter(loan=loan, role="collateral_lock").update(txid="d4" * 32)
    refused("wrong_outpoint", loan, rung)


@pytest.mark.parametrize("status", sorted(set(ALL_STATUSES) - set(STRANDED_ESCROW_STATUSES)))
def test_an_exit_rung_is_never_broadcast_for_an_escrow_the_contract_may_still_take(borrower, status):
    loan = cancelled_loan_with_escrow_at(borrower, 500)
    (rung,) = presigned_ladder_upload(loan=loan, actor=borrower, exit=[exit_tx(loan).hex()])
    follow(700)  # t_0 (100) long matured
    set_loan(loan, status=status)
    refused("escrow_owed_to_lender", loan, rung)
    nothing_happens(loan)


def test_an_exit_rung_waits_for_t0_and_a_confirmed_unspent_escrow(borrower):
    loan = cancelled_loan_with_escrow_at(borrower, 500)  # t_0 = 100: a block at 600 may hold TX_exit
    rungs = presigned_ladder_upload(loan=loan, actor=borrower, exit=[exit_tx(loan).hex(), exit_rung_psbt(loan, 5)])
    follow(598)
    error = refused("too_early", loan, rungs[0])
    assert "1 more block" in str(error)
    follow(599)
    set_loan(loan, borrower_preimage=hex32())  # pB public: the lender may still lock it, whatever the status says
    refused("escrow_owed_to_lender", loan, rungs[0])
    set_loan(loan, borrower_preimage=None, bitcoin_status=Loan.BitcoinStatus.COLLATERAL_LOCKED)
    refused("escrow_spent", loan, rungs[1])
    set_loan(loan, bitcoin_status=Loan.BitcoinStatus.NONE)
    refused("escrow_not_confirmed", loan, rungs[1])
    set_loan(loan, bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED)
    for rung in rungs:  # both forms (a finalized transaction, a PSBT) complete into B's signed TX_exit
        row = presigned_sweep_broadcast(loan=loan, rung=rung)
        assert (row.kind, row.txid, row.requested_by) == ("tx_exit", rung.txid, None)
        assert len(Transaction.parse(row.raw_hex).inputs[0].witness) == 3


# ------------------------------------------------------------------------------------------------ the pass, no node


def test_the_cheapest_rung_without_an_estimate_and_a_down_node_counts_failures(borrower):
    loan, tx1_txid = released_loan(borrower)
    rungs = presigned_ladder_upload(
        loan=loan, actor=borrower, release=[release_rung(loan, tx1_txid, rate) for rate in (7, 2, 4)]
    )
    cheapest = rungs[1]
    report = watchtower_run()
    assert report.failed and not report.sent
    row = Automation.objects.get(loan=loan, action="release")
    assert (row.party, row.state, row.attempts, row.consecutive_failures) == ("borrower", "pending", 1, 1)
    assert "unreachable" in row.last_error and row.bitcoin_broadcast.txid == cheapest.txid
    watchtower_release(loan=loan)  # the same rung again, not another one
    row.refresh_from_db()
    assert (row.state, row.attempts, row.consecutive_failures) == ("pending", 2, 2)
    assert list(BitcoinBroadcast.objects.filter(loan=loan).values_list("txid", "attempts")) == [(cheapest.txid, 2)]


@pytest.mark.django_db(transaction=True)
def test_a_pass_skips_a_duty_another_pass_holds(borrower):
    from django.db import transaction

    loan, tx1_txid = released_loan(borrower)
    presigned_ladder_upload(loan=loan, actor=borrower, release=[release_rung(loan, tx1_txid)])
    watchtower_run()  # the node is down: the row exists, pending, one attempt
    reports = []

    def other_pass() -> None:
        try:
            reports.append(watchtower_release(loan=Loan.objects.get(pk=loan.pk)))
        finally:
            connection.close()

    with transaction.atomic():
        Automation.objects.select_for_update().get(loan=loan, action="release")  # a pass holds it
        thread = threading.Thread(target=other_pass)
        thread.start()
        thread.join(timeout=30)
    assert reports[0].skipped == [(loan.pk, "release")] and not reports[0].failed
    row = Automation.objects.get(loan=loan, action="release")
    assert (row.attempts, row.consecutive_failures) == (1, 1)
    assert BitcoinBroadcast.objects.get(loan=loan).attempts == 1


def test_a_duty_the_chain_made_impossible_fails_once(borrower):
    loan, tx1_txid = released_loan(borrower)
    presigned_ladder_upload(loan=loan, actor=borrower, release=[release_rung(loan, tx1_txid)])
    watchtower_run()  # the node is down: pending, one failure
    set_loan(loan, bitcoin_status=Loan.BitcoinStatus.CAPTURED)  # the lender's TX_capture confirmed first
    report = watchtower_run()
    assert [(loan_id, action) for loan_id, action, _ in report.failed] == [(loan.pk, "release")]
    row = Automation.objects.get(loan=loan, action="release")
    assert (row.state, row.consecutive_failures, row.done_at) == ("failed", 2, None) and "captured" in row.last_error
    before = state(loan)
    assert not watchtower_run().failed and state(loan) == before  # once


def test_the_worker_runs_the_watchtower_every_minute(borrower):
    from loans.tasks import SCHEDULES, watchtower_task

    assert ("borrower's watchtower", "loans.tasks.watchtower_task", 1) in SCHEDULES
    loan, _ = released_loan(borrower)
    assert watchtower_task().startswith("watchtower: 0 sent")
    assert Alert.objects.filter(loan=loan, kind="presign_missing").count() == 1


def test_a_borrower_without_ladders_gets_exactly_one_alert_per_duty(borrower, django_capture_on_commit_callbacks):
    from django.core import mail

    loan, _ = released_loan(borrower)
    stranded = vector_loan(borrower, fresh=True, status=Loan.Status.CANCELLED)
    escrow_at(stranded, 500)
    follow(599)
    with django_capture_on_commit_callbacks(execute=True):
        first = watchtower_run()
        second = watchtower_run()
    assert sorted(first.alerted) == sorted([(loan.pk, "release"), (stranded.pk, "exit")]) and not second.alerted
    release_alert = Alert.objects.get(loan=loan)
    assert (release_alert.recipient, release_alert.kind, release_alert.key) == (
        borrower,
        "presign_missing",
        f"presign_missing:{loan.pk}:release",
    )
    assert f"GET /api/v1/loans/{loan.pk}/release-psbt/" in release_alert.body
    assert "python -m bitcoin build-release" in release_alert.body
    exit_alert = Alert.objects.get(loan=stranded)
    assert exit_alert.key == f"presign_missing:{stranded.pk}:exit"
    assert f"GET /api/v1/loans/{stranded.pk}/exit-psbt/" in exit_alert.body and "python -m bitcoin" in exit_alert.body
    assert len(mail.outbox) == 2 and {m.to[0] for m in mail.outbox} == {"borrower@example.org"}
    assert not BitcoinBroadcast.objects.exists()
    rows = Automation.objects.filter(loan__in=[loan, stranded])
    assert {(r.action, r.state, r.consecutive_failures) for r in rows} == {
        ("release", "pending", 0),
        ("exit", "pending", 0),
    }
    assert all("alerted" in r.last_error for r in rows)


def test_nothing_is_due_before_pl_nor_before_t0(borrower):
    loan = vector_loan(borrower)
    tx1 = upload_tx1(loan)
    set_loan(loan, status=Loan.Status.REPAYMENT_IN_PROGRESS)
    presigned_ladder_upload(loan=loan, actor=borrower, release=[release_rung(loan, tx1.txid)])
    lock_applied(loan, tx1.txid, height=200)
    nothing_happens(loan)  # pL not public yet
    stranded = vector_loan(borrower, fresh=True, status=Loan.Status.OFFER_EXPIRED)
    escrow_at(stranded, 500)
    presigned_ladder_upload(loan=stranded, actor=borrower, exit=[exit_tx(stranded).hex()])
    follow(598)
    nothing_happens(stranded)


# ------------------------------------------------------------------------------------------------ on regtest


def mine_empty(node: BitcoinRPC, n: int) -> None:
    """Blocks that take nothing from the mempool: a broadcast lingers."""
    for _ in range(n):
        node.generateblock(faucet_address(node), [])


def expected_rung(rungs: list[BorrowerSignature], above: Fraction | None = None) -> BorrowerSignature:
    """The rung the estimate asks for: the cheapest meeting it (dearer than ``above``), the cheapest without one."""
    rate, source = current_fee_rate_sat_vb()
    rated = sorted(((ladder_rung_amounts(signature=r).fee_rate, r) for r in rungs), key=lambda item: item[0])
    rated = [item for item in rated if above is None or item[0] > above]
    if source != "estimate":
        return rated[0][1]
    return next((r for f, r in rated if f >= rate), rated[-1][1])


def repaid_offline(node: BitcoinRPC, watch, btc_mine, lender, rates=(1, 3, 8, 100)) -> tuple[ChainLoan, list]:
    """A loan whose borrower left a TX_release ladder and went offline; TX_1 locked and confirmed; repaid (pL)."""
    chain = funded(node, watch)
    tx1 = presign(chain)
    rungs = presigned_ladder_upload(
        loan=chain.loan,
        actor=chain.loan.borrower,
        release=[release_rung(chain.loan, tx1.txid, rate, key=chain.borrower) for rate in rates],
    )
    contract(chain, "offered")
    contract(chain, "active", borrower_preimage=chain.p_b.hex())
    store_lender_key(lender, chain.lender)
    collateral_lock(loan=chain.loan, actor=lender)
    btc_mine(1)
    watch()
    assert chain.refresh().bitcoin_status == "collateral_locked"
    contract(chain, "repayment_in_progress")
    nothing_happens(chain.loan)  # pL not public yet
    contract(chain, "repaid", lender_preimage=chain.p_l.hex())
    return chain, rungs


def assert_paid_to_borrower(node: BitcoinRPC, rung: BorrowerSignature) -> None:
    output = node.gettxout(rung.txid, 0)
    assert output is not None and output["scriptPubKey"]["address"] == B_PAYOUT
    assert btc_to_sats(output["value"]) == ladder_rung_amounts(signature=rung).tx.outputs[0].value


@pytest.mark.integration
def test_an_offline_borrower_gets_the_collateral_back_after_repaying(node, watch, btc_mine, lender):
    chain, rungs = repaid_offline(node, watch, btc_mine, lender)
    rung = expected_rung(rungs)
    report = watchtower_run()
    assert report.sent == [(chain.pk, "release", rung.txid)]
    row = Automation.objects.get(loan=chain.loan, action="release")
    assert (row.party, row.state, row.attempts, row.bitcoin_broadcast.txid) == ("borrower", "sent", 1, rung.txid)
    assert row.bitcoin_broadcast.requested_by is None and rung.txid in node.getrawmempool()
    assert not watchtower_run().sent  # in the mempool, not lingering: nothing more
    btc_mine(1)
    watch()
    assert chain.refresh().bitcoin_status == "released" and chain.loan.is_closed
    assert watchtower_run().done == [(chain.pk, "release")]
    row.refresh_from_db()
    assert row.state == "done" and row.done_at is not None and row.consecutive_failures == 0
    assert_paid_to_borrower(node, rung)
    assert not watchtower_run().done  # once


@pytest.mark.integration
def test_a_lingering_release_climbs_the_ladder_by_replacement(node, watch, btc_mine, lender):
    chain, rungs = repaid_offline(node, watch, btc_mine, lender)
    first = expected_rung(rungs)
    assert watchtower_run().sent == [(chain.pk, "release", first.txid)]
    mine_empty(node, 1)  # one block without it: not lingering yet (2 blocks)
    assert not watchtower_run().climbed
    mine_empty(node, 1)
    first_rate = ladder_rung_amounts(signature=first).fee_rate
    assert first is not rungs[-1], "the node's estimate is above every rung: nothing to climb to"
    second = expected_rung(rungs, above=first_rate)
    report = watchtower_run()
    assert report.climbed == [(chain.pk, "release", second.txid)], report.__dict__
    mempool = node.getrawmempool()
    assert second.txid in mempool and first.txid not in mempool  # replaced (full RBF)
    row = Automation.objects.get(loan=chain.loan, action="release")
    assert (row.state, row.attempts, row.bitcoin_broadcast.txid) == ("sent", 2, second.txid)
    assert set(BitcoinBroadcast.objects.filter(loan=chain.loan, kind="tx_release").values_list("txid", flat=True)) == {
        first.txid,
        second.txid,
    }
    btc_mine(1)
    watch()
    assert chain.refresh().bitcoin_status == "released"
    watchtower_run()
    row.refresh_from_db()
    assert row.state == "done"
    assert_paid_to_borrower(node, second)


@pytest.mark.integration
@pytest.mark.parametrize("how", ["cancelled", "never offered"])
def test_a_stranded_escrow_comes_back_after_t0_and_not_a_block_before(node, watch, btc_mine, how):
    chain = funded(node, watch)  # escrow confirmed (1 confirmation), t_0 = 3
    exits = [exit_tx(chain.loan, rate, key=chain.borrower).hex() for rate in (1, 3, 8, 100)]
    rungs = presigned_ladder_upload(loan=chain.loan, actor=chain.loan.borrower, exit=exits)
    if how == "cancelled":
        contract(chain, "cancelled")
    nothing_happens(chain.loan)
    btc_mine(1)
    watch()  # one block before t_0 matures: the next block may not hold TX_exit yet
    nothing_happens(chain.loan)
    btc_mine(1)
    watch()
    rung = expected_rung(rungs)
    one_pass = watchtower_run() if how == "cancelled" else watchtower_exit(loan=chain.loan)
    assert one_pass.sent == [(chain.pk, "exit", rung.txid)]
    btc_mine(1)
    watch()
    assert chain.refresh().bitcoin_status == "exited"
    assert watchtower_run().done == [(chain.pk, "exit")]
    assert Automation.objects.get(loan=chain.loan, action="exit").state == "done"
    assert_paid_to_borrower(node, rung)


@pytest.mark.integration
def test_an_active_loans_escrow_is_never_exited(node, watch, btc_mine):
    chain = funded(node, watch)
    presign(chain)
    exits = [exit_tx(chain.loan, rate, key=chain.borrower).hex() for rate in (1, 3)]
    presigned_ladder_upload(loan=chain.loan, actor=chain.loan.borrower, exit=exits)
    contract(chain, "offered")
    nothing_happens(chain.loan)
    contract(chain, "active", borrower_preimage=chain.p_b.hex())  # the lender has not locked TX_1 yet
    btc_mine(5)
    watch()
    for status in ("active", "repayment_in_progress", "defaulted"):
        set_loan(chain.loan, status=status)
        nothing_happens(chain.loan)
    assert node.gettxout(chain.loan.escrow_txid, chain.loan.escrow_vout) is not None  # still the lender's to lock
    assert not node.testmempoolaccept([exits[0]])[0].get("reject-reason")  # the node itself would take it


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_racing_passes_broadcast_once(node, watch, btc_mine, lender):
    chain, rungs = repaid_offline(node, watch, btc_mine, lender)
    barrier = threading.Barrier(2)
    reports = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            reports.append(watchtower_run())
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(reports) == 2
    sent = [item for report in reports for item in report.sent + report.climbed]
    assert len(sent) == 1 and not any(report.failed for report in reports)
    assert sum(len(report.skipped) + len(report.waiting) for report in reports) == 1  # the other one stood by
    (broadcast,) = BitcoinBroadcast.objects.filter(loan=chain.loan, kind="tx_release")
    assert broadcast.attempts == 1 and broadcast.txid == sent[0][2]
    spending = [txid for txid in node.getrawmempool() if txid in {r.txid for r in rungs}]
    assert spending == [broadcast.txid]
    assert Automation.objects.get(loan=chain.loan, action="release").attempts == 1
    btc_mine(1)  # leave nothing in the shared mempool
    watch()
