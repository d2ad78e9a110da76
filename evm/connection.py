"""One way to get a `Web3`: HTTP with a timeout, and a refusal to work with a node serving another chain.

Signing a transaction for the wrong chain, or reading loans from another deployment's chain, is the kind of
mistake that costs money; so `connect` checks the node's chain id against the configured one before returning.
"""

from __future__ import annotations

from web3 import Web3
from web3.exceptions import Web3Exception

from .errors import ChainIdMismatch, NodeUnavailable

ROOTSTOCK_MAINNET = 30
ROOTSTOCK_TESTNET = 31
DEV_CHAIN_ID = 31337

# Rootstock does not accept EIP-1559 (type 2) transactions: legacy type 0 with gasPrice.
LEGACY_ONLY_CHAIN_IDS = frozenset({ROOTSTOCK_MAINNET, ROOTSTOCK_TESTNET})


def uses_legacy_transactions(chain_id: int) -> bool:
    return chain_id in LEGACY_ONLY_CHAIN_IDS


def connect(rpc_url: str, *, expected_chain_id: int, timeout: float = 10) -> Web3:
    """A `Web3` over HTTP(S) whose node serves `expected_chain_id`.

    Raises `NodeUnavailable` when the node cannot be reached and `ChainIdMismatch` when it serves another
    chain.
    """
    if not rpc_url.startswith(("http://", "https://")):
        raise NodeUnavailable(f"EVM RPC URL must be http(s)://…, got {rpc_url!r}")
    if timeout <= 0:
        raise NodeUnavailable(f"EVM RPC timeout must be positive, got {timeout}")
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    check_chain_id(w3, expected_chain_id, url=rpc_url)
    return w3


def node_chain_id(w3: Web3, url: str = "") -> int:
    try:
        return int(w3.eth.chain_id)
    except (OSError, Web3Exception, ValueError) as exc:
        # requests' ConnectionError/Timeout derive from OSError
        where = url or "the EVM node"
        raise NodeUnavailable(f"cannot reach {where}: {exc}") from exc


def check_chain_id(w3: Web3, expected_chain_id: int, *, url: str = "") -> int:
    """The node's chain id, or `ChainIdMismatch` if it differs from `expected_chain_id`."""
    actual = node_chain_id(w3, url)
    if actual != expected_chain_id:
        raise ChainIdMismatch(expected_chain_id, actual, url)
    return actual
