"""The lender's side of one loan in the browser (loans/pages/lender.py): the lender (the contract's owner, its EVM
and Bitcoin keys in the vault) signs in with the injected wallet, sees the request in the queue with its escrow
check against the regtest node, commits hL and offers from the loan's page (POST forms, sent with the server key),
sees the loan go active once the borrower accepts (through the services, as the borrower's wallet would), locks
TX_1 from the page (it confirms on regtest) and accepts the repayment from the page. The dashboard shows the capital
lent, the loans by state and the deadlines coming up. A screenshot per step; axe on each desk page.
"""

from __future__ import annotations

import re

import pytest

from bitcoin.testing import fund_output, mine_blocks
from bitcoin.tests.loan_vectors import REGTEST_P2TR, REGTEST_P2WPKH
from loans import selectors, vault
from loans.facts import loan_facts
from loans.models import BitcoinBroadcast, EvmTransaction, LenderKey, Loan
from loans.services import evm_calls as calls
from loans.services.lender_secrets import lender_key_store
from loans.sync.bitcoin import sync_bitcoin
from loans.tests.browser.harness import InjectedWallet, sign_in
from loans.tests.browser.scenario import lender_step
from loans.tests.evm_calls_scene import ESCROW_SATS, Scene, scene_fixture  # noqa: F401  (the ``scene`` fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def bitcoin_watcher(scene: Scene):
    """The Bitcoin watcher's run (the worker's job), following the regtest node from the current tip on."""
    start = scene.btc.getblockcount() + 1

    def run() -> None:
        report = sync_bitcoin(rpc=scene.btc, confirmations=1, start_height=start)
        assert not report.skipped and not report.refused, report

    return run


def requested_with_escrow_on_regtest(scene: Scene, watch) -> Loan:
    """A draft of the borrower persona's whose escrow is paid on regtest and seen confirmed by the watcher, then
    requested on anvil by the borrower's wallet."""
    loan = scene.desk.draft(
        parameters=scene.parameters, borrower_payout_address=REGTEST_P2TR, lender_payout_address=REGTEST_P2WPKH
    )
    fund_output(scene.btc, loan_facts(loan=loan).escrow.script_pubkey, ESCROW_SATS, 1)
    watch()
    loan.refresh_from_db()
    assert loan.bitcoin_status == Loan.BitcoinStatus.ESCROW_CONFIRMED and loan.escrow_sats == ESCROW_SATS
    scene.sign(calls.loan_request_prepare(loan=loan, actor=scene.borrower), scene.desk.borrower.account)
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.REQUESTED
    return loan


def lender_steps(page) -> list[str]:
    """The lender's steps the page offers a form for now (open), in the page's order."""
    return [
        element.get_attribute("id").removeprefix("step-")
        for element in page.locator("#lender-loan .next-steps section.step", has=page.locator("form")).all()
    ]


def summary(page) -> str:
    return page.locator("#lender-loan .loan-summary dd").first.inner_text()


