"""The stage of the browser scenarios (issue 12; ``test_scenario_*.py``): whole loans as their users meet them.

Both chains are real (the session's anvil and regtest node), the worker runs in a process of its own
(``manage.py sync_chains --duties``: both chain watchers, the lender's automation, the borrower's watchtower and
the alerts, every 0.3 s, against the test database), and the parties act in headless Chromium on the live server:
the borrower with an injected EIP-1193 wallet (their anvil account) and the Bitcoin key their browser makes, the
lender on the desk's pages with the server's vault keys. The test itself never runs a watcher or a service to move a
loan: it acts in a browser, mines blocks to move time, and waits for the worker to see what happened
(``Stage.wait_for``). Every assertion on the outcome reads the chains (balances from the nodes) and the database
(the loan's states and its audit trail).

Time: the windows are small (``evm_calls_scene.SMALL_WITH_CAPTURE``, under PROTOCOL.md's ordering rules), and
``Stage.mine_evm`` / ``Stage.mine_btc`` move the chains on; keep the Bitcoin chain short (regtest blocks slow down as
it grows).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from bitcoin.addresses import address_to_script_pubkey
from bitcoin.rpc import BitcoinRPC, sats_to_btc
from bitcoin.testing import mine_blocks
from bitcoin.tests.loan_vectors import REGTEST_P2TR, REGTEST_P2WPKH
from bitcoin.transactions import Transaction
from evm.testing import gas_cost, mine
from loans import vault
from loans.models import BitcoinBroadcast, BitcoinTransaction, LenderKey, Loan, LoanStatusChange
from loans.selectors import bitcoin_followed_height, evm_followed_block, loan_deadlines, loan_timelocks
from loans.services.lender_secrets import lender_key_store
from loans.tests.evm_calls_scene import SMALL_WITH_CAPTURE, Scene, make_scene
from loans.tests.watcher_process import shared_database_url

from .harness import InjectedWallet, sign_in

BORROWER_PAYOUT, LENDER_PAYOUT = REGTEST_P2TR, REGTEST_P2WPKH
WORKER_INTERVAL_SECONDS = "0.3"
WAIT_SECONDS = 90.0
#: The audit trail of a loan repaid and its collateral released: each state once, in order, on both chains.
REPAID_AND_RELEASED = [
    ("bitcoin", "escrow_confirmed"),
    ("contract", "requested"),
    ("contract", "offered"),
    ("contract", "active"),
    ("bitcoin", "collateral_locked"),
    ("contract", "repayment_in_progress"),
    ("contract", "repaid"),
    ("bitcoin", "released"),
]
SENT = re.compile(r"Sent (0x)?[0-9a-f]{64} \(mined\)\. The page follows the chain\.")


class Worker:
    """The worker as its own process (``sync_chains --duties``) on the test database and the test's nodes."""

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.env = env
        self.command = [
            sys.executable,
            str(Path(django_settings.BASE_DIR) / "manage.py"),
            "sync_chains",
            "--duties",
            "--interval",
            WORKER_INTERVAL_SECONDS,
        ]
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.process is None, "the worker runs already"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as log:
            log.write(f"--- worker start {self.starts + 1}\n")
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def stop(self) -> None:
        """SIGTERM, as a supervisor stops it; it must go within 30 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL in the middle of whatever it does (a machine lost)."""
        assert self.process is not None and self.process.poll() is None, f"the worker died by itself: {self.tail()}"
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL
        self.process = None

    def check_alive(self) -> None:
        assert self.process is not None, "the worker is not running"
        assert self.process.poll() is None, f"the worker exited ({self.process.returncode}): {self.tail()}"

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else "(no log)"


