"""Throughput of the TX_1 pipeline: build, sign (B and L), finalize, verify with libbitcoinkernel.

Run from the repository root: ``.venv/bin/python benchmarks/bench_bitcoin_tx.py [--seconds N]``.
Prints one line with the number of complete TX_1 build+sign+verify cycles per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bitcoin.consensus import verify_input
from bitcoin.keys import PrivateKey
from bitcoin.loan import LoanFacts
from bitcoin.transactions import OutPoint, build_tx1, finalize_tx1

BORROWER = PrivateKey.from_wif("cNwW6ne3j9jUDWC3qFG5Bw3jzWvSZjZ2vgyP5LsTVj4WrJkJqjuz", "regtest")
LENDER = PrivateKey.from_wif("cMrC8dGmStj3pz7mbY3vjwhXYcQwkcaWwV4QFCTF25WwVW1TCDkJ", "regtest")
PREIMAGE = bytes.fromhex("0e0ed04e19fa04ec6b29e6ccfd6f7384a22e1a92b81563064d8c74f354d41f05")


def one_cycle(iteration: int) -> None:
    """Make the loan's facts (outputs derived), build TX_1, sign it twice, finalize and verify it with the kernel."""
    facts = LoanFacts(
        network="regtest",
        borrower_btc_pubkey=BORROWER.xonly_pubkey,
        lender_btc_pubkey=LENDER.xonly_pubkey,
        borrower_hash="114810e3c12909f2fb9cbf59c11ee5c9d107556476685f7e14205eab094d4927",
        lender_hash="646e58c6fbea3ac4750a2279d4b711fed954e3cb48319c630570e3143e4553e3",
        escrow_timelock_btc_blocks=100,
        collateral_timelock_btc_blocks=30000,
        escrow_outpoint=OutPoint(f"{iteration:064x}", 0),
        escrow_sats=1_200_000,
        loan_amount_sats=1_000_000,
        min_collateral_ratio_bps=10_000,
        collateral_cap_sats=1_100_000,
        origination_fee_bps=100,
        lender_payout_address="bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
        borrower_payout_address="bcrt1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqc8gma6",
        min_fee_rate_sat_vb=1,
        max_fee_rate_sat_vb=100,
    )
    prepared = build_tx1(facts, fee_rate_sat_vb=3)
    tx = finalize_tx1(
        prepared,
        borrower_signature=prepared.sign(BORROWER),
        lender_signature=prepared.sign(LENDER),
        borrower_preimage=PREIMAGE,
    )
    verify_input(tx, 0, [prepared.prevout])


def main() -> None:
    """Run cycles for the requested time and print the rate."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    one_cycle(0)  # warm up: loads libbitcoinkernel
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        count += 1
        one_cycle(count)
    elapsed = time.perf_counter() - start
    print(f"TX_1 build+sign+verify: {count / elapsed:.1f} per second ({count} cycles in {elapsed:.2f} s)")


if __name__ == "__main__":
    main()
