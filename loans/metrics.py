"""``/metrics`` for Prometheus: django-prometheus's request and database metrics plus the desk's own gauges.

The desk's gauges (``DeskCollector``) are computed at scrape time from the database, in a handful of cheap
queries, so every web process answers the same whatever it served itself:

- ``loan_desk_sync_lag_blocks{chain}``: the chain's head the watcher last saw minus the block it followed
  (``ChainCursor.tip_number - block_number``); with ``loan_desk_sync_block``, ``loan_desk_sync_tip_block`` and
  ``loan_desk_sync_consecutive_failures`` (runs failed in a row). No sample for a chain never synced.
- ``loan_desk_unconfirmed_facts{chain}``: facts the watchers stored but have not applied yet: EVM events neither
  applied nor orphaned, Bitcoin transactions not applied.
- ``loan_desk_automations_pending{party,action,state}``: unattended steps under way (pending or sent);
  ``loan_desk_automations_failed{party,action}``: those given up on (an operator looks).
- ``loan_desk_task_queue_depth{broker}``: tasks waiting in django-q2's broker (ORM or Redis, per Q_CLUSTER).
- ``loan_desk_loans_by_status{status}`` and ``loan_desk_loans_by_bitcoin_status{status}``: loans by contract
  status and by Bitcoin status (every status listed, 0 included).
- ``loan_desk_contract_held_wei{reason}``: wei the contract holds for loans in flight, from the loans' rows:
  amount + bond while Offered (``reason="offer"``), repayment + bond while RepaymentInProgress
  (``reason="repayment"``). ``loan_desk_collateral_locked_sats``: collateral_sats of the loans whose collateral is
  locked (TX_1 final); ``loan_desk_escrow_held_sats``: escrow_sats of the confirmed, unspent escrows.
- ``loan_desk_metrics_up``: 1 when the gauges above were read, 0 when the database failed (logged);
  ``loan_desk_task_broker_up`` the same for the broker; ``loan_desk_metrics_scrape_duration_seconds``.

Amounts are exact integers in the database; Prometheus stores float64, exact up to 2**53 (about 0.009 rBTC in
wei): a sum in wei above that is rounded to about 16 significant digits.

Who may scrape: ``metrics_allowed`` (settings METRICS_TOKEN, METRICS_ALLOWED_NETWORKS; see loanproject/settings.py).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import prometheus_client
from django.conf import settings
from django.db.models import Count, DecimalField, F, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .models import Automation, BitcoinTransaction, ChainCursor, EvmEvent, Loan

logger = logging.getLogger(__name__)

PREFIX = "loan_desk"
OPEN_AUTOMATION_STATES = (Automation.State.PENDING, Automation.State.SENT)
_EXACT = DecimalField(max_digits=78, decimal_places=0)  # sums of wei, exact (NUMERIC), read back as int


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=list(labels))


# -- the desk's gauges -----------------------------------------------------------------------------------------


def sync_gauges() -> list[Metric]:
    lag = _gauge("sync_lag_blocks", "The chain's head the watcher last saw minus the block it followed.", ["chain"])
    followed = _gauge("sync_block", "The last block (height) the watcher followed.", ["chain"])
    tip = _gauge("sync_tip_block", "The chain's head (height) at the watcher's last run.", ["chain"])
    failures = _gauge("sync_consecutive_failures", "The watcher's runs failed in a row (node down, ...).", ["chain"])
    for chain, block_number, tip_number, failed in ChainCursor.objects.order_by("chain").values_list(
        "chain", "block_number", "tip_number", "failures"
    ):
        followed.add_metric([chain], block_number)
        failures.add_metric([chain], failed)
        if tip_number is not None:
            tip.add_metric([chain], tip_number)
            lag.add_metric([chain], max(0, tip_number - block_number))
    return [lag, followed, tip, failures]


def unconfirmed_gauge() -> Metric:
    gauge = _gauge(
        "unconfirmed_facts",
        "Chain facts stored by the watchers and not applied yet: EVM events neither applied nor orphaned, Bitcoin "
        "transactions not applied.",
        ["chain"],
    )
    gauge.add_metric(["evm"], EvmEvent.objects.filter(applied_at__isnull=True, orphaned_at__isnull=True).count())
    gauge.add_metric(["bitcoin"], BitcoinTransaction.objects.filter(applied_at__isnull=True).count())
    return gauge


def automation_gauges() -> list[Metric]:
    pending = _gauge(
        "automations_pending",
        "Unattended steps under way (pending, or sent and waiting for the chain), by party and action.",
        ["party", "action", "state"],
    )
    failed = _gauge("automations_failed", "Unattended steps given up on (an operator looks).", ["party", "action"])
    rows = (
        Automation.objects.filter(state__in=[*OPEN_AUTOMATION_STATES, Automation.State.FAILED])
        .values_list("party", "action", "state")
        .annotate(n=Count("pk"))
        .order_by("party", "action", "state")
    )
    for party, action, state, n in rows:
        if state == Automation.State.FAILED:
            failed.add_metric([party, action], n)
        else:
            pending.add_metric([party, action, state], n)
    return [pending, failed]


def loan_gauges() -> list[Metric]:
    """Loans by status on each side and what they hold, from one grouped query."""
    by_status: Counter[str] = Counter({status: 0 for status in Loan.Status.values})
    by_bitcoin_status: Counter[str] = Counter({status: 0 for status in Loan.BitcoinStatus.values})
    held_wei: defaultdict[str, int] = defaultdict(int, {"offer": 0, "repayment": 0})
    held_sats: defaultdict[str, int] = defaultdict(int, {"collateral": 0, "escrow": 0})
    rows = (
        Loan.objects.values_list("status", "bitcoin_status")
        .annotate(
            n=Count("pk"),
            offer_wei=Sum(F("amount_wei") + F("bond_wei"), output_field=_EXACT),
            repayment_wei=Sum(F("repayment_wei") + F("bond_wei"), output_field=_EXACT),
            collateral_sats=Sum("collateral_sats"),
            escrow_sats=Sum("escrow_sats"),
        )
        .order_by()
    )
    for status, bitcoin_status, n, offer_wei, repayment_wei, collateral_sats, escrow_sats in rows:
        by_status[status] += n
        by_bitcoin_status[bitcoin_status] += n
        if status == Loan.Status.OFFERED:
            held_wei["offer"] += int(offer_wei or 0)
        elif status == Loan.Status.REPAYMENT_IN_PROGRESS:
            held_wei["repayment"] += int(repayment_wei or 0)
        if bitcoin_status == Loan.BitcoinStatus.COLLATERAL_LOCKED:
            held_sats["collateral"] += int(collateral_sats or 0)
        elif bitcoin_status == Loan.BitcoinStatus.ESCROW_CONFIRMED:
            held_sats["escrow"] += int(escrow_sats or 0)

    statuses = _gauge("loans_by_status", "Loans by the contract's status (draft: not on the chain yet).", ["status"])
    for status, n in by_status.items():
        statuses.add_metric([status], n)
    bitcoin = _gauge("loans_by_bitcoin_status", "Loans by where their bitcoin is (final transactions).", ["status"])
    for status, n in by_bitcoin_status.items():
        bitcoin.add_metric([status], n)
    contract = _gauge(
        "contract_held_wei",
        "Wei the loan contract holds for loans in flight: amount + bond while Offered, repayment + bond while "
        "RepaymentInProgress.",
        ["reason"],
    )
    for reason, wei in held_wei.items():
        contract.add_metric([reason], wei)
    collateral = _gauge("collateral_locked_sats", "Collateral locked by final TX_1s (collateral_sats).")
    collateral.add_metric([], held_sats["collateral"])
    escrow = _gauge("escrow_held_sats", "Confirmed escrows not spent yet (escrow_sats).")
    escrow.add_metric([], held_sats["escrow"])
    return [statuses, bitcoin, contract, collateral, escrow]


def broker_name() -> str:
    return "redis" if "redis" in settings.Q_CLUSTER else "orm"


_brokers: dict[str, Any] = {}


def _broker(name: str) -> Any:
    """django-q2's broker, kept between scrapes (a Redis broker holds a connection pool)."""
    if name not in _brokers:
        from django_q.brokers import get_broker

        _brokers[name] = get_broker()
    return _brokers[name]