def worker_environment(
    settings, *, bitcoin_start_height: int, evm_confirmations: int = 1, bitcoin_confirmations: int = 1
) -> dict[str, str]:
    """What the worker process needs to be the same desk as the test's live server: the test database, the
    nodes, the vault's keys, the lender's payout address and the fee bounds (the test's settings, as variables),
    and how deep a fact must be on each chain before the worker applies it."""
    return {
        **os.environ,
        "DATABASE_URL": shared_database_url(),
        "DJANGO_DEBUG": "0",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "text",
        "EVM_RPC_URL": settings.EVM_RPC_URL,
        "EVM_CHAIN_ID": str(settings.EVM_CHAIN_ID),
        "EVM_CONFIRMATIONS": str(evm_confirmations),
        "BITCOIN_RPC_URL": settings.BITCOIN_RPC_URL,
        "BITCOIN_NETWORK": settings.BITCOIN_NETWORK,
        "BITCOIN_CONFIRMATIONS": str(bitcoin_confirmations),
        "BITCOIN_SYNC_START_HEIGHT": str(bitcoin_start_height),
        "BITCOIN_MIN_FEE_RATE_SAT_VB": str(settings.BITCOIN_MIN_FEE_RATE_SAT_VB),
        "BITCOIN_MAX_FEE_RATE_SAT_VB": str(settings.BITCOIN_MAX_FEE_RATE_SAT_VB),
        "LOAN_VAULT_KEYS_FILE": "",
        "LOAN_VAULT_KEYS": settings.LOAN_VAULT_KEYS,
        "LENDER_BTC_PAYOUT_ADDRESS": settings.LENDER_BTC_PAYOUT_ADDRESS,
    }


