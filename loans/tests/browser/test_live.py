"""A loan's page changes without a reload when the loan's status changes (a transition through the service, as the
watchers make them): over the websocket when it is open, by htmx polling when it is not.

Websockets need an ASGI server, and the harness's ``live_server`` is pytest-django's WSGI server: ``asgi_server``
runs the project's own ASGI application (loanproject.asgi: channels, session auth, origin check) in daphne, in a
process forked by ``daphne.testing.DaphneProcess`` (what channels' ``ChannelsLiveServerTestCase`` uses; that class
is a unittest TestCase that cannot take this harness's pytest fixtures, so the fixture starts the same process).
The fork inherits the test database's name, this test's settings and monkeypatches; the channel layer is Redis under
a prefix of this test's own, so the transition sent from this process reaches the server's consumers and nobody
else's.
"""

# ruff: noqa: F811 - the fixtures imported from test_pages_borrower are the tests' arguments

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import urlparse

import pytest
from daphne.testing import DaphneProcess
from django.conf import settings as django_settings
from django.test import Client

from loans.models import Loan
from loans.services import loan_status_transition

from ..test_pages_borrower import _desk, borrower, loan, values  # noqa: F401 - fixtures
from .conftest import DESKTOP

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

_inherited_connections: list = []


def _application():
    from channels.routing import get_default_application

    return get_default_application()


def _own_database_connections() -> None:
    """In the forked server: leave the parent's open database connections alone (kept referenced, so that nothing
    closes their sockets under the parent) and let the server open its own."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        _inherited_connections.append(connection.connection)
        connection.connection = None


@pytest.fixture
def asgi_server(transactional_db, settings, _desk):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [settings.REDIS_URL], "prefix": f"test-live-{uuid.uuid4().hex}"},
        }
    }
    server = DaphneProcess("127.0.0.1", _application, setup=_own_database_connections)
    server.start()
    if not server.ready.wait(30):
        server.terminate()
        raise RuntimeError(f"daphne did not start: {server.errors.get(False) if not server.errors.empty() else '?'}")
    try:
        yield f"http://127.0.0.1:{server.port.value}"
    finally:
        server.terminate()
        server.join(10)


def _signed_in_page(browser, base_url: str, user, console, recorder):
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport=DESKTOP, base_url=base_url, locale="en-US")
    context.set_default_timeout(10_000)
    context.add_cookies(
        [
            {
                "name": django_settings.SESSION_COOKIE_NAME,
                "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                "url": base_url,
            }
        ]
    )
    page = context.new_page()
    console.attach(page)
    recorder.attach(page)
    return context, page


def _transition_elsewhere(loan_id: int, to_status: str) -> None:
    """The transition through the service from another thread, as a watcher makes it (Playwright's event loop holds
    this one, where the broadcast's async_to_sync may not run)."""
    from django.db import connection

    failures: list[BaseException] = []

    def run() -> None:
        try:
            loan_status_transition(loan_id=loan_id, to_status=to_status, cause="test: LoanRequested")
        except BaseException as error:  # re-raised in the test's thread
            failures.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not failures, failures


def _page_loads(recorder, path: str) -> list:
    return [r for r in recorder.requests if r.method == "GET" and urlparse(r.url).path == path]


def _status(page) -> str:
    return page.locator("#loan .loan-summary dd").first.inner_text()


def test_the_loan_page_changes_without_reload_when_the_status_changes(
    asgi_server, browser, borrower, loan, console, recorder, shot
):
    context, page = _signed_in_page(browser, asgi_server, borrower, console, recorder)
    try:
        path = f"/borrower/loans/{loan.pk}/"
        page.goto(path)
        page.locator("[data-live][data-live-state='open']").wait_for(state="attached")
        assert _status(page).startswith("Draft;")
        page.evaluate("() => { document.getElementById('loan').dataset.before = 'yes'; window.sameDocument = 1; }")
        # A full-page screenshot leaves style="" on an element; htmx must not set it again when the swap settles
        # (templates/base.html's htmx-config), or Chromium reports a CSP violation.
        shot(page, "draft, before the push")

        _transition_elsewhere(loan.pk, Loan.Status.REQUESTED)
        page.wait_for_function("() => !document.getElementById('loan').dataset.before", timeout=10_000)
        assert _status(page).startswith("Requested;")
        assert page.evaluate("() => window.sameDocument") == 1  # no reload: the same document, its partial swapped
        assert page.locator("[data-live]").get_attribute("data-live-state") == "open"
        assert len(_page_loads(recorder, path)) == 1  # the page once; no poll while the socket is open
        assert [r.url for r in recorder.requests if r.method == "WEBSOCKET"] == [
            f"{asgi_server.replace('http', 'ws')}/ws/loans/{loan.pk}/?page=borrower"
        ]
        shot(page, "requested, swapped in live")
        assert console.csp_errors == []
    finally:
        context.close()


def test_without_the_socket_htmx_polling_takes_over(open_page, live_server, borrower, loan, console, recorder, shot):
    """pytest-django's live server speaks no websocket: the socket never opens and the page's htmx poll (every 15 s)
    brings the change."""
    page = open_page()
    client = Client()
    client.force_login(borrower)
    page.context.add_cookies(
        [
            {
                "name": django_settings.SESSION_COOKIE_NAME,
                "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    path = f"/borrower/loans/{loan.pk}/"
    page.goto(path)
    page.locator("[data-live][data-live-state='closed']").wait_for(state="attached")
    shot(page, "draft, before the poll")  # leaves style="" behind: the poll's swap must not set it again (CSP)
    page.evaluate("() => { window.sameDocument = 1; }")
    _transition_elsewhere(loan.pk, Loan.Status.REQUESTED)
    started = time.monotonic()
    page.wait_for_function(
        "() => document.querySelector('#loan .loan-summary dd').textContent.startsWith('Requested')", timeout=25_000
    )
    assert time.monotonic() - started < 20
    assert page.evaluate("() => window.sameDocument") == 1
    polls = _page_loads(recorder, path)
    assert len(polls) >= 2  # the page, then the poll that brought the change
    shot(page, "requested, brought by the poll")
    assert console.csp_errors == []


def test_a_push_waits_while_the_borrower_signs(asgi_server, browser, borrower, loan, console, recorder):
    """What the borrower is reviewing or signing (borrower.js marks the section busy) is never swapped away: the
    newest pushed partial is applied once the signer is done."""
    context, page = _signed_in_page(browser, asgi_server, borrower, console, recorder)
    try:
        page.goto(f"/borrower/loans/{loan.pk}/")
        page.locator("[data-live][data-live-state='open']").wait_for(state="attached")
        page.evaluate("() => { const s = document.getElementById('loan'); s.dataset.signerBusy = '1'; }")
        _transition_elsewhere(loan.pk, Loan.Status.REQUESTED)
        page.wait_for_timeout(1500)
        assert _status(page).startswith("Draft;")  # held while busy
        page.evaluate("() => { delete document.getElementById('loan').dataset.signerBusy; }")
        page.wait_for_function("() => !document.querySelector('#loan[data-signer-busy]')", timeout=5_000)
        page.wait_for_function(
            "() => document.querySelector('#loan .loan-summary dd').innerText.startsWith('Requested;')", timeout=5_000
        )
        assert console.csp_errors == []
    finally:
        context.close()
