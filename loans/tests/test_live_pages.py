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


# -- facts that are no status change: the Bitcoin watcher's records, confirmations, broadcasts ----------------------


def _follow(node, confirmations: int):
    """One Bitcoin watcher run that records what the new blocks hold but applies nothing shallower than
    ``confirmations`` (so no transition pushes: only the facts do)."""
    from loans.sync.bitcoin import sync_bitcoin

    report = sync_bitcoin(rpc=node, confirmations=confirmations)
    assert not report.skipped and not report.refused and report.applied == 0, report
    return report


async def _the_funding_box_follows_the_watcher(borrower, loan, node, operator):
    from bitcoin.testing import fund_output, mine_blocks
    from loans.facts import loan_facts
    from loans.models import BitcoinBroadcast, ChainCursor
    from loans.services.bitcoin_actions import bitcoin_broadcast_retry

    from .factories import hex32

    url = reverse("pages:borrower-loan", args=[loan.pk])
    client, headers = await database_sync_to_async(signed_in)(borrower, url)
    quiet = await database_sync_to_async(another_loan)(borrower)  # watched too, but nothing of its own on chain
    quiet_socket = socket(f"/ws/loans/{quiet.pk}/", headers)
    assert (await quiet_socket.connect())[0]
    live = socket(f"/ws/loans/{loan.pk}/", headers)
    assert (await live.connect())[0]
    # The watcher starts at the node's tip: its first run follows one block and pushes nothing (no transactions).
    tip = node.getblockcount()
    await database_sync_to_async(ChainCursor.objects.create)(
        chain=ChainCursor.Chain.BITCOIN, block_number=tip, block_hash=node.getblockhash(tip), parent_hash=hex32()
    )
    script = (await database_sync_to_async(loan_facts)(loan=loan)).escrow.script_pubkey

    # An escrow payment seen in a block (recorded, not final yet): the page's funding box says so, live.
    funded = fund_output(node, script, 1_200_000, 1)
    await database_sync_to_async(_follow)(node, 3)
    message = await live.receive_json_from(timeout=5)
    assert (message["type"], message["loan"], message["fact"]) == ("loan.fact", loan.pk, "bitcoin_seen")
    assert f"Seen: <code>{funded.txid}</code>, 1200000 sat: 1 confirmation" in message["html"]
    polled = await database_sync_to_async(client.get)(url, headers={"HX-Request": "true"})
    assert CSRF.sub("", message["html"]) == CSRF.sub("", polled.content.decode())  # the poll's very fragment
    assert await quiet_socket.receive_nothing(timeout=0.3)

    # A block later: the confirmation count moved, the page follows.
    mine_blocks(node, 1)
    await database_sync_to_async(_follow)(node, 3)
    message = await live.receive_json_from(timeout=5)
    assert message["fact"] == "bitcoin_confirmations" and "1200000 sat: 2 confirmations" in message["html"]
    assert await live.receive_nothing(timeout=0.3)  # once per run, not per block or per transaction

    # A broadcast handed to the node (here: retried by an operator, the node refusing the bytes): the page shows it.
    row = await database_sync_to_async(BitcoinBroadcast.objects.create)(
        loan=loan, kind="tx_exit", txid=hex32(), raw_hex="00", attempts=1
    )
    await database_sync_to_async(bitcoin_broadcast_retry)(broadcast=row, actor=operator)
    message = await live.receive_json_from(timeout=5)
    assert message["fact"] == "bitcoin_broadcast"
    assert (
        f'<li data-spend-pending="tx_exit">TX_exit <code>{row.txid}</code>: not taken by the node yet'
        in (message["html"])
    )
    assert await quiet_socket.receive_nothing(timeout=0.3)
    await live.disconnect()
    await quiet_socket.disconnect()


def test_the_funding_box_is_pushed_when_the_watcher_sees_a_payment_a_confirmation_or_a_broadcast(
    borrower, loan, node, settings
):
    settings.BITCOIN_SYNC_START_HEIGHT = None
    operator = make_user(User.Role.OPERATOR)
    async_to_sync(_the_funding_box_follows_the_watcher)(borrower, loan, node, operator)


def test_an_unknown_page_fact_is_refused():
    from loans.services.transitions import loan_fact_push

    with pytest.raises(ValueError, match="unknown page fact"):
        loan_fact_push(loan_ids=[1], fact="loan_status")
