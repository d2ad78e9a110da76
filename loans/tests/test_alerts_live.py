"""Alerts reach a signed-in user's open pages live: ``/ws/alerts/`` through the real ASGI stack (session cookie,
origin check), only the user's own, never an anonymous connection."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from loans.models import User
from loans.services.alerts import alert_create

from .factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ALLOWED_HOSTS = ["testserver"]


def application():
    from loanproject.asgi import application

    return application


def session_headers(user: User) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"
    return [(b"cookie", cookie.encode()), (b"origin", b"http://testserver")]


async def _hears_own_alerts_only():
    owner = await database_sync_to_async(make_user)(User.Role.BORROWER)
    other = await database_sync_to_async(make_user)(User.Role.BORROWER)
    mine = WebsocketCommunicator(
        application(), "/ws/alerts/", headers=await database_sync_to_async(session_headers)(owner)
    )
    theirs = WebsocketCommunicator(
        application(), "/ws/alerts/", headers=await database_sync_to_async(session_headers)(other)
    )
    assert (await mine.connect())[0] and (await theirs.connect())[0]

    alert, _ = await database_sync_to_async(alert_create)(
        recipient=owner, kind="repayment_due", key="repayment_due:1:100", subject="Repay by block 100", body="b"
    )
    assert await mine.receive_json_from(timeout=2) == {
        "type": "alert", "id": alert.pk, "kind": "repayment_due", "subject": "Repay by block 100",
    }  # fmt: skip
    assert await theirs.receive_nothing(timeout=0.3)
    await mine.disconnect()
    await theirs.disconnect()


async def _anonymous_and_foreign_origins_refused():
    anonymous = WebsocketCommunicator(application(), "/ws/alerts/", headers=[(b"origin", b"http://testserver")])
    connected, code = await anonymous.connect()
    assert not connected and code == 4401
    owner = await database_sync_to_async(make_user)(User.Role.BORROWER)
    headers = [h for h in await database_sync_to_async(session_headers)(owner) if h[0] != b"origin"]
    foreign = WebsocketCommunicator(
        application(), "/ws/alerts/", headers=[*headers, (b"origin", b"http://evil.example")]
    )
    connected, _ = await foreign.connect()
    assert not connected


def test_a_signed_in_user_hears_their_own_alerts_and_nobody_elses():
    async_to_sync(_hears_own_alerts_only)()


def test_anonymous_and_foreign_origins_are_refused():
    async_to_sync(_anonymous_and_foreign_origins_refused)()
