"""The lender's desk pages (Django test client): the dashboard, the queue, a loan's lender steps. Lenders and
operators only (403 for a borrower); each page's htmx partial is the whole page's same fragment; a refused step
shows the service's code and message and changes nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from loans.models import BitcoinBroadcast, Loan, User

from .factories import make_user
from .test_pages_borrower import _desk, _same_fragment, borrower, loan, values  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


@pytest.fixture
def lender():
    return make_user(User.Role.LENDER)


def test_a_borrower_gets_403_on_every_desk_page(client, borrower, loan):  # noqa: F811
    client.force_login(borrower)
    for url in (
        reverse("pages:lender-dashboard"),
        reverse("pages:lender-queue"),
        reverse("pages:lender-loan", args=[loan.pk]),
    ):
        assert client.get(url).status_code == 403
    response = client.post(reverse("pages:lender-loan-action", args=[loan.pk, "collateral-lock"]))
    assert response.status_code == 403
    assert not BitcoinBroadcast.objects.exists()


def test_the_dashboard_shows_capital_and_loans_by_state_and_its_partial_is_the_same(client, lender, loan):  # noqa: F811
    Loan.objects.filter(pk=loan.pk).update(status=Loan.Status.ACTIVE, activated_evm_block=10)
    client.force_login(lender)
    body = _same_fragment(client, reverse("pages:lender-dashboard"), "dashboard")
    assert f"{loan.amount_wei} wei, with {loan.bond_wei} wei of bonds" in body
    assert "<td>Active</td>" in body
    assert '<dd class="in-units">0.01 rBTC, with 0.001 rBTC of bonds</dd>' in body
    assert '<dd class="in-units">0 rBTC, with 0 rBTC of bonds</dd>' in body  # no open offer


def test_an_operator_sees_the_queue_and_its_partial_is_the_same(client):
    client.force_login(make_user(User.Role.OPERATOR))
    body = _same_fragment(client, reverse("pages:lender-queue"), "queue")
    assert "No request is waiting" in body


def test_the_lender_loan_page_and_a_refused_step_shows_its_reason(client, lender, loan):  # noqa: F811
    client.force_login(lender)
    body = _same_fragment(client, reverse("pages:lender-loan", args=[loan.pk]), "lender-loan")
    assert f"{loan.amount_wei} wei (0.01 rBTC); repayment {loan.repayment_wei} wei (" in body
    assert f"bond {loan.bond_wei} wei (0.001 rBTC)</dd>" in body
    before = Loan.objects.values().get(pk=loan.pk)
    response = client.post(reverse("pages:lender-loan-action", args=[loan.pk, "collateral-lock"]))
    body = response.content.decode()
    assert response.status_code == 422 and 'data-code="borrower_preimage_unknown"' in body
    assert "<html" in body and 'id="lender-loan"' in body
    assert Loan.objects.values().get(pk=loan.pk) == before and not BitcoinBroadcast.objects.exists()
    assert client.post(reverse("pages:lender-loan-action", args=[loan.pk, "nope"])).status_code == 404


def test_the_lender_loan_page_of_a_missing_loan_is_404(client, lender):
    client.force_login(lender)
    assert client.get(reverse("pages:lender-loan", args=[999999])).status_code == 404


def test_the_lender_loan_page_says_an_unknown_chain_height_in_words(client, lender, loan):  # noqa: F811
    from loans.models import ChainCursor

    from .test_bitcoin_actions import follow

    client.force_login(lender)
    url = reverse("pages:lender-loan", args=[loan.pk])
    follow(7)
    ChainCursor.objects.filter(chain=ChainCursor.Chain.BITCOIN).update(failures=1)
    body = _same_fragment(client, url, "lender-loan")
    assert (
        "Seen from EVM block unknown (the desk has not read the EVM chain yet: its watcher has not run, or the EVM "
        "node is not answering) and Bitcoin height 7."
    ) in body
    assert "watcher's last 1 read of it failed" in body


def test_a_closed_loan_has_no_countdowns_on_the_lender_page(client, lender, loan):  # noqa: F811
    from django.utils import timezone

    from .factories import hex32

    closed_at = timezone.now().replace(microsecond=0)
    Loan.objects.filter(pk=loan.pk).update(
        status=Loan.Status.REPAID,
        contract_loan_id=1,
        bitcoin_status=Loan.BitcoinStatus.RELEASED,
        escrow_txid=hex32(),
        escrow_vout=0,
        escrow_sats=1_200_000,
        escrow_btc_height=500,
        collateral_btc_height=510,
        activated_evm_block=100,
        closed_at=closed_at,
    )
    client.force_login(lender)
    body = _same_fragment(client, reverse("pages:lender-loan", args=[loan.pk]), "lender-loan")
    countdowns = body.split('class="deadlines"')[1].split("</section>")[0]
    assert "deadline (t_D)" not in countdowns and "matures" not in countdowns
    assert f"This loan is closed: Repaid, Collateral released (TX_release), since {closed_at:%Y-%m-%d %H:%M} UTC" in (
        countdowns
    )


# ------------------------------------------------------------------------------------------------ at scale

HEAD = 1_000_000  # the followed EVM block


def _follow_evm(block: int) -> None:
    from loans.models import ChainCursor

    from .factories import hex32

    ChainCursor.objects.update_or_create(
        chain=ChainCursor.Chain.EVM, defaults={"block_number": block, "block_hash": hex32(), "parent_hash": hex32()}
    )


def _desk_loans(count: int, start: int = 0) -> None:
    """``count`` loans in every state, open ones with deadlines spread around ``HEAD``: passed (no countdown for
    withdraw-offer and mark-default, 0 for accept-repayment), due in the next block, later; equal distances on
    several loans (the order between them is the id's); a closed open-status loan and an active one without its
    activation block (no countdown either)."""
    from django.utils import timezone

    from .factories import make_loan

    for n in range(start, start + count):
        kind, spread = n % 8, (n * 7) % 40 - 15
        fields: dict = {"status": Loan.Status.ACTIVE}
        if kind == 0:
            fields = {"status": Loan.Status.OFFERED, "offered_evm_block": HEAD + 1 - 1000 + spread}
        elif kind in (1, 6):
            fields["activated_evm_block"] = HEAD + 1 - 540_000 + spread
            fields["closed_at"] = timezone.now() if kind == 6 else None
        elif kind == 2:
            # most of them past t_L: more at 0 than the desk shows, in id order, however long ago each passed
            fields = {"status": Loan.Status.REPAYMENT_IN_PROGRESS, "repayment_evm_block": HEAD - 1510 + spread}
        elif kind == 3:
            fields = {"status": Loan.Status.REQUESTED}
        elif kind == 4:
            fields = {"status": Loan.Status.DRAFT}
        elif kind == 5:
            fields = {"status": Loan.Status.DEFAULTED, "activated_evm_block": HEAD - 540_500}
        make_loan(contract_loan_id=None if kind == 4 else n + 1, **fields)


def _every_open_loan_walked(user) -> list[tuple]:
    """The deadlines coming up as the desk listed them when it walked every open loan: each loan's lender steps
    that count down, nearest first (then by loan id)."""
    from loans import selectors
    from loans.pages.borrower import Moment

    rows = []
    for one in Loan.objects.exclude(status__in=Loan.TERMINAL_STATUSES).exclude(status=Loan.Status.DRAFT):
        for action in selectors.loan_next_actions(loan=one, user=user):
            moment = Moment.of(action.closes if action.open else action.opens)
            if action.party == "lender" and moment is not None and moment.blocks_remaining is not None:
                rows.append((moment.blocks_remaining, one.pk, action.name, action.open, moment.block))
    return sorted(rows)


def _dashboard(client) -> tuple[list[tuple], str, int]:
    """The dashboard's rows (as ``_every_open_loan_walked`` has them), its page and its queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("pages:lender-dashboard"))
    assert response.status_code == 200
    rows = [
        (row["moment"].blocks_remaining, row["loan"].pk, row["action"]["name"], row["action"]["open"],
         row["moment"].block)
        for row in response.context["coming"]
    ]  # fmt: skip
    return rows, response.content.decode(), len(queries)


def test_the_dashboard_lists_the_nearest_deadlines_in_constant_queries(client, lender):
    from loans.pages.lender import DESK_COUNTDOWNS_SHOWN

    _follow_evm(HEAD)
    client.force_login(lender)
    client.get(reverse("pages:lender-dashboard"))  # warm: the first request loads templates and content types

    _desk_loans(16)  # a small desk: every countdown shown, as the walk over every loan had them
    rows, body, small_desk_queries = _dashboard(client)
    assert rows == _every_open_loan_walked(lender) and 0 < len(rows) < DESK_COUNTDOWNS_SHOWN
    assert {name for _, _, name, _, _ in rows} == {"withdraw-offer", "mark-default", "accept-repayment"}
    assert "more loan" not in body
    first_blocks, first_pk, _, _, first_block = rows[0]
    assert f"Loan {first_pk}</a>: " in body and f"EVM block {first_block}: {first_blocks} block" in body

    _desk_loans(304, start=16)  # 320 loans: the nearest DESK_COUNTDOWNS_SHOWN, the rest counted
    rows, body, big_desk_queries = _dashboard(client)
    walked = _every_open_loan_walked(lender)
    assert len(walked) > DESK_COUNTDOWNS_SHOWN + 1
    assert rows == walked[:DESK_COUNTDOWNS_SHOWN] and walked[DESK_COUNTDOWNS_SHOWN][0] == 0  # ties beyond the list
    assert body.count('<li><a href="/lender/loans/') == DESK_COUNTDOWNS_SHOWN
    more = len(walked) - DESK_COUNTDOWNS_SHOWN
    assert f"And {more} more loans with a deadline running, none nearer than these.</p>" in body
    assert big_desk_queries == small_desk_queries


def test_the_dashboard_has_no_countdown_while_the_evm_chain_is_not_followed(client, lender):
    _desk_loans(16)
    client.force_login(lender)
    rows, body, _ = _dashboard(client)
    assert rows == [] and "No deadline is running." in body and "more loan" not in body


def _requests(count: int) -> list[Loan]:
    from loans.models import ContractDeployment

    from .factories import make_loan

    deployment = ContractDeployment.objects.order_by("-created_at", "-id").first()
    first = Loan.objects.count() + 1
    return [
        make_loan(
            deployment=deployment, parameters=deployment.parameters, status=Loan.Status.REQUESTED,
            contract_loan_id=first + n,
        )
        for n in range(count)
    ]  # fmt: skip


def test_the_queue_is_paged_and_only_the_page_is_checked_on_the_node(client, lender, settings, monkeypatch):
    import re

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import loans.escrow
    from loans.pages.lender import QUEUE_PAGE_SIZE

    settings.BITCOIN_RPC_URL = "http://127.0.0.1:9"  # no node: the requests name no escrow yet, nothing to ask
    checked: list[int] = []
    real_check = loans.escrow.escrow_check

    def check_and_note(**kwargs):
        checked.append(kwargs["loan"].pk)
        return real_check(**kwargs)

    monkeypatch.setattr(loans.escrow, "escrow_check", check_and_note)
    waiting = _requests(QUEUE_PAGE_SIZE + 1)
    client.force_login(lender)
    url = reverse("pages:lender-queue")

    def rows(body: str) -> list[int]:
        return [int(pk) for pk in re.findall(r'<td><a href="/lender/loans/\d+/">Loan (\d+)</a></td>', body)]

    with CaptureQueriesContext(connection) as queries:
        body = client.get(url).content.decode()
    first_page_queries = len(queries)
    assert rows(body) == checked == [request.pk for request in waiting[:QUEUE_PAGE_SIZE]]
    assert f"51 requests waiting; page 1 of 2: requests 1 to {QUEUE_PAGE_SIZE}, oldest first." in body
    assert f'<a rel="next" href="{url}?page=2">Next page</a>' in body and 'rel="prev"' not in body
    assert "escrow_not_recorded" in body

    checked.clear()
    body = _same_fragment(client, f"{url}?page=2", "queue")
    assert rows(body) == [waiting[-1].pk] and checked == [waiting[-1].pk] * 2  # the page and its partial
    assert f"page 2 of 2: requests {QUEUE_PAGE_SIZE + 1} to {QUEUE_PAGE_SIZE + 1}, oldest first." in body
    assert f'<a rel="prev" href="{url}?page=1">Previous page</a>' in body and 'rel="next"' not in body
    assert f'hx-get="{url}?page=2"' in body  # the page polls itself, not the first page

    checked.clear()
    for bad in ("3", "0", "abc"):
        assert client.get(url, {"page": bad}).status_code == 404
    assert checked == []

    _requests(3 * QUEUE_PAGE_SIZE)  # four times the queue: the same page costs the same queries
    checked.clear()
    with CaptureQueriesContext(connection) as queries:
        body = client.get(url).content.decode()
    assert len(queries) == first_page_queries and len(checked) == QUEUE_PAGE_SIZE
    assert f"{4 * QUEUE_PAGE_SIZE + 1} requests waiting; page 1 of 5:" in body


def test_a_short_queue_has_no_page_links(client, lender, settings):
    settings.BITCOIN_RPC_URL = "http://127.0.0.1:9"
    (waiting,) = _requests(1)
    client.force_login(lender)
    body = client.get(reverse("pages:lender-queue")).content.decode()
    assert f"Loan {waiting.pk}</a>" in body and "1 request waiting." in body
    assert 'class="pages"' not in body and f'hx-get="{reverse("pages:lender-queue")}"' in body
