"""A loan's page updates itself: ``/ws/loans/<id>/`` through the real ASGI stack (session cookie, origin check) sends
the page's htmx partial, re-rendered by the page's own view, when a transition changes the loan's status; only to
users who may see the loan (the lender's page only to the desk); never to an anonymous connection."""

# ruff: noqa: F811 - the fixtures imported from test_pages_borrower are the tests' arguments

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import reverse

from loans.models import Loan, LoanStatusChange, User
from loans.services import loan_create, loan_status_transition

from .factories import make_user
from .test_pages_borrower import _desk, borrower, loan, values  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)
CSRF = re.compile(r'(value|data-csrf)="[A-Za-z0-9]{64}"')


@pytest.fixture(autouse=True)
def _layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.ALLOWED_HOSTS = ["testserver"]


def application():
    from loanproject.asgi import application

    return application


def signed_in(user: User, page_url: str) -> tuple[Client, list[tuple[bytes, bytes]]]:
    """A client signed in as ``user`` that has loaded ``page_url`` (so it holds the CSRF cookie), and the headers
    its browser would open the socket with."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(page_url).status_code == 200
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
    return client, [(b"cookie", cookie.encode()), (b"origin", b"http://testserver"), (b"host", b"testserver")]


def another_loan(owner: User) -> Loan:
    data = values()
    return loan_create(borrower=owner, **{**data, "amount_wei": int(data["amount_wei"])})


def socket(path: str, headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(application(), path, headers=headers)


def transition(loan_id: int, to_status: str) -> None:
    loan_status_transition(loan_id=loan_id, to_status=to_status, cause=f"test: to {to_status}")


async def _borrower_page_follows_the_loan(borrower, loan):
    url = reverse("pages:borrower-loan", args=[loan.pk])
    client, headers = await database_sync_to_async(signed_in)(borrower, url)
    other_loan = await database_sync_to_async(another_loan)(borrower)
    live = socket(f"/ws/loans/{loan.pk}/", headers)
    assert (await live.connect())[0]

    await database_sync_to_async(transition)(other_loan.pk, Loan.Status.REQUESTED)  # another loan's group
    assert await live.receive_nothing(timeout=0.3)

    await database_sync_to_async(transition)(loan.pk, Loan.Status.REQUESTED)
    message = await live.receive_json_from(timeout=5)
    assert (message["type"], message["loan"], message["side"], message["status"]) == (
        "loan.status", loan.pk, "contract", "requested",
    )  # fmt: skip
    html = message["html"]
    assert html.strip().startswith('<section id="loan"') and "<html" not in html
    assert "Status</dt><dd>Requested;" in html
    # the very fragment an htmx poll of the page gets now (the CSRF token differs per render)
    polled = await database_sync_to_async(client.get)(url, headers={"HX-Request": "true"})
    assert CSRF.sub("", html) == CSRF.sub("", polled.content.decode())
    # ... and its forms carry a CSRF token that is good for this browser's cookie
    token = re.search(r'name="csrfmiddlewaretoken" value="([A-Za-z0-9]{64})"', html).group(1)
    posted = await database_sync_to_async(client.post)(
        reverse("pages:borrower-loan-broadcast", args=[loan.pk]), {"transaction": "00", "csrfmiddlewaretoken": token}
    )
    assert posted.status_code == 422  # the service refused the bytes; CSRF (403) let it through
    await live.disconnect()


def test_the_borrower_page_receives_its_re_rendered_partial_when_the_status_changes(borrower, loan):
    async_to_sync(_borrower_page_follows_the_loan)(borrower, loan)


async def _lender_page_follows_the_loan(loan):
    lender = await database_sync_to_async(make_user)(User.Role.LENDER)
    url = reverse("pages:lender-loan", args=[loan.pk])
    client, headers = await database_sync_to_async(signed_in)(lender, url)
    live = socket(f"/ws/loans/{loan.pk}/?page=lender", headers)
    assert (await live.connect())[0]
    await database_sync_to_async(transition)(loan.pk, Loan.Status.REQUESTED)
    message = await live.receive_json_from(timeout=5)
    assert message["status"] == "requested" and message["html"].strip().startswith('<section id="lender-loan"')
    polled = await database_sync_to_async(client.get)(url, headers={"HX-Request": "true"})
    assert CSRF.sub("", message["html"]) == CSRF.sub("", polled.content.decode())
    await live.disconnect()


def test_the_lender_page_receives_its_own_partial(loan):
    async_to_sync(_lender_page_follows_the_loan)(loan)


async def _refused(borrower, loan):
    url = reverse("pages:borrower-loan", args=[loan.pk])
    anonymous = socket(f"/ws/loans/{loan.pk}/", [(b"origin", b"http://testserver"), (b"host", b"testserver")])
    assert await anonymous.connect() == (False, 4401)

    stranger = await database_sync_to_async(make_user)(User.Role.BORROWER)
    _, stranger_headers = await database_sync_to_async(signed_in)(stranger, reverse("pages:borrower-loans"))
    assert await socket(f"/ws/loans/{loan.pk}/", stranger_headers).connect() == (False, 4404)
    assert await socket(f"/ws/loans/{loan.pk + 1000}/", stranger_headers).connect() == (False, 4404)

    _, headers = await database_sync_to_async(signed_in)(borrower, url)
    assert await socket(f"/ws/loans/{loan.pk}/?page=lender", headers).connect() == (False, 4403)
    assert await socket(f"/ws/loans/{loan.pk}/?page=admin", headers).connect() == (False, 4404)
    foreign = [h for h in headers if h[0] != b"origin"] + [(b"origin", b"http://evil.example")]
    assert (await socket(f"/ws/loans/{loan.pk}/", foreign).connect())[0] is False

    # the refused sockets joined nothing: a transition reaches nobody and the loan is as the service left it
    await database_sync_to_async(transition)(loan.pk, Loan.Status.REQUESTED)
    assert await database_sync_to_async(LoanStatusChange.objects.filter(loan_id=loan.pk).count)() == 1


def test_anonymous_other_borrowers_and_the_borrower_on_the_desk_page_are_refused(borrower, loan):
    async_to_sync(_refused)(borrower, loan)


async def _signed_out_stops(borrower, loan):
    url = reverse("pages:borrower-loan", args=[loan.pk])
    client, headers = await database_sync_to_async(signed_in)(borrower, url)
    live = socket(f"/ws/loans/{loan.pk}/", headers)
    assert (await live.connect())[0]
    await database_sync_to_async(client.logout)()  # the session the socket opened with is gone
    await database_sync_to_async(transition)(loan.pk, Loan.Status.REQUESTED)
    output = await live.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4401}


def test_a_page_signed_out_meanwhile_gets_no_html_and_is_closed(borrower, loan):
    async_to_sync(_signed_out_stops)(borrower, loan)


def test_the_live_script_and_both_loan_pages_wire_the_socket_and_the_fallback_poll(client, borrower, loan):
    from pathlib import Path

    from django.contrib.staticfiles import finders

    text = Path(finders.find("loans/live.js")).read_text()
    assert "dataset.live" in text and "htmx:beforeRequest" in text and "outerHTML" in text
    client.force_login(borrower)
    body = client.get(reverse("pages:borrower-loan", args=[loan.pk])).content.decode()
    assert f'data-live="/ws/loans/{loan.pk}/?page=borrower" data-live-target="#loan"' in body
    assert 'hx-trigger="every 15s" hx-target="#loan" hx-swap="outerHTML"' in body and "loans/live.js" in body
    client.force_login(make_user(User.Role.LENDER))
    body = client.get(reverse("pages:lender-loan", args=[loan.pk])).content.decode()
    assert f'data-live="/ws/loans/{loan.pk}/?page=lender" data-live-target="#lender-loan"' in body
    assert 'hx-target="#lender-loan" hx-swap="outerHTML"' in body and "loans/live.js" in body
