"""The escrow-reclaim exit, seen from the borrower's page: a borrower whose request was cancelled, with its escrow
confirmed on regtest and a TX_exit ladder uploaded, gets the escrow back. One block before t_0 matures the
watchtower pass broadcasts nothing (and the node itself would refuse the rung); once it matures, the pass hands
TX_exit to the node, the page shows it waiting for a block, it confirms, and the page shows the escrow reclaimed.

The page has no exit button of its own yet: the watchtower pass (the worker's job each minute, ADR 0008) does it.
"""

from __future__ import annotations

import pytest

from bitcoin.testing import mine_blocks
from bitcoin.tests.loan_vectors import REGTEST_P2TR
from bitcoin.transactions import build_exit, finalize_exit
from loans.facts import loan_facts
from loans.models import BitcoinBroadcast, BorrowerSignature, Loan
from loans.selectors import loan_timelocks
from loans.services import evm_calls as calls
from loans.services.bitcoin_actions import presigned_ladder_upload
from loans.services.watchtower import watchtower_run
from loans.tests.browser.test_lender_desk import bitcoin_watcher, requested_with_escrow_on_regtest, sign_in
from loans.tests.evm_calls_scene import scene_fixture  # noqa: F401  (the ``scene`` fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXIT_RATES = (2, 5)  # sat/vB


def summary(page) -> str:
    return page.locator("#loan .loan-summary dd").first.inner_text()


def exit_blocks_remaining(loan: Loan) -> int:
    remaining = loan_timelocks(loan=loan).exit.blocks_remaining
    assert remaining is not None
    return remaining


def test_a_cancelled_requests_escrow_comes_back_after_t0_and_not_a_block_before(
    scene, open_page, wallet, console, shot, axe_check
):
    watch = bitcoin_watcher(scene)
    loan = requested_with_escrow_on_regtest(scene, watch)
    facts = loan_facts(loan=loan)
    ladder = []
    for rate in EXIT_RATES:
        prepared = build_exit(facts, fee_rate_sat_vb=rate)
        ladder.append(finalize_exit(prepared, borrower_signature=prepared.sign(scene.desk.borrower.btc_key)).hex())
    rungs = presigned_ladder_upload(loan=loan, actor=scene.borrower, exit=ladder)
    assert [rung.kind for rung in rungs] == [BorrowerSignature.Kind.TX_EXIT] * len(EXIT_RATES)

    # The borrower cancels the request (its wallet); the escrow is stranded until t_0.
    scene.sign(calls.loan_request_cancel_prepare(loan=loan, actor=scene.borrower), scene.desk.borrower.account)
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.CANCELLED and loan.bitcoin_status == Loan.BitcoinStatus.ESCROW_CONFIRMED

    page = open_page(wallet=wallet)
    sign_in(page)
    path = f"/borrower/loans/{loan.pk}/"
    page.goto(path)
    assert summary(page) == "Cancelled; Bitcoin: Escrow confirmed"
    assert page.locator(".deadlines li", has_text="Escrow exit (t_0) matures").count() == 1
    shot(page, "cancelled, the escrow stranded until t_0")
    axe_check(page)

    # One block before t_0 matures: nothing is broadcast, and the node would not take the rung either.
    remaining = exit_blocks_remaining(loan)
    assert remaining > 1
    mine_blocks(scene.btc, remaining - 1)
    watch()
    assert exit_blocks_remaining(loan) == 1
    report = watchtower_run()
    assert report.sent == [] and not BitcoinBroadcast.objects.filter(loan=loan).exists()
    (verdict,) = scene.btc.testmempoolaccept([ladder[0]])
    assert not verdict["allowed"] and verdict["reject-reason"] == "non-BIP68-final", verdict
    page.goto(path)
    assert page.locator("[data-spend-pending]").count() == 0
    shot(page, "one block before t_0, nothing broadcast")

    # t_0 matures: the pass hands a pre-signed TX_exit to the node.
    mine_blocks(scene.btc, 1)
    watch()
    assert exit_blocks_remaining(loan) == 0
    report = watchtower_run()
    ((loan_id, duty, txid),) = report.sent
    assert (loan_id, duty) == (loan.pk, "exit") and txid in {rung.txid for rung in rungs}
    assert txid in scene.btc.getrawmempool()
    page.goto(path)
    pending = page.locator("[data-spend-pending='tx_exit']")
    assert pending.inner_text() == f"TX_exit {txid}: handed to the Bitcoin node, waiting for a block"
    shot(page, "TX_exit handed to the node")

    # It confirms: the page shows the escrow reclaimed, paid to the borrower's address.
    mine_blocks(scene.btc, 1)
    watch()
    loan.refresh_from_db()
    assert loan.bitcoin_status == Loan.BitcoinStatus.EXITED
    assert watchtower_run().done == [(loan.pk, "exit")]
    output = scene.btc.gettxout(txid, 0)
    assert output["scriptPubKey"]["address"] == REGTEST_P2TR
    page.goto(path)
    assert summary(page) == "Cancelled; Bitcoin: Escrow reclaimed (TX_exit)"
    assert txid in page.locator("#funding-status .bitcoin-spends").inner_text()
    assert page.locator("[data-spend-pending]").count() == 0
    shot(page, "the escrow reclaimed")
    axe_check(page)
    # The live server is WSGI: the loan page's websocket (static/loans/live.js) falls back to polling.
    assert [error for error in console.errors if "WebSocket connection to" not in error] == []
