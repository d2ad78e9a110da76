"""django-q2 entry points. Each calls one watcher or service; none holds logic of its own.

``manage.py sync_chains --schedule`` registers the schedules (idempotent). ``Q_CLUSTER['retry']`` is greater
than its ``timeout``, so a slow run is never started twice; the watchers' own lock makes overlapping runs skip.
"""

from __future__ import annotations

from .services.operators import expired_records_prune
from .sync.bitcoin import sync_bitcoin
from .sync.evm import sync_evm

#: (schedule name, task path, minutes between runs)
SCHEDULES = (
    ("sync EVM chain", "loans.tasks.sync_evm_task", 1),
    ("sync Bitcoin chain", "loans.tasks.sync_bitcoin_task", 1),
    ("prune expired records", "loans.tasks.prune_expired_task", 24 * 60),
    ("lender automation", "loans.tasks.automation_task", 1),
    ("deadline and operator alerts", "loans.tasks.deadline_alerts_task", 1),
    ("borrower's watchtower", "loans.tasks.watchtower_task", 1),
)


def sync_evm_task() -> str:
    return str(sync_evm())


def sync_bitcoin_task() -> str:
    return str(sync_bitcoin())


def prune_expired_task() -> str:
    return str(expired_records_prune())


def automation_task() -> str:
    from .services.automation import automation_run

    return str(automation_run())


def deadline_alerts_task() -> str:
    from .services.deadline_alerts import deadline_alerts_run

    return str(deadline_alerts_run())


def watchtower_task() -> str:
    from .services.watchtower import watchtower_run

    return str(watchtower_run())
