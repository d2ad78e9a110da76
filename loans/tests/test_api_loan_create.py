"""The borrower creates a loan (``loans.services.loan_create``, POST /api/v1/loans/) and gets the funding
instructions (``loans.funding``): exact sats, checked against TX_1 built independently; every refusal by its code,
with nothing written."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from rest_framework.test import APIClient

from bitcoin.addresses import encode_segwit_address
from bitcoin.fees import dust_threshold, fee_for_vsize
from bitcoin.keys import PrivateKey
from bitcoin.loan import LoanFacts
from bitcoin.rpc import NodeUnavailableError
from bitcoin.transactions import CHANGE_OUTPUT_INDEX, OutPoint, build_tx1, final_vsize
from loans import funding
from loans.errors import LoanServiceError
from loans.facts import loan_facts
from loans.models import PARAMETER_FIELDS, ContractDeployment, IdempotencyRecord, Loan, User
from loans.services import loan_create

from .caches import use_own_cache
from .factories import evm_address, hex32, make_loan, make_parameters, make_user

pytestmark = pytest.mark.django_db

AMOUNT_WEI = 10**16  # 1_000_000 sat
LENDER_KEY = PrivateKey.generate()
BORROWER_KEY = PrivateKey.generate()


@pytest.fixture(autouse=True)
def _desk(settings, monkeypatch):
    use_own_cache(settings)
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB = "1"
    settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "500"
    settings.LENDER_BTC_PAYOUT_ADDRESS = encode_segwit_address("regtest", 0, b"\x11" * 20)
    monkeypatch.setattr(funding, "bitcoin_rpc", lambda **kwargs: _Node(None))


class _Node:
    def __init__(self, feerate):
        self.feerate = feerate

    def estimatesmartfee(self, conf_target, estimate_mode="conservative"):
        if isinstance(self.feerate, Exception):
            raise self.feerate
        return {"errors": ["Insufficient data"], "blocks": 0} if self.feerate is None else {"feerate": self.feerate}


def record_deployment(chain_id: int, parameters) -> ContractDeployment:
    """A deployment of ``parameters`` (``make_deployment`` would add a parameters version of its own)."""
    return ContractDeployment.objects.create(
        chain_id=chain_id,
        loan_contract_address=evm_address(),
        ether_swap_address=evm_address(),
        block_number=1,
        block_hash=hex32(),
        parameters=parameters,
    )


@pytest.fixture
def deployment(settings):
    parameters = make_parameters(lender_btc_pubkey=LENDER_KEY.xonly_pubkey.hex())
    return record_deployment(settings.EVM_CHAIN_ID, parameters)


@pytest.fixture
def borrower():
    return make_user(User.Role.BORROWER)


def request_values(**overrides):
    return {
        "amount_wei": AMOUNT_WEI,
        "borrower_btc_pubkey": BORROWER_KEY.xonly_pubkey.hex(),
        "borrower_hash": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        "borrower_payout_address": encode_segwit_address("regtest", 1, b"\x22" * 32),
        **overrides,
    }


def test_loan_create_snapshots_the_newest_parameters_and_deployment(borrower, deployment, settings):
    record_deployment(settings.EVM_CHAIN_ID + 1, deployment.parameters)  # another chain's: not taken
    values = request_values()
    loan = loan_create(borrower=borrower, **values)
    loan.refresh_from_db()
    assert loan.status == Loan.Status.DRAFT and loan.bitcoin_status == Loan.BitcoinStatus.NONE
    assert loan.deployment == deployment and loan.parameters == deployment.parameters
    assert all(getattr(loan, name) == getattr(deployment.parameters, name) for name in PARAMETER_FIELDS)
    # bond 10 %, interest 5 %/year over 540000 of 1051200 blocks, floored
    assert loan.bond_wei == AMOUNT_WEI // 10
    assert loan.repayment_wei == AMOUNT_WEI + AMOUNT_WEI * 500 * 540_000 // (10_000 * 1_051_200)
    assert loan.borrower_btc_pubkey == values["borrower_btc_pubkey"]
    assert loan.lender_btc_pubkey == LENDER_KEY.xonly_pubkey.hex()
    assert loan.borrower_hash == values["borrower_hash"] and loan.lender_hash is None
    assert loan.borrower_payout_address == values["borrower_payout_address"]
    assert loan.lender_payout_address == settings.LENDER_BTC_PAYOUT_ADDRESS
    assert (loan.collateral_sats, loan.origination_fee_sats) == (1_000_000, 10_000)


@pytest.mark.parametrize("rate", [Fraction(1), Fraction(2), Fraction(25, 2), Fraction(500)])
def test_funding_exactly_the_stated_sats_builds_tx1_at_the_rate_with_change_back_to_the_borrower(
    borrower, deployment, rate
):
    loan = loan_create(borrower=borrower, **request_values(), fee_rate_sat_vb=rate)
    instructions = funding.loan_funding_instructions(loan=loan, fee_rate_sat_vb=rate, fee_rate_source="requested")
    assert instructions.collateral_sats == 1_000_000 and instructions.origination_fee_sats == 10_000
    assert instructions.total_sats == (
        instructions.collateral_sats
        + instructions.origination_fee_sats
        + instructions.miner_fee_sats
        + instructions.margin_sats
    )
    # Independently: the lender commits hL, the borrower funds exactly total_sats, TX_1 is built at the rate.
    facts = loan_facts(loan=loan)
    offered = replace(facts, lender_hash=hashlib.sha256(b"pL").digest())
    funded = offered.with_escrow(OutPoint("ab" * 32, 1), instructions.total_sats)
    tx1 = build_tx1(funded, fee_rate_sat_vb=rate)
    outputs = tx1.tx.outputs
    assert len(outputs) == CHANGE_OUTPUT_INDEX + 1
    assert outputs[0].value == 10_000 and outputs[0].script_pubkey == facts.lender_payout_script
    assert outputs[1].value == 1_000_000 and outputs[1].script_pubkey == offered.collateral.script_pubkey
    assert outputs[2].script_pubkey == facts.borrower_payout_script
    assert outputs[2].value == instructions.margin_sats >= dust_threshold(facts.borrower_payout_script)
    vsize = final_vsize(tx1)
    assert vsize == instructions.tx1_vsize
    assert tx1.fee_sats == instructions.miner_fee_sats == fee_for_vsize(vsize, rate)
    assert tx1.fee_rate >= rate
    # the margin pays for TX_1 at twice the rate
    assert instructions.margin_sats >= fee_for_vsize(vsize, 2 * rate) - fee_for_vsize(vsize, rate)
    if 2 * rate <= 500:
        assert build_tx1(funded, fee_rate_sat_vb=2 * rate).fee_rate >= 2 * rate
    # the URI and the loan file
    btc = Decimal(instructions.total_sats) / 10**8
    assert instructions.bip21_uri == f"bitcoin:{instructions.escrow_address}?amount={btc.normalize():f}"
    assert instructions.escrow_address == facts.escrow.address("regtest")
    assert LoanFacts.from_json(instructions.loan_file) == facts
    assert json.loads(instructions.loan_file)["escrow_descriptor"] == instructions.escrow_descriptor


def test_the_fee_rate_is_the_estimate_within_the_bounds_else_the_minimum(monkeypatch, settings):
    cases = [
        (Decimal("0.00012"), (Fraction(12), "estimate")),
        (Decimal("0.0000123"), (Fraction(123, 100), "estimate")),
        (Decimal("0.000001"), (Fraction(1), "estimate")),  # 0.1 sat/vB: raised to the minimum
        (Decimal("0.01"), (Fraction(500), "estimate")),  # 1000 sat/vB: lowered to the maximum
        (None, (Fraction(1), "minimum")),
        (NodeUnavailableError("down"), (Fraction(1), "minimum")),
    ]
    for feerate, expected in cases:
        assert funding.current_fee_rate_sat_vb(rpc=_Node(feerate)) == expected


def _refusal_cases():
    yield "no_parameters", {}, "no_parameters"
    yield "no_deployment", {}, "no_deployment"
    yield "no_lender_payout_address", {}, "no_lender_payout_address"
    yield "lender_payout_on_another_network", {}, "no_lender_payout_address"
    yield "below_min", {"amount_wei": 5 * 10**15 - 1}, "amount_out_of_bounds"
    yield "above_max", {"amount_wei": 100 * 10**18 + 1}, "amount_out_of_bounds"
    yield "bad_key", {"borrower_btc_pubkey": "zz" * 32}, "invalid_key"
    yield "off_curve_key", {"borrower_btc_pubkey": "ff" * 32}, "invalid_key"
    yield "lender_key", {"borrower_btc_pubkey": LENDER_KEY.xonly_pubkey.hex()}, "same_key_as_lender"
    yield "short_hash", {"borrower_hash": "ab" * 31}, "invalid_hash"
    yield "hash_in_use", {}, "borrower_hash_in_use"
    yield (
        "mainnet_address",
        {"borrower_payout_address": encode_segwit_address("mainnet", 0, b"\x22" * 20)},
        ("invalid_payout_address"),
    )
    yield "garbage_address", {"borrower_payout_address": "not-an-address"}, "invalid_payout_address"
    yield "rate_below_bounds", {"fee_rate_sat_vb": Fraction(1, 2)}, "invalid_fee_rate"
    yield "rate_above_bounds", {"fee_rate_sat_vb": "501"}, "invalid_fee_rate"
    yield "rate_not_a_rate", {"fee_rate_sat_vb": "fast"}, "invalid_fee_rate"
    yield "dust_fee", {}, "origination_fee_dust"


@pytest.mark.parametrize(("case", "overrides", "code"), list(_refusal_cases()), ids=lambda v: str(v)[:30])
def test_each_refusal_has_its_code_and_writes_nothing(borrower, settings, case, overrides, code):
    if case != "no_parameters":
        parameters = make_parameters(lender_btc_pubkey=LENDER_KEY.xonly_pubkey.hex())
        chain_id = settings.EVM_CHAIN_ID + (1 if case == "no_deployment" else 0)
        deployment = record_deployment(chain_id, parameters)
    if case == "no_lender_payout_address":
        settings.LENDER_BTC_PAYOUT_ADDRESS = ""
    if case == "lender_payout_on_another_network":
        settings.LENDER_BTC_PAYOUT_ADDRESS = encode_segwit_address("mainnet", 0, b"\x11" * 20)
    if case == "dust_fee":
        make_parameters(lender_btc_pubkey=LENDER_KEY.xonly_pubkey.hex(), origination_fee_bps=1)  # 50 sat at min
        overrides = {"amount_wei": 5 * 10**15}
    values = request_values(**overrides)
    if case == "hash_in_use":
        make_loan(borrower_hash=values["borrower_hash"], parameters=parameters, deployment=deployment)
    before = Loan.objects.count()
    with pytest.raises(LoanServiceError) as refused:
        loan_create(borrower=borrower, **values)
    assert refused.value.code == code, str(refused.value)
    assert Loan.objects.count() == before


def test_a_cancelled_loans_hash_may_be_used_again(borrower, deployment):
    values = request_values()
    make_loan(
        borrower_hash=values["borrower_hash"],
        status=Loan.Status.CANCELLED,
        parameters=deployment.parameters,
        deployment=deployment,
    )
    assert loan_create(borrower=borrower, **values).borrower_hash == values["borrower_hash"]


@pytest.mark.parametrize("role", [User.Role.LENDER, User.Role.OPERATOR])
def test_only_an_active_borrower_may_create(deployment, role):
    with pytest.raises(PermissionDenied):
        loan_create(borrower=make_user(role), **request_values())
    with pytest.raises(PermissionDenied):
        loan_create(borrower=make_user(User.Role.BORROWER, is_active=False), **request_values())
    assert not Loan.objects.exists()


# -- POST /api/v1/loans/ ---------------------------------------------------------------------------------------


def client_for(user):
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def body(**overrides):
    values = request_values(**overrides)
    return {**values, "amount_wei": str(values["amount_wei"])}


def test_post_creates_the_loan_and_answers_with_the_funding_instructions(borrower, deployment):
    sent = body(fee_rate_sat_vb="2.5")
    response = client_for(borrower).post(reverse("api:loan-list"), sent, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    loan = Loan.objects.get()
    assert data["id"] == loan.pk and data["status"] == "draft" and loan.borrower == borrower
    assert data["amount_wei"] == str(AMOUNT_WEI) and data["bond_wei"] == str(loan.bond_wei)
    assert data["repayment_wei"] == str(loan.repayment_wei)
    expected = funding.loan_funding_instructions(loan=loan, fee_rate_sat_vb=Fraction(5, 2), fee_rate_source="x")
    got = data["funding"]
    assert got["fee_rate_sat_vb"] == "2.5" and got["fee_rate_source"] == "requested"
    assert got["total_sats"] == str(expected.total_sats) and got["margin_sats"] == str(expected.margin_sats)
    assert got["miner_fee_sats"] == str(expected.miner_fee_sats) and got["collateral_sats"] == "1000000"
    assert got["origination_fee_sats"] == "10000" and got["tx1_vsize"] == expected.tx1_vsize
    assert got["escrow_address"] == expected.escrow_address and got["bip21_uri"] == expected.bip21_uri
    assert got["escrow_descriptor"] == expected.escrow_descriptor and got["loan_file"] == expected.loan_file
    assert "2x the fee rate" in got["margin"]


def test_post_without_a_rate_takes_the_estimate(borrower, deployment, monkeypatch):
    monkeypatch.setattr(funding, "bitcoin_rpc", lambda **kwargs: _Node(Decimal("0.00003")))
    response = client_for(borrower).post(reverse("api:loan-list"), body(), format="json")
    assert response.status_code == 201
    assert response.json()["funding"]["fee_rate_sat_vb"] == "3"
    assert response.json()["funding"]["fee_rate_source"] == "estimate"


def test_post_refusals_are_in_the_error_shape(borrower, deployment):
    client = client_for(borrower)
    response = client.post(
        reverse("api:loan-list"), body(borrower_btc_pubkey=LENDER_KEY.xonly_pubkey.hex()), format="json"
    )
    assert response.status_code == 422
    assert response.json() == {"code": "same_key_as_lender", "message": response.json()["message"], "fields": {}}
    numeric = {**body(), "amount_wei": AMOUNT_WEI}
    response = client.post(reverse("api:loan-list"), numeric, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert list(response.json()["fields"]) == ["amount_wei"]
    assert not Loan.objects.exists()


@pytest.mark.parametrize("who", ["anonymous", "lender", "operator"])
def test_only_a_signed_in_borrower_may_post(deployment, who):
    user = None if who == "anonymous" else make_user(User.Role(who))
    response = client_for(user).post(reverse("api:loan-list"), body(), format="json")
    expected = (401, "not_authenticated") if who == "anonymous" else (403, "permission_denied")
    assert (response.status_code, response.json()["code"]) == expected
    assert not Loan.objects.exists()


def test_post_is_idempotent(borrower, deployment):
    client = client_for(borrower)
    sent = body(fee_rate_sat_vb="2")
    first = client.post(reverse("api:loan-list"), sent, format="json", HTTP_IDEMPOTENCY_KEY="create-1")
    again = client.post(reverse("api:loan-list"), sent, format="json", HTTP_IDEMPOTENCY_KEY="create-1")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert Loan.objects.count() == 1 and IdempotencyRecord.objects.count() == 1
    other = client.post(reverse("api:loan-list"), body(), format="json", HTTP_IDEMPOTENCY_KEY="create-1")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert Loan.objects.count() == 1
