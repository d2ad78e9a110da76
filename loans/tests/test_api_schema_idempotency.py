"""The OpenAPI schema and its self-contained docs page; Idempotency-Key on every POST."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver, include, path, reverse
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from loans.api.idempotency import IdempotentPostMixin
from loans.errors import TransitionError
from loans.models import ApiToken, IdempotencyRecord, User

from .caches import use_own_cache
from .factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_throttle_counters(settings):
    use_own_cache(settings)


def test_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    for route in ["/api/v1/loans/", "/api/v1/loans/{id}/", "/api/v1/loans/{id}/timeline/", "/api/v1/parameters/",
                 "/api/v1/auth/nonce", "/api/v1/auth/siwe", "/api/v1/auth/logout"]:  # fmt: skip
        assert f"  {route}:" in text, route
    assert "bearerToken" in text and "Idempotency-Key" in text and "pattern: ^[0-9]+$" in text


def test_schema_and_docs_are_served_without_a_cdn():
    client = APIClient()
    assert client.get(reverse("api:schema")).status_code == 200
    page = client.get(reverse("api:docs"))
    assert page.status_code == 200
    html = page.content.decode()
    assert not re.search(r"""(src|href)=["']https?://""", html), "the docs page loads nothing from another host"
    assets = re.findall(r"""(?:src|href)=["']/static/([^"']+)["']""", html)
    assert any("swagger-ui" in asset for asset in assets)
    for asset in assets:
        assert finders.find(asset.split("?")[0]) is not None, asset


def _views(resolver=None):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _views(pattern)
        elif isinstance(pattern, URLPattern):
            yield getattr(pattern.callback, "cls", None)


def test_every_api_view_that_takes_post_is_idempotent():
    posting = [view for view in _views() if view and issubclass(view, APIView) and hasattr(view, "post")]
    assert posting and all(issubclass(view, IdempotentPostMixin) for view in posting), posting


@pytest.fixture
def wallet():
    user = make_user(User.Role.BORROWER)
    client = APIClient()
    client.force_login(user)
    return client, user


def test_same_key_and_body_replay_the_first_response():
    from loans.services.accounts import api_token_issue

    user = make_user()
    raw, _ = api_token_issue(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_IDEMPOTENCY_KEY="logout-1")
    first = client.post(reverse("api:auth-logout"))
    assert first.status_code == 204 and "Idempotent-Replayed" not in first
    assert ApiToken.objects.get().revoked_at is not None
    # The token is revoked now: without the key the request is refused ...
    plain = APIClient()
    plain.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert plain.post(reverse("api:auth-logout")).status_code == 401
    record = IdempotencyRecord.objects.get()
    assert record.user == user and record.key == "logout-1" and record.status_code == 204


class Counter(IdempotentPostMixin, APIView):
    """A POST that does something each time it runs (counts), to see that a replay does not run it again."""

    calls = 0

    def post(self, request):
        type(self).calls += 1
        if request.data.get("refuse"):
            raise TransitionError("loan 1 is draft")
        return Response({"call": type(self).calls, "amount_wei": str(10**30)}, status=201)


urlpatterns = [path("api/v1/", include("loans.api.urls")), path("counter", Counter.as_view())]


@pytest.mark.urls(__name__)
def test_replay_and_reuse_with_another_body(wallet):
    client, user = wallet
    Counter.calls = 0
    first = client.post("/counter", {"a": "1"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201 and first.json()["call"] == 1 and "Idempotent-Replayed" not in first
    again = client.post("/counter", {"a": "1"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert Counter.calls == 1
    other = client.post("/counter", {"a": "2"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 422
    assert other.json() == {"code": "idempotency_key_reused", "message": other.json()["message"], "fields": {}}
    elsewhere = client.post(reverse("api:auth-logout"), {"a": "1"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert elsewhere.status_code == 422 and elsewhere.json()["code"] == "idempotency_key_reused"
    assert Counter.calls == 1 and IdempotencyRecord.objects.get().user == user
    assert client.get(reverse("api:loan-list")).status_code == 200  # still signed in: the refused logout did nothing
    fresh = client.post("/counter", {"a": "1"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert fresh.json()["call"] == 2


@pytest.mark.urls(__name__)
def test_a_refusal_is_replayed_too(wallet):
    client, _ = wallet
    Counter.calls = 0
    first = client.post("/counter", {"refuse": True}, format="json", HTTP_IDEMPOTENCY_KEY="r")
    assert first.status_code == 409 and first.json()["code"] == "wrong_state"
    again = client.post("/counter", {"refuse": True}, format="json", HTTP_IDEMPOTENCY_KEY="r")
    assert again.status_code == 409 and again.json() == first.json() and Counter.calls == 1


@pytest.mark.urls(__name__)
def test_keys_are_per_user(wallet):
    client, _ = wallet
    Counter.calls = 0
    client.post("/counter", {"a": "1"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    someone = APIClient()
    someone.force_login(make_user())
    response = someone.post("/counter", {"a": "1"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert response.status_code == 201 and response.json()["call"] == 2 and IdempotencyRecord.objects.count() == 2


def test_a_malformed_key_is_refused(wallet):
    client, _ = wallet
    response = client.post(reverse("api:auth-logout"), HTTP_IDEMPOTENCY_KEY="x" * 256)
    assert response.status_code == 400 and response.json()["code"] == "idempotency_key_invalid"
    assert client.get(reverse("api:loan-list")).status_code == 200 and not IdempotencyRecord.objects.exists()


def test_anonymous_posts_are_never_replayed():
    """The sign-in's answer carries a session or a token: whoever repeats the request must not get it."""
    client = APIClient()
    first = client.post(reverse("api:auth-nonce"), HTTP_IDEMPOTENCY_KEY="n-1").json()["nonce"]
    second = client.post(reverse("api:auth-nonce"), HTTP_IDEMPOTENCY_KEY="n-1").json()["nonce"]
    assert first != second and not IdempotencyRecord.objects.exists()
