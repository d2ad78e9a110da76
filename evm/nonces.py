"""Who picks the nonce of a server-signed transaction (ADR 0005), behind one small interface.

`evm.client.send` asks a `NonceAllocator` for a lease on (chain id, sender): while the lease is open nobody else
signs with that key (through the same allocator), `NonceLease.next_nonce()` gives the nonce to sign with,
`accepted()` records that the node took the transaction, `taken()` that the node says the nonce is used (a lost
race: the next nonce is higher). The allocator persists what the lease learnt when it closes.

- `ProcessNonceAllocator` (the default): a lock per address in this process; the nonce is the node's pending count.
  Right for one sending process only.
- A stored allocator passes the lease its `NonceRecord` (the next nonce and the last accepted transaction) and
  saves it back; several processes then share one sequence. `loans.nonces.DatabaseNonceAllocator` keeps it in a
  row locked with SELECT ... FOR UPDATE (this package stays ORM-free).

The nonce is max(the node's pending count, the stored next nonce, one past any nonce the node called taken).
The stored next nonce covers a node whose pending count lags (a load-balanced provider, a transaction not yet in
the pool the count comes from); it is ignored when the node does not know the last transaction we sent (dropped
from the pool, or the chain was rewound), since a nonce above the node's count would leave a gap that blocks every
later transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound


@dataclass
class NonceRecord:
    """What a stored allocator keeps per (chain id, sender)."""

    next_nonce: int = 0
    last_tx_hash: bytes | None = None


class NonceLease:
    """The right to sign with one sender while the lease is open; see the module docstring for the rule."""

    def __init__(self, w3: Web3, address: str, record: NonceRecord | None = None) -> None:
        self.w3 = w3
        self.address = address
        self.record = record  # None: nothing stored (the per-process allocator)
        self.floor = 0  # one past the highest nonce the node said was taken
        self.changed = False

    def _node_knows(self, tx_hash: bytes) -> bool:
        try:
            return self.w3.eth.get_transaction(HexBytes(tx_hash)) is not None
        except TransactionNotFound:
            return False

    def next_nonce(self) -> int:
        pending = int(self.w3.eth.get_transaction_count(self.address, "pending"))
        nonce = max(pending, self.floor)
        record = self.record
        if (
            record is not None
            and record.next_nonce > nonce
            and record.last_tx_hash is not None
            and self._node_knows(record.last_tx_hash)
        ):
            nonce = record.next_nonce  # the node's count lags behind what it accepted from us
        return nonce

    def accepted(self, nonce: int, tx_hash: bytes) -> None:
        """The node holds our transaction `tx_hash` with `nonce`."""
        self.floor = max(self.floor, nonce + 1)
        if self.record is not None:
            self.record.next_nonce = nonce + 1
            self.record.last_tx_hash = bytes(tx_hash)
            self.changed = True

    def taken(self, nonce: int) -> None:
        """The node refused `nonce` as used ("nonce too low", "replacement transaction underpriced")."""
        self.floor = max(self.floor, nonce + 1)


class NonceAllocator(Protocol):
    def lease(self, w3: Web3, chain_id: int, address: str) -> AbstractContextManager[NonceLease]:
        """Exclusive use of `address` on `chain_id` until the context exits (then persist what it learnt)."""
        ...


class ProcessNonceAllocator:
    """One lock per (chain id, address) in this process; the node's pending count is the nonce."""

    def __init__(self) -> None:
        self._locks: dict[tuple[int, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, chain_id: int, address: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((chain_id, address.lower()), threading.Lock())

    @contextmanager
    def lease(self, w3: Web3, chain_id: int, address: str) -> Iterator[NonceLease]:
        with self._lock(chain_id, address):
            yield NonceLease(w3, address)


PROCESS_NONCES = ProcessNonceAllocator()

__all__ = ["PROCESS_NONCES", "NonceAllocator", "NonceLease", "NonceRecord", "ProcessNonceAllocator"]
