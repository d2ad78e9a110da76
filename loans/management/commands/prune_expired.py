"""``manage.py prune_expired``: delete expired or used SIWE nonces, long-dead API tokens and old Idempotency-Key
records (``loans.services.operators.expired_records_prune``), and print how many of each.

The worker runs it daily (``loans.tasks.SCHEDULES``, registered by ``manage.py sync_chains --schedule``).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from loans.services.operators import expired_records_prune


class Command(BaseCommand):
    help = "Delete SIWE nonces, API tokens and Idempotency-Key records that can no longer be used; print the counts."

    def handle(self, *args, **options):
        counts = expired_records_prune()
        for name, count in counts.items():
            self.stdout.write(f"{name}: {count} deleted")
