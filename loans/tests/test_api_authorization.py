"""One table drives the authorization test: every endpoint of /api/v1/ x {anonymous, another borrower, the owner,
a lender, an operator} gives the expected status (``api_table.ENDPOINTS``), and a refusal writes nothing. A route
in ``loans/api/urls.py`` missing from the table fails here: add its row."""

from __future__ import annotations

import pytest

from .api_table import (
    ENDPOINTS,
    ROLES,
    STATUS_CODES,
    World,
    api_endpoints,
    desk_settings,
    make_world,
    row_counts,
    url_for,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db, settings) -> World:
    desk_settings(settings)
    return make_world()


def test_every_routed_endpoint_has_a_row_and_every_row_a_route():
    routed = api_endpoints()
    missing = sorted(routed - ENDPOINTS.keys())
    stale = sorted(ENDPOINTS.keys() - routed)
    assert not missing, f"endpoints without a row in loans/tests/api_table.py ENDPOINTS: {missing}"
    assert not stale, f"rows in ENDPOINTS for no route: {stale}"


def test_every_row_names_every_role():
    assert all(tuple(row.expect) == ROLES for row in ENDPOINTS.values())


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS), ids="{0[1]} {0[0]}".format)
def test_each_role_gets_the_expected_status(world: World, endpoint, role):
    name, method = endpoint
    row = ENDPOINTS[endpoint]
    client = world.client(role)
    if row.setup is not None:
        row.setup(world)
    url = url_for(name, world, row.kwargs(world) if row.kwargs is not None else None)
    body = row.body(world) if row.body is not None else None
    before = row_counts()
    response = client.generic(method, url, **_json(body))
    expected = row.expect[role]
    assert response.status_code == expected, (role, endpoint, response.status_code, _content(response))
    if expected >= 400:
        code = row.codes.get(role, STATUS_CODES.get(expected))
        assert response.json()["code"] == code, response.json()
        assert row_counts() == before  # a refusal writes nothing


def _json(body: dict | None) -> dict:
    if body is None:
        return {}
    import json

    return {"data": json.dumps(body), "content_type": "application/json"}


def _content(response) -> str:
    return response.content[:500].decode(errors="replace")
