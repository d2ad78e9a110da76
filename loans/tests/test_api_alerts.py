"""/api/v1/alerts/: each person lists their own alerts (newest first, paginated, ``?unread=true``) and marks their
own read; another person's alert is 404 and stays unread. (Every role x endpoint: ``api_table.ENDPOINTS``.)"""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from loans.models import Alert, IdempotencyRecord, User

from .caches import use_own_cache
from .factories import make_loan, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_throttle_counters(settings):
    use_own_cache(settings)


def client_of(user: User) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def alert(recipient: User, n: int, **fields) -> Alert:
    return Alert.objects.create(
        recipient=recipient, kind="repayment_due", key=f"repayment_due:{n}", subject=f"Repay {n}", body=f"Body {n}",
        **fields,
    )  # fmt: skip


@pytest.fixture
def scene():
    borrower = make_user(User.Role.BORROWER)
    other = make_user(User.Role.BORROWER)
    operator = make_user(User.Role.OPERATOR)
    loan = make_loan(borrower=borrower)
    mine = [alert(borrower, n, loan=loan) for n in range(3)]
    theirs = alert(other, 9)
    alarm = Alert.objects.create(
        recipient=operator, kind="watcher_lag", key="watcher_lag:evm:10", subject="s", body="b"
    )
    return {"borrower": borrower, "other": other, "operator": operator, "loan": loan, "mine": mine,
            "theirs": theirs, "alarm": alarm}  # fmt: skip


def test_each_lists_their_own_newest_first(scene, django_assert_max_num_queries):
    client = client_of(scene["borrower"])
    with django_assert_max_num_queries(6):
        response = client.get(reverse("api:alert-list"))
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3 and [row["id"] for row in body["results"]] == [a.pk for a in reversed(scene["mine"])]
    first = body["results"][0]
    assert first == {
        "id": scene["mine"][2].pk, "kind": "repayment_due", "key": "repayment_due:2", "loan": scene["loan"].pk,
        "subject": "Repay 2", "body": "Body 2", "created_at": first["created_at"], "emailed_at": None,
        "read_at": None, "read": False,
    }  # fmt: skip
    operator = client_of(scene["operator"]).get(reverse("api:alert-list")).json()
    assert [row["id"] for row in operator["results"]] == [scene["alarm"].pk]  # an operator too sees only theirs
    assert operator["results"][0]["loan"] is None
    paged = client.get(reverse("api:alert-list"), {"page_size": 2}).json()
    assert len(paged["results"]) == 2 and paged["next"] is not None


def test_unread_only_and_a_bad_flag_refused(scene):
    client = client_of(scene["borrower"])
    Alert.objects.filter(pk=scene["mine"][1].pk).update(read_at="2026-01-01T00:00:00Z")
    for flag in ("true", "1", "True"):
        unread = client.get(reverse("api:alert-list"), {"unread": flag}).json()
        assert [row["id"] for row in unread["results"]] == [scene["mine"][2].pk, scene["mine"][0].pk]
    everything = client.get(reverse("api:alert-list"), {"unread": "false"}).json()
    assert everything["count"] == 3
    bad = client.get(reverse("api:alert-list"), {"unread": "maybe"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid" and "unread" in bad.json()["fields"]


def test_mark_own_alert_read_once(scene):
    client = client_of(scene["borrower"])
    target = scene["mine"][0]
    url = reverse("api:alert-read", kwargs={"pk": target.pk})
    response = client.post(url, {}, format="json")
    assert response.status_code == 200 and response.json()["read"] is True and response.json()["id"] == target.pk
    target.refresh_from_db()
    first_read = target.read_at
    assert first_read is not None
    again = client.post(url, {}, format="json")
    assert again.status_code == 200
    target.refresh_from_db()
    assert target.read_at == first_read  # the first reading stays
    assert Alert.objects.filter(read_at__isnull=False).count() == 1


@pytest.mark.parametrize("who", ["other", "operator"])
def test_another_persons_alert_is_not_found_and_stays_unread(scene, who):
    client = client_of(scene[who])
    for pk in (scene["mine"][0].pk, 10**9):
        response = client.post(reverse("api:alert-read", kwargs={"pk": pk}), {}, format="json")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert not Alert.objects.filter(read_at__isnull=False).exists()


def test_anonymous_is_refused():
    client = APIClient()
    assert client.get(reverse("api:alert-list")).status_code == 401
    assert client.post(reverse("api:alert-read", kwargs={"pk": 1}), {}, format="json").status_code == 401


def test_marking_read_honours_an_idempotency_key(scene):
    client = client_of(scene["borrower"])
    url = reverse("api:alert-read", kwargs={"pk": scene["mine"][0].pk})
    first = client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="read-1")
    replay = client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="read-1")
    assert first.status_code == replay.status_code == 200 and replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json() and IdempotencyRecord.objects.count() == 1


def test_the_service_refuses_anyone_but_the_recipient(scene):
    from django.core.exceptions import PermissionDenied

    from loans.services.alerts import alert_mark_read, alerts_for

    for who in ("other", "operator"):
        with pytest.raises(PermissionDenied):
            alert_mark_read(alert=scene["mine"][0], user=scene[who])
    assert not Alert.objects.filter(read_at__isnull=False).exists()
    assert list(alerts_for(user=scene["other"])) == [scene["theirs"]]
