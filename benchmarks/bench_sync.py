"""Benchmarks of the chain watchers (plain script; prints figures).

    python benchmarks/bench_sync.py [--chain evm] [--events 10000] [--app-events 1000]
    python benchmarks/bench_sync.py --chain bitcoin [--loans 100] [--blocks 300]

* ``--chain evm`` (the default): EVM events ingested per second by ``loans.sync.evm.sync_evm`` on anvil, one run
  over ``--events`` events (``requestLoan`` then ``cancelRequest`` of ``--events``/2 loans the app does not know:
  the contract's own calls, mined hundreds to a block): scan (``eth_getLogs`` in chunks), decode, store (one
  statement per chunk), apply (final at once: marked applied, as about no loan of ours). Then, separately,
  ``--app-events`` events that move the app's loans (drafts of one borrower, requested and cancelled on chain:
  each event a transition with its audit row through ``loans.services``), scanned, stored and applied.

* ``--chain bitcoin``: Bitcoin blocks followed per second by ``loans.sync.bitcoin.sync_bitcoin`` with ``--loans``
  open loans, over ``--blocks`` blocks of the embedded regtest node that carry the loans' transactions (every
  escrow funded, half the loans' TX_1, a quarter's TX_release) and a few unrelated payments each: the watch set,
  reading each block (``getblockhash`` + ``getblock`` verbosity 2) and recording the loans' transactions with the
  block and the cursor in one database transaction per block. Then, separately, final loan transactions applied
  per second (each a status transition with its audit row).

The database is a throwaway one (``DATABASE_URL``'s server, a database of its own, migrated, dropped at the end;
in-memory SQLite without ``DATABASE_URL``), so the benchmark never touches a developer's data.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loanproject.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-sync-throwaway-key")
os.environ.setdefault("LOG_LEVEL", "WARNING")  # a log line per loan transaction would be measured too


def throwaway_database() -> Callable[[], None]:
    """Set Django up on a database of the benchmark's own; returns the function that drops it."""
    import django
    from django.conf import settings

    django.setup()
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = f"bench_sync_{os.getpid()}"
    from django.test.utils import setup_databases, teardown_databases

    config = setup_databases(verbosity=0, interactive=False, serialized_aliases=set())
    return lambda: teardown_databases(config, verbosity=0)


def _send_batched(w3, sender: str, to: str, calls: list[tuple[str, int]]) -> None:
    """Send (data, value) calls from an anvil account (it signs), 500 to a JSON-RPC batch and to a block."""
    nonce = w3.eth.get_transaction_count(sender)
    for start in range(0, len(calls), 500):
        part = calls[start : start + 500]
        requests = [
            ("eth_sendTransaction", [{"from": sender, "to": to, "data": data, "value": hex(value),
                                     "gas": hex(400_000), "nonce": hex(nonce + k)}])
            for k, (data, value) in enumerate(part)
        ]  # fmt: skip
        for response in w3.provider.make_batch_request(requests):
            if response.get("error"):
                raise RuntimeError(f"eth_sendTransaction: {response['error']}")
        nonce += len(part)
        w3.provider.make_request("evm_mine", [])