def test_the_lender_takes_a_loan_from_the_queue_to_repaid_in_the_browser(
    scene, settings, w3, open_page, console, shot, axe_check
):
    settings.LENDER_BTC_PAYOUT_ADDRESS = REGTEST_P2WPKH
    lender = scene.desk.lender
    assert lender.btc_key.xonly_pubkey.hex() == scene.parameters.lender_btc_pubkey
    lender_key_store(
        lender=lender.user, kind=LenderKey.Kind.BITCOIN, private_key=vault.Secret(lender.btc_key.secret), actor=None
    )
    watch = bitcoin_watcher(scene)
    loan = requested_with_escrow_on_regtest(scene, watch)

    page = open_page(wallet=InjectedWallet(account=lender.account, w3=w3))
    sign_in(page)

    # The dashboard before any offer: nothing lent, the request counted by state.
    page.goto("/lender/")
    capital = page.locator("#dashboard dl").inner_text()
    assert "Lent (active loans and repayments in progress)\n0 wei" in capital.replace("\t", "\n")
    assert page.locator("#dashboard tbody tr").all_inner_texts() == ["Requested\tEscrow confirmed\t1"]
    shot(page, "the desk, one request")
    axe_check(page)

    # 1. The queue: the request with its escrow check on the regtest node.
    page.get_by_role("link", name="The queue of requests").click()
    page.wait_for_url(re.compile(r"/lender/queue/$"))
    row = page.locator("#queue tbody tr", has=page.get_by_role("link", name=f"Loan {loan.pk}", exact=True))
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == str(loan.amount_wei)
    assert cells[2] == f"{ESCROW_SATS} of {ESCROW_SATS} sat"
    assert cells[3] == "1"  # confirmations, as the node counts them
    assert cells[5] == "may be offered"
    shot(page, "the queue with the escrow check")
    axe_check(page)

    # 2. Commit hL from the loan's page (the server key sends it).
    row.get_by_role("link", name=f"Loan {loan.pk}").click()
    page.wait_for_url(re.compile(rf"/lender/loans/{loan.pk}/$"))
    assert summary(page) == "Requested; Bitcoin: Escrow confirmed"
    assert lender_steps(page) == ["commit-lender-hash"]
    shot(page, "the loan, hL to commit")
    axe_check(page)
    done = lender_step(page, loan, "commit-lender-hash")
    sent_hash = rf"commitLenderHash\({loan.contract_loan_id}\) sent: (0x)?[0-9a-f]{{64}} \(Mined\)\."
    assert re.fullmatch(sent_hash, done), done
    loan = scene.sync(loan)
    assert loan.lender_hash is not None
    shot(page, "hL committed")

    # The borrower pre-signs TX_1 (through the services, as their signer does): the offer opens.
    scene.presigned(loan)
    page.goto(f"/lender/loans/{loan.pk}/")
    assert lender_steps(page) == ["offer"]
    done = lender_step(page, loan, "offer")
    assert re.fullmatch(r"extendLoanOffer\(\d+\) sent: (0x)?[0-9a-f]{64} \(Mined\)\.", done), done
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.OFFERED
    sent = EvmTransaction.objects.filter(loan=loan).order_by("pk").values_list("function", "status", "source")
    assert [(function.split("(")[0], status, source) for function, status, source in sent] == [
        ("commitLenderHash", "mined", "server_key"),
        ("extendLoanOffer", "mined", "server_key"),
    ]  # the server key sent each once
    shot(page, "offered")

    # The borrower accepts with pB (its wallet): the page shows the loan active and TX_1 to lock.
    call = calls.loan_offer_accept_prepare(loan=loan, actor=scene.borrower)
    scene.sign(call, scene.desk.borrower.account, append=scene.desk.secrets[loan.pk])
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.ACTIVE
    page.goto(f"/lender/loans/{loan.pk}/")
    assert summary(page) == "Active; Bitcoin: Escrow confirmed"
    assert lender_steps(page) == ["collateral-lock"]
    shot(page, "active, TX_1 to lock")
    axe_check(page)

    # 3. Lock TX_1 from the page: the node takes it, and it confirms on regtest.
    done = lender_step(page, loan, "collateral-lock")
    (lock,) = BitcoinBroadcast.objects.filter(loan=loan, kind="tx_1")
    assert done == f"tx_1 {lock.txid} broadcast."
    assert lock.txid in scene.btc.getrawmempool()
    mine_blocks(scene.btc, 1)
    watch()
    loan.refresh_from_db()
    assert loan.bitcoin_status == Loan.BitcoinStatus.COLLATERAL_LOCKED
    assert scene.btc.gettxout(loan.escrow_txid, loan.escrow_vout) is None  # TX_1 spent the escrow, in a block
    assert lock.txid not in scene.btc.getrawmempool()
    page.goto(f"/lender/loans/{loan.pk}/")
    assert summary(page) == "Active; Bitcoin: Collateral locked (TX_1)"
    shot(page, "TX_1 confirmed")

    # The dashboard: the capital lent, the loan by state, its deadlines coming up.
    page.goto("/lender/")
    capital = page.locator("#dashboard dl dd").first.inner_text()
    assert capital == f"{loan.amount_wei} wei, with {loan.bond_wei} wei of bonds"
    assert page.locator("#dashboard tbody tr").all_inner_texts() == ["Active\tCollateral locked (TX_1)\t1"]
    (coming,) = page.locator("#dashboard ul li").all_inner_texts()
    deadlines = selectors.loan_deadlines(loan=loan)
    assert coming.startswith(
        f"Loan {loan.pk}: Mark the loan defaulted opens at EVM block {deadlines.repayment.block}: "
        f"{deadlines.repayment.blocks_remaining} blocks to go"
    ), coming
    shot(page, "the desk, one loan lent")
    axe_check(page)

    # 4. The borrower repays (its wallet); the lender accepts the repayment from the page.
    scene.sign(calls.loan_repayment_prepare(loan=loan, actor=scene.borrower), scene.desk.borrower.account)
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.REPAYMENT_IN_PROGRESS
    page.goto(f"/lender/loans/{loan.pk}/")
    assert lender_steps(page) == ["accept-repayment"]
    shot(page, "the repayment to accept")
    done = lender_step(page, loan, "accept-repayment")
    assert re.fullmatch(r"acceptLoanRepayment\(\d+\) sent: (0x)?[0-9a-f]{64} \(Mined\)\.", done), done
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.REPAID and loan.lender_preimage is not None
    page.goto(f"/lender/loans/{loan.pk}/")
    assert summary(page).startswith("Repaid; ")
    shot(page, "repaid")

    page.goto("/lender/")
    assert page.locator("#dashboard dl dd").first.inner_text() == "0 wei, with 0 wei of bonds"
    assert page.locator("#dashboard tbody tr").all_inner_texts() == ["Repaid\tCollateral locked (TX_1)\t1"]
    shot(page, "the desk, the loan repaid")
    axe_check(page)
    # The live server is WSGI: the loan page's websocket (static/loans/live.js) falls back to polling.
    assert [error for error in console.errors if "WebSocket connection to" not in error] == []
