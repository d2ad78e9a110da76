"""The Bitcoin watcher killed with SIGKILL at random points and restarted: every fact is stored once and every
transition applied once.

``manage.py sync_chains --chain bitcoin`` runs as a child process against the regtest node and the test database
while the chain holds many blocks with loan transactions (fundings, TX_1, TX_release, TX_exit, TX_capture) and
grows between restarts. Each round kills it (-9) at a point chosen at random: once the cursor has passed a random
height, once a random number of facts have been applied, or after a random delay. A final run then finishes the
work, and the database must hold exactly the facts on the chain, each once, each applied once, with each loan's
audit trail its path.
"""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import pytest
from django.db import connection

from bitcoin.rpc import BitcoinRPC
from bitcoin.testing import RegtestProcess, mine_blocks
from loans.models import BitcoinTransaction, ChainCursor, LoanStatusChange
from loans.sync.bitcoin import sync_bitcoin

from .test_sync_bitcoin import T_0, T_1, ChainLoan, assert_blocks_follow_the_node, bitcoin_trail, make_chain_loan, send
from .watcher_process import WatcherProcess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LOANS = 12
ROUNDS = 6
PATHS = {
    "release": ["escrow_confirmed", "collateral_locked", "released"],
    "exit": ["escrow_confirmed", "exited"],
    "capture": ["escrow_confirmed", "collateral_locked", "captured"],
}
ROLES = {
    "escrow_confirmed": "escrow_funding",
    "collateral_locked": "collateral_lock",
    "released": "collateral_release",
    "exited": "escrow_exit",
    "captured": "collateral_capture",
}


def _state() -> tuple[int, int, int]:
    """(followed height, recorded facts, applied facts), as committed."""
    height = ChainCursor.objects.filter(chain="bitcoin").values_list("block_number", flat=True).first() or 0
    return (
        height,
        BitcoinTransaction.objects.count(),
        BitcoinTransaction.objects.filter(applied_at__isnull=False).count(),
    )


def _wait(condition, watcher: WatcherProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        assert watcher.process is not None and watcher.process.poll() is None, f"the watcher died; see {watcher.log}"
        time.sleep(0.01)


def test_killed_at_random_points_and_restarted_it_stores_every_fact_once_and_applies_every_transition_once(
    btc_node: RegtestProcess, btc_rpc: BitcoinRPC, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the child process needs a database it can share: PostgreSQL")
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"seed {seed}")

    # A cursor at the tip: the child follows every block mined from here on.
    start = btc_rpc.getblockcount()
    sync_bitcoin(rpc=btc_rpc, start_height=start)

    def mine(n: int) -> None:
        mine_blocks(btc_rpc, n)

    loans: list[tuple[ChainLoan, str]] = [(make_chain_loan(), path) for path in (list(PATHS) * LOANS)[:LOANS]]
    expected: dict[int, dict[str, str]] = {loan.pk: {} for loan, _ in loans}  # loan -> role -> txid

    def fund_and_lock(batch: list[tuple[ChainLoan, str]]) -> None:
        for loan, _ in batch:
            escrow = loan.fund(btc_rpc, confirmations=0)
            loan.request(escrow)
            expected[loan.pk]["escrow_funding"] = escrow.txid
        mine(1)
        for loan, path in batch:
            if path != "exit":
                expected[loan.pk]["collateral_lock"] = send(btc_rpc, loan.tx1())
        mine(1)

    def settle(batch: list[tuple[ChainLoan, str]]) -> None:
        for loan, path in batch:
            tx1 = expected[loan.pk].get("collateral_lock")
            if path == "release":
                expected[loan.pk]["collateral_release"] = send(btc_rpc, loan.release(tx1))
            elif path == "exit":
                expected[loan.pk]["escrow_exit"] = send(btc_rpc, loan.exit())
            else:
                expected[loan.pk]["collateral_capture"] = send(btc_rpc, loan.capture(tx1))
        mine(1)

    # Before the first start: half the loans go through their whole life, among many empty blocks.
    first, second = loans[: LOANS // 2], loans[LOANS // 2 :]
    fund_and_lock(first)
    mine(max(T_0, T_1) + 60)
    settle(first)
    mine(60)
    # The other half happens while the watcher is killed and restarted.
    steps = [lambda: fund_and_lock(second), lambda: mine(max(T_0, T_1) + 20), lambda: settle(second)]

    watcher = WatcherProcess(
        "bitcoin",
        tmp_path / "watcher.log",
        BITCOIN_RPC_URL=btc_node.url,
        BITCOIN_NETWORK="regtest",
        BITCOIN_CONFIRMATIONS="1",
    )
    kills = []
    # The first kill lands while blocks are left to follow, the second while facts are left to apply; then at random.
    triggers = ["height", "applied", *(rng.choice(["height", "applied", "delay"]) for _ in range(ROUNDS - 2))]
    for round_, trigger in enumerate(triggers):
        tip = btc_rpc.getblockcount()
        height, _, applied = _state()
        watcher.start()
        on_chain = sum(len(roles) for roles in expected.values())  # every fact broadcast so far is mined
        if trigger == "height" and height < tip - 20:
            target = rng.randrange(height + 1, tip - 10)
            _wait(lambda target=target: _state()[0] >= target, watcher)
        elif trigger == "applied" and applied < on_chain - 1:
            target = rng.randrange(applied + 1, on_chain)
            _wait(lambda target=target: _state()[2] >= target, watcher)
        else:
            time.sleep(rng.uniform(0.5, 6.0))
        watcher.kill()
        kills.append((round_, trigger, tip, *_state()))
        if steps:
            steps.pop(0)()
    print("kills (round, trigger, tip, followed, recorded, applied):", *kills, sep="\n  ")
    assert any(start < followed < tip for _, _, tip, followed, _, _ in kills), "no kill while following blocks"
    assert any(applied < recorded for *_, recorded, applied in kills), "no kill left facts to apply"
    assert len({followed for *_, followed, _, _ in kills}) > 1, "the watcher made no progress between kills"

    # One final run finishes the work.
    report = sync_bitcoin(rpc=btc_rpc)
    assert report.height == btc_rpc.getblockcount(), str(report)

    total = sum(len(roles) for roles in expected.values())
    assert BitcoinTransaction.objects.count() == total
    for loan, path in loans:
        stored = dict(BitcoinTransaction.objects.filter(loan_id=loan.pk).values_list("role", "txid"))
        assert stored == expected[loan.pk], (loan.pk, path)
        assert not BitcoinTransaction.objects.filter(loan_id=loan.pk, applied_at__isnull=True).exists()
        statuses = ["none", *PATHS[path]]
        assert bitcoin_trail(loan) == [(a, b, ROLES[b]) for a, b in itertools.pairwise(statuses)]
        assert loan.refresh().bitcoin_status == PATHS[path][-1]
    assert LoanStatusChange.objects.filter(side="bitcoin").count() == sum(len(PATHS[p]) for _, p in loans)
    assert_blocks_follow_the_node(btc_rpc)
    assert ChainCursor.objects.get(chain="bitcoin").failures == 0
