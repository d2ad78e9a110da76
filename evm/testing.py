"""pytest fixtures for code that talks to the contracts: one anvil per test session, both contracts deployed
once, and every test runs inside an `evm_snapshot` that is reverted afterwards (fast, and tests cannot leak state).

Register project-wide with `pytest_plugins = ["evm.testing"]` in the root conftest (or `-p evm.testing`).

Fixtures: `anvil` (AnvilNode), `w3`, `dev_accounts`, the personas' EVM accounts `lender_account` (account 0:
the deployer and the contracts' owner), `borrower_account` (1), `stranger_account` (2), `operator_account` (3),
`deployment` (a `Deployment`, state reverted after each test), `loan_client` (`LoanContractClient` for it),
`lender_btc_pubkey`, `evm_mine(blocks)`, `loan_flow` (`LoanFlow`: drives a loan through its states with real
transactions, sent with the lender's and the borrower's accounts), `evm_reorg(depth, txs=None)`.

Personas: one per party. Here a persona is its EVM account (`*_account`); `loans/tests` bundles each with its
Django user and Bitcoin key (`borrower_persona`, ...), and there `borrower`, `lender` and `operator` are the
personas' Django users. So everything in this module depends on the `*_account` names only; `deployer`,
`lender`, `borrower` and `stranger` are the evm suite's short aliases of them (a suite that names a Django user
`borrower` no longer hands `loan_flow` that user instead of the account).

Reorgs: anvil 1.7 has `anvil_reorg(depth, [[tx, block_offset], ...])`: it replaces the last `depth` blocks by as
many new blocks (same head number, new hashes), drops the replaced blocks' transactions (they do not return to the
pool) and mines the given signed transactions into the new blocks. It also discards every `evm_snapshot` taken at
or above the fork point, so `evm_reorg` refuses to replace blocks older than its test (the test's snapshot must
survive for the revert). `anvil_rollback(depth)` only removes blocks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from .anvil import DEV_CHAIN_ID, AnvilNode
from .client import LoanContractClient, LoanStatus
from .connection import connect
from .deploy import Deployment, deploy_contracts
from .deploy import dev_accounts as _dev_accounts
from .events import BlockRef, get_block_ref
from .parameters import ProtocolParameters
from .terms import BorrowerTerms

# An x-only key of PROTOCOL.md's test vector (xL).
TEST_LENDER_BTC_PUBKEY = bytes.fromhex("64b4b84f42da9bdb84f7eda2de12524516686e73849645627fb7a034c79c81c8")


def rpc(w3: Web3, method: str, params: list | None = None):
    """A JSON-RPC call that raises on error (`make_request` itself does not)."""
    response = w3.provider.make_request(method, params or [])
    if response.get("error"):
        raise RuntimeError(f"{method} failed: {response['error']}")
    return response.get("result")


def mine(w3: Web3, blocks: int = 1) -> None:
    rpc(w3, "anvil_mine", [hex(blocks)])


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    node = AnvilNode()
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def w3(anvil: AnvilNode) -> Web3:
    return connect(anvil.url, expected_chain_id=DEV_CHAIN_ID, timeout=30)


@pytest.fixture(scope="session")
def dev_accounts() -> list[LocalAccount]:
    return _dev_accounts(10)


@pytest.fixture(scope="session")
def lender_account(dev_accounts) -> LocalAccount:
    """The lender: deploys the contracts and owns them (commits hL, offers, accepts repayments)."""
    return dev_accounts[0]


@pytest.fixture(scope="session")
def borrower_account(dev_accounts) -> LocalAccount:
    return dev_accounts[1]


@pytest.fixture(scope="session")
def stranger_account(dev_accounts) -> LocalAccount:
    """Someone else on the chain (copies requests from the mempool, pokes at other people's loans)."""
    return dev_accounts[2]


@pytest.fixture(scope="session")
def operator_account(dev_accounts) -> LocalAccount:
    """The desk's operator (runs the admin; no role in the contracts)."""
    return dev_accounts[3]


# The evm suite's short names for the accounts above (see the module docstring).


@pytest.fixture(scope="session")
def deployer(lender_account) -> LocalAccount:
    return lender_account


@pytest.fixture(scope="session")
def lender(lender_account) -> LocalAccount:
    return lender_account


@pytest.fixture(scope="session")
def borrower(borrower_account) -> LocalAccount:
    return borrower_account


@pytest.fixture(scope="session")
def stranger(stranger_account) -> LocalAccount:
    return stranger_account


@pytest.fixture(scope="session")
def lender_btc_pubkey() -> bytes:
    return TEST_LENDER_BTC_PUBKEY


@pytest.fixture(scope="session")
def _session_deployment(w3: Web3, lender_account: LocalAccount, lender_btc_pubkey: bytes) -> Deployment:
    return deploy_contracts(w3, lender_account, ProtocolParameters(lender_btc_pubkey=lender_btc_pubkey))


@pytest.fixture
def evm_snapshot(w3: Web3) -> Iterator[None]:
    """Revert the chain to its state before the test."""
    snapshot = rpc(w3, "evm_snapshot")
    try:
        yield
    finally:
        if rpc(w3, "evm_revert", [snapshot]) is not True:
            raise RuntimeError(f"evm_revert({snapshot}) failed: later tests would see this test's state")


@pytest.fixture
def deployment(_session_deployment: Deployment, evm_snapshot: None) -> Deployment:
    return _session_deployment


@pytest.fixture
def loan_client(w3: Web3, deployment: Deployment) -> LoanContractClient:
    return LoanContractClient.from_deployment(w3, deployment)


@pytest.fixture
def evm_mine(w3: Web3) -> Callable[[int], None]:
    return lambda blocks=1: mine(w3, blocks)


@dataclass(frozen=True)
class EvmReorg:
    """What a reorg replaced: the blocks above the fork (`orphaned`, lowest first) by `branch` (the same heights,
    other hashes); `head` is the new head."""

    orphaned: tuple[BlockRef, ...]
    branch: tuple[BlockRef, ...]

    @property
    def head(self) -> BlockRef:
        return self.branch[-1]

    @property
    def fork_number(self) -> int:
        return self.branch[0].number - 1


# A transaction for a reorg's new blocks: signed raw bytes (or their hex), or the hash of a transaction the node
# knows (its raw form is read before the reorg drops it); with a block offset (0 = the first new block), or 0.
ReorgTx = bytes | str | tuple[bytes | str, int]


def _raw_transaction(w3: Web3, tx: bytes | str) -> str:
    raw = bytes.fromhex(tx.removeprefix("0x")) if isinstance(tx, str) else bytes(tx)
    if len(raw) == 32:  # a transaction hash (no signed transaction is that short)
        found = rpc(w3, "eth_getRawTransactionByHash", ["0x" + raw.hex()])
        if not found:
            raise ValueError(f"the node does not know transaction 0x{raw.hex()}")
        return str(found)
    return "0x" + raw.hex()


def _reorg_marker(w3: Web3) -> str:
    """A signed 0-value self-transfer of the last dev account (raw hex), at its next nonce."""
    account = _dev_accounts(10)[-1]
    signed = account.sign_transaction(
        {
            "to": account.address,
            "value": 0,
            "gas": 21_000,
            "gasPrice": int(w3.eth.gas_price) * 2,
            "nonce": int(w3.eth.get_transaction_count(account.address, "pending")),
            "chainId": int(w3.eth.chain_id),
        }
    )
    return "0x" + bytes(signed.raw_transaction).hex()


def reorg_chain(w3: Web3, depth: int, txs: Sequence[ReorgTx] | None = None, *, floor: int = 0) -> EvmReorg:
    """Replace the last `depth` blocks with new ones (`anvil_reorg`) carrying `txs`; every replaced height gets
    a new hash. Blocks at or below `floor` are never replaced."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    head = int(w3.eth.block_number)
    if head - depth < floor:
        raise ValueError(
            f"depth {depth} would replace block {head - depth + 1} or older, at or below block {floor}: "
            "anvil_reorg would discard the evm_snapshot this test is reverted to"
        )
    pairs = []
    for item in txs or ():
        tx, offset = item if isinstance(item, tuple) else (item, 0)
        if not 0 <= offset < depth:
            raise ValueError(f"block offset {offset} is not one of the {depth} new blocks")
        pairs.append([_raw_transaction(w3, tx), offset])
    # anvil re-mines a block with the same parent, timestamp and transactions into the same hash (it happens once
    # a test before moved the clock ahead of the wall clock): a marker transaction, after the given ones, makes the
    # branch differ from its first block on. It comes from the last dev account, which no fixture uses.
    pairs.append([_reorg_marker(w3), 0])
    orphaned = tuple(get_block_ref(w3, number) for number in range(head - depth + 1, head + 1))
    rpc(w3, "anvil_reorg", [depth, pairs])
    branch = tuple(get_block_ref(w3, ref.number) for ref in orphaned)
    if any(new.hash == old.hash for new, old in zip(branch, orphaned, strict=True)):
        raise RuntimeError("anvil_reorg left a block hash unchanged")
    return EvmReorg(orphaned, branch)


@pytest.fixture
def evm_reorg(w3: Web3, evm_snapshot: None) -> Callable[..., EvmReorg]:
    """`evm_reorg(depth, txs=None) -> EvmReorg`: replace the last `depth` blocks (mined by this test: older ones
    are refused, see the module docstring) by new blocks carrying `txs` (see `ReorgTx`)."""
    # The fork point must be a block whose state anvil still holds: with --prune-history it keeps only recent
    # states, and the block this test's snapshot reverted to was mined long ago in a long session ("Required data
    # unavailable"). A block mined now is the floor: every reorg of this test forks at or above it.
    # Fork at blocks mined normally: anvil may not keep the state of blocks a reorg made, so a second reorg of the
    # same blocks should fork below them.
    mine(w3, 1)
    floor = int(w3.eth.block_number)

    def reorg(depth: int, txs: Sequence[ReorgTx] | None = None) -> EvmReorg:
        return reorg_chain(w3, depth, txs, floor=floor)

    return reorg


def gas_cost(receipt) -> int:
    """Wei a mined transaction cost its sender."""
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def new_secret() -> tuple[bytes, bytes]:
    """(preimage, SHA-256 hash): 32 random bytes, as PROTOCOL.md requires."""
    preimage = os.urandom(32)
    return preimage, hashlib.sha256(preimage).digest()


@dataclass
class LoanFlow:
    """Moves loans through their states with real transactions: the borrower's calls signed by `borrower`,
    the lender's by `lender`, all via `LoanContractClient.send` (dry run first). The borrower's terms of each
    request are kept in `terms` (by loan id) and passed to every later borrower step, as the app does."""

    client: LoanContractClient
    lender: LocalAccount
    borrower: LocalAccount
    terms: dict[int, BorrowerTerms] = field(default_factory=dict)

    def request(self, amount: int = 10**16, *, escrow_sats: int = 1_500_000) -> tuple[int, bytes]:
        """A Requested loan under the parameters in force: (loan id, the borrower's preimage pB)."""
        preimage, digest = new_secret()
        terms = self.client.borrower_terms(
            borrower=self.borrower.address,
            amount=amount,
            borrower_btc_pubkey=os.urandom(32),
            borrower_hash=digest,
            escrow_txid=os.urandom(32),
            escrow_vout=1,
            escrow_sats=escrow_sats,
        )
        prepared = self.client.request_loan_with_terms(terms, sender=self.borrower.address)
        receipt = self.client.send(prepared, self.borrower)
        loan_id = self.client.loan_id_from_receipt(receipt)
        self.terms[loan_id] = terms
        return loan_id, preimage

    def commit(self, loan_id: int) -> bytes:
        """Commit a fresh lender hash; returns the lender's preimage pL."""
        preimage, digest = new_secret()
        self.client.send(self.client.commit_lender_hash(loan_id, digest), self.lender)
        return preimage

    def offer(self, loan_id: int):
        return self.client.send(self.client.extend_loan_offer(loan_id), self.lender)

    def accept(self, loan_id: int, borrower_preimage: bytes):
        prepared = self.client.accept_loan_offer(loan_id, borrower_preimage, terms=self.terms[loan_id])
        return self.client.send(prepared, self.borrower)

    def offered(self, amount: int = 10**16) -> tuple[int, bytes, bytes]:
        loan_id, borrower_preimage = self.request(amount)
        lender_preimage = self.commit(loan_id)
        self.offer(loan_id)
        return loan_id, borrower_preimage, lender_preimage

    def active(self, amount: int = 10**16) -> tuple[int, bytes, bytes]:
        """An Active loan: (loan id, pB, pL)."""
        loan_id, borrower_preimage, lender_preimage = self.offered(amount)
        self.accept(loan_id, borrower_preimage)
        assert self.client.get_loan(loan_id).status is LoanStatus.ACTIVE
        return loan_id, borrower_preimage, lender_preimage

    def repay(self, loan_id: int):
        return self.client.send(self.client.attempt_repayment(loan_id, terms=self.terms[loan_id]), self.borrower)


@pytest.fixture
def loan_flow(
    loan_client: LoanContractClient, lender_account: LocalAccount, borrower_account: LocalAccount
) -> LoanFlow:
    return LoanFlow(loan_client, lender_account, borrower_account)
