"""The web3 factory refuses a node that serves another chain, and reports an unreachable node clearly."""

from __future__ import annotations

import pytest

from evm.anvil import free_port
from evm.connection import check_chain_id, connect, uses_legacy_transactions
from evm.errors import ChainIdMismatch, NodeUnavailable


@pytest.mark.integration
def test_the_configured_chain_is_accepted_and_another_refused(anvil):
    w3 = connect(anvil.url, expected_chain_id=31337, timeout=5)
    assert check_chain_id(w3, 31337) == 31337
    with pytest.raises(ChainIdMismatch) as mismatch:
        connect(anvil.url, expected_chain_id=30, timeout=5)
    assert (mismatch.value.expected, mismatch.value.actual) == (30, 31337)
    assert str(mismatch.value) == (
        f"the EVM node at {anvil.url} serves chain id 31337, but chain id 30 is configured: refusing to use it"
    )


def test_an_unreachable_node_is_reported():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(NodeUnavailable, match=f"cannot reach {url}"):
        connect(url, expected_chain_id=31337, timeout=2)


@pytest.mark.parametrize("url", ["ws://127.0.0.1:8545", "127.0.0.1:8545", ""])
def test_only_http_urls(url):
    with pytest.raises(NodeUnavailable, match="must be http"):
        connect(url, expected_chain_id=31337)


def test_rootstock_chains_use_legacy_transactions():
    assert uses_legacy_transactions(30) and uses_legacy_transactions(31)
    assert not uses_legacy_transactions(31337) and not uses_legacy_transactions(1)
