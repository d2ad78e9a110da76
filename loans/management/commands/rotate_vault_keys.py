"""``manage.py rotate_vault_keys``: re-encrypt every sealed secret under the newest vault key.

Rotating a key: put the new key first in ``LOAN_VAULT_KEYS_FILE`` (or ``LOAN_VAULT_KEYS``) and keep the old ones
after it, restart, run this command, then drop the old keys. It is idempotent (values already under the newest
key are left alone), prints counts per column and key ids (fingerprints), never a key or a secret.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from loans import vault
from loans.services.lender_secrets import vault_keys_rotate


class Command(BaseCommand):
    help = "Re-encrypt every sealed secret (the lender's keys, each loan's pL) under the newest vault key."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=200, help="rows locked per transaction")

    def handle(self, *args, batch_size=200, **options):
        ring = vault.keyring()
        self.stdout.write(
            f"newest vault key {ring.newest_id}; {len(ring.ids)} key(s) configured: {', '.join(ring.ids)}"
        )
        counts = vault_keys_rotate(batch_size=batch_size)
        for count in counts:
            self.stdout.write(str(count))
        failed = sum(len(count.failed) for count in counts)
        if failed:
            raise CommandError(f"{failed} sealed value(s) no configured key opens: configure their key and run again")
        rotated = sum(count.rotated for count in counts)
        self.stdout.write(self.style.SUCCESS(f"done: {rotated} re-encrypted under {ring.newest_id}"))
