"""`python manage.py btcnode`: run the embedded regtest node where the app expects its Bitcoin node.

The RPC port (and bind host) come from `BITCOIN_RPC_URL`, the data directory from `BTCNODE_DATA_DIR`, and HTTP
basic auth from `BITCOIN_RPC_USER` / `BITCOIN_RPC_PASSWORD` when set. Only for `BITCOIN_NETWORK = "regtest"`.
"""

from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bitcoin.regtest.__main__ import run


class Command(BaseCommand):
    help = "Run the embedded regtest Bitcoin node (validated by Bitcoin Core's consensus library)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--datadir", type=Path, help="override BTCNODE_DATA_DIR")
        parser.add_argument("--port", type=int, help="override the port of BITCOIN_RPC_URL")

    def handle(self, *args: Any, **options: Any) -> None:
        network = getattr(settings, "BITCOIN_NETWORK", "regtest")
        if network != "regtest":
            raise CommandError(f"btcnode runs a regtest node; BITCOIN_NETWORK is {network!r}")
        url = urllib.parse.urlsplit(settings.BITCOIN_RPC_URL)
        if url.scheme != "http" or not url.hostname:
            raise CommandError(f"BITCOIN_RPC_URL must be http://host:port, got {settings.BITCOIN_RPC_URL!r}")
        port = options["port"] if options["port"] is not None else (url.port if url.port is not None else 18443)
        if not 0 <= port <= 65535:
            raise CommandError("port must be between 0 and 65535")
        datadir = Path(options["datadir"] or settings.BTCNODE_DATA_DIR)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        run(
            datadir,
            port,
            url.hostname,
            user=settings.BITCOIN_RPC_USER,
            password=settings.BITCOIN_RPC_PASSWORD,
        )
