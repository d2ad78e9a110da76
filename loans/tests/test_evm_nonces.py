"""The lender's EVM nonces with several senders (ADR 0005): `loans.nonces.DatabaseNonceAllocator` on anvil.

Threads that share nothing but the database (no process lock: each has its own connection, as separate workers
would) and separate processes send with the lender's key at once; no nonce is ever signed twice, every transaction
is mined, and the stored next nonce follows the chain. The control test shows what per-process locks allow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes

from evm.client import PreparedTransaction, send
from evm.nonces import ProcessNonceAllocator
from loans.models import EvmNonce
from loans.nonces import DATABASE_NONCES

BASE_DIR = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


class RecordingAccount:
    """The lender's account, noting every nonce it signs (a nonce signed twice is the bug we look for)."""

    def __init__(self, account: LocalAccount, signed: list[int]) -> None:
        self.account = account
        self.address = account.address
        self.signed = signed

    def sign_transaction(self, tx):
        self.signed.append(int(tx["nonce"]))
        return self.account.sign_transaction(tx)


def payment(w3, to: str, wei: int) -> PreparedTransaction:
    return PreparedTransaction(to=to, data="0x", value=wei, chain_id=int(w3.eth.chain_id), gas=21_000)


def mined_nonces(w3, receipts) -> list[int]:
    return sorted(int(w3.eth.get_transaction(r["transactionHash"])["nonce"]) for r in receipts)


