"""``manage.py sync_chains [--once] [--chain evm|bitcoin] [--interval S] [--schedule]``: run the chain watchers.

Without ``--once`` it loops until stopped (development, tests); ``--schedule`` registers the django-q2 schedules
that run them in production instead.
"""

from __future__ import annotations

import logging
import time

from django.core.management.base import BaseCommand

from loans.sync.bitcoin import sync_bitcoin
from loans.sync.evm import sync_evm

logger = logging.getLogger(__name__)
WATCHERS = {"evm": sync_evm, "bitcoin": sync_bitcoin}


class Command(BaseCommand):
    help = "Follow the EVM chain and the Bitcoin chain: store every fact once, apply it once when final."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one run of each watcher, then exit")
        parser.add_argument("--chain", choices=sorted(WATCHERS), help="only this chain's watcher")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between runs (default 2)")
        parser.add_argument("--schedule", action="store_true", help="register the django-q2 schedules and exit")

    def handle(self, *args, once=False, chain=None, interval=2.0, schedule=False, **options):
        if schedule:
            from django_q.models import Schedule

            from loans.tasks import SCHEDULES

            for name, func, minutes in SCHEDULES:
                Schedule.objects.update_or_create(
                    name=name, defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes}
                )
                self.stdout.write(f"scheduled {func} every {minutes} min")
            return
        watchers = {chain: WATCHERS[chain]} if chain else WATCHERS
        while True:
            for name, watcher in watchers.items():
                try:
                    report = watcher()
                except Exception as error:  # a node down must not stop the other chain's watcher
                    if once:
                        raise
                    logger.warning("%s watcher: %s", name, error)
                    continue
                self.stdout.write(f"{name}: {report}")
            if once:
                return
            time.sleep(interval)
