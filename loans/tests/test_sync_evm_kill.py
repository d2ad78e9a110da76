"""The EVM watcher killed with SIGKILL at random points and restarted: every event is stored once and every
transition applied once.

``manage.py sync_chains --chain evm`` runs as a child process against anvil and the test database while the chain
holds many events of the app's loans (requested and cancelled, offered, repaid with both preimages revealed), and
grows between restarts. Chunks of two blocks (``EVM_SCAN_CHUNK_BLOCKS``) make many commits to be killed between;
the final events of a run are applied in one transaction, which a kill rolls back whole. Each round kills the child
(-9) at a point chosen at random: once the cursor has passed a random block, once a run has applied events, or
after a random delay. A final ``manage.py sync_chains --chain evm --once`` finishes the work, and the database must
hold exactly the logs on the chain, each once, each applied once, with each loan's audit trail its path.
"""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import pytest
from django.db import connection

from evm.events import fetch_events
from loans.models import ChainCursor, EvmEvent, LoanStatusChange
from loans.sync.locks import _key

from .conftest import Desk
from .test_sync_evm import fresh, trail
from .watcher_process import WatcherProcess

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROUNDS = 6
CHUNK_BLOCKS = 2
PATHS = {
    "cancel": ["requested", "cancelled"],
    "offered": ["requested", "offered"],
    "repaid": ["requested", "offered", "active", "repayment_in_progress", "repaid"],
}
CAUSES = {
    "requested": "LoanRequested",
    "cancelled": "LoanRequestCancelled",
    "offered": "LoanOffered",
    "active": "LoanActivated",
    "repayment_in_progress": "RepaymentAttempted",
    "repaid": "RepaymentAccepted",
}


def _state() -> tuple[int, int, int]:
    """(cursor block, stored events, applied events), as committed."""
    block = ChainCursor.objects.filter(chain="evm").values_list("block_number", flat=True).first() or 0
    return block, EvmEvent.objects.count(), EvmEvent.objects.filter(applied_at__isnull=False).count()


def _run_lock_held() -> bool:
    """Whether a watcher run holds the EVM run lock (``loans.sync.locks``: a PostgreSQL advisory lock)."""
    key = _key("evm")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1)",
            [(key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF],
        )
        return bool(cursor.fetchone()[0])


def _wait(condition, watcher: WatcherProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        assert watcher.process is not None and watcher.process.poll() is None, watcher.log.read_text()[-3000:]
        time.sleep(0.005)


def test_killed_at_random_points_and_restarted_it_stores_every_event_once_and_applies_every_transition_once(
    desk: Desk, anvil, evm_mine, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the child process needs a database it can share: PostgreSQL")
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"seed {seed}")

    loans = []  # (loan, path, contract id, pL)

    def drive(count: int) -> None:
        for path in rng.choices(list(PATHS), k=count):
            loan = desk.draft()
            contract_id = desk.request(loan)
            lender_preimage = None
            if path == "cancel":
                terms = desk.flow.terms[contract_id]
                prepared = desk.client.cancel_request(contract_id, terms=terms, sender=terms.borrower)
                desk.client.send(prepared, desk.borrower.account)
            else:
                lender_preimage = desk.flow.commit(contract_id)
                desk.flow.offer(contract_id)
            if path == "repaid":
                desk.flow.accept(contract_id, desk.secrets[loan.pk])
                desk.flow.repay(contract_id)
                prepared = desk.client.accept_loan_repayment(contract_id, lender_preimage)
                desk.client.send(prepared, desk.lender.account)
            evm_mine(rng.randrange(0, 4))
            loans.append((loan, path, contract_id, lender_preimage))

    drive(24)  # before the first start; more while the watcher is killed and restarted
    steps = [lambda: drive(6), lambda: drive(6), lambda: drive(4)]

    watcher = WatcherProcess(
        "evm",
        tmp_path / "watcher.log",
        EVM_RPC_URL=anvil.url,
        EVM_CHAIN_ID="31337",
        EVM_CONFIRMATIONS="1",
        EVM_SCAN_CHUNK_BLOCKS=str(CHUNK_BLOCKS),
    )
    kills = []
    # Kills land mid-scan ("block": once the cursor passed a random block), mid-apply ("apply": a run holds the lock
    # with the scan done, so it is applying the final events in one transaction, which the kill rolls back whole),
    # or once a run has applied everything ("done").
    triggers = ["block", "apply", "done", "apply", *(rng.choice(["block", "apply", "done"]) for _ in range(ROUNDS - 4))]
    for round_, trigger in enumerate(triggers):
        head = desk.w3.eth.block_number
        block, stored, _ = _state()
        watcher.start()
        if trigger == "block" and block < head - 10:
            target = rng.randrange(block + 1, head - 5)
            _wait(lambda target=target: _state()[0] >= target, watcher)
        elif trigger in ("apply", "block"):
            _wait(lambda head=head: _run_lock_held() and _state()[0] >= head, watcher)
            time.sleep(rng.uniform(0, 0.5))
        else:
            _wait(lambda head=head: _state()[0] >= head and _state()[1] == _state()[2], watcher)
            time.sleep(rng.uniform(0, 0.3))
        watcher.kill()
        kills.append((round_, trigger, head, *_state()))
        if steps:
            steps.pop(0)()
    print("kills (round, trigger, head, cursor, stored, applied):", *kills, sep="\n  ")
    assert any(cursor < head for _, _, head, cursor, _, _ in kills), "no kill while blocks were left to scan"
    assert any(trigger == "apply" and applied < stored for _, trigger, _, _, stored, applied in kills), (
        "no kill while the final events were being applied"
    )
    assert any(0 < applied == stored for *_, stored, applied in kills), "no run finished between kills"

    output = watcher.once()
    assert output.startswith("evm: scanned"), output

    on_chain = fetch_events(desk.w3, [desk.record.loan_contract_address, desk.record.ether_swap_address],
                            desk.record.block_number, desk.w3.eth.block_number)  # fmt: skip
    stored = list(EvmEvent.objects.values_list("tx_hash", "log_index", "block_hash"))
    assert sorted(stored) == sorted((e.transaction_hash.hex(), e.log_index, e.block_hash.hex()) for e in on_chain)
    assert not EvmEvent.objects.filter(applied_at__isnull=True).exists()
    assert not EvmEvent.objects.filter(orphaned_at__isnull=False).exists()
    for loan, path, contract_id, lender_preimage in loans:
        statuses = ["draft", *PATHS[path]]
        assert trail(loan) == [(a, b, CAUSES[b]) for a, b in itertools.pairwise(statuses)], (loan.pk, path)
        loan = fresh(loan)
        assert (loan.status, loan.contract_loan_id) == (PATHS[path][-1], contract_id)
        if path == "repaid":
            assert (loan.borrower_preimage, loan.lender_preimage) == (
                desk.secrets[loan.pk].hex(),
                lender_preimage.hex(),
            )
    assert LoanStatusChange.objects.count() == sum(len(PATHS[path]) for _, path, _, _ in loans)
    cursor = ChainCursor.objects.get(chain="evm")
    assert (cursor.block_number, cursor.failures) == (desk.w3.eth.block_number, 0)
