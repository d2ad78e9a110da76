"""The locust users of ``bench_desk_load.py`` (run by it in a process of their own: locust patches the standard
library with gevent, which must not happen in a process running Django).

The signed-in clients, their loans and tokens come from the JSON file named by ``DESK_LOAD_FIXTURE``, written by
the benchmark's seeding step: a borrower session with one of its own loans, the lender's session, and a bearer
token (lender or borrower) for the API. Every client waits for nothing between requests (a closed loop): the
figures are the app's latency under ``--users`` clients asking as fast as it answers. Each task has a tag of its
name; the benchmark runs one tag at a time, so a slow page does not queue the others behind it.
"""

from __future__ import annotations

import json
import os
import random

from locust import HttpUser, constant, tag, task

FIXTURE = json.loads(open(os.environ["DESK_LOAD_FIXTURE"]).read())  # noqa: SIM115 (read once at import)


def _ok(response) -> None:
    """A 200 with a body is a success; anything else is a failure (redirect to sign-in, 4xx, 5xx)."""
    if response.status_code != 200 or not response.content:
        response.failure(f"HTTP {response.status_code}")
    else:
        response.success()


class DeskClient(HttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.borrower = random.choice(FIXTURE["borrowers"])

    @tag("borrower_loan_page")
    @task
    def borrower_loan_page(self) -> None:
        loan_id = random.choice(self.borrower["loan_ids"])
        with self.client.get(
            f"/borrower/loans/{loan_id}/",
            name="GET /borrower/loans/<id>/",
            cookies={"sessionid": self.borrower["session"]},
            allow_redirects=False,
            catch_response=True,
        ) as response:
            _ok(response)

    @tag("lender_queue")
    @task
    def lender_queue(self) -> None:
        with self.client.get(
            "/lender/queue/",
            name="GET /lender/queue/",
            cookies={"sessionid": FIXTURE["lender"]["session"]},
            allow_redirects=False,
            catch_response=True,
        ) as response:
            _ok(response)

    @tag("lender_desk")
    @task
    def lender_desk(self) -> None:
        with self.client.get(
            "/lender/",
            name="GET /lender/",
            cookies={"sessionid": FIXTURE["lender"]["session"]},
            allow_redirects=False,
            catch_response=True,
        ) as response:
            _ok(response)

    @tag("api_loan_list_lender")
    @task
    def api_loan_list_lender(self) -> None:
        with self.client.get(
            "/api/v1/loans/",
            name="GET /api/v1/loans/ (lender)",
            headers={"Authorization": f"Bearer {FIXTURE['lender']['token']}"},
            catch_response=True,
        ) as response:
            _ok(response)

    @tag("api_loan_list_borrower")
    @task
    def api_loan_list_borrower(self) -> None:
        with self.client.get(
            "/api/v1/loans/",
            name="GET /api/v1/loans/ (borrower)",
            headers={"Authorization": f"Bearer {self.borrower['token']}"},
            catch_response=True,
        ) as response:
            _ok(response)
