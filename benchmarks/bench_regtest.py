"""Benchmarks of the embedded regtest node (plain script; prints figures).

    python benchmarks/bench_regtest.py [--blocks 1000] [--verifications 5000]

* blocks mined and validated per second by Bitcoin Core's consensus code (empty blocks, measured per slice of
  chain height to show how the rate changes as the chain grows, then blocks carrying one faucet payment each);
* script verifications per second: `ScriptPubkey.verify` on a taproot script-path spend (the loan's TX_release).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pbk

from bitcoin.keys import PrivateKey
from bitcoin.loan import LoanFacts
from bitcoin.regtest.address import encode_segwit
from bitcoin.regtest.node import RegtestNode
from bitcoin.transactions import build_release, finalize_release

MIN_BLOCKS = 101  # coinbase maturity (100) + 1, so the faucet can pay in the second part


def bench_blocks(total: int, slices: int = 4) -> None:
    """Mine `total` empty blocks in `slices` slices, then 100 blocks with one transaction each."""
    with tempfile.TemporaryDirectory(prefix="bench-regtest-") as tmp:
        node = RegtestNode(Path(tmp))
        try:
            per_slice = max(1, total // slices)
            for _ in range(slices):
                start_height = node.get_block_count()
                started = time.perf_counter()
                node.generate_to_script(per_slice, node.faucet.script_pubkey)
                elapsed = time.perf_counter() - started
                print(
                    f"empty blocks {start_height + 1:>6}-{node.get_block_count():<6}: "
                    f"{per_slice / elapsed:8.1f} blocks/s ({elapsed * 1000 / per_slice:.2f} ms/block)"
                )
            target = b"\x00\x14" + hashlib.sha256(b"bench").digest()[:20]
            count = 100
            started = time.perf_counter()
            for _ in range(count):
                node.send_to_script(target, 10_000)
                node.generate_to_script(1, node.faucet.script_pubkey)
            elapsed = time.perf_counter() - started
            print(
                f"blocks with 1 payment (mempool accept + mine + validate): {count / elapsed:8.1f} blocks/s "
                f"({elapsed * 1000 / count:.2f} ms/block)"
            )
            started = time.perf_counter()
            node.close()
            print(f"clean shutdown (kernel flush + index snapshot): {time.perf_counter() - started:.2f} s")
            started = time.perf_counter()
            node = RegtestNode(Path(tmp))
            print(f"restart at height {node.get_block_count()} (snapshot load): {time.perf_counter() - started:.2f} s")
            (Path(tmp) / "indexes.json").unlink()
            node.close()
            (Path(tmp) / "indexes.json").unlink()
            started = time.perf_counter()
            node = RegtestNode(Path(tmp))
            print(f"restart with index rebuild from the kernel: {time.perf_counter() - started:.2f} s")
            node.close()
            (Path(tmp) / "node.dirty").write_text("simulated crash")
            started = time.perf_counter()
            node = RegtestNode(Path(tmp))
            print(
                f"restart after a crash (kernel reindex from block files + index rebuild) at height "
                f"{node.get_block_count()}: {time.perf_counter() - started:.2f} s"
            )
        finally:
            node.close()


def bench_script_verify(iterations: int) -> None:
    """Time `ScriptPubkey.verify` on a TX_release (taproot script path: Schnorr check + SHA-256 hashlock)."""
    borrower, lender = PrivateKey.generate(), PrivateKey.generate()
    p_l = b"\x42" * 32
    value = 1_000_000
    payout = encode_segwit("bcrt", 0, bytes(range(20)))
    facts = LoanFacts(
        network="regtest",
        borrower_btc_pubkey=borrower.xonly_pubkey,
        lender_btc_pubkey=lender.xonly_pubkey,
        borrower_hash=hashlib.sha256(b"\x24" * 32).digest(),
        lender_hash=hashlib.sha256(p_l).digest(),
        escrow_timelock_btc_blocks=3,
        collateral_timelock_btc_blocks=5,
        escrow_outpoint=None,
        escrow_sats=None,
        loan_amount_sats=value,
        min_collateral_ratio_bps=10_000,
        collateral_cap_sats=value,
        origination_fee_bps=100,
        lender_payout_address=payout,
        borrower_payout_address=payout,
        min_fee_rate_sat_vb=1,
        max_fee_rate_sat_vb=100,
    )
    prepared = build_release(facts, tx1_txid="11" * 32, fee_rate_sat_vb=2)
    tx = finalize_release(prepared, borrower_signature=prepared.sign(borrower), lender_preimage=p_l)
    spk = pbk.ScriptPubkey(facts.collateral.script_pubkey)
    kernel_tx = pbk.Transaction(tx.serialize())
    spent = [pbk.TransactionOutput(spk, value)]
    flags = pbk.ScriptVerificationFlags.ALL
    precomputed = pbk.script.PrecomputedTransactionData(kernel_tx, spent)
    assert spk.verify(value, kernel_tx, precomputed, 0, flags)
    started = time.perf_counter()
    for _ in range(iterations):
        spk.verify(value, kernel_tx, precomputed, 0, flags)
    elapsed = time.perf_counter() - started
    print(
        f"ScriptPubkey.verify, taproot script path (reused precomputed data): {iterations / elapsed:10.0f} /s "
        f"({elapsed * 1e6 / iterations:.1f} us each)"
    )
    started = time.perf_counter()
    for _ in range(iterations):
        fresh_tx = pbk.Transaction(tx.serialize())
        fresh = pbk.script.PrecomputedTransactionData(fresh_tx, [pbk.TransactionOutput(spk, value)])
        spk.verify(value, fresh_tx, fresh, 0, flags)
    elapsed = time.perf_counter() - started
    print(
        f"ScriptPubkey.verify incl. parsing and precomputation (as the mempool does): {iterations / elapsed:10.0f} /s"
    )


def main() -> None:
    """Run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--verifications", type=int, default=5000)
    args = parser.parse_args()
    if args.blocks < MIN_BLOCKS:
        parser.error(f"--blocks must be at least {MIN_BLOCKS}: the payment blocks spend a mature coinbase")
    bench_blocks(args.blocks)
    bench_script_verify(args.verifications)


if __name__ == "__main__":
    main()
