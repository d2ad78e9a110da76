"""The web app keeps no database connection per request it served.

Under ASGI (daphne, production's web server) each request's synchronous code runs in a thread of its own, so a
persistent connection (``DATABASE_CONN_MAX_AGE`` > 0) stays open per thread until PostgreSQL refuses new clients;
the load benchmark ran out of 100 connections that way. The project's default closes each request's connection.
Here daphne serves the project's ASGI application (forked from this process, as channels' live-server test case
does: the test database and this test's settings) and the database counts its connections.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from daphne.testing import DaphneProcess
from django.db import connection

from .caches import use_own_cache

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REQUESTS = 8  # under the sign-in rate limit (10 a minute)

_inherited_connections: list = []


def _application():
    from channels.routing import get_default_application

    return get_default_application()


def _own_database_connections() -> None:
    """In the forked server: keep the parent's open connections referenced (nothing closes their sockets under the
    parent) and let the server open its own."""
    from django.db import connections

    for inherited in connections.all(initialized_only=True):
        _inherited_connections.append(inherited.connection)
        inherited.connection = None


def connections_to_this_database() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


@pytest.fixture
def daphne_url(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    use_own_cache(settings)  # the sign-in rate limit's counters
    server = DaphneProcess("127.0.0.1", _application, setup=_own_database_connections)
    server.start()
    if not server.ready.wait(30):
        server.terminate()
        raise RuntimeError("daphne did not start")
    try:
        yield f"http://127.0.0.1:{server.port.value}"
    finally:
        server.terminate()
        server.join(10)


def test_daphne_keeps_no_database_connection_per_request(daphne_url):
    before = connections_to_this_database()
    for _ in range(REQUESTS):  # each writes a sign-in nonce: a database connection in the request's own thread
        request = urllib.request.Request(f"{daphne_url}/api/v1/auth/nonce", data=b"{}", method="POST")  # noqa: S310
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own test server
            assert response.status == 201 and json.loads(response.read())["nonce"]
    assert connections_to_this_database() - before <= 1, "a connection left open per request served"
