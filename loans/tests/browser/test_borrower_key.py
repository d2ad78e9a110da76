"""The borrower's Bitcoin key made, used and forgotten in the browser (static/loans/borrower.js).

A borrower signed in with the injected wallet creates a loan: the browser makes the key and pB, the form gets only
xB and hB, and the submit stays disabled until the recovery kit was downloaded (Playwright's download event). With
the escrow funded on the regtest node and the loan requested and hL committed through the services (the scene of
loans/tests/evm_calls_scene.py), the page pre-signs TX_1 (showing what it pays first) and the ladders; the desk
stores a verified TX_1 signature and every rung. The lender offers; the accept step's pB comes from the browser's
store, the wallet sends acceptLoanOffer, and the page forgets the key. Through it all, the request recorder finds
neither the private key nor pB in any request the pages made.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from bitcoin.testing import fund_output
from bitcoin.tests.loan_vectors import REGTEST_P2TR, REGTEST_P2WPKH
from loans.facts import loan_facts
from loans.models import BorrowerSignature, Loan
from loans.services import evm_calls as calls
from loans.tests.browser.conftest import PHONE
from loans.tests.browser.harness import sign_in
from loans.tests.conftest import AMOUNT
from loans.tests.evm_calls_scene import ESCROW_SATS, scene_fixture  # noqa: F401  (the ``scene`` fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HEX64 = re.compile(r"[0-9a-f]{64}")


def _kit(page, button) -> dict:
    with page.expect_download() as info:
        button.click()
    download = info.value
    assert download.suggested_filename.endswith("-recovery-kit.json")
    return json.loads(Path(download.path()).read_text())


def _escrow_confirmed_on_regtest(scene, loan: Loan) -> Loan:
    """Pay the loan's escrow on the regtest node; record it as the Bitcoin watcher does when it confirms."""
    output = fund_output(scene.btc, loan_facts(loan=loan).escrow.script_pubkey, ESCROW_SATS, 1)
    Loan.objects.filter(pk=loan.pk).update(
        escrow_txid=output.txid,
        escrow_vout=output.vout,
        escrow_btc_height=output.height,
        escrow_sats=ESCROW_SATS,
        bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED,
    )
    loan.refresh_from_db()
    return loan


