"""The API's reads: who sees what (one table for every endpoint), the error shape, money as strings, constant
query counts, both chains' state with deadlines in blocks, the timeline in time order, the parameters in force."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient

from loans.api.errors import ERROR_CODES
from loans.api.fields import SatsField, WeiField
from loans.errors import ChainFactError, LoanServiceError, TransitionError
from loans.models import BitcoinTransaction, ChainCursor, EvmEvent, Loan, LoanStatusChange, User

from .caches import use_own_cache
from .factories import hex32, make_deployment, make_loan, make_parameters, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_throttle_counters(settings):
    """Rate-limit counters of this test only (the Redis database is shared with other suites)."""
    use_own_cache(settings)


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def people(db):
    owner = make_user(User.Role.BORROWER)
    return {
        "anonymous": None,
        "other_borrower": make_user(User.Role.BORROWER),
        "owner": owner,
        "lender": make_user(User.Role.LENDER),
        "operator": make_user(User.Role.OPERATOR),
    }


@pytest.fixture
def loan(people) -> Loan:
    return make_loan(borrower=people["owner"])


# (endpoint, who) -> status. Another borrower's loan is 404, as one that does not exist.
AUTHORIZATION = {
    "list": {"anonymous": 401, "other_borrower": 200, "owner": 200, "lender": 200, "operator": 200},
    "detail": {"anonymous": 401, "other_borrower": 404, "owner": 200, "lender": 200, "operator": 200},
    "timeline": {"anonymous": 401, "other_borrower": 404, "owner": 200, "lender": 200, "operator": 200},
    "parameters": {"anonymous": 401, "other_borrower": 200, "owner": 200, "lender": 200, "operator": 200},
}
SEES_THE_LOAN_IN_LIST = {"anonymous": None, "other_borrower": False, "owner": True, "lender": True, "operator": True}


def url_of(endpoint: str, loan: Loan) -> str:
    if endpoint == "list":
        return reverse("api:loan-list")
    if endpoint == "parameters":
        return reverse("api:parameters")
    return reverse(f"api:loan-{endpoint}", args=[loan.pk])


@pytest.mark.parametrize("who", ["anonymous", "other_borrower", "owner", "lender", "operator"])
@pytest.mark.parametrize("endpoint", list(AUTHORIZATION))
def test_who_may_read_what(endpoint, who, people, loan):
    response = client_for(people[who]).get(url_of(endpoint, loan))
    assert response.status_code == AUTHORIZATION[endpoint][who], response.content
    body = response.json()
    if response.status_code == 401:
        assert body == {"code": "not_authenticated", "message": body["message"], "fields": {}}
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    elif response.status_code == 404:
        assert body == {"code": "not_found", "message": body["message"], "fields": {}}
    if endpoint == "list" and response.status_code == 200:
        assert ([row["id"] for row in body["results"]] == [loan.pk]) is SEES_THE_LOAN_IN_LIST[who]


def test_a_missing_loan_is_not_found(people):
    response = client_for(people["operator"]).get(reverse("api:loan-detail", args=[10**9]))
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_writes_to_a_read_endpoint_are_refused_in_the_error_shape(people):
    response = client_for(people["operator"]).post(reverse("api:parameters"), {}, format="json")  # POST loans/ creates
    assert response.status_code == 405
    assert response.json() == {"code": "method_not_allowed", "message": 'Method "POST" not allowed.', "fields": {}}


def test_list_filters_by_status_and_refuses_an_unknown_one(people):
    owner = people["owner"]
    draft = make_loan(borrower=owner)
    requested = make_loan(borrower=owner, status=Loan.Status.REQUESTED)
    client = client_for(owner)
    assert [r["id"] for r in client.get(reverse("api:loan-list")).json()["results"]] == [requested.pk, draft.pk]
    response = client.get(reverse("api:loan-list"), {"status": "requested"})
    assert [row["id"] for row in response.json()["results"]] == [requested.pk]
    bad = client.get(reverse("api:loan-list"), {"status": "lost"})
    assert bad.status_code == 400
    assert bad.json() == {
        "code": "invalid",
        "message": bad.json()["message"],
        "fields": {"status": ["not a loan status: 'lost'"]},
    }


def test_list_rows_show_amounts_as_decimal_strings(people):
    owner = people["owner"]
    loan = make_loan(borrower=owner, amount_wei=123 * 10**18, collateral_sats=2_100_000_000_000_000)
    row = client_for(owner).get(reverse("api:loan-list")).json()["results"][0]
    assert row["amount_wei"] == "123000000000000000000"
    assert row["bond_wei"] == str(loan.bond_wei) and row["repayment_wei"] == str(loan.repayment_wei)
    assert row["collateral_sats"] == "2100000000000000"
    assert row["borrower_address"] == owner.evm_address and row["lender_address"] is None
    assert row["status"] == "draft" and row["bitcoin_status"] == "none" and row["is_closed"] is False


@pytest.mark.parametrize("count", [1, 7])
def test_list_query_count_does_not_grow_with_the_loans(people, count, django_assert_num_queries):
    deployment = make_deployment()
    parameters = make_parameters()
    for _ in range(count):
        make_loan(borrower=people["owner"], lender=people["lender"], deployment=deployment, parameters=parameters)
    client = client_for(people["operator"])
    with django_assert_num_queries(4):  # session, user, count, page (with borrower, lender, parameters, deployment)
        response = client.get(reverse("api:loan-list"))
    assert response.json()["count"] == count


def test_list_is_paginated(people):
    deployment = make_deployment()
    for _ in range(3):
        make_loan(borrower=people["owner"], deployment=deployment)
    body = client_for(people["owner"]).get(reverse("api:loan-list"), {"page_size": 2}).json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"].endswith("page=2&page_size=2")


def test_detail_has_both_chains_with_deadlines_and_timelocks_in_blocks(people):
    loan = make_loan(
        borrower=people["owner"],
        status=Loan.Status.ACTIVE,
        offered_evm_block=1000,
        activated_evm_block=1100,
        escrow_txid=hex32(),
        escrow_vout=1,
        escrow_sats=1_500_000,
        escrow_btc_height=200,
        collateral_sats=1_200_000,
    )
    ChainCursor.objects.create(chain="evm", block_number=1500, block_hash=hex32(), parent_hash=hex32())
    ChainCursor.objects.create(chain="bitcoin", block_number=210, block_hash=hex32(), parent_hash=hex32())
    tx = BitcoinTransaction.objects.create(
        loan=loan, role="escrow_funding", txid=loan.escrow_txid, vout=1, value_sats=1_500_000,
        block_hash=hex32(), block_height=200,
    )  # fmt: skip
    before = timezone.now()
    body = client_for(people["owner"]).get(reverse("api:loan-detail", args=[loan.pk])).json()

    evm = body["evm"]
    assert evm["followed_block"] == 1500
    offer_deadline = 1000 + loan.offer_window_blocks
    assert evm["offer_deadline"] == {
        "block": offer_deadline,
        "blocks_remaining": max(0, offer_deadline - 1501),
        "estimated_at": evm["offer_deadline"]["estimated_at"],
    }
    repay = 1100 + loan.loan_duration_blocks
    assert evm["repayment_deadline"]["block"] == repay and evm["repayment_deadline"]["blocks_remaining"] == repay - 1501
    # Each deadline as an estimated time too: the blocks to its block at the loan's spacing (600 s / ratio).
    spacing = 600 / loan.evm_blocks_per_btc_block
    expected = before + timedelta(seconds=(repay - 1500) * spacing)
    estimated = datetime.fromisoformat(evm["repayment_deadline"]["estimated_at"])
    assert expected <= estimated <= expected + (timezone.now() - before)
    assert evm["acceptance_deadline"] == {"block": None, "blocks_remaining": None, "estimated_at": None}
    assert evm["amount_wei"] == str(loan.amount_wei) and evm["chain_id"] == 31337

    btc = body["bitcoin"]
    assert btc["followed_height"] == 210 and btc["escrow_sats"] == "1500000" and btc["collateral_sats"] == "1200000"
    mature = 200 + loan.escrow_timelock_btc_blocks
    assert btc["exit_timelock"] == {
        "timelock_blocks": loan.escrow_timelock_btc_blocks,
        "output_height": 200,
        "mature_height": mature,
        "blocks_remaining": mature - 211,
        "estimated_mature_at": btc["exit_timelock"]["estimated_mature_at"],
    }
    expected = before + timedelta(seconds=(mature - 211) * 600)
    estimated = datetime.fromisoformat(btc["exit_timelock"]["estimated_mature_at"])
    assert expected <= estimated <= expected + (timezone.now() - before)
    assert btc["capture_timelock"]["output_height"] is None and btc["capture_timelock"]["blocks_remaining"] is None
    assert [t["txid"] for t in btc["transactions"]] == [tx.txid]
    assert btc["transactions"][0]["confirmations"] == 11 and btc["transactions"][0]["value_sats"] == "1500000"
    assert body["terms"]["processing_fee_wei"] == str(loan.processing_fee_wei)
    assert body["terms"]["offer_window_blocks"] == loan.offer_window_blocks
    assert body["loan"]["id"] == loan.pk


def test_detail_before_the_watchers_ran_says_unknown(people, loan):
    body = client_for(people["owner"]).get(reverse("api:loan-detail", args=[loan.pk])).json()
    assert body["evm"]["followed_block"] is None and body["bitcoin"]["followed_height"] is None
    assert body["evm"]["offer_deadline"] == {"block": None, "blocks_remaining": None, "estimated_at": None}


def test_timeline_merges_audit_trail_events_and_transactions_in_time_order(people, loan):
    now = timezone.now()
    event = EvmEvent.objects.create(
        chain_id=31337, contract_address=loan.deployment.loan_contract_address, block_number=5, block_hash=hex32(),
        tx_hash=hex32(), log_index=0, name="LoanRequested", args={"loanId": "1"}, loan=loan,
    )  # fmt: skip
    change = LoanStatusChange.objects.create(
        loan=loan, from_status="draft", to_status="requested", cause="LoanRequested", evm_event=event
    )
    tx = BitcoinTransaction.objects.create(
        loan=loan, role="escrow_funding", txid=hex32(), vout=0, value_sats=1000, block_hash=hex32(), block_height=3
    )
    # Put them in an order unlike their ids: the transaction first, then the event, then the change.
    BitcoinTransaction.objects.filter(pk=tx.pk).update(first_seen_at=now.replace(year=now.year - 1))
    EvmEvent.objects.filter(pk=event.pk).update(created_at=change.created_at)  # a tie: the fact before its change
    body = client_for(people["lender"]).get(reverse("api:loan-timeline", args=[loan.pk])).json()
    assert [entry["kind"] for entry in body] == ["bitcoin_transaction", "evm_event", "status_change"]
    assert body[0]["bitcoin_transaction"]["txid"] == tx.txid and body[0]["bitcoin_transaction"]["value_sats"] == "1000"
    assert body[1]["evm_event"]["name"] == "LoanRequested"
    assert body[2]["status_change"]["to_status"] == "requested" and body[2]["status_change"]["evm_event"] == event.pk


def test_parameters_in_force_is_the_newest_version(people):
    make_parameters(version=10_001)
    newest = make_parameters(version=10_002, note="v2")
    body = client_for(people["owner"]).get(reverse("api:parameters")).json()
    assert body["version"] == newest.version and body["note"] == "v2"
    assert body["terms"]["max_amount_wei"] == str(newest.max_amount_wei)
    assert body["terms"]["bond_percent"] == newest.bond_percent


def test_amount_fields_refuse_floats_and_numbers():
    field = WeiField()
    assert field.to_internal_value("10000000000000000000000") == 10**22
    for bad, code in [(1.5, "not_a_string"), (10, "not_a_string"), ("1.5", "invalid"), ("-1", "invalid"),
                      ("1e3", "invalid"), ("007", "invalid"), ("", "invalid"), ("\uff11", "invalid")]:  # fmt: skip
        with pytest.raises(serializers.ValidationError) as refused:
            field.run_validation(bad)
        assert refused.value.get_codes() == [code], bad
    with pytest.raises(serializers.ValidationError) as refused:
        SatsField().run_validation(str(21_000_000 * 10**8 + 1))
    assert refused.value.get_codes() == ["too_large"]
    with pytest.raises(TypeError):
        field.to_representation(1.0)


def test_the_error_codes_are_documented():
    from pathlib import Path

    documented = Path(__file__).resolve().parents[2].joinpath("docs/api-errors.md").read_text()
    missing = [code for code in ERROR_CODES if f"`{code}`" not in documented]
    assert missing == []


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (TransitionError("loan 1 is draft"), 409, "wrong_state"),
        (ChainFactError("no"), 422, "chain_fact_mismatch"),
        (LoanServiceError("no", code="invalid_key"), 422,
         "invalid_key"),
        (PermissionDenied("not yours"), 403,
         "permission_denied"),
        (Http404("gone"), 404, "not_found"),
    ],
)  # fmt: skip
def test_exception_handler_gives_every_error_one_shape(exc, status, code):
    from loans.api.errors import exception_handler

    response = exception_handler(exc, {})
    assert response.status_code == status
    assert set(response.data) == {"code", "message", "fields"} and response.data["code"] == code


def test_borrower_step_refusals_keep_their_reason_and_fields():
    from evm.errors import BorrowerStepRefused
    from loans.api.errors import exception_handler

    exc = BorrowerStepRefused("wrong_parameters", "t_B differs", fields=("offer_window_blocks",))
    response = exception_handler(exc, {})
    assert response.status_code == 422
    assert response.data == {
        "code": "wrong_parameters", "message": "t_B differs", "fields": {"offer_window_blocks": ["t_B differs"]}
    }  # fmt: skip


def test_the_loan_file_grows_with_the_loan_and_reads_back_as_the_same_facts(people):
    from bitcoin.loan import LoanFacts
    from bitcoin.tests.loan_vectors import BORROWER_XONLY, LENDER_XONLY, REGTEST_P2TR, REGTEST_P2WPKH
    from loans.facts import loan_facts

    loan = make_loan(
        borrower=people["owner"],
        parameters=make_parameters(lender_btc_pubkey=LENDER_XONLY),
        borrower_btc_pubkey=BORROWER_XONLY,
        lender_btc_pubkey=LENDER_XONLY,
        borrower_payout_address=REGTEST_P2WPKH,
        lender_payout_address=REGTEST_P2TR,
    )
    url = reverse("api:loan-file", args=[loan.pk])
    draft = client_for(people["owner"]).get(url).json()
    assert draft["lender_hash"] is None and draft["escrow_outpoint"] is None and "collateral_address" not in draft
    loan.lender_hash, loan.escrow_txid, loan.escrow_vout, loan.escrow_sats = hex32(), hex32(), 1, 1_500_000
    loan.save()
    body = client_for(people["owner"]).get(url).json()
    assert LoanFacts.from_json_dict(body) == loan_facts(loan=loan)
    assert body["lender_hash"] == loan.lender_hash and body["escrow_outpoint"] == f"{loan.escrow_txid}:1"
    assert "collateral_address" in body
    assert client_for(people["lender"]).get(url).json() == body
    assert client_for(people["other_borrower"]).get(url).status_code == 404
    assert client_for(None).get(url).status_code == 401