@dataclass
class Stage:
    """One scenario's world: the scene (contracts, personas, parameters), the regtest node, the worker, and the
    moves a test makes between browser steps."""

    scene: Scene
    worker: Worker
    artifacts: Path
    evm_start_block: int
    borrower_evm_before: int
    lender_evm_before: int
    waited: list[tuple[str, float]] = field(default_factory=list)

    @property
    def btc(self) -> BitcoinRPC:
        return self.scene.btc

    @property
    def w3(self):
        return self.scene.desk.w3

    @property
    def borrower(self):
        return self.scene.desk.borrower

    @property
    def lender(self):
        return self.scene.desk.lender

    def borrower_wallet(self) -> InjectedWallet:
        return InjectedWallet(account=self.borrower.account, w3=self.w3)

    def lender_wallet(self) -> InjectedWallet:
        return InjectedWallet(account=self.lender.account, w3=self.w3)

    # --- time

    def mine_evm(self, blocks: int) -> None:
        mine(self.w3, blocks)

    def mine_btc(self, blocks: int) -> None:
        mine_blocks(self.btc, blocks)

    # --- the worker

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
        """Poll ``condition`` until it returns something true (returned), the worker dies, or ``timeout``."""
        started = time.monotonic()
        while True:
            outcome = condition()
            if outcome:
                self.waited.append((what, time.monotonic() - started))
                return outcome
            self.worker.check_alive()
            if time.monotonic() - started > timeout:
                pytest.fail(f"waited {timeout:.0f} s for {what}; the worker's log ends:\n{self.worker.tail()}")
            time.sleep(0.2)

    def wait_for_loan(self, loan: Loan, what: str, condition: Callable[[Loan], bool], **kwargs) -> Loan:
        def check():
            loan.refresh_from_db()
            return condition(loan)

        self.wait_for(f"loan {loan.pk}: {what}", check, **kwargs)
        return loan

    def wait_for_status(self, loan: Loan, status: str | None = None, bitcoin: str | None = None) -> Loan:
        wanted = " and ".join(str(s) for s in (status, bitcoin) if s)
        return self.wait_for_loan(
            loan,
            wanted,
            lambda row: (status is None or row.status == status) and (bitcoin is None or row.bitcoin_status == bitcoin),
        )

    # --- what the chains say

    def evm_balance(self, address: str) -> int:
        return int(self.w3.eth.get_balance(address))

    def gas_paid_since_start(self, address: str) -> int:
        """Every wei of gas ``address`` paid for the transactions it sent since the scenario started."""
        paid = 0
        for number in range(self.evm_start_block + 1, int(self.w3.eth.block_number) + 1):
            for tx in self.w3.eth.get_block(number, full_transactions=True)["transactions"]:
                if tx["from"].lower() == address.lower():
                    paid += gas_cost(self.w3.eth.get_transaction_receipt(tx["hash"]))
        return paid

    def sats_paid_to(self, txid: str, address: str) -> int:
        """What ``txid`` pays ``address`` (sats), read from the node."""
        tx = Transaction.parse(self.btc.getrawtransaction(txid, False))
        script = address_to_script_pubkey(address, "regtest")
        return sum(out.value for out in tx.outputs if out.script_pubkey == script)

    def bitcoin_fee(self, txid: str) -> int:
        """A transaction's fee (sats): its inputs' values, read from the node, less its outputs."""
        tx = Transaction.parse(self.btc.getrawtransaction(txid, False))
        paid_in = 0
        for txin in tx.inputs:
            parent = Transaction.parse(self.btc.getrawtransaction(txin.outpoint.txid, False))
            paid_in += parent.outputs[txin.outpoint.vout].value
        return paid_in - sum(out.value for out in tx.outputs)

    def confirmed_txid(self, loan: Loan, role: str) -> str:
        return BitcoinTransaction.objects.get(loan=loan, role=role).txid

    # --- the browsers

    def pay_escrow_from_the_page(self, page, loan: Loan) -> str:
        """Pay the escrow the page asks for (its address and exact amount, as the borrower's wallet would read
        them) from the node's faucet; mine it; the page's funding status follows it. The payment's txid."""
        page.goto(f"/borrower/loans/{loan.pk}/")
        funding = page.locator("#funding-status")
        address = funding.locator("dt:text-is('Escrow address') + dd code").inner_text().strip()
        amount_text = funding.locator("dt:text-is('Amount') + dd").inner_text()
        total_sats = int(re.match(r"(\d+) sat", amount_text).group(1))
        assert funding.locator("figure.qr-code svg").count() == 1
        link = funding.locator("dt:text-is('Payment link') + dd a").inner_text()
        assert link.startswith(f"bitcoin:{address}?amount="), link
        txid = str(self.btc.call("sendtoaddress", address, sats_to_btc(total_sats)))
        self.mine_btc(1)
        self.wait_for_status(loan, bitcoin=Loan.BitcoinStatus.ESCROW_CONFIRMED)
        assert loan.escrow_txid == txid and loan.escrow_sats == total_sats
        return txid

    def assert_repaid_and_released(self, loan: Loan) -> tuple[str, str]:
        """The happy path's ending, to the sat and the wei: on Bitcoin the borrower has the escrow back less the
        origination fee and the two transactions' miner fees, the lender the origination fee; on the EVM chain the
        borrower has the amount less the repayment (the processing fee came back at the accept), the lender the
        interest, each less the gas it paid; the audit trail has each state once, in order. (TX_1, TX_release)."""
        assert (loan.status, loan.bitcoin_status) == (Loan.Status.REPAID, Loan.BitcoinStatus.RELEASED)
        assert loan.is_closed
        tx1 = self.confirmed_txid(loan, BitcoinTransaction.Role.COLLATERAL_LOCK)
        release = self.confirmed_txid(loan, BitcoinTransaction.Role.COLLATERAL_RELEASE)
        back = self.sats_paid_to(tx1, BORROWER_PAYOUT) + self.sats_paid_to(release, BORROWER_PAYOUT)
        assert back == loan.escrow_sats - loan.origination_fee_sats - self.bitcoin_fee(tx1) - self.bitcoin_fee(release)
        assert self.sats_paid_to(release, BORROWER_PAYOUT) == loan.collateral_sats - self.bitcoin_fee(release)
        assert self.sats_paid_to(tx1, LENDER_PAYOUT) == loan.origination_fee_sats
        interest = loan.repayment_wei - loan.amount_wei
        assert self.evm_deltas() == (-interest, interest)
        assert self.audit_trail(loan) == REPAID_AND_RELEASED
        return tx1, release

    def evm_deltas(self) -> tuple[int, int]:
        """How much each party's EVM balance moved since the scenario began, with the gas it paid put back: what
        the protocol moved (borrower, lender)."""
        borrower, lender = self.borrower.account.address, self.lender.account.address
        return (
            self.evm_balance(borrower) + self.gas_paid_since_start(borrower) - self.borrower_evm_before,
            self.evm_balance(lender) + self.gas_paid_since_start(lender) - self.lender_evm_before,
        )

    def audit_trail(self, loan: Loan) -> list[tuple[str, str]]:
        """The loan's status changes, (side, to_status), in order."""
        return list(
            LoanStatusChange.objects.filter(loan=loan).order_by("created_at", "id").values_list("side", "to_status")
        )

    def save_timings(self, name: str) -> None:
        """What the test waited for and how long (kept with the screenshots: the worker's pace, not asserted)."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        (self.artifacts / f"{name}-waits.json").write_text(json.dumps(self.waited, indent=1))


def wallet_step(page, name: str) -> str:
    """Click the wallet button of the borrower's step ``name``; the wallet signs and sends; the status line."""
    section = page.locator(f"#step-{name}")
    section.locator("[data-wallet-send]").click()
    status = section.locator("[data-wallet-status]")
    page.wait_for_function(
        "(el) => /^(Sent \\S+ \\(|Not sent)/.test(el.textContent)", arg=status.element_handle(), timeout=30_000
    )
    text = status.inner_text()
    assert SENT.fullmatch(text), text
    return text


