"""The borrower's steps 6-8 in the browser: repay, release, and the page that follows the release to its close.

An active loan on anvil whose escrow was funded on the regtest node, with a TX_1 pre-signature and a TX_release
rung of the borrower persona's key (the scene of loans/tests/evm_calls_scene.py); the lender locks the collateral
(TX_1 with the vault key, mined and seen by the Bitcoin watcher). The loan page shows the amount due and the
deadline; the borrower repays with the injected wallet (attemptRepayment); the lender accepts (pL public); the
page's release button has the watchtower broadcast the pre-signed TX_release; it is mined on regtest, the watcher
runs, and the page shows the loan released and closed.
"""

from __future__ import annotations

import re

import pytest

from bitcoin.psbt import create_psbt, sign_psbt
from bitcoin.testing import mine_blocks
from bitcoin.transactions import build_release
from loans import vault
from loans.facts import loan_facts
from loans.models import BitcoinBroadcast, BorrowerSignature, LenderKey, Loan
from loans.services import evm_calls as calls
from loans.services.bitcoin_actions import collateral_lock, presigned_ladder_upload
from loans.services.lender_secrets import lender_key_store
from loans.sync.bitcoin import sync_bitcoin
from loans.tests.browser.conftest import PHONE
from loans.tests.browser.harness import sign_in
from loans.tests.evm_calls_scene import Scene, scene_fixture  # noqa: F401  (the ``scene`` fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _locked(scene: Scene) -> tuple[Loan, BorrowerSignature]:
    """An active loan with TX_1 locked on regtest (seen by the watcher) and one pre-signed TX_release rung."""
    loan = scene.committed(funded=True)
    scene.presigned(loan)
    tx1 = BorrowerSignature.objects.get(loan=loan, kind=BorrowerSignature.Kind.TX_1)
    psbt = create_psbt(build_release(loan_facts(loan=loan), tx1_txid=tx1.txid, fee_rate_sat_vb=2))
    sign_psbt(psbt, scene.desk.borrower.btc_key)
    (rung,) = presigned_ladder_upload(loan=loan, actor=scene.borrower, release=[psbt.to_base64()])
    calls.loan_offer_extend(loan=loan, actor=scene.lender, send=True)
    loan = scene.sync(loan)
    call = calls.loan_offer_accept_prepare(loan=loan, actor=scene.borrower)
    scene.sign(call, scene.desk.borrower.account, append=scene.desk.secrets[loan.pk])
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.ACTIVE
    lender_key_store(
        lender=scene.lender,
        kind=LenderKey.Kind.BITCOIN,
        private_key=vault.Secret(scene.desk.lender.btc_key.secret),
        actor=None,
    )
    collateral_lock(loan=loan, actor=scene.lender)
    return loan, rung


def test_the_borrower_repays_and_releases_the_collateral_from_the_loan_page(
    scene, open_page, wallet, console, shot, axe_check, no_overflow
):
    start = scene.btc.getblockcount() + 1
    loan, rung = _locked(scene)

    def watch() -> None:
        report = sync_bitcoin(rpc=scene.btc, confirmations=1, start_height=start)
        assert not report.skipped and not report.refused, report

    mine_blocks(scene.btc, 1)
    watch()
    loan.refresh_from_db()
    assert loan.bitcoin_status == Loan.BitcoinStatus.COLLATERAL_LOCKED

    page = open_page(wallet=wallet)
    sign_in(page)

    # 6. Repay: the amount due and the deadline (blocks and time), then attemptRepayment from the wallet.
    page.goto(f"/borrower/loans/{loan.pk}/")
    repay = page.locator("#step-repay")
    assert f"Amount due: {loan.repayment_wei} wei" in repay.inner_text()
    assert re.search(r"Closes at EVM block \d+: \d+ blocks? to go \(about ", repay.inner_text()), repay.inner_text()
    assert page.get_by_role("button", name="Release the collateral now").count() == 0
    shot(page, "repay: the amount due and the deadline")
    axe_check(page)
    page.get_by_role("button", name="Repay the loan with your wallet").click()
    status = page.locator("#step-repay [data-wallet-status]")
    page.wait_for_function("(el) => /^(Sent \\S+ \\(|Not sent)/.test(el.textContent)", arg=status.element_handle())
    assert re.fullmatch(r"Sent (0x)?[0-9a-f]{64} \(mined\)\. The page follows the chain\.", status.inner_text()), (
        status.inner_text()
    )
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.REPAYMENT_IN_PROGRESS
    page.reload()
    assert page.locator("#step-withdraw-repayment").get_by_text("Not open yet.").is_visible()
    shot(page, "repayment in progress: taking it back opens after t_L")

    # The lender accepts: pL public.
    calls.loan_repayment_accept(loan=loan, actor=scene.lender, send=True)
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.REPAID and loan.lender_preimage is not None

    # 7. Release: the page says the watchtower will do it and its button does it now.
    page.reload()
    release = page.locator("#step-release-psbt")
    assert "The watchtower will broadcast your pre-signed TX_release (1 rung)" in release.inner_text()
    assert re.search(r"Do it before Bitcoin block \d+", release.inner_text()), release.inner_text()
    shot(page, "release: pL public")
    axe_check(page)
    page.set_viewport_size(PHONE)
    no_overflow(page)
    assert not BitcoinBroadcast.objects.filter(loan=loan, kind="tx_release").exists()
    page.get_by_role("button", name="Release the collateral now").click()
    page.wait_for_load_state()
    assert page.locator(".refusal[role=alert]").count() == 0, page.locator(".refusal[role=alert]").inner_text()
    assert f"tx_release {rung.txid} handed to the Bitcoin node" in page.locator(".done[role=status]").inner_text()
    assert rung.txid in scene.btc.call("getrawmempool")
    pending = page.locator("[data-spend-pending='tx_release']")
    assert "handed to the Bitcoin node, waiting for a block" in pending.inner_text()
    no_overflow(page)  # the txid in the message wraps at phone width
    shot(page, "TX_release handed to the node")

    # Mined on regtest, seen by the watcher: the page shows it confirmed and the loan released, closed.
    mine_blocks(scene.btc, 1)
    watch()
    loan.refresh_from_db()
    assert loan.bitcoin_status == Loan.BitcoinStatus.RELEASED and loan.is_closed
    page.goto(f"/borrower/loans/{loan.pk}/")
    spend = page.locator("[data-spend='collateral_release']")
    assert rung.txid in spend.inner_text() and "1 confirmation" in spend.inner_text()
    assert page.get_by_text("This loan is closed: Repaid, Collateral released (TX_release).").is_visible()
    assert page.get_by_role("button", name="Release the collateral now").count() == 0
    shot(page, "released and closed")
    axe_check(page)
    # The live server here is WSGI: the loan page's websocket (static/loans/live.js) falls back to polling.
    assert [error for error in console.errors if "WebSocket connection to" not in error] == []
