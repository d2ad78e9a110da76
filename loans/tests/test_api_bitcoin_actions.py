"""The Bitcoin actions over /api/v1/ (``loans/api/bitcoin_views.py``): ladders, the borrower's PSBTs, broadcasts,
the lender's TX_1 and TX_capture, an operator's retry. Each answers its shape (amounts as decimal strings); a loan
the caller may not see is 404, one it sees but may not act on 403; refusals keep their code and HTTP status."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.urls import reverse
from rest_framework.test import APIClient

from bitcoin.loan import fee_rate_text
from bitcoin.psbt import Psbt
from bitcoin.tests.loan_vectors import BORROWER_XONLY, LENDER_HASH, LENDER_PREIMAGE
from bitcoin.transactions import build_exit, build_release
from loans.facts import loan_facts
from loans.models import BitcoinBroadcast, BorrowerSignature, Loan, OperatorAction, User

from .caches import use_own_cache
from .factories import make_user
from .test_bitcoin_actions import (
    CLOSED_PORT_URL,
    activated_loan,
    escrow_at,
    exit_tx,
    follow,
    lock_applied,
    release_rung,
    released_loan,
    set_loan,
    store_lender_key,
    upload_tx1,
    vector_loan,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _desk(settings) -> None:
    use_own_cache(settings)
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB = "1"
    settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "500"
    settings.BITCOIN_RPC_URL = CLOSED_PORT_URL
    settings.LOAN_VAULT_KEYS_FILE = ""
    settings.LOAN_VAULT_KEYS = Fernet.generate_key().decode()


@pytest.fixture
def borrower() -> User:
    return make_user(User.Role.BORROWER)


@pytest.fixture
def lender() -> User:
    return make_user(User.Role.LENDER)


@pytest.fixture
def operator() -> User:
    return make_user(User.Role.OPERATOR)


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def url(name: str, pk: int) -> str:
    return reverse(f"api:{name}", kwargs={"pk": pk})


def post(user, name: str, pk: int, body: dict | None = None, key: str | None = None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client_for(user).post(url(name, pk), body or {}, format="json", **headers)


def error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.json()
    assert response.json()["code"] == code


# ------------------------------------------------------------------------------------------------ ladders


def test_ladders_answer_the_stored_rungs(borrower):
    loan = vector_loan(borrower)
    tx1 = upload_tx1(loan)
    body = {"release": [release_rung(loan, tx1.txid, 2)], "exit": [exit_tx(loan, 3).hex()]}
    response = post(borrower, "loan-ladders", loan.pk, body, key="ladder-1")
    assert response.status_code == 201, response.json()
    release, exit_ = response.json()
    facts = loan_facts(loan=loan)
    expected = build_release(facts, tx1_txid=tx1.txid, fee_rate_sat_vb=2)
    assert release == {
        "kind": "tx_release",
        "txid": expected.tx.txid,
        "form": "psbt",
        "fee_sats": str(expected.fee_sats),
        "fee_rate_sat_vb": fee_rate_text(expected.fee_rate),
        "payout_sats": str(expected.tx.outputs[0].value),
    }
    assert (exit_["kind"], exit_["form"], exit_["txid"]) == ("tx_exit", "transaction", exit_tx(loan, 3).txid)
    replay = post(borrower, "loan-ladders", loan.pk, body, key="ladder-1")
    assert replay.json() == response.json() and replay["Idempotent-Replayed"] == "true"
    assert BorrowerSignature.objects.filter(loan=loan).count() == 3


def test_ladder_access_and_refusals(borrower, lender):
    loan = vector_loan(borrower)
    body = {"exit": [exit_tx(loan).hex()]}
    error(post(make_user(User.Role.BORROWER), "loan-ladders", loan.pk, body), 404, "not_found")
    error(post(lender, "loan-ladders", loan.pk, body), 403, "permission_denied")
    assert post(None, "loan-ladders", loan.pk, body).status_code in (401, 403)
    error(post(borrower, "loan-ladders", loan.pk, {}), 422, "ladder_empty")
    error(post(borrower, "loan-ladders", loan.pk, {"release": ["cHNidP8B"]}), 409, "tx1_not_presigned")
    error(post(borrower, "loan-ladders", loan.pk, {"exit": [exit_tx(loan).hex()] * 17}), 400, "invalid")
    error(post(borrower, "loan-ladders", loan.pk, {"exit": "not a list"}), 400, "invalid")
    assert not BorrowerSignature.objects.exists()


# ------------------------------------------------------------------------------------------------ PSBTs


def test_release_psbt(borrower, lender):
    loan, tx1_txid = released_loan(borrower)
    response = client_for(borrower).get(url("loan-release-psbt", loan.pk), {"fee_rate_sat_vb": "2.5"})
    assert response.status_code == 200, response.json()
    body = response.json()
    expected = build_release(loan_facts(loan=loan), tx1_txid=tx1_txid, fee_rate_sat_vb="2.5")
    assert (body["txid"], body["fee_sats"], body["payout_sats"]) == (
        expected.tx.txid,
        str(expected.fee_sats),
        str(expected.tx.outputs[0].value),
    )
    psbt = Psbt.load(body["psbt"])
    assert psbt.sha256_preimages(0) == {bytes.fromhex(LENDER_HASH): LENDER_PREIMAGE}
    assert bytes.fromhex(BORROWER_XONLY) in psbt.tap_key_leaf_hashes(0)
    no_rate = client_for(borrower).get(url("loan-release-psbt", loan.pk))  # the node's estimate, else the minimum
    assert no_rate.status_code == 200 and no_rate.json()["txid"] != body["txid"]
    error(
        client_for(borrower).get(url("loan-release-psbt", loan.pk), {"fee_rate_sat_vb": "x"}), 422, "invalid_fee_rate"
    )
    error(client_for(lender).get(url("loan-release-psbt", loan.pk)), 403, "permission_denied")
    error(client_for(make_user(User.Role.BORROWER)).get(url("loan-release-psbt", loan.pk)), 404, "not_found")
    set_loan(loan, lender_preimage=None)
    error(client_for(borrower).get(url("loan-release-psbt", loan.pk)), 409, "lender_preimage_unknown")


def test_exit_psbt(borrower):
    loan = vector_loan(borrower, status=Loan.Status.CANCELLED)
    escrow_at(loan, 500)
    follow(598)
    error(client_for(borrower).get(url("loan-exit-psbt", loan.pk), {"fee_rate_sat_vb": "2"}), 409, "too_early")
    follow(599)
    response = client_for(borrower).get(url("loan-exit-psbt", loan.pk), {"fee_rate_sat_vb": "2"})
    assert response.status_code == 200, response.json()
    assert response.json()["txid"] == build_exit(loan_facts(loan=loan), fee_rate_sat_vb=2).tx.txid
    set_loan(loan, status=Loan.Status.DEFAULTED)
    error(client_for(borrower).get(url("loan-exit-psbt", loan.pk)), 409, "escrow_owed_to_lender")


# ------------------------------------------------------------------------------------------------ broadcasts


def test_broadcast_with_the_node_down_is_kept_and_an_operator_retries_it(borrower, lender, operator):
    loan = vector_loan(borrower, status=Loan.Status.CANCELLED)
    tx = exit_tx(loan)
    response = post(borrower, "loan-bitcoin-broadcasts", loan.pk, {"transaction": tx.hex()}, key="b-1")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["kind"], body["txid"], body["attempts"], body["accepted_at"]) == ("tx_exit", tx.txid, 1, None)
    assert "unreachable" in body["last_error"]
    pk = body["id"]
    error(post(borrower, "bitcoin-broadcast-retry", pk), 403, "permission_denied")
    error(post(lender, "bitcoin-broadcast-retry", pk), 403, "permission_denied")
    error(post(make_user(User.Role.BORROWER), "bitcoin-broadcast-retry", pk), 404, "not_found")
    assert not OperatorAction.objects.exists()
    retried = post(operator, "bitcoin-broadcast-retry", pk)
    assert retried.status_code == 200 and retried.json()["attempts"] == 2
    assert OperatorAction.objects.get().broadcast_id == pk
    error(post(operator, "bitcoin-broadcast-retry", 10**9), 404, "not_found")


def test_broadcast_refusals(borrower, lender):
    loan = vector_loan(borrower, status=Loan.Status.CANCELLED)
    error(post(borrower, "loan-bitcoin-broadcasts", loan.pk, {"transaction": "zz"}), 422, "malformed_transaction")
    error(post(borrower, "loan-bitcoin-broadcasts", loan.pk, {}), 400, "invalid")
    tx = exit_tx(loan).hex()
    error(post(lender, "loan-bitcoin-broadcasts", loan.pk, {"transaction": tx}), 403, "permission_denied")
    other = make_user(User.Role.BORROWER)
    error(post(other, "loan-bitcoin-broadcasts", loan.pk, {"transaction": tx}), 404, "not_found")
    assert not BitcoinBroadcast.objects.exists()


# ------------------------------------------------------------------------------------------------ the lender's


def test_collateral_lock_and_capture(borrower, lender, operator):
    loan = activated_loan(borrower)
    error(post(borrower, "loan-collateral-lock", loan.pk), 403, "permission_denied")
    error(post(lender, "loan-collateral-lock", loan.pk), 422, "no_lender_key")
    store_lender_key(lender)
    locked = post(lender, "loan-collateral-lock", loan.pk, key="lock-1")
    assert locked.status_code == 201, locked.json()
    assert locked.json()["kind"] == "tx_1" and locked.json()["accepted_at"] is None

    tx1 = BorrowerSignature.objects.get(loan=loan, kind="tx_1")
    error(post(operator, "loan-collateral-capture", loan.pk), 409, "wrong_state")
    set_loan(loan, status=Loan.Status.DEFAULTED)
    lock_applied(loan, tx1.txid, height=300)
    follow(30298)
    error(post(operator, "loan-collateral-capture", loan.pk, {"fee_rate_sat_vb": "2"}), 409, "too_early")
    follow(30299)
    error(post(operator, "loan-collateral-capture", loan.pk, {"fee_rate_sat_vb": "0"}), 422, "invalid_fee_rate")
    error(post(borrower, "loan-collateral-capture", loan.pk, {"fee_rate_sat_vb": "2"}), 403, "permission_denied")
    captured = post(operator, "loan-collateral-capture", loan.pk, {"fee_rate_sat_vb": "2"})
    assert captured.status_code == 201, captured.json()
    assert captured.json()["kind"] == "tx_capture"
    assert BitcoinBroadcast.objects.filter(loan=loan).count() == 2
