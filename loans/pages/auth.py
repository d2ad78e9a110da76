"""Pages: Sign-In with Ethereum in the browser (EIP-4361 through the wallet, EIP-1193), and sign-out.

``/signin/`` shows a "Connect wallet" button; ``static/loans/signin.js`` asks the wallet for its account
(``eth_requestAccounts``), asks ``POST /api/v1/auth/nonce`` what the message must say, builds the EIP-4361 message,
has the wallet sign it (``personal_sign``) and hands it to ``POST /api/v1/auth/siwe``, which signs the session in
(``loans.services.accounts.siwe_sign_in``: the page holds no rule of its own). Then the browser goes to ``next``.
``/signout/`` (POST, a plain form: no JavaScript needed) ends the session.
"""

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

SIGN_IN_STATEMENT = "Sign in to the BTC-collateral loan desk."


def safe_next(request: HttpRequest, candidate: str | None) -> str:
    """``candidate`` if it is a path on this site, else the home page."""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("home")


@require_GET
@ensure_csrf_cookie
def signin(request: HttpRequest) -> HttpResponse:
    context = {
        "next_url": safe_next(request, request.GET.get("next")),
        "evm_chain_id": settings.EVM_CHAIN_ID,
        "statement": SIGN_IN_STATEMENT,
    }
    template = "loans/signin.html#signin-panel" if request.htmx else "loans/signin.html"
    return render(request, template, context)


@require_POST
def signout(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect(safe_next(request, request.POST.get("next")))


urlpatterns = [
    path("signin/", signin, name="signin"),
    path("signout/", signout, name="signout"),
]
