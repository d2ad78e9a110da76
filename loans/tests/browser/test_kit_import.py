"""The recovery kit loaded back into a browser that holds no key for the loan (static/loans/borrower.js): the
borrower picks the kit file on the loan page; it is read in the browser and never uploaded. A kit for another loan,
with another xB, or whose key is not its xB's is refused with its reason and loads nothing; the loan's own kit is
loaded into this browser's store, and the page signs again: TX_1 and the ladders, verified by the desk. The request
recorder finds neither the kit's private key nor pB in any request the page made.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from bitcoin.keys import PrivateKey
from bitcoin.tests.loan_vectors import REGTEST_P2WPKH
from loans.models import BorrowerSignature, Loan
from loans.tests.browser.test_lender_desk import sign_in
from loans.tests.evm_calls_scene import scene_fixture  # noqa: F401  (the ``scene`` fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

KIT_FORMAT = "btc-collateral-loan-recovery-kit/1"


def kit_file(loan: Loan, key: PrivateKey, preimage: bytes, **overrides) -> dict:
    """A recovery kit as borrower.js writes it (kitOf), as a file for the page's file input."""
    kit = {
        "format": KIT_FORMAT,
        "note": "test kit",
        "written_at": "2026-01-01T00:00:00.000Z",
        "loan_id": loan.pk,
        "terms": None,
        "borrower_btc_pubkey": key.xonly_pubkey.hex(),
        "borrower_hash": hashlib.sha256(preimage).hexdigest(),
        "borrower_preimage": preimage.hex(),
        "borrower_private_key": key.secret.hex(),
        "loan_file": None,
        "presigned": None,
        **overrides,
    }
    return {
        "name": f"loan-{loan.pk}-recovery-kit.json",
        "mimeType": "application/json",
        "buffer": json.dumps(kit).encode(),
    }


def load(page, file: dict) -> None:
    page.locator("#kit-file").set_input_files(file)


def test_the_borrower_loads_the_recovery_kit_and_the_page_signs_again(
    scene, settings, open_page, wallet, recorder, console, shot, axe_check
):
    settings.LENDER_BTC_PAYOUT_ADDRESS = REGTEST_P2WPKH
    loan = scene.committed(funded=True)  # requested, hL committed: the pre-sign step is next
    key, preimage = scene.desk.borrower.btc_key, scene.desk.secrets[loan.pk]
    assert key.xonly_pubkey.hex() == loan.borrower_btc_pubkey

    page = open_page(wallet=wallet)
    sign_in(page)
    page.goto(f"/borrower/loans/{loan.pk}/")
    assert page.get_by_text("This browser holds no key for this loan").is_visible()
    assert page.locator("[data-presign]").is_hidden()  # nothing to sign with
    label = page.get_by_label("Load your recovery kit into this browser")
    label.wait_for()
    shot(page, "no key in this browser: load the kit")
    axe_check(page)

    status = page.locator("[data-kit-import-status]")
    refusals = [
        (kit_file(loan, key, preimage, loan_id=loan.pk + 1), "kit_wrong_loan", f"this kit is for loan {loan.pk + 1}"),
        (
            kit_file(loan, PrivateKey.generate(), preimage),
            "kit_wrong_key",
            "not this loan's",
        ),
        (
            kit_file(loan, key, preimage, borrower_private_key=PrivateKey.generate().secret.hex()),
            "kit_key_mismatch",
            "is not the key of its xB",
        ),
        (
            kit_file(loan, key, preimage, borrower_preimage=bytes(32).hex()),
            "kit_preimage_mismatch",
            "does not hash to its hB",
        ),
        ({"name": "notes.json", "mimeType": "application/json", "buffer": b"{not json"}, "kit_unreadable", "not JSON"),
    ]
    for file, code, words in refusals:
        load(page, file)
        refusal = status.locator(f".refusal[data-code='{code}']")
        refusal.wait_for()
        assert words in refusal.inner_text()
        assert page.evaluate("() => Object.keys(localStorage)") == []  # nothing loaded
    shot(page, "a kit for another loan refused")

    # The loan's own kit: loaded into this browser's store; the page offers to sign again.
    load(page, kit_file(loan, key, preimage))
    page.get_by_text("Your recovery kit is loaded into this browser").wait_for()
    assert page.get_by_text("This browser holds your Bitcoin key and pB for this loan").is_visible()
    assert page.get_by_text("This browser holds no key for this loan").is_hidden()
    assert page.evaluate("() => Object.keys(localStorage)") == [f"loans:borrower-secrets:loan:{loan.pk}"]
    stored = json.loads(page.evaluate(f"() => localStorage.getItem('loans:borrower-secrets:loan:{loan.pk}')"))
    assert (stored["xonly_pubkey"], stored["private_key"]) == (loan.borrower_btc_pubkey, key.secret.hex())
    shot(page, "the kit loaded")

    page.locator("#presign-fee-rate").fill("2")
    page.get_by_role("button", name="Build TX_1 and show what it pays").click()
    page.locator("[data-tx-summary='tx_1']").wait_for()
    page.get_by_role("button", name="Sign and upload TX_1 and the ladders").click()
    page.get_by_text(re.compile(r"\d+ ladder rung\(s\) verified and stored")).wait_for(timeout=30_000)
    tx1 = BorrowerSignature.objects.get(loan=loan, kind=BorrowerSignature.Kind.TX_1)
    assert tx1.verified_at is not None
    assert BorrowerSignature.objects.filter(loan=loan, kind=BorrowerSignature.Kind.TX_EXIT).count() >= 1
    shot(page, "signed again with the loaded kit")

    # After a reload the page still holds the key (the store, not the file input).
    page.reload()
    assert page.get_by_text("This browser holds your Bitcoin key and pB for this loan").is_visible()
    assert page.locator("[data-kit-import]").is_hidden()

    # The kit was read in the browser only: its key and pB are in no request (URL or body), while its public
    # values did travel (the check can fail).
    assert recorder.containing(key.secret.hex()) == []
    assert recorder.containing(preimage.hex()) == []
    assert recorder.containing(loan.borrower_btc_pubkey)
    assert [error for error in console.errors if "WebSocket connection to" not in error] == []
