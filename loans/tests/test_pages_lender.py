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
