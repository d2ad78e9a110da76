"""Benchmarks of the chain watchers (plain script; prints figures).

    python benchmarks/bench_sync.py --chain bitcoin [--loans 100] [--blocks 300]

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
    parser.add_argument("--chain", choices=["bitcoin"], default="bitcoin", help="which watcher to measure")
    parser.add_argument("--loans", type=int, default=100, help="open loans (bitcoin; default 100)")
    parser.add_argument("--blocks", type=int, default=300, help="blocks to follow (bitcoin; default 300)")
    args = parser.parse_args()
    if args.chain == "bitcoin" and (args.loans < 4 or args.blocks < 4):
        parser.error("--chain bitcoin needs at least 4 loans and 4 blocks")
    drop = throwaway_database()
    try:
        if args.chain == "bitcoin":
            bench_bitcoin(args.loans, args.blocks)
    finally:
        drop()


if __name__ == "__main__":
    main()
