"""/healthz answers without I/O; /readyz reports each dependency separately, with the reason when it is down."""

import socket

import pytest
from django.urls import reverse

from evm.anvil import AnvilNode, free_port


def closed_port_url() -> str:
    port = free_port()
    with socket.socket() as probe:  # nothing listens there
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return f"http://127.0.0.1:{port}"


def test_healthz_does_no_io(client, settings):
    # No django_db mark: any database query would raise. Both nodes point at closed ports.
    settings.BITCOIN_RPC_URL = settings.EVM_RPC_URL = closed_port_url()
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
@pytest.mark.integration
def test_readyz_reports_a_stopped_evm_node_as_down_with_the_reason(client, settings):
    node = AnvilNode().start()
    settings.EVM_RPC_URL = node.url
    settings.EVM_CHAIN_ID = node.chain_id
    up = client.get(reverse("readyz")).json()["checks"]["evm_node"]
    assert up["ok"] is True and up["detail"].startswith(f"chain id {node.chain_id} at block ")
    node.stop()

    response = client.get(reverse("readyz"))
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    evm = body["checks"]["evm_node"]
    assert evm["ok"] is False
    assert "Connection" in evm["detail"] and f"127.0.0.1:{node.port}" in evm["detail"]
    # the other checks are reported on their own, unaffected
    assert body["checks"]["database"] == {**body["checks"]["database"], "ok": True}
    assert body["checks"]["channel_layer"]["ok"] is True


@pytest.mark.django_db
@pytest.mark.integration
def test_readyz_refuses_an_evm_node_on_another_chain(client, settings):
    with AnvilNode(chain_id=31) as node:
        settings.EVM_RPC_URL = node.url
        settings.EVM_CHAIN_ID = 30
        evm = client.get(reverse("readyz")).json()["checks"]["evm_node"]
    assert evm["ok"] is False
    assert "chain id 31, this app is configured for 30" in evm["detail"]


@pytest.mark.django_db
def test_readyz_reports_a_stopped_bitcoin_node_without_leaking_credentials(client, settings):
    url = closed_port_url()
    settings.BITCOIN_RPC_URL = url.replace("http://", "http://alice:s3cret@")
    response = client.get(reverse("readyz"))
    assert response.status_code == 503
    bitcoin = response.json()["checks"]["bitcoin_node"]
    assert bitcoin["ok"] is False
    assert "NodeUnavailableError" in bitcoin["detail"] and url in bitcoin["detail"]
    assert "s3cret" not in response.content.decode()


@pytest.mark.django_db
def test_readyz_reports_an_unreachable_redis_channel_layer(client, settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [closed_port_url().replace("http", "redis")]},
        }
    }
    response = client.get(reverse("readyz"))
    assert response.status_code == 503
    layer = response.json()["checks"]["channel_layer"]
    assert layer["ok"] is False
    assert "Connect" in layer["detail"] or "refused" in layer["detail"]
    assert response.json()["checks"]["database"]["ok"] is True


@pytest.mark.django_db
@pytest.mark.integration
def test_readyz_is_ready_when_every_dependency_answers(client, settings, btc_node, anvil):
    settings.BITCOIN_RPC_URL, settings.BITCOIN_NETWORK = btc_node.url, "regtest"
    settings.EVM_RPC_URL, settings.EVM_CHAIN_ID = anvil.url, anvil.chain_id
    response = client.get(reverse("readyz"))
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "channel_layer", "bitcoin_node", "evm_node"}
    assert body["checks"]["bitcoin_node"]["detail"].startswith("regtest at height ")
    assert body["checks"]["database"]["detail"] == "postgresql answered"


@pytest.mark.django_db
@pytest.mark.integration
def test_readyz_refuses_a_bitcoin_node_on_another_network(client, settings, btc_node):
    settings.BITCOIN_RPC_URL, settings.BITCOIN_NETWORK = btc_node.url, "testnet"
    bitcoin = client.get(reverse("readyz")).json()["checks"]["bitcoin_node"]
    assert bitcoin["ok"] is False
    assert "node is on 'regtest', this app is configured for 'testnet'" in bitcoin["detail"]


@pytest.mark.django_db
def test_readyz_reports_each_watcher_with_its_failures_and_backoff(client, settings):
    from django.utils import timezone

    from loans.models import ChainCursor

    settings.BITCOIN_RPC_URL = settings.EVM_RPC_URL = closed_port_url()
    ChainCursor.objects.create(
        chain="evm", block_number=90, block_hash="ab" * 32, parent_hash="cd" * 32, tip_number=100
    )
    retry = timezone.now()
    ChainCursor.objects.create(
        chain="bitcoin", block_number=7, block_hash="ef" * 32, parent_hash="01" * 32, tip_number=7, failures=3,
        last_error="NodeUnavailableError: connection refused", retry_after=retry,
    )  # fmt: skip
    watchers = client.get(reverse("readyz")).json()["watchers"]
    assert watchers["evm"] == {
        "ok": True, "block": 90, "head": 100, "lag_blocks": 10, "failures": 0, "last_error": "", "retry_after": None,
    }  # fmt: skip
    assert watchers["bitcoin"]["ok"] is False
    assert watchers["bitcoin"]["failures"] == 3
    assert watchers["bitcoin"]["last_error"] == "NodeUnavailableError: connection refused"
    assert watchers["bitcoin"]["retry_after"] == retry.isoformat()
