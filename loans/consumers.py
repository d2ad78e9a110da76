"""Websocket consumers: what the pages receive live.

``AlertsConsumer`` (``/ws/alerts/``): a signed-in user's own alerts as they are made (``services.alerts`` pushes
``alert.created`` to the user's group after commit). Anonymous connections are refused; a user hears only their
own group. The page lists alerts on load too, so a missed push loses nothing.

``LoanConsumer`` (``/ws/loans/<id>/?page=borrower|lender``): a loan page that updates itself. It joins the loan's
group (``services.transitions.loan_group_name``; a transition sends ``loan.status`` there after commit, and
``loan_fact_push`` sends ``loan.fact`` for a Bitcoin transaction seen, confirmed deeper or broadcast) and on each
event sends the page's htmx partial, rendered by the page's own view through Django's middleware (the caller's
session, CSRF cookie and ``HX-Request``): the very fragment an htmx poll of that page gets, so a page holds no rule
of its own. Refused: anonymous (4401), a loan the caller may not see or that does not exist (4404, as the pages'
404), the lender's page for anyone but the lender and operators (4403). ``static/loans/live.js`` swaps the HTML in
and pauses the page's htmx polling while the socket is open; a missed push loses nothing (the poll resumes).
"""

from __future__ import annotations

import io
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.base import BaseHandler
from django.urls import reverse

from .models import Loan
from .permissions import can_view_loan, is_lender, is_operator
from .services.alerts import user_group_name
from .services.transitions import loan_group_name

# Which page a socket follows: its route name (the loan's pk its one argument).
LIVE_PAGES = {"borrower": "pages:borrower-loan", "lender": "pages:lender-loan"}
# A page's answer, as the socket's close code.
CLOSE_CODES = {302: 4401, 403: 4403, 404: 4404}


class AlertsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        self.group = user_group_name(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        group = getattr(self, "group", None)
        if group is not None:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def alert_created(self, event: dict) -> None:
        await self.send_json(
            {"type": "alert", "id": event["alert_id"], "kind": event["kind"], "subject": event["subject"]}
        )


_handler: BaseHandler | None = None


def _page_handler() -> BaseHandler:
    """Django's synchronous handler with the project's middleware (sessions, auth, CSRF, htmx), loaded once."""
    global _handler
    if _handler is None:
        handler = BaseHandler()
        handler.load_middleware(is_async=False)
        _handler = handler
    return _handler


def render_live_page(scope: dict, page: str, loan_id: int) -> tuple[int, str]:
    """The page's htmx partial as its view answers a GET from this socket's caller: (status, HTML)."""
    headers = [(name, value) for name, value in scope.get("headers", []) if name not in (b"hx-request", b"hx-target")]
    http_scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https" if scope.get("scheme") == "wss" else "http",
        "path": reverse(LIVE_PAGES[page], args=[loan_id]),
        "root_path": scope.get("root_path", ""),
        "query_string": b"",
        "headers": [*headers, (b"hx-request", b"true")],
        "client": scope.get("client"),
        "server": scope.get("server"),
    }
    response = _page_handler().get_response(ASGIRequest(http_scope, io.BytesIO(b"")))
    return response.status_code, response.content.decode() if response.status_code == 200 else ""


class LoanConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.page = query.get("page", ["borrower"])[0]
        self.loan_id = int(self.scope["url_route"]["kwargs"]["loan_id"])
        refusal = await self._refusal(user)
        if refusal is not None:
            await self.close(code=refusal)
            return
        self.group = loan_group_name(self.loan_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    @database_sync_to_async
    def _refusal(self, user) -> int | None:
        loan = Loan.objects.filter(pk=self.loan_id).first()
        if loan is None or not can_view_loan(user, loan):
            return 4404
        if self.page not in LIVE_PAGES:
            return 4404
        if self.page == "lender" and not (is_lender(user) or is_operator(user)):
            return 4403
        return None

    async def disconnect(self, code: int) -> None:
        group = getattr(self, "group", None)
        if group is not None:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _send_page(self, message: dict) -> None:
        status, html = await database_sync_to_async(render_live_page)(self.scope, self.page, self.loan_id)
        if status != 200:  # the caller may no longer see the page (signed out, a role changed): stop
            await self.close(code=CLOSE_CODES.get(status, 4500))
            return
        await self.send_json({**message, "loan": self.loan_id, "html": html})

    async def loan_status(self, event: dict) -> None:
        if event.get("loan_id") != self.loan_id:
            return
        await self._send_page({"type": "loan.status", "side": event["side"], "status": event["status"]})

    async def loan_fact(self, event: dict) -> None:
        """A fact that changes the page without a status change (``services.transitions.loan_fact_push``)."""
        if event.get("loan_id") != self.loan_id:
            return
        await self._send_page({"type": "loan.fact", "fact": event["fact"]})
