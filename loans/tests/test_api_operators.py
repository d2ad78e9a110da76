"""/api/v1/operator/...: the lender role, pausing new loans and the audit trail, for operators only (a lender or a
borrower gets 403, an anonymous caller 401, and nothing is written); refusals keep their service codes."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from loans import funding
from loans.models import DeploymentPolicy, Loan, OperatorAction, User
from loans.services.operators import new_loans_pause

from .caches import use_own_cache
from .factories import make_deployment, make_user
from .test_operators import desk_deployment, loan_request  # noqa: F401 - a fixture and its request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _cache(settings):
    use_own_cache(settings)


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def role_url(user: User) -> str:
    return reverse("api:operator-lender-role", args=[user.pk])


def state() -> tuple:
    return (
        list(User.objects.order_by("pk").values_list("pk", "role")),
        list(DeploymentPolicy.objects.order_by("pk").values_list("pk", "new_loans_paused", "paused_reason")),
        OperatorAction.objects.count(),
    )


def test_an_operator_grants_and_revokes_the_lender_role(operator):
    user = make_user(User.Role.BORROWER)
    client = client_for(operator)
    response = client.post(role_url(user), {"reason": "new officer"}, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "id": user.pk,
        "username": user.username,
        "evm_address": user.evm_address,
        "role": "lender",
        "is_active": True,
    }
    response = client.delete(role_url(user), {"reason": "left"}, format="json")
    assert response.status_code == 200 and response.json()["role"] == "borrower"
    response = client.delete(role_url(user))  # no body: no reason
    assert response.status_code == 422 and response.json()["code"] == "not_a_lender"
    rows = list(OperatorAction.objects.order_by("id").values_list("action", "actor", "target_user", "detail"))
    assert rows == [
        ("lender_granted", operator.pk, user.pk, "new officer"),
        ("lender_revoked", operator.pk, user.pk, "left"),
    ]


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ({"role": User.Role.LENDER}, 409, "already_lender"),
        ({"role": User.Role.OPERATOR}, 422, "user_is_operator"),
        ({"role": User.Role.BORROWER, "is_active": False}, 422, "user_inactive"),
    ],
)
def test_grant_refusals_keep_their_codes_and_write_nothing(operator, target, status, code):
    user = make_user(target.pop("role"), **target)
    before = state()
    response = client_for(operator).post(role_url(user), {}, format="json")
    assert response.status_code == status
    assert response.json()["code"] == code and response.json()["fields"] == {}
    assert state() == before


def test_a_reason_too_long_and_an_unknown_user_are_refused(operator):
    user = make_user(User.Role.BORROWER)
    before = state()
    client = client_for(operator)
    response = client.post(role_url(user), {"reason": "x" * 501}, format="json")
    assert (
        response.status_code == 400 and response.json()["code"] == "invalid" and "reason" in response.json()["fields"]
    )
    missing = reverse("api:operator-lender-role", args=[User.objects.order_by("-pk").first().pk + 1])
    assert client.post(missing, {}, format="json").status_code == 404
    assert client.delete(missing).status_code == 404
    assert state() == before


def test_grant_is_idempotent_with_a_key(operator):
    user = make_user(User.Role.BORROWER)
    client = client_for(operator)
    first = client.post(role_url(user), {"reason": "r"}, format="json", HTTP_IDEMPOTENCY_KEY="grant-1")
    again = client.post(role_url(user), {"reason": "r"}, format="json", HTTP_IDEMPOTENCY_KEY="grant-1")
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert again["Idempotent-Replayed"] == "true"
    assert OperatorAction.objects.count() == 1


def test_an_operator_pauses_and_resumes_new_loans(operator):
    deployment = make_deployment()
    client = client_for(operator)
    pause = reverse("api:operator-deployment-pause", args=[deployment.pk])
    resume = reverse("api:operator-deployment-resume", args=[deployment.pk])
    response = client.post(pause, {"reason": "node upgrade"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in body if key != "updated_at"} == {
        "deployment": deployment.pk,
        "chain_id": deployment.chain_id,
        "loan_contract_address": deployment.loan_contract_address,
        "new_loans_paused": True,
        "paused_reason": "node upgrade",
        "updated_by": operator.pk,
    }
    response = client.post(pause, {"reason": "again"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "new_loans_already_paused"
    response = client.post(resume, format="json")
    assert response.status_code == 200 and response.json()["new_loans_paused"] is False
    before = state()
    response = client.post(resume, format="json")
    assert response.status_code == 409 and response.json()["code"] == "new_loans_not_paused"
    response = client.post(pause, {"reason": ""}, format="json")
    assert response.status_code == 400 and "reason" in response.json()["fields"]
    response = client.post(pause, {}, format="json")
    assert response.status_code == 400 and "reason" in response.json()["fields"]
    assert state() == before
    assert OperatorAction.objects.filter(deployment=deployment).count() == 2


def test_the_audit_trail_is_listed_newest_first_and_paginated(operator):
    deployment = make_deployment()
    users = [make_user(User.Role.BORROWER) for _ in range(3)]
    client = client_for(operator)
    for user in users:
        client.post(role_url(user), {"reason": f"grant {user.pk}"}, format="json")
    client.post(reverse("api:operator-deployment-pause", args=[deployment.pk]), {"reason": "p"}, format="json")
    response = client.get(reverse("api:operator-action-list"), {"page_size": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 4 and body["next"] is not None and len(body["results"]) == 2
    newest = body["results"][0]
    assert {key: newest[key] for key in newest if key not in ("id", "created_at")} == {
        "action": "new_loans_paused",
        "actor": operator.pk,
        "actor_username": operator.username,
        "target_user": None,
        "deployment": deployment.pk,
        "broadcast": None,
        "detail": "p",
    }
    assert body["results"][1]["target_user"] == users[-1].pk
    only = client.get(reverse("api:operator-action-list"), {"action": "lender_granted"}).json()
    assert only["count"] == 3 and {row["action"] for row in only["results"]} == {"lender_granted"}
    bad = client.get(reverse("api:operator-action-list"), {"action": "nonsense"})
    assert bad.status_code == 400 and "action" in bad.json()["fields"]


def test_the_audit_trail_list_query_count_does_not_grow(operator, django_assert_max_num_queries):
    client = client_for(operator)
    client.post(role_url(make_user(User.Role.BORROWER)), {}, format="json")
    with django_assert_max_num_queries(10) as few:
        assert client.get(reverse("api:operator-action-list")).json()["count"] == 1
    queries = len(few)  # now: each request below clears the connection's query log
    for _ in range(5):
        client.post(role_url(make_user(User.Role.BORROWER)), {}, format="json")
    with django_assert_max_num_queries(queries):
        assert client.get(reverse("api:operator-action-list")).json()["count"] == 6


@pytest.mark.parametrize("who", ["anonymous", "borrower", "lender"])
def test_nobody_but_an_operator_may_call_these(who, operator):
    caller = None if who == "anonymous" else make_user(User.Role.LENDER if who == "lender" else User.Role.BORROWER)
    expected, code = (401, "not_authenticated") if caller is None else (403, "permission_denied")
    target = make_user(User.Role.BORROWER)
    lender = make_user(User.Role.LENDER)
    deployment, paused = make_deployment(), make_deployment()
    new_loans_pause(deployment=paused, actor=operator, reason="x")
    client = client_for(caller)
    before = state()
    calls = [
        client.post(role_url(target), {"reason": "x"}, format="json"),
        client.delete(role_url(lender), format="json"),
        client.post(reverse("api:operator-deployment-pause", args=[deployment.pk]), {"reason": "x"}, format="json"),
        client.post(reverse("api:operator-deployment-resume", args=[paused.pk]), format="json"),
        client.get(reverse("api:operator-action-list")),
    ]
    for response in calls:
        assert (response.status_code, response.json()["code"]) == (expected, code), response.request
    assert state() == before


def test_creating_a_loan_while_paused_is_409_new_loans_paused(desk_deployment, operator, monkeypatch):  # noqa: F811
    class NoEstimate:
        def estimatesmartfee(self, conf_target, estimate_mode="conservative"):
            return {"errors": ["Insufficient data"], "blocks": 0}

    monkeypatch.setattr(funding, "bitcoin_rpc", lambda **kwargs: NoEstimate())
    new_loans_pause(deployment=desk_deployment, actor=operator, reason="maintenance")
    borrower = make_user(User.Role.BORROWER)
    response = client_for(borrower).post(
        reverse("api:loan-list"), {**loan_request(), "amount_wei": str(10**16)}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "new_loans_paused" and "maintenance" in response.json()["message"]
    assert not Loan.objects.exists()
