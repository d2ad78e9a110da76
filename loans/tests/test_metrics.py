"""/metrics (loans/metrics.py): who may scrape; every gauge of the desk with exact values from the database; the
request and database metrics of django-prometheus; a database or broker that fails gives a 0 "up" gauge, not a
failed scrape; and the gauges move when the chains move (the regtest node and anvil, with the real watchers)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.db import DatabaseError
from django.urls import reverse
from django.utils import timezone
from django_q.brokers import get_broker
from prometheus_client.parser import text_string_to_metric_families

from bitcoin.rpc import BitcoinRPC
from loans import metrics
from loans.models import Automation, BitcoinTransaction, ChainCursor, EvmEvent, Loan

from .factories import hex32, make_loan
from .test_sync_bitcoin import ESCROW_SATS, make_chain_loan

pytestmark = pytest.mark.django_db

TOKEN = "metrics-test-token"


@pytest.fixture(autouse=True)
def _metrics_settings(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []


@pytest.fixture
def private_queue(monkeypatch):
    """django-q2's broker on a queue of this test's own (parallel tests share the Redis database)."""
    broker = get_broker(list_key=f"metrics-test-{uuid.uuid4().hex}")
    monkeypatch.setattr(metrics, "_broker", lambda name: broker)
    yield broker
    broker.delete_queue()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client, **headers: str) -> Samples:
    response = client.get(reverse("metrics"), HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(f"loan_desk_{name}", frozenset(labels.items()))]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == f"loan_desk_{name}"}


# -- who may scrape ----------------------------------------------------------------------------------------------


def test_the_token_opens_metrics_and_nothing_else_does(client):
    url = reverse("metrics")
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"}):
        denied = client.get(url, **headers)
        assert denied.status_code == 401 and denied["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert b"loan_desk" not in denied.content and b"django_" not in denied.content
    allowed = client.get(url, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert allowed.status_code == 200 and b"loan_desk_metrics_up 1.0" in allowed.content
    assert allowed["Cache-Control"].startswith("max-age=0")
    assert client.post(url, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_without_a_token_only_the_allowed_networks_may_scrape(client, settings):
    settings.METRICS_TOKEN = ""
    url = reverse("metrics")
    denied = client.get(url, HTTP_AUTHORIZATION="Bearer ")  # an empty token never matches an empty setting
    assert denied.status_code == 403 and "WWW-Authenticate" not in denied
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "::1"]
    assert client.get(url).status_code == 403  # the test client comes from 127.0.0.1
    assert client.get(url, REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get(url, REMOTE_ADDR="::1").status_code == 200
    assert client.get(url, REMOTE_ADDR="11.0.0.1").status_code == 403
    assert client.get(url, REMOTE_ADDR="not an address").status_code == 403


def test_settings_refuse_a_malformed_network_and_default_to_no_network_without_debug():
    code = "import django; django.setup(); from django.conf import settings; print(settings.METRICS_ALLOWED_NETWORKS)"
    env = {"DJANGO_SETTINGS_MODULE": "loanproject.settings", "PYTEST_VERSION": "x", "DJANGO_DEBUG": "0"}
    base = {"PATH": "/usr/bin:/bin", **env}
    ok = subprocess.run(
        [sys.executable, "-c", code], env=base, capture_output=True, text=True, cwd=django_settings.BASE_DIR
    )
    assert ok.returncode == 0 and ok.stdout.strip() == "[]", ok.stderr
    debug = subprocess.run(
        [sys.executable, "-c", code], env={**base, "DJANGO_DEBUG": "1"}, capture_output=True, text=True,
        cwd=django_settings.BASE_DIR,
    )  # fmt: skip
    assert debug.stdout.strip() == "['127.0.0.0/8', '::1']", debug.stderr
    bad = subprocess.run(
        [sys.executable, "-c", code], env={**base, "METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,example.com"},
        capture_output=True, text=True, cwd=django_settings.BASE_DIR,
    )  # fmt: skip
    assert bad.returncode != 0 and "METRICS_ALLOWED_NETWORKS: 'example.com'" in bad.stderr


# -- every gauge, exact ------------------------------------------------------------------------------------------


def _event(loan: Loan | None = None, **fields) -> EvmEvent:
    values = {
        "chain_id": 31337,
        "contract_address": "0x" + "11" * 20,
        "block_number": 5,
        "block_hash": hex32(),
        "tx_hash": hex32(),
        "log_index": 0,
        "name": "LoanRequested",
        "args": {},
        "loan": loan,
    }
    return EvmEvent.objects.create(**{**values, **fields})


def _funding(loan: Loan, **fields) -> BitcoinTransaction:
    values = {"role": "escrow_funding", "txid": hex32(), "vout": 0, "value_sats": 5000}
    return BitcoinTransaction.objects.create(loan=loan, **{**values, **fields})


def test_every_gauge_of_the_desk_has_its_exact_value(client, private_queue):
    now = timezone.now()
    offered = [make_loan(status="offered", amount_wei=10**16 * k) for k in (1, 3)]
    repaying = make_loan(
        status="repayment_in_progress", bitcoin_status="collateral_locked", collateral_sats=700_000, amount_wei=10**17
    )
    make_loan(status="active", bitcoin_status="collateral_locked", collateral_sats=250_000)
    escrowed = make_loan(status="requested", bitcoin_status="escrow_confirmed", escrow_sats=1_500_000)
    make_loan(status="repaid", bitcoin_status="released", collateral_sats=999)  # released: not locked any more
    make_loan()  # a draft

    ChainCursor.objects.create(chain="evm", block_number=90, block_hash=hex32(), parent_hash=hex32(), tip_number=100)
    ChainCursor.objects.create(
        chain="bitcoin", block_number=7, block_hash=hex32(), parent_hash=hex32(), tip_number=7, failures=2
    )
    _event(), _event(escrowed), _event(applied_at=now), _event(orphaned_at=now)
    _funding(escrowed), _funding(escrowed, applied_at=now)
    Automation.objects.create(loan=offered[0], action="accept-repayment", party="lender")
    Automation.objects.create(loan=offered[1], action="accept-repayment", party="lender", state="sent")
    Automation.objects.create(loan=escrowed, action="accept-repayment", party="lender", state="sent")
    Automation.objects.create(loan=escrowed, action="exit", party="borrower", state="failed")
    Automation.objects.create(loan=repaying, action="release", party="borrower", state="done", done_at=now)
    for _ in range(3):
        private_queue.enqueue("a task")

    samples = scrape(client)

    assert value(samples, "sync_lag_blocks", chain="evm") == 10
    assert value(samples, "sync_lag_blocks", chain="bitcoin") == 0
    assert (value(samples, "sync_block", chain="evm"), value(samples, "sync_tip_block", chain="evm")) == (90, 100)
    assert value(samples, "sync_consecutive_failures", chain="bitcoin") == 2
    assert value(samples, "unconfirmed_facts", chain="evm") == 2  # neither applied nor orphaned
    assert value(samples, "unconfirmed_facts", chain="bitcoin") == 1
    assert series(samples, "automations_pending") == {
        frozenset({"party": "lender", "action": "accept-repayment", "state": "pending"}.items()): 1,
        frozenset({"party": "lender", "action": "accept-repayment", "state": "sent"}.items()): 2,
    }
    assert series(samples, "automations_failed") == {frozenset({"party": "borrower", "action": "exit"}.items()): 1}
    assert value(samples, "task_queue_depth", broker="redis") == 3
    assert value(samples, "task_broker_up", broker="redis") == 1

    by_status = {dict(labels)["status"]: n for labels, n in series(samples, "loans_by_status").items()}
    assert by_status == {status: 0 for status in Loan.Status.values} | {
        "draft": 1, "requested": 1, "offered": 2, "active": 1, "repayment_in_progress": 1, "repaid": 1,
    }  # fmt: skip
    by_bitcoin = {dict(labels)["status"]: n for labels, n in series(samples, "loans_by_bitcoin_status").items()}
    assert by_bitcoin == {status: 0 for status in Loan.BitcoinStatus.values} | {
        "none": 3, "escrow_confirmed": 1, "collateral_locked": 2, "released": 1,
    }  # fmt: skip

    for loan in (*offered, repaying):
        loan.refresh_from_db()
    assert value(samples, "contract_held_wei", reason="offer") == float(sum(o.amount_wei + o.bond_wei for o in offered))
    assert value(samples, "contract_held_wei", reason="repayment") == float(repaying.repayment_wei + repaying.bond_wei)
    assert value(samples, "contract_held_wei", reason="offer") == 4 * 10**16 * 110 // 100  # bond 10 %
    assert value(samples, "collateral_locked_sats") == 950_000
    assert value(samples, "escrow_held_sats") == 1_500_000
    assert value(samples, "metrics_up") == 1
    assert value(samples, "metrics_scrape_duration_seconds") > 0


def test_an_empty_desk_gives_zeros_and_no_lag_for_a_chain_never_synced(client, private_queue):
    samples = scrape(client)
    assert not series(samples, "sync_lag_blocks") and not series(samples, "sync_block")
    assert value(samples, "unconfirmed_facts", chain="evm") == value(samples, "unconfirmed_facts", chain="bitcoin") == 0
    assert not series(samples, "automations_pending") and not series(samples, "automations_failed")
    assert set(series(samples, "loans_by_status").values()) == {0}
    assert value(samples, "contract_held_wei", reason="offer") == value(samples, "collateral_locked_sats") == 0
    assert value(samples, "task_queue_depth", broker="redis") == 0


def test_large_wei_sums_are_exact_in_the_database_and_float_on_the_wire(client, private_queue):
    amount = 2 * 10**20 + 1  # 200 rBTC and a wei: above 2**53, so the float rounds
    make_loan(status="offered", amount_wei=amount, bond_wei=Decimal(0))
    assert value(scrape(client), "contract_held_wei", reason="offer") == float(amount)


def test_the_desk_gauges_cost_a_fixed_number_of_queries(django_assert_max_num_queries, private_queue):
    for status in ("offered", "active", "requested"):
        loan = make_loan(status=status)
        Automation.objects.create(loan=loan, action="offer", party="lender")
        _event(loan)
    with django_assert_max_num_queries(5):  # cursors, EVM facts, Bitcoin facts, automations, loans (Redis broker)
        families = list(metrics.DeskCollector().collect())
    assert {family.name for family in families} >= {"loan_desk_loans_by_status", "loan_desk_sync_lag_blocks"}


def test_django_prometheus_counts_requests_and_database_queries(client, private_queue):
    client.get(reverse("healthz"))
    samples = scrape(client)
    by_view = {
        dict(labels).get("view"): v
        for (name, labels), v in samples.items()
        if name == "django_http_responses_total_by_status_view_method_total"
    }
    assert by_view.get("healthz", 0) >= 1
    assert any(name == "django_db_execute_total" and dict(labels)["vendor"] == "postgresql" for name, labels in samples)


def test_a_database_that_fails_gives_metrics_up_0_not_a_failed_scrape(client, monkeypatch, private_queue, caplog):
    def broken():
        raise DatabaseError("connection lost")

    monkeypatch.setattr(metrics, "loan_gauges", broken)
    samples = scrape(client)
    assert value(samples, "metrics_up") == 0 and not series(samples, "loans_by_status")
    assert value(samples, "task_broker_up", broker="redis") == 1  # the broker still answered
    assert "could not be read from the database" in caplog.text


def test_a_broker_that_fails_gives_task_broker_up_0(client, monkeypatch):
    class Down:
        def queue_size(self):
            raise ConnectionError("redis is down")

    monkeypatch.setattr(metrics, "_broker", lambda name: Down())
    samples = scrape(client)
    assert value(samples, "task_broker_up", broker="redis") == 0 and not series(samples, "task_queue_depth")
    assert value(samples, "metrics_up") == 1


def test_the_orm_broker_is_read_when_q_cluster_has_no_redis(settings, monkeypatch):
    monkeypatch.setitem(settings.Q_CLUSTER, "orm", "default")
    monkeypatch.delitem(settings.Q_CLUSTER, "redis", raising=False)
    assert metrics.broker_name() == "orm"


# -- the gauges move with the chains -----------------------------------------------------------------------------


@pytest.mark.integration
def test_an_escrow_confirmed_on_regtest_moves_lag_unconfirmed_and_bitcoin_status_gauges(
    client, private_queue, settings, btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]]
):
    from loans.sync.bitcoin import sync_bitcoin

    settings.BITCOIN_NETWORK = "regtest"
    start = btc_rpc.getblockcount() + 1
    loan = make_chain_loan()
    before = scrape(client)
    assert value(before, "loans_by_bitcoin_status", status="none") == 1
    assert not series(before, "sync_lag_blocks")

    escrow = loan.fund(btc_rpc)  # mined in one block
    loan.request(escrow)
    btc_mine(2)
    report = sync_bitcoin(rpc=btc_rpc, confirmations=3, start_height=start, max_blocks=escrow.height - start + 1)
    assert (report.height, report.recorded, report.applied) == (escrow.height, 1, 0)
    behind = scrape(client)
    assert value(behind, "sync_lag_blocks", chain="bitcoin") == 2  # the node is 2 blocks ahead of the watcher
    assert value(behind, "unconfirmed_facts", chain="bitcoin") == 1  # seen once, not final at 3 confirmations
    assert value(behind, "loans_by_bitcoin_status", status="none") == 1
    assert value(behind, "escrow_held_sats") == 0

    report = sync_bitcoin(rpc=btc_rpc, confirmations=3)
    assert (report.height, report.applied) == (escrow.height + 2, 1)
    caught_up = scrape(client)
    assert value(caught_up, "sync_lag_blocks", chain="bitcoin") == 0
    assert value(caught_up, "unconfirmed_facts", chain="bitcoin") == 0
    assert value(caught_up, "loans_by_bitcoin_status", status="none") == 0
    assert value(caught_up, "loans_by_bitcoin_status", status="escrow_confirmed") == 1
    assert value(caught_up, "escrow_held_sats") == ESCROW_SATS


@pytest.mark.integration
def test_a_request_and_an_offer_on_anvil_move_unconfirmed_status_and_capital_gauges(
    client, private_queue, desk, evm_mine
):
    loan = desk.draft()
    desk.sync()
    assert value(scrape(client), "sync_lag_blocks", chain="evm") == 0

    contract_id = desk.request(loan)
    desk.sync(confirmations=2)
    pending = scrape(client)
    assert value(pending, "unconfirmed_facts", chain="evm") == 1  # LoanRequested, one block deep of two
    assert value(pending, "loans_by_status", status="draft") == 1

    evm_mine(1)
    desk.sync(confirmations=2)
    requested = scrape(client)
    assert value(requested, "unconfirmed_facts", chain="evm") == 0
    assert value(requested, "loans_by_status", status="requested") == 1
    assert value(requested, "contract_held_wei", reason="offer") == 0

    desk.flow.commit(contract_id)
    desk.flow.offer(contract_id)
    desk.sync()
    loan.refresh_from_db()
    assert loan.status == "offered"
    offered = scrape(client)
    assert value(offered, "loans_by_status", status="offered") == 1
    assert value(offered, "contract_held_wei", reason="offer") == float(loan.amount_wei + loan.bond_wei) > 0