def bench_evm(events: int, app_events: int) -> None:
    import hashlib

    from evm.anvil import AnvilNode
    from evm.client import LoanContractClient
    from evm.connection import connect
    from evm.deploy import deploy_contracts, dev_accounts
    from evm.parameters import ProtocolParameters
    from loans.models import PARAMETER_FIELDS, EvmEvent, Loan, User
    from loans.services import contract_deployment_record
    from loans.sync.evm import sync_evm

    with AnvilNode() as node:
        w3 = connect(node.url, expected_chain_id=node.chain_id, timeout=120)
        lender, borrower, stranger = dev_accounts(3)
        deployment = deploy_contracts(w3, lender, ProtocolParameters(lender_btc_pubkey=hashlib.sha256(b"L").digest()))
        record = contract_deployment_record(deployment=deployment)
        client = LoanContractClient.from_deployment(w3, deployment)
        parameters, version = client.parameters(), client.parameters_version()
        amount = parameters.min_amount_wei
        w3.provider.make_request("evm_setAutomine", [False])
        w3.provider.make_request("evm_setBlockGasLimit", [hex(500 * 400_000)])

        def request_and_cancel(sender: str, hashes: list[bytes], xonly: bytes) -> None:
            first = client.loan_count() + 1
            requests = [  # the escrow outpoint: hB's hash (an escrow is unique among live loans)
                (client.loan.encode_abi("requestLoan", [amount, xonly, h, hashlib.sha256(h).digest(), 0, 10**6,
                                                        version]), parameters.processing_fee_wei)
                for h in hashes
            ]  # fmt: skip
            _send_batched(w3, sender, deployment.loan_address, requests)
            cancels = [(client.loan.encode_abi("cancelRequest", [first + n]), 0) for n in range(len(hashes))]
            _send_batched(w3, sender, deployment.loan_address, cancels)

        def timed_sync(label: str) -> None:
            before = EvmEvent.objects.count()
            started = time.perf_counter()
            report = sync_evm(w3=w3, confirmations=1)
            elapsed = time.perf_counter() - started
            count = EvmEvent.objects.count() - before
            assert report.stored == count and report.applied >= count and not report.refused, report
            print(f"evm: {count} events {label} in {elapsed:.2f} s: {count / elapsed:8.1f} events/s")

        xonly = hashlib.sha256(b"xB").digest()
        started = time.perf_counter()
        request_and_cancel(stranger.address, [hashlib.sha256(b"%d" % n).digest() for n in range(events // 2)], xonly)
        print(
            f"({events // 2 * 2} events mined in {w3.eth.block_number} blocks in {time.perf_counter() - started:.1f} s)"
        )
        timed_sync("ingested (scan, decode, store, apply; loans the app does not know)")

        if app_events:
            user = User.objects.create_user(username="borrower", role="borrower", evm_address=borrower.address)
            snapshot = {name: getattr(record.parameters, name) for name in PARAMETER_FIELDS}
            hashes = [hashlib.sha256(b"app %d" % n).digest() for n in range(app_events // 2)]
            Loan.objects.bulk_create(
                Loan(**snapshot, parameters=record.parameters, borrower=user, deployment=record, amount_wei=amount,
                     bond_wei=0, repayment_wei=amount, borrower_btc_pubkey=xonly.hex(),
                     lender_btc_pubkey=record.parameters.lender_btc_pubkey, borrower_hash=h.hex())
                for h in hashes
            )  # fmt: skip
            request_and_cancel(borrower.address, hashes, xonly)
            timed_sync("moving app loans (each a transition and an audit row through loans.services)")
            assert Loan.objects.filter(status=Loan.Status.CANCELLED).count() == len(hashes)


def bench_bitcoin(loans: int, blocks: int) -> None:
    from django.conf import settings

    from bitcoin.testing import RegtestProcess, fund_output, mine_blocks
    from loans.sync.bitcoin import sync_bitcoin, watch_set
    from loans.tests.test_sync_bitcoin import make_chain_loan, send

    settings.BITCOIN_NETWORK = "regtest"
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        node = RegtestProcess(Path(tmp) / "node")
        node.start()
        try:
            rpc = node.rpc()
            mine_blocks(rpc, 200 - rpc.getblockcount())  # 100 mature coinbases: fundings need no long chains
            start = rpc.getblockcount() + 1
            chain_loans = [make_chain_loan() for _ in range(loans)]

            # The loans' transactions, spread over the first blocks; then blocks with unrelated payments only.
            for n, loan in enumerate(chain_loans, start=1):
                loan.request(loan.fund(rpc, confirmations=0))
                if n % 20 == 0 or n == loans:
                    mine_blocks(rpc, 1)
            locked = [(loan, send(rpc, loan.tx1())) for loan in chain_loans[: loans // 2]]
            mine_blocks(rpc, 1)
            for loan, tx1 in locked[: loans // 4]:
                send(rpc, loan.release(tx1))
            mine_blocks(rpc, 1)
            stranger = b"\x00\x14" + bytes(20)
            while rpc.getblockcount() < start + blocks - 1:
                for _ in range(3):
                    fund_output(rpc, stranger, 10_000, confirmations=0)
                mine_blocks(rpc, 1)
            followed = rpc.getblockcount() - start + 1

            started = time.perf_counter()
            watched = watch_set()
            watch_ms = (time.perf_counter() - started) * 1000
            # Follow every block first (nothing final yet at this depth), then apply: two figures, not one blur.
            started = time.perf_counter()
            report = sync_bitcoin(rpc=rpc, confirmations=followed + 1, start_height=start)
            follow_s = time.perf_counter() - started
            started = time.perf_counter()
            applied = sync_bitcoin(rpc=rpc, confirmations=1)
            apply_s = time.perf_counter() - started
            assert (report.blocks, report.applied, applied.applied) == (followed, 0, report.recorded), report
            print(f"watch set of {watched.loans} open loans built in {watch_ms:.1f} ms")
            print(
                f"bitcoin: {followed} blocks followed with {loans} open loans, {report.recorded} loan transactions "
                f"recorded, in {follow_s:.2f} s: {followed / follow_s:8.1f} blocks/s"
            )
            print(
                f"bitcoin: {applied.applied} final loan transactions applied (transition + audit row each) "
                f"in {apply_s:.2f} s: {applied.applied / apply_s:8.1f} /s"
            )
        finally:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", choices=["evm", "bitcoin"], default="evm", help="which watcher to measure")
    parser.add_argument("--events", type=int, default=10_000, help="events to ingest (evm; default 10,000)")
    parser.add_argument(
        "--app-events", type=int, default=1000, help="events moving the app's loans (evm; default 1,000; 0: none)"
    )
    parser.add_argument("--loans", type=int, default=100, help="open loans (bitcoin; default 100)")
    parser.add_argument("--blocks", type=int, default=300, help="blocks to follow (bitcoin; default 300)")
    args = parser.parse_args()
    if args.chain == "bitcoin" and (args.loans < 4 or args.blocks < 4):
        parser.error("--chain bitcoin needs at least 4 loans and 4 blocks")
    if args.chain == "evm" and (args.events < 2 or args.app_events < 0):
        parser.error("--chain evm needs at least 2 events")
    drop = throwaway_database()
    try:
        if args.chain == "evm":
            bench_evm(args.events, args.app_events)
        elif args.chain == "bitcoin":
            bench_bitcoin(args.loans, args.blocks)
    finally:
        drop()


if __name__ == "__main__":
    main()
