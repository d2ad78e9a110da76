"""The deployment policy's automation switches in the admin: an operator turns them on; the pause stays read-only
(it has its own audited actions); nobody else may change them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from loans.models import DeploymentPolicy, User

from .factories import make_deployment, make_user

pytestmark = pytest.mark.django_db

SWITCHES = ["auto_offer", "auto_accept_repayment", "auto_withdraw_offer", "auto_mark_default", "auto_capture"]


def test_an_operator_turns_the_automation_switches_on_and_the_pause_stays_as_it_was(client, operator):
    policy = DeploymentPolicy.objects.create(deployment=make_deployment(), new_loans_paused=False)
    url = reverse("admin:loans_deploymentpolicy_change", args=[policy.pk])
    client.force_login(operator)
    page = client.get(url)
    assert page.status_code == 200
    for name in SWITCHES:
        assert f'name="{name}"' in page.content.decode()
    response = client.post(url, {"auto_offer": "on", "auto_capture": "on", "new_loans_paused": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    policy.refresh_from_db()
    assert [getattr(policy, name) for name in SWITCHES] == [True, False, False, False, True]
    assert (policy.new_loans_paused, policy.updated_by) == (False, operator)


@pytest.mark.parametrize("role", [User.Role.LENDER, User.Role.BORROWER])
def test_nobody_else_changes_them(client, role):
    policy = DeploymentPolicy.objects.create(deployment=make_deployment())
    client.force_login(make_user(role, is_staff=True))
    response = client.post(reverse("admin:loans_deploymentpolicy_change", args=[policy.pk]), {"auto_offer": "on"})
    assert response.status_code in (302, 403)
    policy.refresh_from_db()
    assert policy.auto_offer is False
