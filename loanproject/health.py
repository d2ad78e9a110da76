"""Liveness and readiness probes.

`/healthz` answers without any I/O: the process is up. `/readyz` checks each dependency separately (database,
channel layer, Bitcoin node, EVM node) and answers 503 with the reason of every check that is down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from bitcoin.networks import get_network
from loans import chains

CHECK_TIMEOUT_SECONDS = 3


def redact_url(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return f"{connection.vendor} answered"


def check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")

    async def round_trip() -> None:
        channel = await layer.new_channel("readyz.")
        await layer.send(channel, {"type": "readyz.ping"})
        message = await asyncio.wait_for(layer.receive(channel), timeout=CHECK_TIMEOUT_SECONDS)
        if message.get("type") != "readyz.ping":
            raise RuntimeError(f"channel layer returned {message!r}")

    async_to_sync(round_trip)()
    return f"{type(layer).__name__} round trip ok"


def check_bitcoin_node() -> str:
    info = chains.bitcoin_rpc(timeout=CHECK_TIMEOUT_SECONDS, retries=0).getblockchaininfo()
    if get_network(info["chain"]) != get_network(settings.BITCOIN_NETWORK):
        raise RuntimeError(f"node is on {info['chain']!r}, this app is configured for {settings.BITCOIN_NETWORK!r}")
    return f"{info['chain']} at height {info['blocks']}"


def check_evm_node() -> str:
    from web3 import HTTPProvider, Web3

    w3 = Web3(
        HTTPProvider(
            settings.EVM_RPC_URL,
            request_kwargs={"timeout": CHECK_TIMEOUT_SECONDS},
            exception_retry_configuration=None,  # a probe reports, it does not retry
        )
    )
    chain_id = w3.eth.chain_id
    if chain_id != settings.EVM_CHAIN_ID:
        raise RuntimeError(f"node is on chain id {chain_id}, this app is configured for {settings.EVM_CHAIN_ID}")
    return f"chain id {chain_id} at block {w3.eth.block_number}"


def _run(check: Callable[[], str], where: str | None) -> dict:
    started = time.monotonic()
    try:
        detail = check()
        ok = True
    except Exception as exc:  # every failure is reported, none escapes the probe
        ok = False
        reason = str(exc).strip() or type(exc).__name__
        detail = f"{type(exc).__name__}: {reason}" + (f" ({where})" if where else "")
    return {"ok": ok, "detail": detail, "ms": round((time.monotonic() - started) * 1000)}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def dependency_checks() -> dict[str, dict]:
    """Each dependency's state: `ok`, a human `detail` (the reason when down) and how long the check took."""
    return {
        "database": _run(check_database, None),
        "channel_layer": _run(check_channel_layer, None),
        "bitcoin_node": _run(check_bitcoin_node, redact_url(settings.BITCOIN_RPC_URL)),
        "evm_node": _run(check_evm_node, redact_url(settings.EVM_RPC_URL)),
    }


def watcher_states() -> dict[str, dict]:
    """Each chain watcher's cursor: how far it followed, the chain's head it saw, and its failures in a row with
    the last error and the backoff. Reported, not a readiness condition: a stuck watcher does not make the web
    process unable to serve (the operator alerts of issue 11 act on it)."""
    from loans.models import ChainCursor

    try:
        cursors = list(ChainCursor.objects.all())
    except Exception as exc:  # the database check above reports the cause
        return {"error": {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}}
    return {
        cursor.chain: {
            "ok": cursor.failures == 0,
            "block": cursor.block_number,
            "head": cursor.tip_number,
            "lag_blocks": None if cursor.tip_number is None else max(0, cursor.tip_number - cursor.block_number),
            "failures": cursor.failures,
            "last_error": cursor.last_error if cursor.failures else "",
            "retry_after": cursor.retry_after.isoformat() if cursor.failures and cursor.retry_after else None,
        }
        for cursor in cursors
    }


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = dependency_checks()
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "down", "checks": checks, "watchers": watcher_states()},
        status=200 if ready else 503,
    )
