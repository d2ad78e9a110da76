"""The borrower uploads TX_1's pre-signature (``loans.services.presignature_upload``, POST
/api/v1/loans/{id}/presignature/): PSBT or raw signature, verified in full against the loan's own facts; every
refusal by its code, with nothing written; the same upload again returns the stored row."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from rest_framework.test import APIClient

from bitcoin.psbt import create_psbt, sign_psbt
from bitcoin.tests.loan_vectors import (
    BORROWER_HASH,
    BORROWER_XONLY,
    ESCROW_OUTPOINT,
    LENDER_HASH,
    LENDER_XONLY,
    REGTEST_P2TR,
    REGTEST_P2WPKH,
    borrower_key,
    lender_key,
)
from bitcoin.transactions import CHANGE_OUTPUT_INDEX, COLLATERAL_OUTPUT_INDEX, build_tx1, tx1_prepared
from loans.errors import LoanServiceError
from loans.facts import loan_facts
from loans.models import BorrowerSignature, Loan, User
from loans.services import presignature_upload

from .caches import use_own_cache
from .factories import make_loan, make_parameters, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _desk(settings):
    use_own_cache(settings)
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB = "1"
    settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "500"


@pytest.fixture
def borrower():
    return make_user(User.Role.BORROWER)


def make_vector_loan(borrower, **overrides) -> Loan:
    """A requested loan with hL and a confirmed escrow: PROTOCOL.md's vector (keys, hashes, outpoint, payouts)."""
    parameters = make_parameters(lender_btc_pubkey=LENDER_XONLY, escrow_timelock_btc_blocks=100)
    values = {
        "parameters": parameters,
        "borrower": borrower,
        "borrower_btc_pubkey": BORROWER_XONLY,
        "borrower_hash": BORROWER_HASH,
        "lender_hash": LENDER_HASH,
        "amount_wei": 10**16,  # 1,000,000 sat
        "escrow_txid": ESCROW_OUTPOINT.txid,
        "escrow_vout": ESCROW_OUTPOINT.vout,
        "escrow_sats": 1_200_000,
        "borrower_payout_address": REGTEST_P2TR,
        "lender_payout_address": REGTEST_P2WPKH,
        "contract_loan_id": 1,
        "status": Loan.Status.REQUESTED,
        "bitcoin_status": Loan.BitcoinStatus.ESCROW_CONFIRMED,
    }
    values.update(overrides)
    return make_loan(**values)


@pytest.fixture
def loan(borrower):
    return make_vector_loan(borrower)


def signed_psbt(prepared, key=None):
    psbt = create_psbt(prepared)
    sign_psbt(psbt, key or borrower_key())
    return psbt


def tx1(loan):
    return build_tx1(loan_facts(loan=loan), fee_rate_sat_vb=2)


def raw_upload(loan):
    prepared = tx1(loan)
    (signature,) = signed_psbt(prepared).tap_script_sigs(0).values()
    return {"signature": signature.hex(), "transaction": prepared.tx.serialize(include_witness=False).hex()}


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def url(loan) -> str:
    return reverse("api:loan-presignature", kwargs={"pk": loan.pk})


# ------------------------------------------------------------------------------------------------ success


def test_psbt_upload_is_verified_and_stored(loan, borrower):
    prepared = tx1(loan)
    psbt = signed_psbt(prepared)
    row = presignature_upload(loan=loan, actor=borrower, psbt=psbt.to_base64())
    row.refresh_from_db()
    assert row.form == BorrowerSignature.Form.PSBT and row.loan == loan and row.uploaded_by == borrower
    assert row.txid == prepared.tx.txid
    assert row.unsigned_tx_hex == prepared.tx.serialize(include_witness=False).hex()
    assert row.sighash_hex == prepared.sighash().hex()
    (signature,) = psbt.tap_script_sigs(0).values()
    assert row.signature_hex == signature.hex() and row.psbt_base64 == psbt.to_base64()
    assert row.verified_at is not None


