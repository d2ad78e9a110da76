"""Scenario 1, the happy path, as its users meet it (issue 12; also issue 10's walk through the borrower's steps 1-7
and the lender's side of the same loan): request, offer, accept, TX_1, repay, accept repayment, TX_release.

The borrower acts in one browser (wallet injected, Bitcoin key made by the page), the lender on the desk's pages in
another; the worker (``sync_chains --duties``, its own process) follows both chains, locks TX_1 with the lender's
vault key once pB is public and has the watchtower broadcast the borrower's pre-signed TX_release once pL is. The
test only clicks, pays the escrow from the node's faucet, mines blocks, and waits for the worker. At the end the
borrower holds their BTC less the fees and the amount less the repayment, the lender the interest on the EVM chain
and the origination fee on Bitcoin, to the sat and the wei; the audit trail shows each state once, in order.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from loans.models import BitcoinBroadcast, BorrowerSignature, EvmTransaction, Loan
from loans.tests.conftest import AMOUNT

from .scenario import (
    BORROWER_PAYOUT,
    borrower_steps,
    lender_step,
    sign_in,
    wallet_step,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def download_kit(page) -> dict:
    with page.expect_download() as info:
        page.get_by_role("button", name="Download the recovery kit").click()
    return json.loads(Path(info.value.path()).read_text())


def summary(page) -> str:
    return page.locator(".loan-summary dd").first.inner_text()


def test_scenario_happy_path(stage, open_page, recorder, console, shot, axe_check):
    borrower = open_page(wallet=stage.borrower_wallet())
    lender = open_page(wallet=stage.lender_wallet())
    sign_in(borrower)
    sign_in(lender)

    # 1. Terms, keys and the recovery kit: only xB and hB leave the browser.
    borrower.goto("/borrower/loans/new/")
    borrower.get_by_role("button", name="Download the recovery kit").wait_for()
    borrower.locator("#amount_wei").fill(str(AMOUNT))
    borrower.locator("#borrower_payout_address").fill(BORROWER_PAYOUT)
    borrower.locator("#loan-terms").get_by_text(f"{AMOUNT} wei").first.wait_for()
    shot(borrower, "borrower: the terms")
    kit = download_kit(borrower)
    private_key, preimage = kit["borrower_private_key"], kit["borrower_preimage"]
    assert hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == kit["borrower_hash"]
    borrower.get_by_role("button", name="Create the loan").click()
    borrower.wait_for_url(re.compile(r"/borrower/loans/\d+/$"))
    loan = Loan.objects.get(borrower=stage.borrower.user, borrower_btc_pubkey=kit["borrower_btc_pubkey"])
    assert loan.status == Loan.Status.DRAFT and loan.amount_wei == AMOUNT
    assert borrower_steps(borrower) == ["fund-escrow"]
    shot(borrower, "borrower: the escrow to pay")
    axe_check(borrower)

    # 2. The escrow, paid from a Bitcoin wallet (the node's faucet) to the page's address, exact amount.
    escrow_txid = stage.pay_escrow_from_the_page(borrower, loan)
    borrower.reload()
    seen = borrower.locator("#funding-status li", has_text=escrow_txid)
    assert re.search(rf"{loan.escrow_sats} sat: \d+ confirmations?", seen.inner_text()), seen.inner_text()
    assert borrower_steps(borrower) == ["request"]
    shot(borrower, "borrower: the escrow confirmed")

    # 3. Request: the wallet sends requestLoan; the worker sees it.
    wallet_step(borrower, "request")
    loan = stage.wait_for_status(loan, Loan.Status.REQUESTED)
    assert loan.contract_loan_id is not None

    # The lender: the request in the queue with its escrow check; hL committed from the desk (server key).
    lender.goto("/lender/queue/")
    row = lender.locator("#queue tbody tr", has=lender.get_by_role("link", name=f"Loan {loan.pk}", exact=True))
    assert row.locator("td").all_inner_texts()[5] == "may be offered"
    shot(lender, "lender: the request in the queue")
    axe_check(lender)
    lender_step(lender, loan, "commit-lender-hash")
    loan = stage.wait_for_loan(loan, "hL committed", lambda row: row.lender_hash is not None)

    # 4. Pre-sign: TX_1 shown, checked against the loan file, signed; the ladders too; the desk verifies them.
    borrower.reload()
    assert borrower_steps(borrower)[0] == "presignature"
    borrower.locator("#presign-fee-rate").fill("2")
    borrower.get_by_role("button", name="Build TX_1 and show what it pays").click()
    borrower.locator("[data-tx-summary='tx_1']").wait_for()
    shot(borrower, "borrower: TX_1 shown before signing")
    borrower.get_by_role("button", name="Sign and upload TX_1 and the ladders").click()
    borrower.get_by_text(re.compile(r"\d+ ladder rung\(s\) verified and stored")).wait_for(timeout=30_000)
    shot(borrower, "borrower: TX_1 and the ladders verified")
    tx1 = BorrowerSignature.objects.get(loan=loan, kind=BorrowerSignature.Kind.TX_1)
    assert tx1.verified_at is not None
    assert BorrowerSignature.objects.filter(loan=loan, kind=BorrowerSignature.Kind.TX_RELEASE).count() >= 1

    # The lender offers from the desk: amount and bond locked on the contract.
    lender_step(lender, loan, "offer")
    loan = stage.wait_for_status(loan, Loan.Status.OFFERED)
    shot(lender, "lender: offered")

    # 5. Accept: pB from the browser's store into acceptLoanOffer; the worker locks TX_1 with the vault key.
    borrower.reload()
    assert borrower.locator("#borrower-preimage").input_value() == preimage
    shot(borrower, "borrower: the offer to accept")
    wallet_step(borrower, "accept-offer")
    loan = stage.wait_for_status(loan, Loan.Status.ACTIVE)
    assert loan.borrower_preimage == preimage
    assert recorder.containing(private_key) == [] and recorder.containing(preimage) == []
    borrower.get_by_role("button", name="Forget the key and pB in this browser").click()
    borrower.get_by_text("Your recovery kit is the only copy.").wait_for()
    assert borrower.evaluate("() => Object.keys(localStorage)") == []
    lock = stage.wait_for(
        "the worker broadcasts TX_1",
        lambda: BitcoinBroadcast.objects.filter(loan=loan, kind="tx_1", accepted_at__isnull=False).first(),
    )
    assert lock.txid == tx1.txid and lock.txid in stage.btc.getrawmempool()
    stage.mine_btc(1)
    loan = stage.wait_for_status(loan, bitcoin=Loan.BitcoinStatus.COLLATERAL_LOCKED)
    borrower.reload()
    assert summary(borrower) == "Active; Bitcoin: Collateral locked (TX_1)"
    shot(borrower, "borrower: active, the collateral locked")

    # 6. Repay: the amount due and its deadline; the wallet sends attemptRepayment.
    repay = borrower.locator("#step-repay")
    assert f"Amount due: {loan.repayment_wei} wei" in repay.inner_text()
    assert re.search(r"Closes at EVM block \d+: \d+ blocks? to go", repay.inner_text()), repay.inner_text()
    shot(borrower, "borrower: repay")
    axe_check(borrower)
    wallet_step(borrower, "repay")
    loan = stage.wait_for_status(loan, Loan.Status.REPAYMENT_IN_PROGRESS)

    # The lender accepts the repayment from the desk: pL public.
    lender_step(lender, loan, "accept-repayment")
    loan = stage.wait_for_status(loan, Loan.Status.REPAID)
    assert loan.lender_preimage is not None
    shot(lender, "lender: the repayment accepted")

    # 7. Release: the worker's watchtower broadcasts the pre-signed TX_release; the page follows it.
    release = stage.wait_for(
        "the watchtower broadcasts TX_release",
        lambda: BitcoinBroadcast.objects.filter(loan=loan, kind="tx_release", accepted_at__isnull=False).first(),
    )
    borrower.reload()
    pending = borrower.locator("[data-spend-pending='tx_release']")
    assert "handed to the Bitcoin node, waiting for a block" in pending.inner_text()
    shot(borrower, "borrower: TX_release handed to the node")
    stage.mine_btc(1)
    loan = stage.wait_for_status(loan, bitcoin=Loan.BitcoinStatus.RELEASED)
    assert loan.is_closed
    borrower.reload()
    assert borrower.get_by_text("This loan is closed: Repaid, Collateral released (TX_release).").is_visible()
    assert release.txid in borrower.locator("[data-spend='collateral_release']").inner_text()
    shot(borrower, "borrower: released and closed")
    axe_check(borrower)
    lender.goto("/lender/")
    assert lender.locator("#dashboard dl dd").first.inner_text().startswith("0 wei")
    shot(lender, "lender: the desk after the loan")

    # Balances on both chains to the sat and the wei, and the audit trail.
    tx1_txid, release_txid = stage.assert_repaid_and_released(loan)
    assert (tx1_txid, release_txid) == (tx1.txid, release.txid)
    # Every lender call sent once by the server key, every borrower call by the wallet.
    sent = EvmTransaction.objects.filter(loan=loan).order_by("pk").values_list("function", "source", "status")
    assert [(function.split("(")[0], source, status) for function, source, status in sent] == [
        ("requestLoan", "wallet", "mined"),
        ("commitLenderHash", "server_key", "mined"),
        ("extendLoanOffer", "server_key", "mined"),
        ("acceptLoanOffer", "wallet", "mined"),
        ("attemptRepayment", "wallet", "mined"),
        ("acceptLoanRepayment", "server_key", "mined"),
    ]
    # The live server is WSGI: the loan page's websocket (static/loans/live.js) falls back to polling.
    assert [error for error in console.errors if "WebSocket connection to" not in error] == []
