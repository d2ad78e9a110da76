"""Scenarios 2-6 of issue 12: every way a loan ends other than the happy path, walked in the browsers with the worker
running (loans/tests/browser/scenario.py). Time moves by mining blocks on both chains up to the loan's deadlines.

2. No offer: the borrower cancels (the processing fee back) and the watchtower reclaims the escrow after t_0.
3. Offer not accepted: the lender withdraws the offer after t_B (amount and bond back, and the processing fee the
   borrower let lapse); the escrow comes back after t_0.
4. Default: the lender marks the default after t_D and captures the collateral after t_1, from the desk.
5. Repayment not accepted: the borrower takes back the repayment and the bond after t_L; the lender captures later.
6. Watchtower: the borrower closes the browser after repaying; the lender's automation accepts the repayment and the
   watchtower releases the collateral.

Each asserts both parties' balances on both chains (to the wei: each party's gas is read from the blocks), the
loan's final state and its audit trail, and keeps a screenshot per step.
"""

from __future__ import annotations

import pytest

from loans.models import BitcoinBroadcast, BitcoinTransaction, DeploymentPolicy, Loan
from loans.tests.conftest import AMOUNT

from .scenario import BORROWER_PAYOUT, LENDER_PAYOUT, Stage, Walk, borrower_steps, wallet_step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def broadcast(stage: Stage, loan: Loan, kind: str) -> BitcoinBroadcast:
    """Wait for the worker (or a page) to have handed a ``kind`` transaction of ``loan`` to the node."""
    return stage.wait_for(
        f"{kind} handed to the node",
        lambda: BitcoinBroadcast.objects.filter(loan=loan, kind=kind, accepted_at__isnull=False).first(),
    )


def escrow_reclaimed(stage: Stage, walk: Walk) -> Loan:
    """t_0 matures; the worker's watchtower broadcasts the pre-signed TX_exit; it confirms; the loan closes. The
    borrower has the escrow back less TX_exit's fee."""
    loan = walk.loan
    walk.goto_loan()
    assert walk.borrower.locator("#step-exit-psbt").get_by_text("Not open yet.").is_visible()
    walk.shot(walk.borrower, "borrower: the escrow comes back once t_0 matures")
    walk.mine_btc_to("exit")
    sent = broadcast(stage, loan, "tx_exit")
    stage.mine_btc(1)
    loan = stage.wait_for_status(loan, bitcoin=Loan.BitcoinStatus.EXITED)
    assert loan.is_closed
    walk.goto_loan()
    assert walk.borrower.locator(".closed").is_visible()
    walk.shot(walk.borrower, "borrower: the escrow reclaimed, the loan closed")
    assert stage.confirmed_txid(loan, BitcoinTransaction.Role.ESCROW_EXIT) == sent.txid
    assert stage.sats_paid_to(sent.txid, BORROWER_PAYOUT) == loan.escrow_sats - stage.bitcoin_fee(sent.txid)
    return loan


def collateral_captured(stage: Stage, walk: Walk) -> Loan:
    """t_1 matures; the lender captures the collateral from the desk; it confirms; the loan closes. The lender has
    the collateral less TX_capture's fee, plus TX_1's origination fee."""
    loan = walk.loan
    walk.mine_btc_to("capture")
    walk.lender_takes("collateral-capture")
    sent = BitcoinBroadcast.objects.get(loan=loan, kind="tx_capture")
    stage.mine_btc(1)
    loan = stage.wait_for_status(loan, bitcoin=Loan.BitcoinStatus.CAPTURED)
    assert loan.is_closed
    walk.lender.goto(f"/lender/loans/{loan.pk}/")
    walk.shot(walk.lender, "lender: the collateral captured")
    tx1 = stage.confirmed_txid(loan, BitcoinTransaction.Role.COLLATERAL_LOCK)
    assert stage.confirmed_txid(loan, BitcoinTransaction.Role.COLLATERAL_CAPTURE) == sent.txid
    assert stage.sats_paid_to(sent.txid, LENDER_PAYOUT) == loan.collateral_sats - stage.bitcoin_fee(sent.txid)
    assert stage.sats_paid_to(tx1, LENDER_PAYOUT) == loan.origination_fee_sats
    return loan


def test_scenario_no_offer_the_borrower_cancels_and_reclaims_the_escrow(stage, open_page, shot, axe_check):
    walk = Walk.start(stage, open_page, shot)
    walk.requested(AMOUNT)
    walk.hash_committed()
    walk.presigned()  # the TX_exit ladder is signed with TX_1, before any offer

    # No offer comes: the borrower cancels with the wallet.
    walk.goto_loan()
    assert "cancel-request" in borrower_steps(walk.borrower)
    shot(walk.borrower, "borrower: no offer, cancel the request")
    axe_check(walk.borrower)
    wallet_step(walk.borrower, "cancel-request")
    stage.wait_for_status(walk.loan, Loan.Status.CANCELLED)
    loan = escrow_reclaimed(stage, walk)

    # The processing fee came back with the cancel: neither party's EVM balance moved but for gas.
    assert stage.evm_deltas() == (0, 0)
    assert stage.audit_trail(loan) == [
        ("bitcoin", "escrow_confirmed"),
        ("contract", "requested"),
        ("contract", "cancelled"),
        ("bitcoin", "exited"),
    ]


