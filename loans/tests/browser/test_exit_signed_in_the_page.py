"""A never-offered escrow reclaimed from the browser: a request that got no hL never reached the pre-sign step, so
it has no TX_exit rung. Cancelled, its loan page's exit step says so ("You left no pre-signed TX_exit") and, since
this browser still holds the key (static/loans/borrower.js's store), offers to sign the TX_exit ladder right there:
built from the loan file, checked against it and shown before anything is signed, then signed and uploaded (exit
rungs only) and verified by the desk. Once t_0 matures on regtest, "Reclaim the escrow now" hands a rung to the
node, it confirms, and the page shows the escrow reclaimed. The key never travels in any request.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from bitcoin.testing import mine_blocks
from bitcoin.tests.loan_vectors import REGTEST_P2TR
from loans.models import BitcoinBroadcast, BitcoinTransaction, BorrowerSignature, Loan
from loans.selectors import loan_timelocks
from loans.services import evm_calls as calls
from loans.templatetags.amounts import btc
from loans.tests.browser.test_lender_desk import bitcoin_watcher, requested_with_escrow_on_regtest, sign_in
from loans.tests.evm_calls_scene import ESCROW_SATS, scene_fixture  # noqa: F401  (the ``scene`` fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def hold_the_key_in_the_browser(page, scene, loan: Loan) -> str:
    """What borrower.js keeps for a loan made in this browser (its localStorage record); the private key, hex."""
    key = scene.desk.borrower.btc_key
    preimage = scene.desk.secrets[loan.pk].hex()
    record = {
        "private_key": key.secret.hex(),
        "xonly_pubkey": key.xonly_pubkey.hex(),
        "preimage": preimage,
        "hash": hashlib.sha256(bytes.fromhex(preimage)).hexdigest(),
        "loan_id": loan.pk,
        "kit_downloaded_at": "2026-01-01T00:00:00Z",
        "terms": None,
    }
    assert record["xonly_pubkey"] == loan.borrower_btc_pubkey and record["hash"] == loan.borrower_hash
    page.evaluate(
        "([name, text]) => localStorage.setItem(name, text)",
        [f"loans:borrower-secrets:loan:{loan.pk}", json.dumps(record)],
    )
    return record["private_key"]


def test_a_never_offered_escrow_gets_its_exit_ladder_signed_in_the_page_and_reclaimed_now(
    scene, open_page, wallet, recorder, console, shot, axe_check
):
    watch = bitcoin_watcher(scene)
    loan = requested_with_escrow_on_regtest(scene, watch)
    assert loan.lender_hash is None  # never offered: no pre-sign step, no TX_1, no ladder
    scene.sign(calls.loan_request_cancel_prepare(loan=loan, actor=scene.borrower), scene.desk.borrower.account)
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.CANCELLED and loan.bitcoin_status == Loan.BitcoinStatus.ESCROW_CONFIRMED
    assert not BorrowerSignature.objects.filter(loan=loan).exists()

    page = open_page(wallet=wallet)
    sign_in(page)
    private_key = hold_the_key_in_the_browser(page, scene, loan)
    path = f"/borrower/loans/{loan.pk}/"
    page.goto(path)
    step = page.locator("#step-exit-psbt")
    assert "Not open yet." in step.inner_text()
    signer = step.locator("[data-exit-signer]")
    signer.wait_for()  # shown by borrower.js: this browser holds the key
    shot(page, "cancelled, no TX_exit yet, the browser offers to sign it")
    axe_check(page)

    # Built from the loan file, checked and shown before anything is signed or sent.
    page.get_by_role("button", name="Build the TX_exit ladder and show what it pays").click()
    tables = signer.locator("[data-tx-summary='tx_exit']")
    tables.first.wait_for()
    assert tables.count() >= 2  # a ladder: the minimum fee rate and higher rungs
    first = tables.first
    payout = first.locator("tbody tr")
    assert payout.count() == 1
    cells = payout.locator("td").all_inner_texts()
    assert cells[1] == "payout" and cells[2] == REGTEST_P2TR
    fee = int(first.locator("[data-fee]").get_attribute("data-fee"))
    assert int(cells[3]) == ESCROW_SATS - fee and fee > 0
    assert cells[4] == btc(int(cells[3]))  # the BTC value beside the sats, exact (static/loans/borrower.js)
    assert f"Miner fee: {fee} sat ({btc(fee)}) for " in first.inner_text()
    assert f"spends {loan.escrow_txid}:{loan.escrow_vout} ({ESCROW_SATS} sat)" in first.inner_text()
    assert not BorrowerSignature.objects.filter(loan=loan).exists() and recorder.to("/ladders/") == []
    shot(page, "the TX_exit ladder shown before signing")

    page.get_by_role("button", name="Sign and upload the TX_exit ladder").click()
    signer.get_by_text(re.compile(r"\d+ TX_exit rung\(s\) verified and stored by the desk")).wait_for(timeout=30_000)
    rungs = BorrowerSignature.objects.filter(loan=loan)
    assert rungs.count() == tables.count()
    assert {row.kind for row in rungs} == {BorrowerSignature.Kind.TX_EXIT}
    assert all(row.verified_at is not None for row in rungs)
    [upload] = recorder.to("/ladders/")
    assert json.loads(upload.body)["release"] == []
    shot(page, "the TX_exit ladder verified by the desk")

    # t_0 matures on regtest: the page offers "Reclaim the escrow now", which hands a rung to the node.
    remaining = loan_timelocks(loan=loan).exit.blocks_remaining
    assert remaining is not None and remaining > 0
    mine_blocks(scene.btc, remaining)
    watch()
    assert loan_timelocks(loan=loan).exit.is_mature
    page.goto(path)
    assert f"The watchtower will broadcast your pre-signed TX_exit ({rungs.count()} rungs)" in step.inner_text()
    assert step.locator("[data-exit-signer]").count() == 0
    page.get_by_role("button", name="Reclaim the escrow now").click()
    page.wait_for_url(re.compile(rf"/borrower/loans/{loan.pk}/exit/$"))
    assert page.locator(".refusal[role=alert]").count() == 0, page.locator(".refusal[role=alert]").inner_text()
    broadcast = BitcoinBroadcast.objects.get(loan=loan, kind="tx_exit")
    assert broadcast.accepted_at is not None and broadcast.txid in {row.txid for row in rungs}
    assert broadcast.txid in scene.btc.getrawmempool()
    pending = page.locator("[data-spend-pending='tx_exit']")
    assert pending.inner_text() == f"TX_exit {broadcast.txid}: handed to the Bitcoin node, waiting for a block"
    shot(page, "TX_exit handed to the node from the page")

    # It confirms: the escrow is back at the borrower's address and the page says so.
    mine_blocks(scene.btc, 1)
    watch()
    loan.refresh_from_db()
    assert loan.bitcoin_status == Loan.BitcoinStatus.EXITED
    exit_row = BitcoinTransaction.objects.get(loan=loan, role=BitcoinTransaction.Role.ESCROW_EXIT)
    assert exit_row.txid == broadcast.txid
    assert scene.btc.gettxout(broadcast.txid, 0)["scriptPubKey"]["address"] == REGTEST_P2TR
    page.goto(path)
    assert page.locator("#loan .loan-summary dd").first.inner_text() == "Cancelled; Bitcoin: Escrow reclaimed (TX_exit)"
    assert broadcast.txid in page.locator("#funding-status .bitcoin-spends").inner_text()
    shot(page, "the escrow reclaimed")
    axe_check(page)

    assert recorder.containing(private_key) == []
    assert [error for error in console.errors if "WebSocket connection to" not in error] == []
