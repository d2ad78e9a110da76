"""Malformed input for every kind of field the API takes gives a 4xx with its code and changes nothing: a key off
the curve, a hash of the wrong length, an address of another network or with a bad checksum, negative,
fractional and huge amounts, garbage and truncated PSBTs, oversized bodies, a replayed or expired SIWE message, a
signature from another address. Each case asserts the status, the error ``code`` and that no table of the loans
app gained or lost a row."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from eth_account import Account

from bitcoin.tests.loan_vectors import BORROWER_XONLY, LENDER_XONLY, REGTEST_P2TR
from loans.models import Loan

from .api_table import (
    World,
    desk_settings,
    loan_create_body,
    make_world,
    row_counts,
    signed_tx1_psbt,
    siwe_body,
    siwe_signature,
    siwe_text,
    url_for,
)

pytestmark = pytest.mark.django_db

OVERSIZED = 3 * 1024 * 1024  # above Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB)
MAINNET_P2TR = "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"  # BIP-350's vector
TESTNET_P2WPKH = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"  # BIP-173's vector
BAD_CHECKSUM = REGTEST_P2TR[:-1] + ("q" if REGTEST_P2TR[-1] != "q" else "p")
NOT_ON_CURVE = "00" * 32  # x = 0: 7 is no square modulo p
BEYOND_FIELD = "ff" * 32  # x >= p


@pytest.fixture
def world(db, settings) -> World:
    desk_settings(settings)
    return make_world()


@dataclass(frozen=True)
class Case:
    role: str
    url: str  # url name; a pk is the owner's loan
    body: Callable[[World], dict | str | bytes]
    status: int
    code: str
    content_type: str = "application/json"
    setup: Callable[[World], None] | None = None
    method: str = "POST"
    kwargs: Callable[[World], dict] | None = None  # default: pk is the owner's loan where the route has one
    query: str = ""


def _create(**fields) -> Callable[[World], dict]:
    return lambda world: loan_create_body(world, **fields)


def _create_without(name: str) -> Callable[[World], dict]:
    def body(world: World) -> dict:
        values = loan_create_body(world)
        del values[name]
        return values

    return body


def _psbt(transform: Callable[[str], str]) -> Callable[[World], dict]:
    return lambda world: {"psbt": transform(signed_tx1_psbt(world.loan))}


def _signed_by_lender_key(world: World) -> dict:
    from bitcoin.psbt import create_psbt, sign_psbt
    from bitcoin.tests.loan_vectors import lender_key
    from bitcoin.transactions import build_tx1
    from loans.facts import loan_facts

    psbt = create_psbt(build_tx1(loan_facts(loan=world.loan), fee_rate_sat_vb=2))
    sign_psbt(psbt, lender_key())
    return {"psbt": psbt.to_base64()}


def _siwe(**overrides) -> Callable[[World], dict]:
    return lambda world: siwe_body(world, **overrides)


def _siwe_signed_by_another(world: World) -> dict:
    body = siwe_body(world)
    return {**body, "signature": siwe_signature(Account.create(), body["message"])}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


REPLAYED: dict[int, dict] = {}


def _sign_in_once(world: World) -> None:
    body = siwe_body(world)
    response = world.client("anonymous").post(reverse("api:auth-siwe"), body, format="json")
    assert response.status_code == 200, response.content
    REPLAYED[id(world)] = body


def _tx1_presigned(world: World) -> None:
    from loans.services import presignature_upload

    presignature_upload(loan=world.loan, actor=world.people["owner"], psbt=signed_tx1_psbt(world.loan))


def _signed_tx1_hex(world: World) -> str:
    from bitcoin.transactions import build_tx1
    from loans.facts import loan_facts

    return build_tx1(loan_facts(loan=world.loan), fee_rate_sat_vb=2).tx.serialize(include_witness=False).hex()


def _oversized(field: str) -> Callable[[World], str]:
    return lambda world: json.dumps({field: "A" * OVERSIZED})


NOW = datetime.now(UTC)
CASES: dict[str, Case] = {
    # -- keys
    "key off the curve": Case("owner", "loan-list", _create(borrower_btc_pubkey=NOT_ON_CURVE), 422, "invalid_key"),
    "key beyond the field": Case("owner", "loan-list", _create(borrower_btc_pubkey=BEYOND_FIELD), 422, "invalid_key"),
    "key too short": Case("owner", "loan-list", _create(borrower_btc_pubkey=BORROWER_XONLY[:62]), 422, "invalid_key"),
    "key too long": Case("owner", "loan-list", _create(borrower_btc_pubkey=BORROWER_XONLY + "00"), 400, "invalid"),
    "key not hex": Case("owner", "loan-list", _create(borrower_btc_pubkey="zz" * 32), 422, "invalid_key"),
    "key the lender's": Case(
        "owner", "loan-list", _create(borrower_btc_pubkey=LENDER_XONLY), 422, "same_key_as_lender"
    ),
    # -- hashes
    "hash too short": Case("owner", "loan-list", _create(borrower_hash="ab" * 31), 422, "invalid_hash"),
    "hash odd length": Case("owner", "loan-list", _create(borrower_hash="a" * 63), 422, "invalid_hash"),
    "hash too long": Case("owner", "loan-list", _create(borrower_hash="ab" * 33), 400, "invalid"),
    "hash not hex": Case("owner", "loan-list", _create(borrower_hash="g" * 64), 422, "invalid_hash"),
    "hash missing": Case("owner", "loan-list", _create_without("borrower_hash"), 400, "invalid"),
    # -- addresses
    "mainnet address": Case(
        "owner", "loan-list", _create(borrower_payout_address=MAINNET_P2TR), 422, "invalid_payout_address"
    ),
    "testnet address": Case(
        "owner", "loan-list", _create(borrower_payout_address=TESTNET_P2WPKH), 422, "invalid_payout_address"
    ),
    "address with a bad checksum": Case(
        "owner", "loan-list", _create(borrower_payout_address=BAD_CHECKSUM), 422, "invalid_payout_address"
    ),
    "address garbage": Case(
        "owner", "loan-list", _create(borrower_payout_address="not an address"), 422, "invalid_payout_address"
    ),
    "address too long": Case("owner", "loan-list", _create(borrower_payout_address="b" * 91), 400, "invalid"),
    # -- amounts
    "negative amount": Case("owner", "loan-list", _create(amount_wei="-1"), 400, "invalid"),
    "fractional amount": Case("owner", "loan-list", _create(amount_wei="1.5"), 400, "invalid"),
    "exponent amount": Case("owner", "loan-list", _create(amount_wei="1e16"), 400, "invalid"),
    "amount with leading zeros": Case("owner", "loan-list", _create(amount_wei="010000000000000000"), 400, "invalid"),
    "huge amount": Case("owner", "loan-list", _create(amount_wei="9" * 100), 400, "invalid"),
    "amount as a JSON number": Case("owner", "loan-list", _create(amount_wei=10**16), 400, "invalid"),
    "amount as a JSON float": Case("owner", "loan-list", _create(amount_wei=1e16), 400, "invalid"),
    "zero amount": Case("owner", "loan-list", _create(amount_wei="0"), 422, "amount_out_of_bounds"),
    "amount above the maximum": Case(
        "owner", "loan-list", _create(amount_wei="1" + "0" * 30), 422, "amount_out_of_bounds"
    ),
    "negative fee rate": Case("owner", "loan-list", _create(fee_rate_sat_vb="-1"), 400, "invalid"),
    "zero fee rate": Case("owner", "loan-list", _create(fee_rate_sat_vb="0"), 422, "invalid_fee_rate"),
    "fee rate above the bounds": Case("owner", "loan-list", _create(fee_rate_sat_vb="501"), 422, "invalid_fee_rate"),
    # -- PSBTs and signatures
    "garbage PSBT": Case("owner", "loan-presignature", lambda world: {"psbt": "not a psbt!"}, 422, "malformed_psbt"),
    "PSBT of random bytes": Case(
        "owner",
        "loan-presignature",
        lambda world: {"psbt": base64.b64encode(b"psbt\xff" + bytes(200)).decode()},
        422,
        "malformed_psbt",
    ),
    "truncated PSBT": Case(
        "owner", "loan-presignature", _psbt(lambda text: text[: len(text) // 2]), 422, "malformed_psbt"
    ),
    "PSBT cut at a byte": Case(
        "owner",
        "loan-presignature",
        _psbt(lambda text: base64.b64encode(base64.b64decode(text)[:-1]).decode()),
        422,
        "malformed_psbt",
    ),
    "PSBT signed by another key": Case("owner", "loan-presignature", _signed_by_lender_key, 422, "wrong_signer"),
    "PSBT too long": Case("owner", "loan-presignature", lambda world: {"psbt": "A" * 20_001}, 400, "invalid"),
    "signature not hex": Case(
        "owner",
        "loan-presignature",
        lambda world: {"signature": "zz" * 64, "transaction": "00" * 60},
        422,
        "malformed_signature",
    ),
    "transaction garbage": Case(
        "owner",
        "loan-presignature",
        lambda world: {"signature": "11" * 64, "transaction": "deadbeef"},
        422,
        "malformed_transaction",
    ),
    "both PSBT and signature": Case(
        "owner",
        "loan-presignature",
        lambda world: {"psbt": signed_tx1_psbt(world.loan), "signature": "11" * 64, "transaction": "00"},
        422,
        "ambiguous_upload",
    ),
    # -- bodies
    "oversized loan": Case("owner", "loan-list", _oversized("borrower_hash"), 413, "request_too_large"),
    "oversized PSBT": Case("owner", "loan-presignature", _oversized("psbt"), 413, "request_too_large"),
    "oversized sign-in": Case("anonymous", "auth-siwe", _oversized("message"), 413, "request_too_large"),
    "body not JSON": Case("owner", "loan-list", lambda world: "{not json", 400, "malformed_request"),
    "body a JSON list": Case("owner", "loan-list", lambda world: "[]", 400, "invalid"),
    "body a form": Case(
        "owner",
        "loan-presignature",
        lambda world: "psbt=abc",
        415,
        "unsupported_media_type",
        content_type="application/x-www-form-urlencoded",
    ),
    # -- Sign-In with Ethereum
    "replayed SIWE message": Case(
        "anonymous", "auth-siwe", lambda world: REPLAYED[id(world)], 401, "siwe_nonce_used", setup=_sign_in_once
    ),
    "expired SIWE message": Case(
        "anonymous",
        "auth-siwe",
        _siwe(issued_at=_iso(NOW - timedelta(minutes=8)), expiration_time=_iso(NOW - timedelta(minutes=1))),
        401,
        "siwe_expired",
    ),
    "SIWE signature from another address": Case(
        "anonymous", "auth-siwe", _siwe_signed_by_another, 401, "siwe_bad_signature"
    ),
    "SIWE unknown nonce": Case(
        "anonymous",
        "auth-siwe",
        lambda world: _unknown_nonce_body(),
        401,
        "siwe_nonce_unknown",
    ),
    "SIWE of another chain": Case("anonymous", "auth-siwe", _siwe(chain_id=1), 401, "siwe_wrong_chain"),
    "SIWE of another domain": Case("anonymous", "auth-siwe", _siwe(domain="evil.example"), 401, "siwe_wrong_domain"),
    "SIWE garbage message": Case(
        "anonymous",
        "auth-siwe",
        lambda world: {"message": "hello", "signature": "0x" + "11" * 65},
        401,
        "siwe_malformed",
    ),
    "SIWE signature too short": Case(
        "anonymous", "auth-siwe", lambda world: {**siwe_body(world), "signature": "0x1234"}, 400, "invalid"
    ),
    # -- the Bitcoin actions: transactions, ladders, fee rates
    "broadcast not hex": Case(
        "owner", "loan-bitcoin-broadcasts", lambda world: {"transaction": "zz" * 80}, 422, "malformed_transaction"
    ),
    "broadcast truncated": Case(
        "owner",
        "loan-bitcoin-broadcasts",
        lambda world: {"transaction": _signed_tx1_hex(world)[:-10]},
        422,
        "malformed_transaction",
    ),
    "broadcast too long": Case(
        "owner", "loan-bitcoin-broadcasts", lambda world: {"transaction": "00" * 100_001}, 400, "invalid"
    ),
    "broadcast missing": Case("owner", "loan-bitcoin-broadcasts", lambda world: {}, 400, "invalid"),
    "ladder rung garbage": Case(
        "owner",
        "loan-ladders",
        lambda world: {"release": ["not a psbt!"]},
        422,
        "malformed_psbt",
        setup=_tx1_presigned,
    ),
    "ladder rung a truncated PSBT": Case(
        "owner",
        "loan-ladders",
        lambda world: {"exit": [signed_tx1_psbt(world.loan)[:100]]},
        422,
        "malformed_psbt",
        setup=_tx1_presigned,
    ),
    "ladder of too many rungs": Case("owner", "loan-ladders", lambda world: {"release": ["00"] * 17}, 400, "invalid"),
    "ladder not a list": Case("owner", "loan-ladders", lambda world: {"release": "00"}, 400, "invalid"),
    # -- the contract calls and wallet transactions
    "tx hash too short": Case(
        "owner", "loan-evm-transactions", lambda world: {"tx_hash": "0x" + "ab" * 31}, 422, "invalid_tx_hash"
    ),
    "tx hash without 0x": Case(
        "owner", "loan-evm-transactions", lambda world: {"tx_hash": "ab" * 32}, 422, "invalid_tx_hash"
    ),
    "tx hash not hex": Case(
        "owner", "loan-evm-transactions", lambda world: {"tx_hash": "0x" + "zz" * 32}, 422, "invalid_tx_hash"
    ),
    "tx hash a number": Case("owner", "loan-evm-transactions", lambda world: {"tx_hash": 12}, 422, "invalid_tx_hash"),
    "contract call unknown": Case(
        "owner",
        "loan-evm-call",
        lambda world: {},
        404,
        "not_found",
        kwargs=lambda world: {"pk": world.loan.pk, "name": "drain"},
    ),
    "contract call send not a boolean": Case(
        "lender",
        "loan-evm-call",
        lambda world: {"send": "perhaps"},
        400,
        "invalid",
        kwargs=lambda world: {"pk": world.loan.pk, "name": "offer"},
    ),
    # -- the operators' actions
    "pause reason too long": Case(
        "operator",
        "operator-deployment-pause",
        lambda world: {"reason": "x" * 201},
        400,
        "invalid",
        kwargs=lambda world: {"pk": world.loan.deployment_id},
    ),
    "pause reason empty": Case(
        "operator",
        "operator-deployment-pause",
        lambda world: {"reason": ""},
        400,
        "invalid",
        kwargs=lambda world: {"pk": world.loan.deployment_id},
    ),
    "lender role for nobody": Case(
        "operator",
        "operator-lender-role",
        lambda world: {"reason": "r"},
        404,
        "not_found",
        kwargs=lambda world: {"pk": 10**9},
    ),
    "a negative id": Case(
        "owner", "loan-detail", lambda world: {}, 404, "not_found", method="GET", kwargs=lambda world: None
    ),
    # -- tokens
    "bearer token unknown": Case(
        "forged", "loan-list", lambda world: loan_create_body(world), 401, "authentication_failed"
    ),
    "bearer token malformed": Case(
        "garbled", "loan-list", lambda world: loan_create_body(world), 401, "authentication_failed"
    ),
}


def _unknown_nonce_body() -> dict:
    account = Account.create()
    text = siwe_text(account.address, "abcdefgh12345678")
    return {"message": text, "signature": siwe_signature(account, text)}


def _client(world: World, role: str):
    if role == "forged":
        client = world.client("anonymous")
        client.credentials(HTTP_AUTHORIZATION="Bearer " + "x" * 43)
        return client
    if role == "garbled":
        client = world.client("anonymous")
        client.credentials(HTTP_AUTHORIZATION="Bearer two words")
        return client
    return world.client(role)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_malformed_input_is_refused_with_its_code_and_changes_nothing(world: World, case: str):
    spec = CASES[case]
    if spec.setup is not None:
        spec.setup(world)
    client = _client(world, spec.role)
    body = spec.body(world)
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    loan_before = Loan.objects.values().get(pk=world.loan.pk)
    before = row_counts()
    if spec.kwargs is not None:
        kwargs = spec.kwargs(world)
        url = reverse(f"api:{spec.url}", kwargs=kwargs) if kwargs is not None else "/api/v1/loans/-1/"
    else:
        url = url_for(spec.url, world)
    if spec.query:
        url += "?" + spec.query
    if spec.method == "GET":
        response = client.get(url)
    else:
        response = client.generic(spec.method, url, data=data, content_type=spec.content_type)
    assert (response.status_code, response.json()["code"]) == (spec.status, spec.code), response.content[:400]
    assert set(response.json()) == {"code", "message", "fields"}
    assert row_counts() == before
    assert Loan.objects.values().get(pk=world.loan.pk) == loan_before


def test_the_oversized_limit_is_djangos():
    from django.conf import settings

    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE < OVERSIZED
