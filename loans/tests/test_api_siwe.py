"""Sign-In with Ethereum: the nonce, every refusal with its code (and nothing changed), a first sign-in creating a
borrower (never another role), the session bound to the address, wallets' tokens (hashed, revocable, expiring),
logout, and the sign-in and write rate limits (429 rate_limited with Retry-After)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from eth_account import Account
from eth_account.messages import encode_defunct
from rest_framework.test import APIClient
from siwe import SiweMessage

from loans.api.throttles import SignInRateThrottle, WriteRateThrottle
from loans.models import ApiToken, SiweNonce, User

from .caches import use_own_cache
from .factories import make_user

pytestmark = pytest.mark.django_db
HOST = "testserver"


@pytest.fixture(autouse=True)
def _own_throttle_counters(settings):
    use_own_cache(settings)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def siwe_text(account, nonce: str, **overrides) -> str:
    now = datetime.now(UTC)
    fields = {
        "domain": HOST,
        "address": account.address,
        "statement": "Sign in to the loan desk.",
        "uri": f"http://{HOST}/",
        "version": "1",
        "chain_id": 31337,
        "nonce": nonce,
        "issued_at": iso(now),
        "expiration_time": iso(now + timedelta(minutes=5)),
        **overrides,
    }
    fields = {name: value for name, value in fields.items() if value is not None}
    return SiweMessage(**fields).prepare_message()


def sign(account, text: str) -> str:
    return "0x" + Account.sign_message(encode_defunct(text=text), account.key).signature.hex().removeprefix("0x")


def new_nonce(client: APIClient) -> str:
    response = client.post(reverse("api:auth-nonce"))
    assert response.status_code == 201, response.content
    return response.json()["nonce"]


def sign_in(client: APIClient, text: str, signature: str, **extra):
    return client.post(reverse("api:auth-siwe"), {"message": text, "signature": signature, **extra}, format="json")


def test_nonce_is_stored_and_says_what_the_message_must_name():
    body = APIClient().post(reverse("api:auth-nonce")).json()
    assert body["domain"] == HOST and body["uri"] == f"http://{HOST}" and body["chain_id"] == 31337
    row = SiweNonce.objects.get(nonce=body["nonce"])
    assert row.used_at is None and row.expires_at > timezone.now()


def test_first_sign_in_creates_a_borrower_and_binds_the_session():
    account = Account.create()
    client = APIClient()
    text = siwe_text(account, new_nonce(client))
    response = sign_in(client, text, sign(account, text))
    assert response.status_code == 200, response.content
    assert response.json() == {"address": account.address, "role": "borrower", "created": True}
    user = User.objects.get(evm_address=account.address)
    assert user.role == User.Role.BORROWER and not user.has_usable_password() and not user.is_staff
    assert client.get(reverse("api:loan-list")).status_code == 200  # the session is signed in
    assert ApiToken.objects.count() == 0
    # The session is bound to the address: an operator moving the account to another address ends it.
    User.objects.filter(pk=user.pk).update(evm_address=Account.create().address)
    assert client.get(reverse("api:loan-list")).status_code == 401


def test_sign_in_never_grants_a_role_and_keeps_the_one_an_operator_granted():
    account = Account.create()
    lender = make_user(User.Role.LENDER, evm_address=account.address)
    client = APIClient()
    text = siwe_text(account, new_nonce(client), statement="I am the operator.")
    body = sign_in(client, text, sign(account, text)).json()
    assert body == {"address": account.address, "role": "lender", "created": False}
    assert User.objects.count() == 1 and User.objects.get().role == User.Role.LENDER == lender.role


def test_a_disabled_account_cannot_sign_in():
    account = Account.create()
    make_user(User.Role.BORROWER, evm_address=account.address, is_active=False)
    client = APIClient()
    text = siwe_text(account, new_nonce(client))
    response = sign_in(client, text, sign(account, text))
    assert response.status_code == 403 and response.json()["code"] == "account_disabled"


def _refusals():
    now = datetime.now(UTC)
    return {
        "wrong_domain": ({"domain": "evil.example"}, "siwe_wrong_domain"),
        "wrong_uri": ({"uri": "https://evil.example/login"}, "siwe_wrong_uri"),
        "wrong_chain": ({"chain_id": 30}, "siwe_wrong_chain"),
        "in_future": ({"issued_at": iso(now + timedelta(minutes=10))}, "siwe_issued_in_future"),
        "too_old": (
            {"issued_at": iso(now - timedelta(hours=2)), "expiration_time": iso(now + timedelta(hours=1))},
            "siwe_too_old",
        ),
        "expired": (
            {"issued_at": iso(now - timedelta(minutes=2)), "expiration_time": iso(now - timedelta(minutes=1))},
            "siwe_expired",
        ),
        "not_yet_valid": ({"not_before": iso(now + timedelta(minutes=3))}, "siwe_not_yet_valid"),
    }


@pytest.mark.parametrize("case", list(_refusals()))
def test_each_refusal_has_its_code_and_changes_nothing(case):
    overrides, code = _refusals()[case]
    account = Account.create()
    client = APIClient()
    nonce = new_nonce(client)
    text = siwe_text(account, nonce, **overrides)
    response = sign_in(client, text, sign(account, text), token=True)
    assert response.status_code == 401, response.content
    assert response.json() == {"code": code, "message": response.json()["message"], "fields": {}}
    assert not User.objects.exists() and not ApiToken.objects.exists()
    assert SiweNonce.objects.get(nonce=nonce).used_at is None  # still unspent
    assert client.get(reverse("api:loan-list")).status_code == 401


def test_a_signature_from_another_address_is_refused():
    account, other = Account.create(), Account.create()
    client = APIClient()
    nonce = new_nonce(client)
    text = siwe_text(account, nonce)
    response = sign_in(client, text, sign(other, text))
    assert response.status_code == 401 and response.json()["code"] == "siwe_bad_signature"
    tampered = text.replace("Sign in to the loan desk.", "Sign in to the loan desk!")
    assert sign_in(client, tampered, sign(account, text)).json()["code"] == "siwe_bad_signature"
    assert not User.objects.exists() and SiweNonce.objects.get(nonce=nonce).used_at is None


def test_a_replayed_message_is_refused():
    account = Account.create()
    text = siwe_text(account, new_nonce(APIClient()))
    signature = sign(account, text)
    assert sign_in(APIClient(), text, signature).status_code == 200
    replay = sign_in(APIClient(), text, signature, token=True)
    assert replay.status_code == 401 and replay.json()["code"] == "siwe_nonce_used"
    assert User.objects.count() == 1 and not ApiToken.objects.exists()


def test_a_nonce_not_issued_here_or_expired_is_refused():
    account = Account.create()
    text = siwe_text(account, "abcdef0123456789")
    assert sign_in(APIClient(), text, sign(account, text)).json()["code"] == "siwe_nonce_unknown"
    nonce = new_nonce(APIClient())
    SiweNonce.objects.filter(nonce=nonce).update(expires_at=timezone.now() - timedelta(seconds=1))
    text = siwe_text(account, nonce)
    assert sign_in(APIClient(), text, sign(account, text)).json()["code"] == "siwe_nonce_expired"
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "code", "fields"),
    [
        ({"message": "hello", "signature": "0x" + "11" * 65}, 401, "siwe_malformed", None),
        ({"message": "hello"}, 400, "invalid", ["signature"]),
        ({"message": "hello", "signature": "0x1234"}, 400, "invalid", ["signature"]),
    ],
)
def test_a_malformed_request_is_refused(body, status, code, fields):
    response = APIClient().post(reverse("api:auth-siwe"), body, format="json")
    assert response.status_code == status and response.json()["code"] == code
    if fields:
        assert list(response.json()["fields"]) == fields
    assert not User.objects.exists()


def test_a_body_that_is_not_json_is_malformed():
    response = APIClient().post(reverse("api:auth-siwe"), "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "malformed_request"


def wallet_token(account=None) -> tuple[str, User]:
    account = account or Account.create()
    client = APIClient()
    text = siwe_text(account, new_nonce(client))
    body = sign_in(client, text, sign(account, text), token=True).json()
    return body["token"], User.objects.get(evm_address=account.address)


def test_a_wallet_gets_a_token_stored_hashed_and_uses_it():
    token, user = wallet_token()
    row = ApiToken.objects.get()
    assert (
        row.user == user and row.key_hash == hashlib.sha256(token.encode()).hexdigest() and token not in row.prefix * 2
    )
    wallet = APIClient()
    wallet.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert wallet.get(reverse("api:loan-list")).status_code == 200


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer", "Bearer a b"])
def test_an_unknown_or_malformed_token_is_refused(header):
    wallet = APIClient()
    wallet.credentials(HTTP_AUTHORIZATION=header)
    response = wallet.get(reverse("api:loan-list"))
    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"


def test_an_expired_token_is_refused():
    token, _ = wallet_token()
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    wallet = APIClient()
    wallet.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = wallet.get(reverse("api:loan-list"))
    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"


def test_logout_revokes_the_token_and_only_it():
    token, user = wallet_token()
    other_token, _ = wallet_token()
    wallet = APIClient()
    wallet.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert wallet.post(reverse("api:auth-logout")).status_code == 204
    assert ApiToken.objects.get(user=user).revoked_at is not None
    response = wallet.get(reverse("api:loan-list"))
    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"
    still = APIClient()
    still.credentials(HTTP_AUTHORIZATION=f"Bearer {other_token}")
    assert still.get(reverse("api:loan-list")).status_code == 200


def test_logout_ends_the_session():
    client = APIClient()
    client.force_login(make_user())
    assert client.post(reverse("api:auth-logout")).status_code == 204
    response = client.get(reverse("api:loan-list"))
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
    again = client.post(reverse("api:auth-logout"))
    assert again.status_code == 401 and again.json()["code"] == "not_authenticated"


def test_sign_in_is_rate_limited_with_retry_after(monkeypatch):
    tight_rates(monkeypatch)
    client = APIClient()
    for _ in range(3):
        new_nonce(client)
    response = client.post(reverse("api:auth-nonce"))
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited" and response.json()["fields"] == {}
    assert 0 < int(response["Retry-After"]) <= 60
    assert SiweNonce.objects.count() == 3


def tight_rates(monkeypatch) -> None:
    for throttle in (SignInRateThrottle, WriteRateThrottle):  # DRF reads the rates once, at import
        monkeypatch.setattr(throttle, "THROTTLE_RATES", {"sign_in": "3/min", "write": "2/min"})


def test_every_write_is_rate_limited(monkeypatch):
    tight_rates(monkeypatch)
    token, _ = wallet_token()
    wallet = APIClient()
    wallet.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    for _ in range(2):
        wallet.post(reverse("api:loan-list"))  # 405 still counts: it is a write
    response = wallet.post(reverse("api:auth-logout"))
    assert response.status_code == 429 and response.json()["code"] == "rate_limited" and "Retry-After" in response
    assert ApiToken.objects.get().revoked_at is None
    assert wallet.get(reverse("api:loan-list")).status_code == 200  # reads are not write-limited
