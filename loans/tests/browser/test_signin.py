"""Sign-In with Ethereum in the browser, with the injected wallet: a first sign-in creates a borrower and the nav
shows the address; sign-out; each refusal is shown with its code and signs nobody in."""

from __future__ import annotations

import re

import pytest

from loans.models import SiweNonce, User

from .conftest import PHONE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_first_sign_in_creates_a_borrower_and_the_nav_shows_the_address(
    open_page, wallet, shot, axe_check, no_overflow, recorder, console
):
    assert not User.objects.filter(evm_address__iexact=wallet.address).exists()
    page = open_page(wallet=wallet)
    page.goto("/")
    page.get_by_role("link", name="Sign in", exact=True).click()
    shot(page, "sign-in page")

    page.get_by_role("button", name="Connect wallet").click()
    page.wait_for_url(re.compile(r"/$"))
    nav = page.get_by_role("navigation", name="Account")
    assert nav.get_by_test_id("nav-address").inner_text() == wallet.address  # EIP-55, though the wallet gave lower
    assert "(Borrower)" in nav.inner_text()
    shot(page, "signed in")
    axe_check(page)

    user = User.objects.get(evm_address=wallet.address)
    assert user.role == User.Role.BORROWER
    methods = [method for method, _ in wallet.calls]
    assert methods == ["eth_requestAccounts", "eth_chainId", "personal_sign"]
    signed = wallet.calls[2][1]
    message = bytes.fromhex(signed[0][2:]).decode()
    assert f"\n{wallet.address}\n" in message and "Chain ID: 31337" in message
    assert [r.method for r in recorder.to("/api/v1/auth/")] == ["POST", "POST"]
    (sent,) = recorder.to("/api/v1/auth/siwe")  # the recorder holds the bodies, too
    assert '"signature":"0x' in sent.body and recorder.containing(wallet.address.lower()) == [sent]
    assert SiweNonce.objects.filter(used_at__isnull=False).count() == 1

    # The same session on a phone: the address wraps inside the header.
    page.set_viewport_size(PHONE)
    page.reload()
    shot(page, "signed in at 375 px")
    no_overflow(page)

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/$"))
    assert page.get_by_role("link", name="Sign in", exact=True).is_visible()
    assert page.get_by_test_id("nav-address").count() == 0
    shot(page, "signed out")
    assert console.errors == []


def test_a_second_sign_in_keeps_the_account(open_page, wallet):
    User.objects.create(username="someone", evm_address=wallet.address, role=User.Role.LENDER)
    page = open_page(wallet=wallet)
    page.goto("/signin/?next=/signin/")
    page.get_by_role("button", name="Connect wallet").click()
    page.get_by_role("heading", name="You are signed in").wait_for()
    assert "(Lender)" in page.get_by_role("navigation", name="Account").inner_text()
    assert User.objects.filter(evm_address__iexact=wallet.address).count() == 1


def _error_shown(page) -> tuple[str, str]:
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    return alert.locator(".error-code").inner_text(), alert.locator(".error-message").inner_text()


def test_a_wallet_on_another_chain_is_told_so_and_signs_nothing(open_page, wallet, shot, recorder):
    wallet.chain_id = 1
    page = open_page(wallet=wallet)
    page.goto("/signin/")
    page.get_by_role("button", name="Connect wallet").click()
    code, message = _error_shown(page)
    assert code == "siwe_wrong_chain"
    assert "chain 1" in message and "31337" in message
    shot(page, "wrong chain")
    assert "personal_sign" not in [method for method, _ in wallet.calls]
    assert recorder.to("/api/v1/auth/siwe") == []
    assert not User.objects.exists()
    assert page.get_by_role("button", name="Connect wallet").is_enabled()  # may try again


def test_a_declined_signature_is_shown_with_its_code(open_page, wallet):
    wallet.reject = {"personal_sign"}
    page = open_page(wallet=wallet)
    page.goto("/signin/")
    page.get_by_role("button", name="Connect wallet").click()
    assert _error_shown(page)[0] == "wallet_rejected"
    assert not User.objects.exists()


def test_the_servers_refusal_is_shown_with_its_code(open_page, wallet, shot):
    User.objects.create(username="gone", evm_address=wallet.address, role=User.Role.BORROWER, is_active=False)
    page = open_page(wallet=wallet)
    page.goto("/signin/")
    page.get_by_role("button", name="Connect wallet").click()
    code, message = _error_shown(page)
    assert code == "account_disabled"
    assert "disabled" in message
    shot(page, "refused by the server")
    assert page.get_by_test_id("nav-address").count() == 0


def test_no_wallet_is_shown_with_its_code(open_page):
    page = open_page()
    page.goto("/signin/")
    page.get_by_role("button", name="Connect wallet").click()
    assert _error_shown(page)[0] == "no_wallet"
