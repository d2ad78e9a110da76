"""The EVM watcher killed with SIGKILL at random points and restarted: every event is stored once and every
transition applied once.

``sync_chains --chain evm`` runs as a child process against anvil and the test database while the chain holds many
events of the app's loans (requested and cancelled, offered, repaid with both preimages revealed), and grows between
restarts. The child runs the management command with small chunks and small apply batches (one setting and one
module constant changed before it starts), so that there are many commits to be killed between and inside. Each
round kills it (-9) at a point chosen at random: once the cursor has passed a random block, once a random number of
events have been applied, or after a random delay. A final ``manage.py sync_chains --chain evm --once`` finishes the
work, and the database must hold exactly the logs on the chain, each once, each applied once, with each loan's audit
trail its path.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from evm.events import fetch_events
from loans.models import ChainCursor, EvmEvent, LoanStatusChange

from .conftest import Desk
from .test_sync_evm import fresh, trail

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROUNDS = 6
CHUNK_BLOCKS = 2
APPLY_BATCH = 4
#: The child: ``sync_chains --chain evm`` with small chunks and batches (argv: chunk blocks, apply batch).
CHILD = """
import os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loanproject.settings")
django.setup()
from django.conf import settings
from django.core.management import call_command
import loans.sync.evm
settings.EVM_SCAN_CHUNK_BLOCKS = int(sys.argv[1])
loans.sync.evm.APPLY_BATCH = int(sys.argv[2])
call_command("sync_chains", "--chain", "evm", "--interval", "0.2")
"""
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


def _database_url() -> str:
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Watcher:
    """The EVM watcher in a child process, killed with SIGKILL."""

    def __init__(self, rpc_url: str, log: Path) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "EVM_RPC_URL": rpc_url,
            "EVM_CHAIN_ID": "31337",
            "EVM_CONFIRMATIONS": "1",
            "LOG_LEVEL": "WARNING",
        }
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(CHUNK_BLOCKS), str(APPLY_BATCH)],
                cwd=django_settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=log,
            )

    def kill(self) -> None:
        assert self.process is not None
        assert self.process.poll() is None, f"the watcher died by itself: {self.log.read_text()[-3000:]}"
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL
        self.process = None

    def once(self) -> str:
        """``manage.py sync_chains --chain evm --once``, to the end."""
        result = subprocess.run(
            [
                sys.executable,
                str(Path(django_settings.BASE_DIR) / "manage.py"),
                "sync_chains",
                "--chain",
                "evm",
                "--once",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


def _state() -> tuple[int, int, int]:
    """(cursor block, stored events, applied events), as committed."""
    block = ChainCursor.objects.filter(chain="evm").values_list("block_number", flat=True).first() or 0
    return block, EvmEvent.objects.count(), EvmEvent.objects.filter(applied_at__isnull=False).count()


def _wait(condition, watcher: Watcher, timeout: float = 60.0) -> None:
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

    watcher = Watcher(anvil.url, tmp_path / "watcher.log")
    kills = []
    # The first kill lands while blocks are left to scan, the second while events are left to apply; then at random.
    triggers = ["block", "applied", *(rng.choice(["block", "applied", "delay"]) for _ in range(ROUNDS - 2))]
    for round_, trigger in enumerate(triggers):
        head = desk.w3.eth.block_number
        block, stored, applied = _state()
        watcher.start()
        if trigger == "block" and block < head - 10:
            target = rng.randrange(block + 1, head - 5)
            _wait(lambda target=target: _state()[0] >= target, watcher)
        elif trigger == "applied" and applied < stored + 10:
            target = rng.randrange(applied + 1, applied + 10)
            _wait(lambda target=target: _state()[2] >= target, watcher)
        else:
            time.sleep(rng.uniform(0.5, 4.0))
        watcher.kill()
        kills.append((round_, trigger, head, *_state()))
        if steps:
            steps.pop(0)()
    print("kills (round, trigger, head, cursor, stored, applied):", *kills, sep="\n  ")
    assert any(cursor < head for _, _, head, cursor, _, _ in kills), "no kill while blocks were left to scan"
    assert any(applied < stored for *_, stored, applied in kills), "no kill left events to apply"
    assert len({(cursor, applied) for *_, cursor, _, applied in kills}) > 1, "no progress between kills"

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
