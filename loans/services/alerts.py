"""Alerts: one message to one person per occasion, on their pages (live) and by e-mail.

``alert_create`` is the one way an alert is made: the same (recipient, key) gives one alert however often a worker
looks; the e-mail (text and HTML, ``templates/email/alert.{txt,html}``) and the live push (the recipient's channel
group, ``user_group_name``) go out only after the row is committed, and only for a new alert.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.utils import timezone

from ..models import ALERT_KINDS, Alert, Loan, User
from ..permissions import require

logger = logging.getLogger(__name__)


def user_group_name(user_id: int) -> str:
    """The channel group of one user's pages: alerts are pushed there."""
    return f"user-{user_id}"


def alert_create(
    *, recipient: User, kind: str, key: str, subject: str, body: str, loan: Loan | None = None
) -> tuple[Alert, bool]:
    """The alert for ``recipient`` and occasion ``key``: made (and sent) the first time, returned as it is after.
    Returns (alert, created)."""
    if kind not in ALERT_KINDS:
        raise ValueError(f"unknown alert kind {kind!r}")
    existing = Alert.objects.filter(recipient=recipient, key=key).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                recipient=recipient, loan=loan, kind=kind, key=key, subject=subject[:200], body=body
            )
    except IntegrityError:  # another worker made it first
        return Alert.objects.get(recipient=recipient, key=key), False
    transaction.on_commit(lambda: _deliver(alert.pk))
    logger.info("alert %s (%s) for user %s", alert.pk, kind, recipient.pk, extra={"loan_id": loan and loan.pk})
    return alert, True


def _deliver(alert_id: int) -> None:
    alert = Alert.objects.select_related("recipient", "loan").get(pk=alert_id)
    _push(alert)
    if alert.recipient.email:
        _email(alert)


def _push(alert: Alert) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            user_group_name(alert.recipient_id),
            {"type": "alert.created", "alert_id": alert.pk, "kind": alert.kind, "subject": alert.subject},
        )
    except Exception:  # the page also lists alerts on its next load; a failed push loses nothing
        logger.exception("push of alert %s failed", alert.pk)


def _email(alert: Alert) -> None:
    context = {"alert": alert, "loan": alert.loan, "site_url": getattr(settings, "SITE_URL", "")}
    message = EmailMultiAlternatives(
        subject=alert.subject,
        body=render_to_string("email/alert.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[alert.recipient.email],
    )
    message.attach_alternative(render_to_string("email/alert.html", context), "text/html")
    try:
        message.send()
    except Exception:  # kept unsent: emailed_at stays empty and the next run may try again
        logger.exception("e-mail of alert %s failed", alert.pk)
        return
    Alert.objects.filter(pk=alert.pk).update(emailed_at=timezone.now())


def alerts_for(*, user: User, unread: bool = False) -> QuerySet[Alert]:
    """``user``'s own alerts, newest first (only the unread ones if ``unread``); none for anyone signed out."""
    if not getattr(user, "is_authenticated", False):
        return Alert.objects.none()
    alerts = Alert.objects.filter(recipient_id=user.pk).order_by("-created_at", "-id")
    return alerts.filter(read_at__isnull=True) if unread else alerts


def alert_mark_read(*, alert: Alert, user: User) -> Alert:
    """Mark ``alert`` read by its recipient (only they may); reading it again keeps the first time."""
    require(alert.recipient_id == getattr(user, "pk", None), "only its recipient may mark an alert read")
    if alert.read_at is None:
        Alert.objects.filter(pk=alert.pk, read_at__isnull=True).update(read_at=timezone.now())
        alert.refresh_from_db(fields=["read_at"])
    return alert


__all__ = ["alert_create", "alert_mark_read", "alerts_for", "user_group_name"]
