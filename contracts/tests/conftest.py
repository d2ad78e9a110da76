"""Fixtures for the contract suite: one anvil per session, contracts deployed once, a snapshot per test."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from web3 import Web3

from contracts.tests.helpers import DEFAULT_PARAMS, FAST_PARAMS, Chain, Deployment, deploy
from evm.anvil import AnvilNode


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[AnvilNode]:
    with AnvilNode() as node:
        yield node


@pytest.fixture(scope="session")
def chain(anvil_node: AnvilNode) -> Chain:
    w3 = Web3(Web3.HTTPProvider(anvil_node.url, request_kwargs={"timeout": 60}, cache_allowed_requests=True))
    assert w3.is_connected()
    return Chain(w3=w3)


@pytest.fixture(scope="session")
def people(chain: Chain) -> SimpleNamespace:
    """Personas: the lender (owner, deployer), two borrowers, a stranger, a third-party payer, a next owner."""
    a = chain.w3.eth.accounts
    return SimpleNamespace(lender=a[0], borrower=a[1], stranger=a[2], payer=a[3], next_owner=a[4], borrower2=a[5])


@pytest.fixture(scope="session")
def _deployments(chain: Chain, people: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(
        default=deploy(chain, people.lender, DEFAULT_PARAMS),
        fast=deploy(chain, people.lender, FAST_PARAMS),
    )


@pytest.fixture
def isolated(chain: Chain, _deployments: SimpleNamespace) -> Iterator[Chain]:
    """Every test starts from the freshly deployed contracts and leaves no trace (evm_snapshot / evm_revert)."""
    snapshot = chain.snapshot()
    yield chain
    chain.revert_to(snapshot)


@pytest.fixture
def dep(isolated: Chain, _deployments: SimpleNamespace) -> Deployment:
    """Deployment with the protocol's default parameters (windows too long to mine through)."""
    return _deployments.default


@pytest.fixture
def fast(isolated: Chain, _deployments: SimpleNamespace) -> Deployment:
    """Deployment with short windows (t_B=10, t_D=40, t_L=12) so every deadline can be mined to."""
    return _deployments.fast