def test_raw_upload_is_verified_and_stored(loan, borrower):
    row = presignature_upload(loan=loan, actor=borrower, **raw_upload(loan))
    assert row.form == BorrowerSignature.Form.RAW and row.psbt_base64 == "" and row.txid == tx1(loan).tx.txid


def test_the_same_upload_again_returns_the_stored_row(loan, borrower):
    psbt = signed_psbt(tx1(loan)).to_base64()
    first = presignature_upload(loan=loan, actor=borrower, psbt=psbt)
    again = presignature_upload(loan=loan, actor=borrower, psbt=psbt)
    raw = presignature_upload(loan=loan, actor=borrower, **raw_upload(loan))  # same TX_1, raw form
    assert first.pk == again.pk == raw.pk and BorrowerSignature.objects.count() == 1


def test_api_psbt_upload_answers_the_amounts(loan, borrower):
    prepared = tx1(loan)
    facts = loan_facts(loan=loan)
    response = client_for(borrower).post(
        url(loan), {"psbt": signed_psbt(prepared).to_base64()}, format="json", HTTP_IDEMPOTENCY_KEY="p-1"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    outputs = prepared.tx.outputs
    assert body["txid"] == prepared.tx.txid and body["form"] == "psbt"
    assert body["origination_fee_sats"] == str(facts.origination_fee_sats) == str(outputs[0].value)
    assert body["collateral_sats"] == str(facts.collateral_sats) == str(outputs[COLLATERAL_OUTPUT_INDEX].value)
    assert body["change_sats"] == str(outputs[CHANGE_OUTPUT_INDEX].value)
    assert body["miner_fee_sats"] == str(1_200_000 - sum(output.value for output in outputs))
    assert body["fee_rate_sat_vb"] and body["verified_at"]
    assert BorrowerSignature.objects.filter(loan=loan, txid=prepared.tx.txid).count() == 1


def test_api_raw_upload_and_repeat(loan, borrower):
    client = client_for(borrower)
    first = client.post(url(loan), raw_upload(loan), format="json")
    second = client.post(url(loan), raw_upload(loan), format="json")
    assert first.status_code == second.status_code == 201
    assert first.json()["form"] == "raw" and first.json() == second.json()
    assert BorrowerSignature.objects.count() == 1


# ------------------------------------------------------------------------------------------------ refusals


def refused(code, **kwargs):
    with pytest.raises(LoanServiceError) as caught:
        presignature_upload(**kwargs)
    assert caught.value.code == code
    assert not BorrowerSignature.objects.exists()


def test_only_the_loans_borrower_uploads(loan):
    psbt = signed_psbt(tx1(loan)).to_base64()
    for actor in (make_user(User.Role.BORROWER), make_user(User.Role.LENDER), make_user(User.Role.OPERATOR)):
        with pytest.raises(PermissionDenied):
            presignature_upload(loan=loan, actor=actor, psbt=psbt)
    assert not BorrowerSignature.objects.exists()


def test_api_another_borrower_gets_404_and_the_lender_403(loan):
    psbt = signed_psbt(tx1(loan)).to_base64()
    other = client_for(make_user(User.Role.BORROWER)).post(url(loan), {"psbt": psbt}, format="json")
    assert other.status_code == 404 and other.json()["code"] == "not_found"
    lender = client_for(make_user(User.Role.LENDER)).post(url(loan), {"psbt": psbt}, format="json")
    assert lender.status_code == 403 and lender.json()["code"] == "permission_denied"
    assert APIClient().post(url(loan), {"psbt": psbt}, format="json").status_code in (401, 403)
    assert not BorrowerSignature.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"status": Loan.Status.DRAFT, "contract_loan_id": None}, "wrong_state"),
        ({"status": Loan.Status.OFFERED}, "wrong_state"),
        ({"lender_hash": None}, "lender_hash_missing"),
        ({"bitcoin_status": Loan.BitcoinStatus.NONE}, "escrow_not_confirmed"),
        ({"bitcoin_status": Loan.BitcoinStatus.COLLATERAL_LOCKED}, "escrow_not_confirmed"),
    ],
)
def test_refused_outside_its_state(borrower, overrides, code):
    good = make_vector_loan(borrower)
    psbt = signed_psbt(tx1(good)).to_base64()
    good.delete()
    loan = make_vector_loan(borrower, **overrides)
    refused(code, loan=loan, actor=borrower, psbt=psbt)
    response = client_for(borrower).post(url(loan), {"psbt": psbt}, format="json")
    assert response.status_code == 409 and response.json()["code"] == code
    assert not BorrowerSignature.objects.exists()