def lender_step(page, loan: Loan, name: str) -> str:
    """Submit the step's form on the lender's loan page; the page's confirmation (a refusal fails the test)."""
    page.goto(f"/lender/loans/{loan.pk}/")
    page.locator(f"#step-{name} button[type=submit]").click()
    page.wait_for_url(re.compile(rf"/lender/loans/{loan.pk}/actions/{name}/$"))
    refusal = page.locator(".refusal[role=alert]")
    assert refusal.count() == 0, refusal.inner_text()
    return page.locator(".done[role=status]").inner_text()


def borrower_steps(page) -> list[str]:
    """The borrower's steps and ways out the loan page shows now, open or not, in the page's order."""
    return [element.get_attribute("id").removeprefix("step-") for element in page.locator("#loan section.step").all()]


@pytest.fixture
def stage(settings, anvil, btc_rpc, desk, live_server, transactional_db, shot, request) -> Stage:
    """A scenario's world with the worker running (stopped after the test); the lender's keys in the vault. Its
    log and timings go beside the test's screenshots (``shot`` comes first: it empties that directory).

    ``@pytest.mark.worker(evm_confirmations=N, bitcoin_confirmations=M)`` on a test sets how deep the worker wants
    a fact (1 on both chains by default)."""
    scene = make_scene(settings, anvil, btc_rpc, desk, windows=SMALL_WITH_CAPTURE)
    settings.LENDER_BTC_PAYOUT_ADDRESS = LENDER_PAYOUT
    lender = scene.desk.lender
    lender_key_store(
        lender=lender.user, kind=LenderKey.Kind.BITCOIN, private_key=vault.Secret(lender.btc_key.secret), actor=None
    )
    artifacts = shot.directory
    marker = request.node.get_closest_marker("worker")
    depths = marker.kwargs if marker is not None else {}
    environment = worker_environment(settings, bitcoin_start_height=btc_rpc.getblockcount() + 1, **depths)
    worker = Worker(artifacts / "worker.log", environment)
    w3 = desk.w3
    stage = Stage(
        scene=scene,
        worker=worker,
        artifacts=artifacts,
        evm_start_block=int(w3.eth.block_number),
        borrower_evm_before=int(w3.eth.get_balance(desk.borrower.account.address)),
        lender_evm_before=int(w3.eth.get_balance(desk.lender.account.address)),
    )
    worker.start()
    try:
        yield stage
    finally:
        worker.stop()
        stage.save_timings("stage")


# ------------------------------------------------------------------------------------------------ a loan's walk


