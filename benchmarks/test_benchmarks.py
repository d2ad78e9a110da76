"""The benchmarks still run and print their figures (tiny sizes: this checks they work, it measures nothing)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIGURE = r"[0-9]+(\.[0-9]+)?"


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(HERE / script), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_bitcoin_tx_benchmark_prints_cycles_per_second():
    output = run("bench_bitcoin_tx.py", "--seconds", "0.2")
    assert re.search(rf"TX_1 build\+sign\+verify: {FIGURE} per second", output), output


@pytest.mark.integration
def test_regtest_benchmark_prints_blocks_and_verifications_per_second():
    output = run("bench_regtest.py", "--blocks", "101", "--verifications", "20")
    assert re.search(rf"empty blocks .*: +{FIGURE} blocks/s", output), output
    assert re.search(rf"blocks with 1 payment .*: +{FIGURE} blocks/s", output), output
    assert re.search(rf"ScriptPubkey.verify, taproot script path .*: +{FIGURE} /s", output), output


def test_regtest_benchmark_refuses_too_few_blocks():
    result = subprocess.run(
        [sys.executable, str(HERE / "bench_regtest.py"), "--blocks", "20"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "at least 101" in result.stderr


@pytest.mark.integration
def test_evm_benchmark_prints_rates():
    output = run("bench_evm.py", "--loans", "3", "--reads", "5")
    assert "deploy both contracts and link them:" in output
    assert re.search(rf"send requestLoan .* +{FIGURE} /s", output), output
    assert re.search(rf"fetch_events .*\({FIGURE} events/s\)", output), output


@pytest.mark.integration
def test_sync_benchmark_prints_bitcoin_blocks_followed_per_second():
    output = run("bench_sync.py", "--chain", "bitcoin", "--loans", "4", "--blocks", "10")
    assert re.search(rf"bitcoin: 10 blocks followed with 4 open loans, .*: +{FIGURE} blocks/s", output), output
    assert re.search(rf"bitcoin: 7 final loan transactions applied .*: +{FIGURE} /s", output), output


@pytest.mark.integration
def test_sync_benchmark_prints_evm_events_ingested_per_second():
    output = run("bench_sync.py", "--events", "40", "--app-events", "10")
    assert re.search(rf"evm: 4[0-9] events ingested \(scan, decode, store, apply.*: +{FIGURE} events/s", output), output
    assert re.search(rf"evm: 10 events moving app loans .*: +{FIGURE} events/s", output), output