def queue_gauges() -> list[Metric]:
    name = broker_name()
    depth = _gauge("task_queue_depth", "Tasks waiting in django-q2's broker.", ["broker"])
    up = _gauge("task_broker_up", "1 when django-q2's broker answered this scrape.", ["broker"])
    try:
        depth.add_metric([name], _broker(name).queue_size())
    except Exception:
        logger.exception("metrics: django-q2's %s broker did not answer", name)
        _brokers.pop(name, None)  # a new connection next time
        up.add_metric([name], 0)
        return [up]
    up.add_metric([name], 1)
    return [depth, up]


class DeskCollector(Collector):
    """The desk's gauges, read from the database at each scrape. A database that fails gives
    ``loan_desk_metrics_up 0`` (and the log says why), never a failed scrape."""

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            families = [*sync_gauges(), unconfirmed_gauge(), *automation_gauges(), *loan_gauges()]
        except Exception:
            logger.exception("metrics: the desk's gauges could not be read from the database")
            families, ok = [], 0
        else:
            ok = 1
        families += queue_gauges()
        yield from families
        up = _gauge("metrics_up", "1 when the desk's gauges were read from the database at this scrape.")
        up.add_metric([], ok)
        yield up
        duration = _gauge("metrics_scrape_duration_seconds", "Time taken to compute the desk's gauges.")
        duration.add_metric([], time.perf_counter() - started)
        yield duration


class _Scrape(Collector):
    """This process's metrics (django-prometheus's; every process's in multiprocess mode) and the desk's gauges."""

    def __init__(self, process: Collector) -> None:
        self.process = process

    def collect(self) -> Iterator[Metric]:
        yield from self.process.collect()
        yield from DeskCollector().collect()


def _process_registry() -> Collector:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return prometheus_client.REGISTRY


def exposition() -> bytes:
    """Everything /metrics answers, in Prometheus's text format."""
    return prometheus_client.generate_latest(_Scrape(_process_registry()))  # type: ignore[arg-type]


# -- who may scrape --------------------------------------------------------------------------------------------


def _bearer(request: HttpRequest) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _from_allowed_network(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_NETWORKS)


def metrics_allowed(request: HttpRequest) -> bool:
    """The right ``Authorization: Bearer <METRICS_TOKEN>``, or a client address in METRICS_ALLOWED_NETWORKS."""
    token = settings.METRICS_TOKEN
    if token and hmac.compare_digest(_bearer(request).encode(), token.encode()):
        return True
    return _from_allowed_network(request)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        response = HttpResponse("metrics: not allowed\n", status=401 if settings.METRICS_TOKEN else 403)
        response["Content-Type"] = "text/plain; charset=utf-8"
        if settings.METRICS_TOKEN:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=prometheus_client.CONTENT_TYPE_LATEST)