@dataclass
class Walk:
    """One loan walked through its steps in two browsers: the borrower's page (its wallet, its key) and the lender's
    desk. Each method is one step as its user takes it, then waits for the worker to see it on chain."""

    stage: Stage
    borrower: Any  # the borrower's page
    lender: Any  # the lender's page
    shot: Callable
    loan: Loan | None = None
    kit: dict | None = None

    @classmethod
    def start(cls, stage: Stage, open_page, shot) -> Walk:
        walk = cls(stage, open_page(wallet=stage.borrower_wallet()), open_page(wallet=stage.lender_wallet()), shot)
        sign_in(walk.borrower)
        sign_in(walk.lender)
        return walk

    def goto_loan(self) -> None:
        self.borrower.goto(f"/borrower/loans/{self.loan.pk}/")

    def new_loan(self, amount_wei: int) -> Loan:
        """Terms, keys made in the browser, the recovery kit downloaded, the draft created."""
        page = self.borrower
        page.goto("/borrower/loans/new/")
        page.get_by_role("button", name="Download the recovery kit").wait_for()
        page.locator("#amount_wei").fill(str(amount_wei))
        page.locator("#borrower_payout_address").fill(BORROWER_PAYOUT)
        with page.expect_download() as info:
            page.get_by_role("button", name="Download the recovery kit").click()
        self.kit = json.loads(Path(info.value.path()).read_text())
        page.get_by_role("button", name="Create the loan").click()
        page.wait_for_url(re.compile(r"/borrower/loans/\d+/$"))
        self.loan = Loan.objects.get(
            borrower=self.stage.borrower.user, borrower_btc_pubkey=self.kit["borrower_btc_pubkey"]
        )
        return self.loan

    def requested(self, amount_wei: int) -> Loan:
        """A new loan, its escrow paid from the page's instructions and confirmed, requestLoan sent by the wallet."""
        self.new_loan(amount_wei)
        self.stage.pay_escrow_from_the_page(self.borrower, self.loan)
        self.goto_loan()
        wallet_step(self.borrower, "request")
        self.loan = self.stage.wait_for_status(self.loan, Loan.Status.REQUESTED)
        self.shot(self.borrower, "borrower: requested")
        return self.loan

    def lender_takes(self, name: str) -> str:
        return lender_step(self.lender, self.loan, name)

    def hash_committed(self) -> Loan:
        self.lender_takes("commit-lender-hash")
        self.loan = self.stage.wait_for_loan(self.loan, "hL committed", lambda row: row.lender_hash is not None)
        return self.loan

    def presigned(self) -> Loan:
        """TX_1 and the ladders signed in the browser from the loan file, verified by the desk."""
        page = self.borrower
        self.goto_loan()
        page.locator("#presign-fee-rate").fill("2")
        page.get_by_role("button", name="Build TX_1 and show what it pays").click()
        page.locator("[data-tx-summary='tx_1']").wait_for()
        page.get_by_role("button", name="Sign and upload TX_1 and the ladders").click()
        page.get_by_text(re.compile(r"\d+ ladder rung\(s\) verified and stored")).wait_for(timeout=30_000)
        self.shot(page, "borrower: TX_1 and the ladders pre-signed")
        return self.loan

    def offered(self) -> Loan:
        self.lender_takes("offer")
        self.loan = self.stage.wait_for_status(self.loan, Loan.Status.OFFERED)
        self.shot(self.lender, "lender: offered")
        return self.loan

    def accepted(self) -> Loan:
        """acceptLoanOffer with pB from the browser's store; the worker locks TX_1; it confirms."""
        self.goto_loan()
        wallet_step(self.borrower, "accept-offer")
        self.loan = self.stage.wait_for_status(self.loan, Loan.Status.ACTIVE)
        return self.locked()

    def locked(self) -> Loan:
        """The worker's automation broadcasts TX_1; a block; the worker sees the collateral locked."""
        self.stage.wait_for(
            "the worker broadcasts TX_1",
            lambda: BitcoinBroadcast.objects.filter(loan=self.loan, kind="tx_1", accepted_at__isnull=False).exists(),
        )
        self.stage.mine_btc(1)
        self.loan = self.stage.wait_for_status(self.loan, bitcoin=Loan.BitcoinStatus.COLLATERAL_LOCKED)
        self.goto_loan()
        self.shot(self.borrower, "borrower: active, the collateral locked")
        return self.loan

    def active(self, amount_wei: int) -> Loan:
        self.requested(amount_wei)
        self.hash_committed()
        self.presigned()
        self.offered()
        return self.accepted()

    def repaying(self) -> Loan:
        self.goto_loan()
        wallet_step(self.borrower, "repay")
        self.loan = self.stage.wait_for_status(self.loan, Loan.Status.REPAYMENT_IN_PROGRESS)
        self.shot(self.borrower, "borrower: repaid, waiting for the lender")
        return self.loan

    # --- time

    def mine_evm_to(self, deadline: str) -> None:
        """Mine EVM blocks until the loan's ``deadline`` (offer, repayment, acceptance) is the next block."""
        head = int(self.stage.w3.eth.block_number)
        remaining = getattr(loan_deadlines(loan=self.loan, head=head), deadline).blocks_remaining
        assert remaining is not None, f"loan {self.loan.pk} has no {deadline} deadline"
        self.stage.mine_evm(remaining)
        self.stage.wait_for(
            f"the worker follows EVM block {head + remaining}", lambda: (evm_followed_block() or 0) >= head + remaining
        )

    def mine_btc_to(self, path: str) -> None:
        """Mine Bitcoin blocks until the loan's timelock ``path`` (exit: t_0, capture: t_1) has matured."""
        tip = self.stage.btc.getblockcount()
        remaining = getattr(loan_timelocks(loan=self.loan, tip_height=tip), path).blocks_remaining
        assert remaining is not None, f"loan {self.loan.pk} has no {path} path"
        self.stage.mine_btc(remaining)
        self.stage.wait_for(
            f"the worker follows Bitcoin height {tip + remaining}",
            lambda: (bitcoin_followed_height() or 0) >= tip + remaining,
        )
