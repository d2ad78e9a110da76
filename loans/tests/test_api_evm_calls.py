"""The contract calls over the API (POST /api/v1/loans/{id}/evm-calls/{name}/), wallet-reported transactions
(POST .../evm-transactions/) and the lender's queue (GET /api/v1/lender/queue/), on anvil and regtest: what a
wallet gets, signed by the persona's anvil account, succeeds on chain; refusals come back as {code, message,
fields} with their HTTP status and change nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from evm.client import LoanStatus
from loans.models import EvmTransaction, LenderPreimage, Loan, User
from loans.services import evm_calls as calls

from .evm_calls_scene import ESCROW_SATS, SMALL, Scene, scene_fixture  # noqa: F401 - a fixture
from .factories import make_user

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def call_url(loan: Loan, name: str) -> str:
    return reverse("api:loan-evm-call", kwargs={"pk": loan.pk, "name": name})


def report_url(loan: Loan) -> str:
    return reverse("api:loan-evm-transactions", kwargs={"pk": loan.pk})


def post_call(user, loan: Loan, name: str, send: bool = False, **headers):
    return client_for(user).post(call_url(loan, name), {"send": send}, format="json", **headers)


def as_call(body: dict) -> calls.EvmCall:
    """What the wallet signs, from the API's answer."""
    from evm.client import PreparedTransaction

    prepared = body["prepared"]
    return calls.EvmCall(
        prepared=PreparedTransaction(
            to=prepared["to"],
            data=prepared["data"],
            value=int(prepared["value_wei"]),
            chain_id=prepared["chain_id"],
            gas=prepared["gas"],
            method=prepared["method"],
        ),
        needs=prepared["needs"],
    )


def test_a_loan_from_request_to_repaid_over_the_api(scene: Scene):
    desk, borrower, lender = scene.desk, scene.borrower, scene.lender
    loan = scene.draft(funded=True)

    response = post_call(borrower, loan, "request", HTTP_IDEMPOTENCY_KEY="req-1")
    assert response.status_code == 200, response.json()
    body = response.json()
    prepared = body["prepared"]
    assert body["transaction"] is None and prepared["needs"] is None
    assert prepared["value_wei"] == str(scene.parameters.processing_fee_wei) and prepared["method"].startswith(
        "requestLoan"
    )
    assert prepared["to"] == desk.client.loan_address and prepared["chain_id"] == desk.client.chain_id
    wallet = prepared["wallet_request"]
    assert wallet["from"] == desk.borrower.address and wallet["data"] == prepared["data"]
    assert wallet["value"] == hex(scene.parameters.processing_fee_wei) and wallet["gas"] == hex(prepared["gas"])
    again = post_call(borrower, loan, "request", HTTP_IDEMPOTENCY_KEY="req-1")
    assert again.json() == body and again["Idempotent-Replayed"] == "true"
    scene.sign(as_call(body), desk.borrower.account)
    loan = scene.sync(loan)

    commit = post_call(lender, loan, "commit-lender-hash", send=True)
    assert commit.status_code == 200, commit.json()
    sent = commit.json()["transaction"]
    assert sent["source"] == "server_key" and sent["status"] == "mined" and sent["function"] == "commitLenderHash"
    assert sent["loan"] == loan.pk and sent["events"][0]["name"] == "LenderHashCommitted"
    scene.presigned(scene.sync(loan))
    offer = post_call(lender, loan, "offer", send=True)
    assert offer.status_code == 200, offer.json()
    assert offer.json()["prepared"]["value_wei"] == str(loan.amount_wei + loan.bond_wei)
    loan = scene.sync(loan)

    accept = post_call(borrower, loan, "accept-offer").json()
    assert accept["prepared"]["needs"] == "borrower_preimage" and accept["prepared"]["gas"] is None
    receipt = scene.sign(as_call(accept), desk.borrower.account, append=desk.secrets[loan.pk])
    tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
    reported = client_for(borrower).post(report_url(loan), {"tx_hash": tx_hash}, format="json")
    assert reported.status_code == 201, reported.json()
    row = reported.json()
    assert row["tx_hash"] == tx_hash[2:] and row["source"] == "wallet" and row["status"] == "mined"
    assert row["function"] == "acceptLoanOffer" and row["events"][0]["name"] == "LoanActivated"
    twice = client_for(borrower).post(report_url(loan), {"tx_hash": tx_hash}, format="json")
    assert twice.status_code == 201 and twice.json()["id"] == row["id"]
    loan = scene.sync(loan)

    repay = post_call(borrower, loan, "repay").json()
    assert repay["prepared"]["value_wei"] == str(loan.repayment_wei)
    scene.sign(as_call(repay), desk.borrower.account)
    loan = scene.sync(loan)
    wallet = post_call(lender, loan, "accept-repayment")
    assert wallet.status_code == 422 and wallet.json()["code"] == "server_key_required"
    accepted = post_call(lender, loan, "accept-repayment", send=True)
    assert accepted.status_code == 200, accepted.json()
    event = accepted.json()["transaction"]["events"][0]
    assert event["name"] == "RepaymentAccepted" and event["args"]["lender_preimage"] is None  # not recorded yet
    assert scene.chain(loan).status is LoanStatus.REPAID
    loan = scene.sync(loan)
    tx_hash = "0x" + accepted.json()["transaction"]["tx_hash"]
    row = client_for(lender).post(report_url(loan), {"tx_hash": tx_hash}, format="json")
    assert row.status_code == 201 and row.json()["events"][0]["args"]["lender_preimage"] == loan.lender_preimage


