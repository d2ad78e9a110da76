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


ROW = rf" +[0-9]+ +{FIGURE} +{FIGURE} +{FIGURE} +0 +[0-9]+$"  # requests, median, p95, p99, no failure, alone (ms)


@pytest.mark.integration
def test_desk_load_benchmark_prints_latency_per_endpoint():
    output = run("bench_desk_load.py", "--loans", "24", "--borrowers", "2", "--users", "2", "--seconds", "1")
    assert "seeded 24 loans of 2 borrowers" in output and "2 requested, in the lender's queue" in output, output
    for endpoint in (
        "GET /borrower/loans/<id>/",
        "GET /lender/queue/",
        "GET /lender/",
        r"GET /api/v1/loans/ \(lender\)",
        r"GET /api/v1/loans/ \(borrower\)",
    ):
        assert re.search(rf"^{endpoint}{ROW}", output, re.MULTILINE), (endpoint, output)


@pytest.mark.integration
def test_desk_queries_benchmark_prints_queries_per_request_at_each_size():
    output = run("bench_desk_load.py", "--queries", "--sizes", "48,96", "--borrowers", "2")
    assert re.search(r"^endpoint +48 loans +96 loans$", output, re.MULTILINE), output
    for endpoint in ("GET /borrower/loans/<id>/", "GET /lender/queue/", r"GET /api/v1/loans/ \(lender\)"):
        counts = re.search(rf"^{endpoint} +([0-9]+) +([0-9]+)$", output, re.MULTILINE)
        assert counts and counts[1] == counts[2], (endpoint, output)
    assert "queries per request: constant in the number of loans" in output


def test_desk_queries_benchmark_refuses_a_single_size():
    result = subprocess.run(
        [sys.executable, str(HERE / "bench_desk_load.py"), "--queries", "--sizes", "100"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "two sizes or more" in result.stderr


@pytest.mark.integration
def test_happy_path_benchmark_prints_app_and_chain_time_per_step():
    output = run("bench_happy_path.py", "--loans", "1")
    for step in ("request", "offer", "accept", "TX_1", "repay", "accept repayment", "TX_release confirmed", "total"):
        assert re.search(rf"^{step} +{FIGURE} +{FIGURE} +{FIGURE} ", output, re.MULTILINE), (step, output)
    assert re.search(
        rf"happy path: {FIGURE} s wall, {FIGURE} s in the app \({FIGURE} s of it the offline tool's processes\), "
        rf"{FIGURE} s waiting for the chains",
        output,
    ), output
