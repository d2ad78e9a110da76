"""The nonce rule of `evm.nonces.NonceLease`, against a node whose answers the test controls (no anvil needed):
max(the node's pending count, the stored next nonce if the node knows our last transaction, one past a nonce the
node called taken)."""

from __future__ import annotations

import threading
import time

from web3.exceptions import TransactionNotFound

from evm.nonces import NonceLease, NonceRecord, ProcessNonceAllocator

SENDER = "0x" + "ab" * 20
KNOWN = b"\x01" * 32
UNKNOWN = b"\x02" * 32


class FakeEth:
    def __init__(self, pending: int, known: set[bytes]) -> None:
        self.pending = pending
        self.known = known

    def get_transaction_count(self, address: str, block: str) -> int:
        assert (address, block) == (SENDER, "pending")
        return self.pending

    def get_transaction(self, tx_hash) -> dict:
        if bytes(tx_hash) not in self.known:
            raise TransactionNotFound(f"{bytes(tx_hash).hex()} not found")
        return {"hash": tx_hash}


class FakeWeb3:
    def __init__(self, pending: int, known: set[bytes] = frozenset()) -> None:
        self.eth = FakeEth(pending, set(known))


def test_without_a_record_the_nonce_is_the_nodes_pending_count():
    assert NonceLease(FakeWeb3(7), SENDER).next_nonce() == 7


def test_a_stored_next_nonce_wins_when_the_node_lags_behind_what_it_accepted():
    """A load-balanced provider may answer from a backend that has not seen our last transaction yet."""
    lease = NonceLease(FakeWeb3(7, {KNOWN}), SENDER, NonceRecord(next_nonce=9, last_tx_hash=KNOWN))
    assert lease.next_nonce() == 9


def test_a_stored_next_nonce_is_ignored_when_the_node_does_not_know_our_last_transaction():
    """Dropped from the pool, or the chain was rewound: signing above the node's count would leave a gap that
    blocks every later transaction."""
    lease = NonceLease(FakeWeb3(7), SENDER, NonceRecord(next_nonce=9, last_tx_hash=UNKNOWN))
    assert lease.next_nonce() == 7
    assert NonceLease(FakeWeb3(7), SENDER, NonceRecord(next_nonce=9)).next_nonce() == 7


def test_the_node_ahead_of_the_record_wins():
    """Transactions sent outside the allocator (the lender's own wallet) move the node's count past the record."""
    lease = NonceLease(FakeWeb3(12, {KNOWN}), SENDER, NonceRecord(next_nonce=9, last_tx_hash=KNOWN))
    assert lease.next_nonce() == 12


def test_a_nonce_the_node_called_taken_is_never_signed_again_in_the_lease():
    w3 = FakeWeb3(7)
    lease = NonceLease(w3, SENDER)
    lease.taken(7)  # "nonce too low" while the node still counts 7 (a lagging backend)
    assert lease.next_nonce() == 8
    lease.taken(8)
    assert lease.next_nonce() == 9


def test_accepted_updates_the_record_the_allocator_stores():
    record = NonceRecord(next_nonce=3)
    lease = NonceLease(FakeWeb3(3), SENDER, record)
    assert not lease.changed
    lease.accepted(3, KNOWN)
    assert (record.next_nonce, record.last_tx_hash, lease.changed) == (4, KNOWN, True)
    assert NonceLease(FakeWeb3(3, {KNOWN}), SENDER, record).next_nonce() == 4


def test_the_process_allocator_serialises_leases_per_sender_and_chain():
    allocator = ProcessNonceAllocator()
    order: list[str] = []
    inside = threading.Event()

    def hold() -> None:
        with allocator.lease(FakeWeb3(0), 31337, SENDER):
            inside.set()
            time.sleep(0.2)
            order.append("first out")

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(5)
    with allocator.lease(FakeWeb3(0), 1, SENDER):  # another chain: not blocked
        order.append("other chain")
    with allocator.lease(FakeWeb3(0), 31337, SENDER.upper().replace("0X", "0x")):  # same sender, any case
        order.append("second in")
    holder.join()
    assert order == ["other chain", "first out", "second in"]