def test_refusals_have_the_error_shape_and_change_nothing(scene: Scene):
    loan = scene.offered()
    before = (EvmTransaction.objects.count(), LenderPreimage.objects.count(), scene.chain(loan).status)
    unknown = post_call(scene.lender, loan, "steal")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    early = post_call(scene.lender, loan, "withdraw-offer", send=True)
    assert early.status_code == 409 and early.json()["code"] == "too_early", early.json()
    state = post_call(scene.borrower, loan, "repay")
    assert state.status_code == 409 and state.json()["code"] == "wrong_state"
    sent_by_borrower = post_call(scene.borrower, loan, "accept-offer", send=True)
    assert sent_by_borrower.status_code == 400 and sent_by_borrower.json()["code"] == "invalid"
    assert "send" in sent_by_borrower.json()["fields"]
    lender_as_borrower = post_call(scene.lender, loan, "accept-offer")
    assert lender_as_borrower.status_code == 403 and lender_as_borrower.json()["code"] == "permission_denied"
    other_borrower = post_call(make_user(User.Role.BORROWER), loan, "accept-offer")
    assert other_borrower.status_code == 404
    bad_hash = client_for(scene.borrower).post(report_url(loan), {"tx_hash": "0xabc"}, format="json")
    assert bad_hash.status_code == 422 and bad_hash.json()["code"] == "invalid_tx_hash"
    assert APIClient().post(call_url(loan, "repay"), {}, format="json").status_code in (401, 403)
    assert (EvmTransaction.objects.count(), LenderPreimage.objects.count(), scene.chain(loan).status) == before
    scene.mine_evm(SMALL["offer_window_blocks"])
    not_owner = post_call(make_user(User.Role.OPERATOR), loan, "withdraw-offer")  # wallet mode, not the owner
    assert not_owner.status_code == 422 and not_owner.json()["code"] == "not_contract_owner"
    withdrawn = post_call(scene.lender, loan, "withdraw-offer")  # the owner's wallet
    assert withdrawn.status_code == 200 and withdrawn.json()["transaction"] is None
    scene.sign(as_call(withdrawn.json()), scene.desk.lender.account)
    assert scene.chain(loan).status is LoanStatus.OFFER_EXPIRED


def test_the_lenders_queue_over_the_api(scene: Scene, operator, monkeypatch):
    import loans.escrow

    first = scene.requested(funded=True)
    second = scene.requested()
    checked: list[int] = []
    real_check = loans.escrow.escrow_check

    def check_and_note(*, loan, **kwargs):
        checked.append(loan.pk)
        return real_check(loan=loan, **kwargs)

    monkeypatch.setattr(loans.escrow, "escrow_check", check_and_note)
    url = reverse("api:lender-queue")
    response = client_for(scene.lender).get(url)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["count"] == 2 and body["next"] is None and body["previous"] is None
    entries = body["results"]
    assert [entry["loan"]["id"] for entry in entries] == [first.pk, second.pk]
    escrow = entries[0]["escrow"]
    assert escrow["ok"] and escrow["problems"] == [] and escrow["confirmations"] == 1
    assert escrow["value_sats"] == escrow["expected_sats"] == str(ESCROW_SATS) and escrow["has_room_for_offer"]
    assert entries[1]["escrow"]["problems"] == ["escrow_not_found"] and not entries[1]["escrow"]["ok"]

    # A page at a time: only the page's loans are checked on the node.
    checked.clear()
    page_one = client_for(scene.lender).get(url, {"page_size": 1}).json()
    assert page_one["count"] == 2 and page_one["previous"] is None
    assert [entry["loan"]["id"] for entry in page_one["results"]] == [first.pk] and checked == [first.pk]
    assert page_one["next"] == f"http://testserver{url}?page=2&page_size=1"
    checked.clear()
    page_two = client_for(scene.lender).get(page_one["next"]).json()
    assert [entry["loan"]["id"] for entry in page_two["results"]] == [second.pk] and checked == [second.pk]
    assert page_two["next"] is None and page_two["previous"] == f"http://testserver{url}?page_size=1"
    checked.clear()
    beyond = client_for(scene.lender).get(url, {"page": 3, "page_size": 1})
    assert beyond.status_code == 404 and beyond.json()["code"] == "not_found" and checked == []

    assert client_for(operator).get(url).status_code == 200 and checked == [first.pk, second.pk]
    checked.clear()
    refused = client_for(scene.borrower).get(url)
    assert refused.status_code == 403 and refused.json()["code"] == "permission_denied" and checked == []


def test_an_unreachable_evm_node_is_503(scene: Scene, settings):
    loan = scene.requested()
    settings.EVM_RPC_URL = "http://127.0.0.1:9"
    response = post_call(scene.borrower, loan, "cancel-request")
    assert response.status_code == 503 and response.json()["code"] == "evm_node_unavailable"
    reported = client_for(scene.borrower).post(report_url(loan), {"tx_hash": "0x" + "11" * 32}, format="json")
    assert reported.status_code == 503 and reported.json()["code"] == "evm_node_unavailable"
