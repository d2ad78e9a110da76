"""schemathesis over /api/v1/'s OpenAPI schema against a live server, signed in as a borrower and as the lender
(bearer tokens): no 5xx, and every answer is one the schema documents (status, content type, body, headers).

Bounded and deterministic: a few derandomized examples per operation (once with the ``id`` the borrower's own loan,
once as generated), no example database, no deadline; a failure names the operation and the check. The node
clients point at a closed port (``api_table.desk_settings``): an endpoint that needs a node answers its documented
refusal. Rate limits are not counted here (a dummy cache), so no example is spent on a 429.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from loans.services.accounts import api_token_issue

from .api_table import desk_settings, make_world

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

EXAMPLES = 5  # per operation and per path-parameter strategy


def no_server_error_but_a_documented_503(ctx, response, case):
    """No 5xx, except a 503 the operation documents (a chain node that could not be asked)."""
    if response.status_code == 503 and "503" in case.operation.definition.raw.get("responses", {}):
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    no_server_error_but_a_documented_503,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SETTINGS = hypothesis_settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing example is reported as found
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def api_settings(settings):
    desk_settings(settings)
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    return settings


@pytest.mark.parametrize("role", ["owner", "lender"])
def test_every_operation_answers_as_its_schema_says(live_server, api_settings, role):
    world = make_world()
    user = world.people[role]
    body = requests.get(f"{live_server.url}/api/v1/schema/", headers={"Accept": "application/json"}, timeout=30)
    assert body.status_code == 200, body.text[:300]
    schema = schemathesis.openapi.from_dict(body.json())
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        pinned = {"id": world.loan.pk} if "{id}" in operation.path else None  # drf-spectacular names pk "id"
        strategies = [operation.as_strategy(path_parameters=pinned)] if pinned else []
        strategies.append(operation.as_strategy())
        for strategy in strategies:
            try:
                _exercise(strategy, live_server.url, user)
            except (Exception, BaseExceptionGroup) as error:  # every operation is tried; all failures reported together
                failures.append(f"{operation.label}: {type(error).__name__}: {str(error)[:1500]}")
    assert not failures, "\n\n".join(failures)


def _exercise(strategy, base_url: str, user) -> None:
    @SETTINGS
    @given(case=strategy)
    def run(case) -> None:
        raw, _ = api_token_issue(user=user)  # a fresh one: POST auth/logout revokes the one it came with
        response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {raw}"}, timeout=30)
        case.validate_response(response, checks=CHECKS)

    run()
