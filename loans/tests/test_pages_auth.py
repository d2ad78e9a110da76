"""The sign-in and sign-out pages (the browser walk is in loans/tests/browser/test_signin.py), the
Content-Security-Policy header, and static files served by the app itself (WhiteNoise)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import SESSION_KEY
from django.core.management import call_command
from django.test import Client

from loans.models import User

pytestmark = pytest.mark.django_db

SIGNIN = "/signin/"


def _fragment(body: str) -> str:
    match = re.search(r'<section id="signin-panel".*?</section>', body, re.S)
    assert match, body
    return match.group(0)


def test_signin_page_and_its_htmx_partial_render_the_same_fragment(client):
    page = client.get(SIGNIN)
    partial = client.get(SIGNIN, headers={"HX-Request": "true"})
    assert page.status_code == partial.status_code == 200
    full, part = page.content.decode(), partial.content.decode()
    assert "<html" in full and "<html" not in part
    assert _fragment(full) == part.strip()
    assert 'src="/static/loans/signin.js"' in full
    assert 'data-nonce-url="/api/v1/auth/nonce"' in full and 'data-siwe-url="/api/v1/auth/siwe"' in full
    assert 'data-chain-id="31337"' in full
    assert "csrftoken" in page.cookies  # the page's fetch() calls and htmx have a token to send


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("/loans/7/", "/loans/7/"),
        ("https://evil.example/steal", "/"),
        ("//evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ],
)
def test_signin_goes_on_only_to_a_page_of_this_site(client, asked, kept):
    body = client.get(SIGNIN, {"next": asked}).content.decode()
    assert f'data-next="{kept}"' in body


def test_signed_in_the_page_says_so_and_the_nav_shows_the_address(client):
    user = User.objects.create(
        username="b", evm_address="0x70997970C51812dc3A010C7d01b50e0d17dc79C8", role=User.Role.BORROWER
    )
    client.force_login(user)
    body = client.get(SIGNIN).content.decode()
    assert "You are signed in" in body and 'id="connect-wallet"' not in body
    assert 'data-testid="nav-address"' in body and "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" in body
    assert 'action="/signout/"' in body


def test_signout_ends_the_session_and_needs_post_with_csrf(client):
    user = User.objects.create(username="b", role=User.Role.BORROWER)
    client.force_login(user)
    assert client.get("/signout/").status_code == 405
    assert SESSION_KEY in client.session

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post("/signout/").status_code == 403  # no token: refused, still signed in
    assert SESSION_KEY in strict.session

    response = client.post("/signout/", {"next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert SESSION_KEY not in client.session
    assert "Sign in</a>" in client.get("/").content.decode()


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


def test_every_page_has_a_policy_without_inline_script(client, settings):
    settings.BITCOIN_RPC_URL = settings.EVM_RPC_URL = "http://127.0.0.1:9"
    for path in ("/", SIGNIN, "/admin/login/", "/api/v1/parameters/"):
        policy = _policy(client.get(path))
        assert policy["script-src"] == ["'self'"], path
        assert policy["style-src"] == ["'self'"], path
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"], path
        assert "default-src" in policy


def test_the_api_docs_page_allows_inline_style_only_and_serves_its_script_as_a_file(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    policy = _policy(response)
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["script-src"] == ["'self'"]
    body = response.content.decode()
    assert re.search(r"<script>\s*\S", body) is None  # no inline script
    script = client.get("/api/v1/docs/?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


def test_static_files_are_served_by_the_app(client):
    """Without DEBUG and without a web server in front (the compose stack), /static/ still answers."""
    response = client.get("/static/vendor/htmx-2.0.11.min.js")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"var htmx=")
    assert client.get("/static/loans/signin.js").status_code == 200


def test_collected_static_files_are_served_under_hashed_names(settings, tmp_path):
    """Production: collectstatic's manifest names the files; WhiteNoise serves them with far-future caching."""
    settings.STATIC_ROOT = tmp_path
    settings.STATICFILES_DIRS = [settings.BASE_DIR / "static"]
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a not in {"drf_spectacular_sidecar"}]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    settings.WHITENOISE_USE_FINDERS = False
    settings.WHITENOISE_AUTOREFRESH = False
    call_command("collectstatic", interactive=False, verbosity=0)

    client = Client()  # its handler (and WhiteNoise) is built with these settings
    body = client.get(SIGNIN).content.decode()
    src = re.search(r'src="(/static/vendor/htmx-2\.0\.11\.min\.[0-9a-f]{12}\.js)"', body)
    assert src, body[:1000]
    response = client.get(src.group(1))
    assert response.status_code == 200
    assert "immutable" in response["Cache-Control"]