def test_the_key_is_made_used_and_forgotten_in_the_browser(
    scene, settings, open_page, wallet, recorder, console, shot, axe_check, no_overflow
):
    settings.LENDER_BTC_PAYOUT_ADDRESS = REGTEST_P2WPKH
    assert wallet.address == scene.desk.borrower.account.address
    page = open_page(wallet=wallet)
    sign_in(page)

    # 1. The new loan: the browser fills xB and hB; the submit waits for the recovery kit.
    page.goto("/borrower/loans/new/")
    submit = page.get_by_role("button", name="Create the loan")
    kit_button = page.get_by_role("button", name="Download the recovery kit")
    kit_button.wait_for()
    xb = page.locator("#borrower_btc_pubkey").input_value()
    hb = page.locator("#borrower_hash").input_value()
    assert HEX64.fullmatch(xb) and HEX64.fullmatch(hb)
    assert not page.locator("#borrower_btc_pubkey").is_visible()  # filled by the browser, not typed
    page.locator("#amount_wei").fill(str(AMOUNT))
    page.locator("#borrower_payout_address").fill(REGTEST_P2TR)
    assert submit.is_disabled()
    shot(page, "new loan, the kit not downloaded yet")
    axe_check(page)

    kit = _kit(page, kit_button)
    assert kit["format"] == "btc-collateral-loan-recovery-kit/1"
    private_key, preimage = kit["borrower_private_key"], kit["borrower_preimage"]
    assert kit["borrower_btc_pubkey"] == xb and kit["borrower_hash"] == hb
    assert hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == hb
    assert kit["terms"]["amount_wei"] == str(AMOUNT) and kit["terms"]["borrower_payout_address"] == REGTEST_P2TR
    assert submit.is_enabled()
    page.locator("#amount_wei").fill(str(AMOUNT + 1))  # other terms than the kit's: download it again
    assert submit.is_disabled()
    page.locator("#amount_wei").fill(str(AMOUNT))
    assert submit.is_enabled()
    shot(page, "new loan, the kit downloaded")
    submit.click()
    page.wait_for_load_state()
    assert page.locator(".refusal[role=alert]").count() == 0, page.locator(".refusal[role=alert]").inner_text()
    page.wait_for_url(re.compile(r"/borrower/loans/\d+/$"))

    loan = Loan.objects.get(borrower=scene.borrower, borrower_btc_pubkey=xb)
    assert loan.borrower_hash == hb and loan.status == Loan.Status.DRAFT
    assert page.get_by_text("This browser holds your Bitcoin key and pB for this loan").is_visible()
    assert page.evaluate("() => Object.keys(localStorage)") == [f"loans:borrower-secrets:loan:{loan.pk}"]

    # The escrow funded on regtest, the loan requested by the borrower's wallet, hL committed by the desk.
    loan = _escrow_confirmed_on_regtest(scene, loan)
    scene.sign(calls.loan_request_prepare(loan=loan, actor=scene.borrower), scene.desk.borrower.account)
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.REQUESTED
    calls.lender_hash_commit(loan=loan, actor=scene.lender, send=True)
    loan = scene.sync(loan)
    assert loan.lender_hash is not None

    # 2. Pre-sign: TX_1 built from the loan file and shown before anything is signed.
    page.reload()
    page.locator("#presign-fee-rate").fill("2")
    page.get_by_role("button", name="Build TX_1 and show what it pays").click()
    summary = page.locator("[data-tx-summary='tx_1']")
    summary.wait_for()
    rows = summary.locator("tbody tr")
    assert rows.count() == 3
    assert rows.nth(0).inner_text().split("\t")[1] == "origination fee"
    assert rows.nth(1).locator("td").nth(3).inner_text() == str(loan.collateral_sats)
    assert "(2 sat/vB)" in summary.inner_text()
    assert not BorrowerSignature.objects.filter(loan=loan).exists()
    shot(page, "TX_1 shown before signing")
    axe_check(page)
    page.set_viewport_size(PHONE)
    no_overflow(page)
    shot(page, "TX_1 shown at 375 px")

    page.get_by_role("button", name="Sign and upload TX_1 and the ladders").click()
    page.get_by_text(re.compile(r"\d+ ladder rung\(s\) verified and stored")).wait_for(timeout=30_000)
    shot(page, "TX_1 and the ladders verified")
    tx1 = BorrowerSignature.objects.get(loan=loan, kind=BorrowerSignature.Kind.TX_1)
    assert tx1.verified_at is not None and tx1.form == BorrowerSignature.Form.PSBT
    release = BorrowerSignature.objects.filter(loan=loan, kind=BorrowerSignature.Kind.TX_RELEASE)
    exits = BorrowerSignature.objects.filter(loan=loan, kind=BorrowerSignature.Kind.TX_EXIT)
    assert release.count() == exits.count() == 4  # 2, 4, 10 and 20 sat/vB
    assert all(row.verified_at is not None for row in [*release, *exits])

    updated = _kit(page, page.get_by_role("button", name="Download the recovery kit"))
    assert updated["loan_id"] == loan.pk and updated["borrower_private_key"] == private_key
    assert updated["presigned"]["tx_1"]["txid"] == tx1.txid
    assert {rung["txid"] for rung in updated["presigned"]["exit"]} == {row.txid for row in exits}
    assert updated["loan_file"]["lender_hash"] == loan.lender_hash

    # 3. Accept: the lender offers; pB comes from the browser's store into acceptLoanOffer; then forget.
    calls.loan_offer_extend(loan=loan, actor=scene.lender, send=True)
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.OFFERED
    page.reload()
    assert page.locator("#borrower-preimage").input_value() == preimage
    assert page.get_by_role("button", name="Forget the key and pB in this browser").is_hidden()
    page.get_by_role("button", name="Accept the offer with your wallet").click()
    status = page.locator("#step-accept-offer [data-wallet-status]")
    page.wait_for_function("(el) => /^(Sent \\S+ \\(|Not sent)/.test(el.textContent)", arg=status.element_handle())
    assert re.fullmatch(r"Sent (0x)?[0-9a-f]{64} \(mined\)\. The page follows the chain\.", status.inner_text()), (
        status.inner_text()
    )
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.ACTIVE and loan.borrower_preimage == preimage

    # Until acceptLoanOffer, and after: neither the key nor pB in any request the pages made (URL or body).
    assert recorder.containing(private_key) == []
    assert recorder.containing(preimage) == []
    assert recorder.containing(xb) and recorder.containing(hb)  # the public values did travel: the check can fail

    forget = page.get_by_role("button", name="Forget the key and pB in this browser")
    forget.click()
    page.get_by_text("Your recovery kit is the only copy.").wait_for()
    assert page.evaluate("() => Object.keys(localStorage)") == []
    shot(page, "the key forgotten")
    page.reload()
    assert page.get_by_text("This browser holds no key for this loan").is_visible()
    # The live server here is WSGI: the loan page's websocket (static/loans/live.js) falls back to polling.
    assert [error for error in console.errors if "WebSocket connection to" not in error] == []
