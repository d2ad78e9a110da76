"""The one place that turns settings into node clients. Everything Django-side gets its clients here."""

from __future__ import annotations

from django.conf import settings

from bitcoin.rpc import BitcoinRPC


def bitcoin_rpc(*, timeout: float | None = None, retries: int = 2) -> BitcoinRPC:
    return BitcoinRPC(
        settings.BITCOIN_RPC_URL,
        user=settings.BITCOIN_RPC_USER,
        password=settings.BITCOIN_RPC_PASSWORD,
        cookie_file=settings.BITCOIN_RPC_COOKIE_FILE or None,
        timeout=timeout or settings.BITCOIN_RPC_TIMEOUT,
        retries=retries,
    )
