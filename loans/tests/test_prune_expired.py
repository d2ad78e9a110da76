"""``expired_records_prune`` and ``manage.py prune_expired``: what can no longer be used is deleted, the rest kept,
to the boundary; the command prints the counts."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from loans.models import ApiToken, IdempotencyRecord, SiweNonce, User
from loans.services.accounts import api_token_find, api_token_issue
from loans.services.operators import API_TOKEN_RETENTION, IDEMPOTENCY_RECORD_RETENTION, expired_records_prune

from .factories import hex32, make_user

pytestmark = pytest.mark.django_db

MARGIN = timedelta(minutes=1)  # around each boundary: the command reads the clock a moment after the set-up


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def records(now):
    user = make_user(User.Role.BORROWER)

    def nonce(name: str, *, expires_in: timedelta, used: bool = False) -> None:
        SiweNonce.objects.create(nonce=name, expires_at=now + expires_in, used_at=now - MARGIN if used else None)

    def token(name: str, *, expired_ago: timedelta | None = None, revoked_ago: timedelta | None = None) -> None:
        ApiToken.objects.create(
            user=user,
            key_hash=hex32(),
            prefix=name,
            expires_at=now - expired_ago if expired_ago is not None else now + timedelta(days=1),
            revoked_at=now - revoked_ago if revoked_ago is not None else None,
        )

    def record(key: str, *, age: timedelta) -> None:
        row = IdempotencyRecord.objects.create(
            user=user, key=key, request_hash=hex32(), status_code=201, response_body={}
        )
        IdempotencyRecord.objects.filter(pk=row.pk).update(created_at=now - age)

    nonce("expiredunused", expires_in=-MARGIN)
    nonce("expiresnow000", expires_in=timedelta(0))
    nonce("usedbutfresh0", expires_in=4 * MARGIN, used=True)
    nonce("freshunused00", expires_in=4 * MARGIN)
    token("expold", expired_ago=API_TOKEN_RETENTION + MARGIN)
    token("expnew", expired_ago=API_TOKEN_RETENTION - MARGIN)
    token("revold", revoked_ago=API_TOKEN_RETENTION + MARGIN)
    token("revnew", revoked_ago=timedelta(days=1))
    token("live")
    record("old", age=IDEMPOTENCY_RECORD_RETENTION + MARGIN)
    record("new", age=IDEMPOTENCY_RECORD_RETENTION - MARGIN)
    return user


def test_prune_deletes_exactly_what_can_no_longer_be_used(records, now):
    assert timedelta(hours=24) == IDEMPOTENCY_RECORD_RETENTION and timedelta(days=30) == API_TOKEN_RETENTION
    counts = expired_records_prune(now=now)
    assert counts == {"siwe_nonces": 3, "api_tokens": 2, "idempotency_records": 1}
    assert list(SiweNonce.objects.values_list("nonce", flat=True)) == ["freshunused00"]
    assert sorted(ApiToken.objects.values_list("prefix", flat=True)) == ["expnew", "live", "revnew"]
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    assert User.objects.filter(pk=records.pk).exists()  # the tokens' owner stays
    assert expired_records_prune(now=now) == {"siwe_nonces": 0, "api_tokens": 0, "idempotency_records": 0}


def test_a_live_token_still_authenticates_after_pruning():
    raw, _ = api_token_issue(user=make_user(User.Role.BORROWER))
    expired_records_prune()
    assert api_token_find(raw=raw) is not None


def test_the_command_prints_the_counts(records):
    out = io.StringIO()
    call_command("prune_expired", stdout=out)
    assert out.getvalue().splitlines() == [
        "siwe_nonces: 3 deleted",
        "api_tokens: 2 deleted",
        "idempotency_records: 1 deleted",
    ]
    out = io.StringIO()
    call_command("prune_expired", stdout=out)
    assert out.getvalue().splitlines() == [
        "siwe_nonces: 0 deleted",
        "api_tokens: 0 deleted",
        "idempotency_records: 0 deleted",
    ]