def test_scenario_offer_not_accepted_the_lender_withdraws_and_the_escrow_comes_back(stage, open_page, shot, axe_check):
    walk = Walk.start(stage, open_page, shot)
    walk.requested(AMOUNT)
    walk.hash_committed()
    walk.presigned()
    loan = walk.offered()

    # The borrower never accepts. The desk shows the withdrawal closed until t_B, then open.
    walk.lender.goto(f"/lender/loans/{loan.pk}/")
    assert walk.lender.locator("#step-withdraw-offer form").count() == 0
    walk.mine_evm_to("offer")
    walk.lender.goto(f"/lender/loans/{loan.pk}/")
    shot(walk.lender, "lender: the offer lapsed, withdraw it")
    axe_check(walk.lender)
    walk.lender_takes("withdraw-offer")
    stage.wait_for_status(loan, Loan.Status.OFFER_EXPIRED)
    loan = escrow_reclaimed(stage, walk)

    # The lender got the amount and the bond back, and the processing fee the borrower let lapse (PROTOCOL.md).
    assert stage.evm_deltas() == (-loan.processing_fee_wei, loan.processing_fee_wei)
    assert stage.audit_trail(loan) == [
        ("bitcoin", "escrow_confirmed"),
        ("contract", "requested"),
        ("contract", "offered"),
        ("contract", "offer_expired"),
        ("bitcoin", "exited"),
    ]


def test_scenario_default_the_lender_marks_it_and_captures_the_collateral(stage, open_page, shot, axe_check):
    walk = Walk.start(stage, open_page, shot)
    loan = walk.active(AMOUNT)

    # The borrower never repays. After t_D the desk marks the default (the bond back to the lender).
    walk.lender.goto(f"/lender/loans/{loan.pk}/")
    assert walk.lender.locator("#step-mark-default form").count() == 0
    walk.mine_evm_to("repayment")
    walk.lender.goto(f"/lender/loans/{loan.pk}/")
    shot(walk.lender, "lender: the repayment deadline passed, mark the default")
    axe_check(walk.lender)
    walk.lender_takes("mark-default")
    loan = stage.wait_for_status(loan, Loan.Status.DEFAULTED)
    walk.goto_loan()
    shot(walk.borrower, "borrower: defaulted")

    # The capture waits for t_1: refused a block before (the page has no open form), done once it matures.
    walk.lender.goto(f"/lender/loans/{loan.pk}/")
    assert walk.lender.locator("#step-collateral-capture form").count() == 0
    loan = collateral_captured(stage, walk)

    # The borrower kept the amount (the processing fee came back at the accept); the lender lent it for the BTC.
    assert stage.evm_deltas() == (loan.amount_wei, -loan.amount_wei)
    assert stage.audit_trail(loan) == [
        ("bitcoin", "escrow_confirmed"),
        ("contract", "requested"),
        ("contract", "offered"),
        ("contract", "active"),
        ("bitcoin", "collateral_locked"),
        ("contract", "defaulted"),
        ("bitcoin", "captured"),
    ]


def test_scenario_repayment_not_accepted_the_borrower_takes_it_back_with_the_bond(stage, open_page, shot, axe_check):
    walk = Walk.start(stage, open_page, shot)
    walk.active(AMOUNT)
    loan = walk.repaying()

    # The lender never accepts. After t_L the borrower takes back the repayment and the lender's bond.
    walk.goto_loan()
    assert walk.borrower.locator("#step-withdraw-repayment").get_by_text("Not open yet.").is_visible()
    walk.mine_evm_to("acceptance")
    walk.goto_loan()
    shot(walk.borrower, "borrower: t_L passed, take back the repayment and the bond")
    axe_check(walk.borrower)
    wallet_step(walk.borrower, "withdraw-repayment")
    loan = stage.wait_for_status(loan, Loan.Status.REPAYMENT_REFUNDED)
    walk.goto_loan()
    shot(walk.borrower, "borrower: the repayment and the bond back")

    # The collateral stays locked until t_1; then the lender may capture it, having paid the bond for it.
    loan = collateral_captured(stage, walk)
    assert stage.evm_deltas() == (loan.amount_wei + loan.bond_wei, -loan.amount_wei - loan.bond_wei)
    assert stage.audit_trail(loan) == [
        ("bitcoin", "escrow_confirmed"),
        ("contract", "requested"),
        ("contract", "offered"),
        ("contract", "active"),
        ("bitcoin", "collateral_locked"),
        ("contract", "repayment_in_progress"),
        ("contract", "repayment_refunded"),
        ("bitcoin", "captured"),
    ]


def test_scenario_watchtower_the_borrower_closes_the_browser_after_repaying(
    stage, open_page, recorder, shot, axe_check
):
    walk = Walk.start(stage, open_page, shot)
    loan = walk.active(AMOUNT)
    # The lender's automation accepts repayments (the desk's policy, set by an operator).
    DeploymentPolicy.objects.update_or_create(deployment=loan.deployment, defaults={"auto_accept_repayment": True})
    loan = walk.repaying()

    # The borrower closes the browser: from here nobody acts for them but the watchtower.
    walk.borrower.context.close()
    requests_at_close = len(recorder.requests)
    loan = stage.wait_for_status(loan, Loan.Status.REPAID)
    assert loan.lender_preimage is not None
    release = broadcast(stage, loan, "tx_release")
    stage.mine_btc(1)
    loan = stage.wait_for_status(loan, bitcoin=Loan.BitcoinStatus.RELEASED)
    assert loan.is_closed
    borrower_requests = [r for r in recorder.requests[requests_at_close:] if "/borrower/" in r.url]
    assert borrower_requests == []  # the borrower's page was gone: the worker did it all

    # The lender's desk shows it; the borrower has the collateral back less the fees, the lender the interest.
    walk.lender.goto(f"/lender/loans/{loan.pk}/")
    shot(walk.lender, "lender: repaid and released, nobody clicked")
    assert stage.assert_repaid_and_released(loan)[1] == release.txid
