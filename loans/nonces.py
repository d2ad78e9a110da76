"""The EVM nonce allocator for several sending processes (ADR 0005): one ``EvmNonce`` row per (chain id, sender).

A lease locks the row (``SELECT ... FOR UPDATE``) in its own committed transaction and holds it until the node has
the signed transaction, so two workers signing with the lender's key take turns and never sign one nonce twice;
the nonce is chosen by ``evm.nonces.NonceLease`` (the node's pending count, or the stored next nonce when the node
lags behind what it accepted from us). Pass it to ``evm.client.send(nonces=...)`` or
``LoanContractClient(..., nonces=DATABASE_NONCES)``.

Call ``send`` outside any transaction of yours: the lease's transaction is ``durable`` (it must commit the moment
the node has the transaction, whatever the caller does next), and a receipt wait must never hold a row lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction
from eth_utils import to_checksum_address
from web3 import Web3

from evm.nonces import NonceLease, NonceRecord

from .models import EvmNonce


class DatabaseNonceAllocator:
    """``evm.nonces.NonceAllocator`` backed by the ``EvmNonce`` table (PostgreSQL row locks)."""

    @contextmanager
    def lease(self, w3: Web3, chain_id: int, address: str) -> Iterator[NonceLease]:
        address = to_checksum_address(address)
        if connection.vendor == "sqlite":
            with self._sqlite_lease(w3, chain_id, address) as lease:
                yield lease
            return
        with transaction.atomic(durable=True):
            # The first lease for a sender creates its row; a concurrent first lease waits on the unique index.
            EvmNonce.objects.bulk_create([EvmNonce(chain_id=chain_id, address=address)], ignore_conflicts=True)
            row = EvmNonce.objects.select_for_update().get(chain_id=chain_id, address=address)
            lease = NonceLease(w3, address, _record_of(row))
            yield lease
            if lease.changed:
                _store(row, lease.record)

    @contextmanager
    def _sqlite_lease(self, w3: Web3, chain_id: int, address: str) -> Iterator[NonceLease]:
        """SQLite (the development default) has one writer for the whole file: a lease holding a write transaction
        while the node is asked would lock out the automation's record of the signed transaction, which is written
        and committed on a connection of its own before sending (``loans.services.automation``), and every
        automated contract call would fail with "database is locked". So no transaction is held here: the row is
        read, and written back in a short transaction once the node has the transaction. Two processes signing
        with one key at the same instant may then pick the same nonce (the node keeps one); PostgreSQL, as in
        production and the tests, serializes them with the row lock above."""
        EvmNonce.objects.bulk_create([EvmNonce(chain_id=chain_id, address=address)], ignore_conflicts=True)
        row = EvmNonce.objects.get(chain_id=chain_id, address=address)
        lease = NonceLease(w3, address, _record_of(row))
        yield lease
        if lease.changed:
            with transaction.atomic(durable=True):
                _store(row, lease.record)


def _record_of(row: EvmNonce) -> NonceRecord:
    return NonceRecord(
        next_nonce=row.next_nonce, last_tx_hash=bytes.fromhex(row.last_tx_hash) if row.last_tx_hash else None
    )


def _store(row: EvmNonce, record: NonceRecord) -> None:
    row.next_nonce = record.next_nonce
    row.last_tx_hash = record.last_tx_hash.hex() if record.last_tx_hash else None
    row.save(update_fields=["next_nonce", "last_tx_hash", "updated_at"])


DATABASE_NONCES = DatabaseNonceAllocator()
