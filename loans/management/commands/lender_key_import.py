"""``manage.py lender_key_import --kind evm|bitcoin --lender USERNAME [--file PATH]``: seal one of the lender's
private keys into the database (``LenderKey``).

The key is read from ``--file`` or from standard input (typed without echo on a terminal), never from the command
line (shell history, ``ps``): 64 hex characters (``0x`` allowed), or a WIF for a Bitcoin key. Prints the public key
or address and the vault key id, never the private key. Importing the same key again changes nothing.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.views.decorators.debug import sensitive_variables

from bitcoin.errors import InvalidKeyError
from bitcoin.keys import PrivateKey
from loans import vault
from loans.errors import LoanServiceError
from loans.models import LenderKey, User
from loans.services.lender_secrets import lender_key_store


@sensitive_variables("text", "raw")
def parse_private_key(text: str, kind: str) -> vault.Secret:
    raw = text.strip()
    if raw.startswith(("0x", "0X")):
        raw = raw[2:]
    if len(raw) == 64:
        try:
            return vault.Secret(bytes.fromhex(raw))
        except ValueError:
            raise CommandError("the key is not valid hex") from None
    if kind == LenderKey.Kind.BITCOIN:
        try:
            return vault.Secret(PrivateKey.from_wif(raw).secret)
        except InvalidKeyError:
            raise CommandError("the key is neither 64 hex characters nor a WIF") from None
    raise CommandError("the key is not 64 hex characters")


class Command(BaseCommand):
    help = "Seal one of the lender's private keys (read from a file or standard input, never the command line)."

    def add_arguments(self, parser):
        parser.add_argument("--kind", required=True, choices=LenderKey.Kind.values)
        parser.add_argument("--lender", required=True, help="the lender's username")
        parser.add_argument("--file", type=Path, help="a file holding the key (default: standard input)")

    @sensitive_variables("text")
    def handle(self, *args, kind, lender, file=None, **options):
        try:
            user = User.objects.get(username=lender)
        except User.DoesNotExist:
            raise CommandError(f"no user {lender!r}") from None
        if file is not None:
            text = file.read_text()
        elif sys.stdin.isatty():
            text = getpass.getpass(f"{kind} private key: ")
        else:
            text = sys.stdin.read()
        try:
            row = lender_key_store(lender=user, kind=kind, private_key=parse_private_key(text, kind), actor=None)
        except LoanServiceError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"{row.kind} key {row.public_id} of {user.username}, sealed with vault key {row.private_key.key_id}"
        )
