"""``alert_create``: one alert per recipient and occasion, delivered once (e-mail in text and HTML, a push to the
recipient's channel group) and only after the row is committed."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core import mail

from loans.models import Alert, User
from loans.services.alerts import alert_create, user_group_name

from .factories import make_loan, make_user


@pytest.fixture(autouse=True)
def _locmem(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.mark.django_db(transaction=True)
def test_one_alert_per_occasion_mailed_and_pushed_once():
    user = make_user(User.Role.BORROWER, email="b@example.com")
    loan = make_loan(borrower=user)
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(user_group_name(user.pk), channel)

    alert, created = alert_create(
        recipient=user, loan=loan, kind="repayment_due", key=f"repayment_due:{loan.pk}:1000",
        subject="Repay loan before block 1000", body="Repay before block 1000.",
    )  # fmt: skip
    again, created_again = alert_create(
        recipient=user, loan=loan, kind="repayment_due", key=f"repayment_due:{loan.pk}:1000",
        subject="changed", body="changed",
    )  # fmt: skip
    assert created and not created_again and again.pk == alert.pk and Alert.objects.count() == 1
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["b@example.com"] and sent.subject == "Repay loan before block 1000"
    assert "Repay before block 1000." in sent.body and sent.alternatives[0][1] == "text/html"
    assert "Repay before block 1000." in sent.alternatives[0][0]
    alert.refresh_from_db()
    assert alert.emailed_at is not None
    pushed = async_to_sync(layer.receive)(channel)
    assert pushed == {"type": "alert.created", "alert_id": alert.pk, "kind": "repayment_due", "subject": alert.subject}


@pytest.mark.django_db(transaction=True)
def test_nothing_is_sent_for_an_alert_rolled_back_or_without_an_address():
    from django.db import transaction

    user = make_user(User.Role.BORROWER, email="b@example.com")
    with pytest.raises(RuntimeError), transaction.atomic():
        alert_create(recipient=user, kind="watcher_lag", key="lag:1", subject="s", body="b")
        raise RuntimeError("rolled back")
    assert Alert.objects.count() == 0 and mail.outbox == []
    silent = make_user(User.Role.OPERATOR, email="")
    alert, created = alert_create(recipient=silent, kind="watcher_lag", key="lag:2", subject="s", body="b")
    assert created and mail.outbox == [] and Alert.objects.get(pk=alert.pk).emailed_at is None
    with pytest.raises(ValueError):
        alert_create(recipient=user, kind="no_such_kind", key="k", subject="s", body="b")
