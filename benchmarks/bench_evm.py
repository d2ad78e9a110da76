"""Benchmarks of the EVM client against a local anvil (plain script; prints figures).

    python benchmarks/bench_evm.py [--loans 200] [--reads 500]

* reads per second (`get_loan`, `loan_count`), preparations per second (encode only / with dry run and gas
  estimate), full server-key sends per second (dry run, estimate, sign, send, wait for the receipt);
* event scanning: events decoded per second with `fetch_events` over the benchmark's own blocks.

anvil mines instantly, so these are client-side costs (JSON-RPC over HTTP, ABI encoding, signing); on Rootstock
the block time (~30 s) dominates every send.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evm.anvil import AnvilNode
from evm.client import LoanContractClient
from evm.connection import connect
from evm.deploy import deploy_contracts, dev_accounts
from evm.events import fetch_events
from evm.parameters import ProtocolParameters
from evm.testing import LoanFlow, new_secret


def rate(label: str, count: int, elapsed: float) -> None:
    print(f"{label:<62} {count / elapsed:9.1f} /s  ({elapsed * 1000 / count:7.2f} ms each, n={count})")


def timed(label: str, count: int, fn) -> None:
    started = time.perf_counter()
    for i in range(count):
        fn(i)
    rate(label, count, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loans", type=int, default=200, help="loans to request (full sends)")
    parser.add_argument("--reads", type=int, default=500, help="read calls per read benchmark")
    options = parser.parse_args()

    with AnvilNode() as node:
        w3 = connect(node.url, expected_chain_id=31337, timeout=30)
        lender, borrower = dev_accounts(2)
        started = time.perf_counter()
        deployment = deploy_contracts(w3, lender, ProtocolParameters(lender_btc_pubkey=new_secret()[1]))
        print(f"deploy both contracts and link them: {time.perf_counter() - started:.2f} s")
        client = LoanContractClient(w3, deployment.loan_address, deployment.ether_swap_address)
        flow = LoanFlow(client, lender, borrower)

        ids: list[int] = []
        timed("send requestLoan (dry run + estimate + sign + receipt)", options.loans, lambda _: ids.append(
            flow.request(10**16)[0]))  # fmt: skip
        timed("send commitLenderHash (server key)", options.loans, lambda i: flow.commit(ids[i]))
        timed("get_loan", options.reads, lambda i: client.get_loan(ids[i % len(ids)]))
        timed("loan_count", options.reads, lambda _: client.loan_count())
        timed("prepare cancelRequest (encode only)", options.reads, lambda i: client.cancel_request(ids[i % len(ids)]))
        timed(
            "prepare cancelRequest (dry run + gas estimate)",
            options.reads,
            lambda i: client.cancel_request(ids[i % len(ids)], sender=borrower.address),
        )
        timed(
            "prepare extendLoanOffer (reads the loan, dry run + estimate)",
            options.reads,
            lambda i: client.extend_loan_offer(ids[i % len(ids)], sender=lender.address),
        )

        head = w3.eth.block_number
        for chunk in (1, 100, 10_000):
            started = time.perf_counter()
            events = fetch_events(w3, deployment.addresses, deployment.block_number, head, chunk_size=chunk)
            elapsed = time.perf_counter() - started
            print(
                f"fetch_events over {head - deployment.block_number + 1} blocks, chunk {chunk:>5}: "
                f"{len(events)} events in {elapsed:.2f} s ({len(events) / elapsed:.0f} events/s)"
            )


if __name__ == "__main__":
    main()
