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


def bitcoin_chain_name() -> str:
    """The `chain` field getblockchaininfo reports for the configured network."""
    return {"mainnet": "main", "testnet": "test"}.get(settings.BITCOIN_NETWORK, settings.BITCOIN_NETWORK)
