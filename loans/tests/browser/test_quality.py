"""The browser's quality bar on the pages that need no wallet: accessible (axe-core: no serious or critical
violation), under the Content-Security-Policy with no console error, nothing wider than a phone, and the admin and
the API docs page still working under the policy."""

from __future__ import annotations

import pytest

from .conftest import PHONE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_csp_errors_are_caught_by_the_console_log(page, console):
    """The detector the other tests rely on sees a refused inline script (so an empty list means something)."""
    page.goto("/")
    page.evaluate("""() => { const s = document.createElement("script"); s.textContent = "window.ran = 1";
                             document.body.appendChild(s); }""")
    page.wait_for_timeout(100)
    assert page.evaluate("() => window.ran") is None
    assert console.csp_errors, console.errors


def test_home_and_signin_are_accessible_under_the_policy(page, console, shot, axe_check):
    response = page.goto("/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy + ";" and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.evaluate("() => typeof window.htmx") == "object"  # served by the app, allowed by the policy
    assert page.evaluate("() => htmx.config.allowEval") is False
    shot(page, "home")
    axe_check(page)

    page.get_by_role("link", name="Sign in", exact=True).click()
    page.wait_for_url("**/signin/")
    assert page.get_by_role("button", name="Connect wallet").is_visible()
    shot(page, "sign-in")
    axe_check(page)
    assert console.errors == []


def test_axe_check_fails_on_a_serious_violation(page, axe_check):
    """An image without alt text is a critical violation: the check must say so."""
    page.goto("/")
    page.evaluate("""() => { const i = document.createElement("img"); i.src = "/static/loans/none.png";
                             document.querySelector("main").appendChild(i); }""")
    with pytest.raises(AssertionError, match="image-alt"):
        axe_check(page)


def test_nothing_overflows_at_phone_width(open_page, shot, no_overflow, console):
    page = open_page(**PHONE)
    for path, step in (("/", "home at 375 px"), ("/signin/", "sign-in at 375 px")):
        page.goto(path)
        shot(page, step)
        no_overflow(page)
    page.evaluate("""() => { const d = document.createElement("div"); d.textContent = "x".repeat(300);
                             d.className = "too-wide"; document.querySelector("main").appendChild(d); }""")
    with pytest.raises(AssertionError, match="wider than the viewport"):
        no_overflow(page)  # the measure sees a real overflow
    assert console.csp_errors == []


def test_admin_works_under_the_policy(page, console, shot, admin_user):
    page.goto("/admin/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    page.goto("/admin/loans/loan/")
    assert page.get_by_role("heading", level=1).inner_text().startswith("Select")
    shot(page, "admin loans")
    assert console.csp_errors == []


def test_api_docs_page_works_under_the_policy(page, console, shot):
    response = page.goto("/api/v1/docs/")
    policy = response.headers["content-security-policy"]
    assert "style-src 'self' 'unsafe-inline'" in policy and "script-src 'self';" in policy + ";"
    page.locator(".swagger-ui .opblock").first.wait_for(state="visible")
    assert page.locator(".swagger-ui .opblock").count() > 10
    shot(page, "api docs")
    assert console.csp_errors == []