def test_collateral_above_the_cap_is_refused(loan, borrower):
    facts = loan_facts(loan=loan)
    prepared = tx1(loan)
    outputs = list(prepared.tx.outputs)
    extra = facts.collateral_cap_sats + 1 - outputs[COLLATERAL_OUTPUT_INDEX].value
    outputs[COLLATERAL_OUTPUT_INDEX] = replace(outputs[COLLATERAL_OUTPUT_INDEX], value=facts.collateral_cap_sats + 1)
    change = outputs[CHANGE_OUTPUT_INDEX]
    outputs[CHANGE_OUTPUT_INDEX] = replace(change, value=change.value - extra)
    tampered = tx1_prepared(facts, replace(prepared.tx, outputs=tuple(outputs)))
    psbt = signed_psbt(tampered).to_base64()  # validly signed by B, but not a TX_1 the loan allows
    refused("collateral_above_cap", loan=loan, actor=borrower, psbt=psbt)
    response = client_for(borrower).post(url(loan), {"psbt": psbt}, format="json")
    assert response.status_code == 422 and response.json()["code"] == "collateral_above_cap"
    assert not BorrowerSignature.objects.exists()


def test_garbage_psbt_is_refused(loan, borrower):
    garbage = base64.b64encode(b"not a psbt at all").decode()
    refused("malformed_psbt", loan=loan, actor=borrower, psbt=garbage)
    response = client_for(borrower).post(url(loan), {"psbt": garbage}, format="json")
    assert response.status_code == 422 and response.json()["code"] == "malformed_psbt"


@pytest.mark.parametrize(
    ("upload", "code"),
    [
        (lambda loan: {"psbt": signed_psbt(tx1(loan), lender_key()).to_base64()}, "wrong_signer"),
        (lambda loan: {"psbt": create_psbt(tx1(loan)).to_base64()}, "missing_signature"),
        (lambda loan: {**raw_upload(loan), "signature": "00" * 64}, "invalid_signature"),
        (lambda loan: {"signature": raw_upload(loan)["signature"]}, "missing_signature"),
        (lambda loan: {**raw_upload(loan), "psbt": signed_psbt(tx1(loan)).to_base64()}, "ambiguous_upload"),
        (lambda loan: {**raw_upload(loan), "transaction": "00"}, "malformed_transaction"),
    ],
)
def test_other_refusals_keep_the_verifiers_reason(loan, borrower, upload, code):
    body = upload(loan)
    refused(code, loan=loan, actor=borrower, **body)
    response = client_for(borrower).post(url(loan), body, format="json")
    assert response.status_code == 422 and response.json()["code"] == code
    assert not BorrowerSignature.objects.exists()


def test_another_escrow_outpoint_is_refused(loan, borrower):
    psbt = signed_psbt(tx1(loan)).to_base64()
    Loan.objects.filter(pk=loan.pk).update(escrow_vout=0)  # the chain says the escrow is elsewhere
    loan.refresh_from_db()
    refused("wrong_outpoint", loan=loan, actor=borrower, psbt=psbt)