def test_threads_sharing_only_the_database_never_sign_a_nonce_twice(w3, deployment, lender_account, stranger_account):
    signed: list[int] = []
    receipts: list = []
    errors: list[BaseException] = []
    start = w3.eth.get_transaction_count(lender_account.address)
    go = threading.Barrier(3)

    def worker(first_wei: int) -> None:
        try:
            account = RecordingAccount(lender_account, signed)
            go.wait(10)
            for i in range(6):
                prepared = payment(w3, stranger_account.address, first_wei + i)
                receipts.append(send(w3, prepared, account, nonces=DATABASE_NONCES))
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=worker, args=(1000 * n,)) for n in range(1, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert sorted(signed) == list(range(start, start + 18))  # each nonce signed exactly once
    assert mined_nonces(w3, receipts) == list(range(start, start + 18))
    row = EvmNonce.objects.get(chain_id=31337, address=lender_account.address)
    assert row.next_nonce == start + 18 and row.last_tx_hash is not None


def test_a_lease_holds_off_every_other_sender_with_the_key(w3, deployment, lender_account, stranger_account):
    """While one worker holds the row, another worker's send waits: it signs nothing until the lease ends."""
    signed: list[int] = []
    leased, release = threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with DATABASE_NONCES.lease(w3, 31337, lender_account.address):
                leased.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert leased.wait(10)
    result: dict = {}

    def sender() -> None:
        try:
            result["receipt"] = send(
                w3, payment(w3, stranger_account.address, 1), RecordingAccount(lender_account, signed),
                nonces=DATABASE_NONCES,
            )  # fmt: skip
        finally:
            connection.close()

    waiting = threading.Thread(target=sender)
    waiting.start()
    time.sleep(1.0)
    assert signed == []  # blocked on the row lock
    release.set()
    thread.join(10)
    waiting.join(30)
    assert len(signed) == 1 and result["receipt"]["status"] == 1


def test_a_stored_nonce_the_node_never_saw_leaves_no_gap(w3, deployment, lender_account, stranger_account):
    """The row says 5 ahead, but the node does not know the transaction it names (dropped, or the chain was
    rewound): the nonce is the node's, so nothing waits forever behind a missing nonce."""
    pending = w3.eth.get_transaction_count(lender_account.address, "pending")
    EvmNonce.objects.create(
        chain_id=31337, address=lender_account.address, next_nonce=pending + 5, last_tx_hash="ee" * 32
    )
    receipt = send(w3, payment(w3, stranger_account.address, 1), lender_account, nonces=DATABASE_NONCES)
    assert int(w3.eth.get_transaction(receipt["transactionHash"])["nonce"]) == pending
    row = EvmNonce.objects.get()
    assert (row.next_nonce, row.last_tx_hash) == (pending + 1, bytes(receipt["transactionHash"]).hex())


def test_the_contract_client_sends_through_the_database_allocator(w3, loan_client, loan_flow, lender_account):
    from dataclasses import replace

    from evm.testing import new_secret

    client = replace(loan_client, nonces=DATABASE_NONCES)
    loan_id, _ = loan_flow.request(10**16)
    receipt = client.send(client.commit_lender_hash(loan_id, new_secret()[1]), lender_account)
    nonce = int(w3.eth.get_transaction(receipt["transactionHash"])["nonce"])
    assert EvmNonce.objects.get(address=lender_account.address).next_nonce == nonce + 1


CHILD = """
import json, os, sys, time
import django
django.setup()
from evm.client import PreparedTransaction, send
from evm.connection import connect
from evm.deploy import dev_accounts
from loans.nonces import DATABASE_NONCES

w3 = connect(os.environ["ANVIL_URL"], expected_chain_id=31337, timeout=30)
lender, stranger = dev_accounts(3)[0], dev_accounts(3)[2]
signed = []

class Recording:
    address = lender.address
    def sign_transaction(self, tx):
        signed.append(int(tx["nonce"]))
        return lender.sign_transaction(tx)

w3.eth.chain_id  # connected: ready
open(os.path.join(os.environ["RENDEZVOUS"], f"ready-{os.getpid()}"), "w").close()
while not os.path.exists(os.path.join(os.environ["RENDEZVOUS"], "go")):
    time.sleep(0.005)
hashes, began = [], time.time()
for i in range(int(os.environ["SENDS"])):
    prepared = PreparedTransaction(stranger.address, "0x", int(os.environ["FIRST_WEI"]) + i, 31337, gas=21000)
    hashes.append(bytes(send(w3, prepared, Recording(), nonces=DATABASE_NONCES)["transactionHash"]).hex())
print(json.dumps({"signed": signed, "hashes": hashes, "began": began, "ended": time.time()}))
"""


def test_processes_sending_with_one_key_never_sign_a_nonce_twice(w3, anvil, deployment, lender_account, tmp_path):
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}
    env.update(
        DJANGO_SETTINGS_MODULE="loanproject.settings",
        DJANGO_SECRET_KEY="nonce-test-worker",
        DJANGO_DEBUG="0",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        ANVIL_URL=anvil.url,
        SENDS="10",
        RENDEZVOUS=str(tmp_path),
    )
    start = w3.eth.get_transaction_count(lender_account.address)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            cwd=BASE_DIR,
            env={**env, "FIRST_WEI": str(10_000 * n)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < len(children):  # both set up, then both start at once
        assert time.monotonic() < deadline and all(child.poll() is None for child in children)
        time.sleep(0.05)
    (tmp_path / "go").touch()
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert max(r["began"] for r in results) < min(r["ended"] for r in results)  # they did send at the same time
    signed = sorted(n for result in results for n in result["signed"])
    assert signed == list(range(start, start + 20))  # no nonce signed twice, none skipped
    receipts = [w3.eth.get_transaction_receipt(HexBytes(h)) for result in results for h in result["hashes"]]
    assert all(r["status"] == 1 for r in receipts)
    assert mined_nonces(w3, receipts) == list(range(start, start + 20))
    assert EvmNonce.objects.get(address=lender_account.address).next_nonce == start + 20


class PerProcessLocks:
    """The control: each worker its own process lock (what ADR 0005 had), both reading the node's count before
    either sends (forced with a barrier, as two processes racing would)."""

    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier = barrier
        self.local = threading.local()

    @contextmanager
    def lease(self, w3, chain_id, address):
        allocator = self.local.__dict__.setdefault("allocator", ProcessNonceAllocator())
        with allocator.lease(w3, chain_id, address) as lease:
            first = lease.next_nonce

            def next_nonce():
                nonce = first()
                if not getattr(self.local, "waited", False):
                    self.local.waited = True
                    self.barrier.wait(10)
                return nonce

            lease.next_nonce = next_nonce
            yield lease


def test_control_per_process_locks_sign_one_nonce_twice(w3, deployment, lender_account, stranger_account):
    signed: list[int] = []
    allocator = PerProcessLocks(threading.Barrier(2))

    def worker(wei: int) -> None:
        send(w3, payment(w3, stranger_account.address, wei), RecordingAccount(lender_account, signed), nonces=allocator)

    threads = [threading.Thread(target=worker, args=(wei,)) for wei in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(signed) > len(set(signed))  # the same nonce signed by both: what the database allocator prevents
