"""``manage.py sync_chains [--once] [--chain evm|bitcoin] [--duties] [--interval S] [--schedule]``: run the chain
watchers.

Without ``--once`` it loops until stopped (development, tests); ``--schedule`` registers the django-q2 schedules
that run them in production instead. ``--duties`` runs the unattended duties after each pass of the watchers (the
lender's automation, the borrower's watchtower, the deadline alerts: the same ``loans.tasks`` entry points the
django-q2 schedules run each minute in production), so the development stack and the browser scenarios have a
worker that keeps up with chains mined by hand.
"""

from __future__ import annotations

import logging
import time

from django.core.management.base import BaseCommand

from loans import tasks
from loans.sync.bitcoin import sync_bitcoin
from loans.sync.evm import sync_evm

logger = logging.getLogger(__name__)
WATCHERS = {"evm": sync_evm, "bitcoin": sync_bitcoin}
#: The unattended duties ``--duties`` runs after the watchers, in this order (ADR 0008).
DUTIES = {
    "automation": tasks.automation_task,
    "watchtower": tasks.watchtower_task,
    "alerts": tasks.deadline_alerts_task,
}


class Command(BaseCommand):
    help = "Follow the EVM chain and the Bitcoin chain: store every fact once, apply it once when final."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one run of each watcher, then exit")
        parser.add_argument("--chain", choices=sorted(WATCHERS), help="only this chain's watcher")
        parser.add_argument(
            "--duties",
            action="store_true",
            help="after each pass, run the lender's automation, the watchtower and the deadline alerts too",
        )
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between runs (default 2)")
        parser.add_argument("--schedule", action="store_true", help="register the django-q2 schedules and exit")

    def handle(self, *args, once=False, chain=None, duties=False, interval=2.0, schedule=False, **options):
        if schedule:
            from django_q.models import Schedule

            for name, func, minutes in tasks.SCHEDULES:
                Schedule.objects.update_or_create(
                    name=name, defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes}
                )
                self.stdout.write(f"scheduled {func} every {minutes} min")
            return
        runs = {chain: WATCHERS[chain]} if chain else dict(WATCHERS)
        if duties:
            runs.update(DUTIES)
        while True:
            for name, run in runs.items():
                try:
                    report = run()
                except Exception as error:  # a node down must not stop the other chain's watcher or a duty
                    if once:
                        raise
                    logger.warning("%s: %s", name, error)
                    continue
                self.stdout.write(f"{name}: {report}")
            if once:
                return
            time.sleep(interval)
