"""Scenario 7 (issue 12): a reorg on each chain in the middle of a loan, and a worker killed and restarted mid-loan.

Each test walks one whole loan in the two browsers, as scenario 1 does (``test_scenario_happy_path.py``), and ends
the same way (TX_release confirmed, balances to the sat and the wei, each state once in the audit trail); what
differs is what happens to the chains or to the worker on the way:

- EVM: the worker wants 3 confirmations. The borrower's requestLoan, seen by the worker but not final, is moved by a
  2-block reorg into a later block of the new branch: the stored event is orphaned and revived in its new block,
  and the request is applied once, from there. The borrower's acceptLoanOffer (pB on chain), seen but not final, is
  dropped by a 1-block reorg: the worker orphans the event and leaves the loan Offered (no TX_1 is locked on the
  strength of a fact that is gone); the borrower accepts again from the page and the loan goes on from that one.
- Bitcoin: the worker wants 2 confirmations. The escrow payment, seen in a block at 1 confirmation, is re-mined in
  the first block of a longer branch (the watcher un-confirms it and records it in its new block). TX_1, broadcast
  by the worker's automation and seen in a block at 1 confirmation, goes back to the mempool when a longer branch
  without it wins; the loan stays Active with the escrow confirmed, the automation keeps handing TX_1 to the node,
  and it is locked once it is final on the new branch.
- Worker: SIGKILL right after the borrower's accept is mined (the automation is about to lock TX_1), right after
  the block holding TX_1 is mined (the watcher is following it) and right after the lender's acceptLoanRepayment is
  mined (the watchtower is about to release); each time a new worker takes over. Nothing is done twice: one TX_1
  and one TX_release broadcast, one automation row per duty, one TX_1 on the chain, each state once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pytest
from web3.exceptions import TransactionNotFound

from bitcoin.rpc import sats_to_btc
from loans.models import (
    Automation,
    BitcoinBroadcast,
    BitcoinTransaction,
    BorrowerSignature,
    ChainCursor,
    EvmEvent,
    EvmTransaction,
    Loan,
)
from loans.tests.conftest import AMOUNT

from .scenario import SENT, Stage, Walk, borrower_steps, wallet_step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sent_hash(status: str) -> str:
    """The transaction hash a wallet step's status line names (``Sent 0x… (mined). …``), without 0x."""
    match = SENT.fullmatch(status)
    assert match, status
    return re.search(r"[0-9a-f]{64}", status).group(0)


@dataclass
class WalkAtDepth(Walk):
    """``scenario.Walk`` at the worker's depths (its ``EVM_CONFIRMATIONS`` and ``BITCOIN_CONFIRMATIONS``), with each
    step split where a chain may change under it: the step sent, then the blocks that make its fact final mined,
    then the worker waited for. Each step keeps a screenshot."""

    tx1: BorrowerSignature | None = None

    @property
    def evm_depth(self) -> int:
        return int(self.stage.worker.env["EVM_CONFIRMATIONS"])

    @property
    def btc_depth(self) -> int:
        return int(self.stage.worker.env["BITCOIN_CONFIRMATIONS"])

    def evm_final(self) -> None:
        """Mine what makes a fact of the head block final for the worker."""
        if self.evm_depth > 1:
            self.stage.mine_evm(self.evm_depth - 1)

    def wait_status(self, status: str | None = None, bitcoin: str | None = None) -> Loan:
        self.loan = self.stage.wait_for_status(self.loan, status, bitcoin)
        return self.loan

    # --- the borrower's draft and escrow

    def create(self) -> Loan:
        """Terms, keys and the recovery kit in the borrower's browser; the loan created (a draft)."""
        self.new_loan(AMOUNT)
        assert hashlib.sha256(bytes.fromhex(self.kit["borrower_preimage"])).hexdigest() == self.kit["borrower_hash"]
        assert self.loan.status == Loan.Status.DRAFT and borrower_steps(self.borrower) == ["fund-escrow"]
        self.shot(self.borrower, "borrower: the escrow to pay")
        return self.loan

    def send_escrow(self) -> str:
        """Pay the escrow the page asks for (address and exact amount read from it) from the node's faucet; not
        mined yet. The payment's txid."""
        self.goto_loan()
        funding = self.borrower.locator("#funding-status")
        address = funding.locator("dt:text-is('Escrow address') + dd code").inner_text().strip()
        total_sats = int(re.match(r"(\d+) sat", funding.locator("dt:text-is('Amount') + dd").inner_text()).group(1))
        return str(self.stage.btc.call("sendtoaddress", address, sats_to_btc(total_sats)))

    def pay_escrow(self) -> str:
        txid = self.send_escrow()
        self.stage.mine_btc(self.btc_depth)
        self.escrow_confirmed(txid)
        return txid

    def escrow_confirmed(self, txid: str) -> None:
        self.wait_status(bitcoin=Loan.BitcoinStatus.ESCROW_CONFIRMED)
        assert self.loan.escrow_txid == txid
        self.borrower.reload()
        assert borrower_steps(self.borrower) == ["request"]
        self.shot(self.borrower, "borrower: the escrow confirmed")

    # --- the EVM steps up to Active

    def send_request(self) -> str:
        return sent_hash(wallet_step(self.borrower, "request"))

    def request(self) -> None:
        self.send_request()
        self.evm_final()
        self.request_applied()

    def request_applied(self) -> None:
        self.wait_status(Loan.Status.REQUESTED)
        assert self.loan.contract_loan_id is not None
        self.lender.goto("/lender/queue/")
        self.shot(self.lender, "lender: the request in the queue")

    def commit_and_presign(self) -> None:
        """hL committed from the desk; TX_1 and the ladders pre-signed in the borrower's browser."""
        self.lender_takes("commit-lender-hash")
        self.evm_final()
        self.stage.wait_for_loan(self.loan, "hL committed", lambda row: row.lender_hash is not None)
        self.goto_loan()
        assert borrower_steps(self.borrower)[0] == "presignature"
        self.presigned()
        self.tx1 = BorrowerSignature.objects.get(loan=self.loan, kind=BorrowerSignature.Kind.TX_1)

    def offer(self) -> None:
        self.lender_takes("offer")
        self.evm_final()
        self.wait_status(Loan.Status.OFFERED)
        self.shot(self.lender, "lender: offered")

    def send_accept(self) -> str:
        """acceptLoanOffer from the page, pB from the browser's store; the transaction's hash."""
        page = self.borrower
        self.goto_loan()
        assert page.locator("#borrower-preimage").input_value() == self.kit["borrower_preimage"]
        self.shot(page, "borrower: the offer to accept")
        return sent_hash(wallet_step(page, "accept-offer"))

    def accept_applied(self, recorder) -> None:
        """Active: the borrower forgets the key and pB (neither ever left the browser)."""
        self.wait_status(Loan.Status.ACTIVE)
        assert self.loan.borrower_preimage == self.kit["borrower_preimage"]
        assert recorder.containing(self.kit["borrower_private_key"]) == []
        assert recorder.containing(self.kit["borrower_preimage"]) == []
        self.borrower.get_by_role("button", name="Forget the key and pB in this browser").click()
        self.borrower.get_by_text("Your recovery kit is the only copy.").wait_for()

    # --- Bitcoin: TX_1

    def tx1_broadcast(self) -> BitcoinBroadcast:
        lock = self.stage.wait_for(
            "the worker broadcasts TX_1",
            lambda: BitcoinBroadcast.objects.filter(loan=self.loan, kind="tx_1", accepted_at__isnull=False).first(),
        )
        assert lock.txid == self.tx1.txid
        return lock

    def collateral_locked(self) -> None:
        self.wait_status(bitcoin=Loan.BitcoinStatus.COLLATERAL_LOCKED)
        self.borrower.reload()
        assert self.borrower.locator(".loan-summary dd").first.inner_text() == (
            "Active; Bitcoin: Collateral locked (TX_1)"
        )
        self.shot(self.borrower, "borrower: active, the collateral locked")

    def lock(self) -> None:
        assert self.tx1_broadcast().txid in self.stage.btc.getrawmempool()
        self.stage.mine_btc(self.btc_depth)
        self.collateral_locked()

    # --- repay, accept, release

    def repay(self) -> None:
        repay = self.borrower.locator("#step-repay")
        assert f"Amount due: {self.loan.repayment_wei} wei" in repay.inner_text()
        self.shot(self.borrower, "borrower: repay")
        wallet_step(self.borrower, "repay")
        self.evm_final()
        self.wait_status(Loan.Status.REPAYMENT_IN_PROGRESS)

    def send_accept_repayment(self) -> None:
        self.lender_takes("accept-repayment")
        self.shot(self.lender, "lender: the repayment accepted")

    def repaid(self) -> None:
        self.wait_status(Loan.Status.REPAID)
        assert self.loan.lender_preimage is not None

    def release(self) -> BitcoinBroadcast:
        release = self.stage.wait_for(
            "the watchtower broadcasts TX_release",
            lambda: BitcoinBroadcast.objects.filter(
                loan=self.loan, kind="tx_release", accepted_at__isnull=False
            ).first(),
        )
        self.borrower.reload()
        self.shot(self.borrower, "borrower: TX_release handed to the node")
        self.stage.mine_btc(self.btc_depth)
        self.wait_status(bitcoin=Loan.BitcoinStatus.RELEASED)
        assert self.loan.is_closed
        self.borrower.reload()
        assert self.borrower.get_by_text("This loan is closed: Repaid, Collateral released (TX_release).").is_visible()
        self.shot(self.borrower, "borrower: released and closed")
        return release

    # --- the outcome

    def assert_outcome(self, release: BitcoinBroadcast) -> None:
        """Scenario 1's ending: balances on both chains, the final state, each state once in the audit trail,
        each unattended duty and each broadcast once."""
        stage, loan = self.stage, self.loan
        tx1_txid, release_txid = stage.assert_repaid_and_released(loan)
        assert (tx1_txid, release_txid) == (self.tx1.txid, release.txid)
        for txid in (loan.escrow_txid, tx1_txid, release_txid):  # on the node's active chain, at the watcher's height
            row = BitcoinTransaction.objects.get(loan=loan, txid=txid)
            assert stage.btc.getblockhash(row.block_height) == row.block_hash
        broadcasts = BitcoinBroadcast.objects.filter(loan=loan).order_by("pk").values_list("kind", "txid")
        assert list(broadcasts) == [("tx_1", tx1_txid), ("tx_release", release_txid)]
        # A duty is marked done by the worker's pass after the watcher applied its transaction: wait for that pass.
        duties = Automation.objects.filter(loan=loan).order_by("pk").values_list("party", "action", "state")
        stage.wait_for("every duty marked done", lambda: all(state == "done" for _, _, state in duties))
        assert list(duties) == [("lender", "collateral-lock", "done"), ("borrower", "release", "done")]
        stage.save_timings("scenario")


def evm_event(tx_hash: str, name: str) -> EvmEvent | None:
    return EvmEvent.objects.filter(tx_hash=tx_hash, name=name).first()


def sent_calls(loan: Loan) -> list[tuple[str, str, str]]:
    rows = EvmTransaction.objects.filter(loan=loan).order_by("pk").values_list("function", "source", "tx_hash")
    return [(function.split("(")[0], source, tx_hash) for function, source, tx_hash in rows]


@pytest.fixture
def walk(stage, open_page, shot) -> WalkAtDepth:
    return WalkAtDepth.start(stage, open_page, shot)


@pytest.mark.worker(evm_confirmations=3)
def test_scenario_evm_reorgs_mid_loan(walk, stage, evm_reorg, recorder, console):
    walk.create()
    walk.pay_escrow()

    # The request, mined in block B and seen by the worker (not final at 3 confirmations), is moved by a 2-block
    # reorg into block B + 1 of the new branch: orphaned, revived there, applied once from there.
    request_hash = walk.send_request()
    stage.mine_evm(1)
    seen = stage.wait_for("the worker sees the request", lambda: evm_event(request_hash, "LoanRequested"))
    assert seen.applied_at is None and walk.loan.status == Loan.Status.DRAFT
    reorg = evm_reorg(2, [(request_hash, 1)])
    assert reorg.orphaned[0].number == seen.block_number
    moved_to = reorg.branch[1]
    stage.wait_for(
        "the worker follows the request into the new branch",
        lambda: EvmEvent.objects.filter(
            pk=seen.pk, block_number=moved_to.number, block_hash=moved_to.hash.hex(), orphaned_at__isnull=True
        ).exists(),
    )
    walk.loan.refresh_from_db()
    assert walk.loan.status == Loan.Status.DRAFT  # still not final in its new block
    walk.shot(walk.borrower, "borrower: the request moved by a reorg, not final yet")
    walk.evm_final()
    walk.request_applied()
    assert EvmEvent.objects.get(pk=seen.pk).applied_at is not None

    walk.commit_and_presign()
    walk.offer()

    # The accept (pB on chain), mined and seen but not final, is dropped by a 1-block reorg: the worker orphans it,
    # the loan stays Offered and nothing is locked on Bitcoin on its strength.
    dropped_hash = walk.send_accept()
    seen = stage.wait_for("the worker sees the accept", lambda: evm_event(dropped_hash, "LoanActivated"))
    assert seen.applied_at is None
    reorg = evm_reorg(1)
    assert reorg.orphaned[0].number == seen.block_number
    with pytest.raises(TransactionNotFound):
        stage.w3.eth.get_transaction(dropped_hash)
    stage.wait_for(
        "the worker orphans the dropped accept",
        lambda: EvmEvent.objects.filter(pk=seen.pk, orphaned_at__isnull=False).exists(),
    )
    stage.mine_evm(walk.evm_depth)  # the orphaned block would be final by now
    head = int(stage.w3.eth.block_number)
    stage.wait_for(
        "the worker's cursor at the head",
        lambda: ChainCursor.objects.filter(chain=ChainCursor.Chain.EVM, block_number__gte=head).exists(),
    )
    walk.loan.refresh_from_db()
    assert walk.loan.status == Loan.Status.OFFERED and walk.loan.borrower_preimage is None
    assert not BitcoinBroadcast.objects.filter(loan=walk.loan).exists()
    assert not Automation.objects.filter(loan=walk.loan).exists()
    walk.borrower.reload()
    assert borrower_steps(walk.borrower)[0] == "accept-offer"
    walk.shot(walk.borrower, "borrower: the accept dropped by a reorg, the offer still open")

    # The borrower accepts again from the page (the offer is still open): that accept is the one applied.
    accept_hash = walk.send_accept()
    walk.evm_final()
    walk.accept_applied(recorder)
    accepts = EvmEvent.objects.filter(name="LoanActivated", tx_hash__in=[dropped_hash, accept_hash])
    seen_accepts = {
        tx: (applied is not None, orphaned is not None)
        for tx, applied, orphaned in accepts.values_list("tx_hash", "applied_at", "orphaned_at")
    }
    if accept_hash == dropped_hash:  # the wallet signed the very same transaction again: the event was revived
        assert seen_accepts == {accept_hash: (True, False)}
    else:
        assert seen_accepts == {dropped_hash: (False, True), accept_hash: (True, False)}

    walk.lock()
    walk.repay()
    walk.send_accept_repayment()
    walk.evm_final()
    walk.repaid()
    release = walk.release()
    walk.assert_outcome(release)
    assert [(function, source) for function, source, _ in sent_calls(walk.loan)] == [
        ("requestLoan", "wallet"),
        ("commitLenderHash", "server_key"),
        ("extendLoanOffer", "server_key"),
        *[("acceptLoanOffer", "wallet")] * len(seen_accepts),
        ("attemptRepayment", "wallet"),
        ("acceptLoanRepayment", "server_key"),
    ]
    assert [error for error in console.errors if "WebSocket connection to" not in error] == []


@pytest.mark.worker(bitcoin_confirmations=2)
def test_scenario_bitcoin_reorgs_mid_loan(walk, stage, btc_reorg, recorder, console):
    walk.create()

    # The escrow payment, seen by the worker in a block at 1 confirmation (not final at 2), is re-mined in the first
    # block of a longer branch: the worker un-confirms it, records it in its new block and applies it from there.
    escrow_txid = walk.send_escrow()
    raw_escrow = stage.btc.getrawtransaction(escrow_txid, False)
    stage.mine_btc(1)
    first_block = stage.btc.getbestblockhash()
    seen = stage.wait_for(
        "the worker sees the escrow payment",
        lambda: BitcoinTransaction.objects.filter(loan=walk.loan, txid=escrow_txid, block_hash=first_block).first(),
    )
    assert seen.applied_at is None and walk.loan.bitcoin_status == Loan.BitcoinStatus.NONE
    reorg = btc_reorg(1, [raw_escrow])
    assert reorg.orphaned == (first_block,)
    walk.escrow_confirmed(escrow_txid)
    seen.refresh_from_db()
    assert (seen.block_hash, seen.block_height) == (reorg.branch[0], reorg.fork_height + 1)
    assert walk.loan.escrow_btc_height == reorg.fork_height + 1

    walk.request()
    walk.commit_and_presign()
    walk.offer()
    walk.send_accept()
    walk.accept_applied(recorder)

    # TX_1, broadcast by the worker and seen in a block at 1 confirmation, goes back to the mempool when a longer
    # branch without it wins: the worker un-confirms it, the loan stays Active with the escrow confirmed, and the
    # automation keeps handing the same TX_1 to the node until it is final on the new branch.
    lock = walk.tx1_broadcast()
    stage.mine_btc(1)
    tx1_block = stage.btc.getbestblockhash()
    seen = stage.wait_for(
        "the worker sees TX_1 in a block",
        lambda: BitcoinTransaction.objects.filter(loan=walk.loan, txid=lock.txid, block_hash=tx1_block).first(),
    )
    assert seen.applied_at is None
    reorg = btc_reorg(1)
    assert reorg.orphaned == (tx1_block,)
    assert lock.txid in stage.btc.getrawmempool()
    stage.wait_for(
        "the worker un-confirms TX_1",
        lambda: BitcoinTransaction.objects.filter(
            pk=seen.pk, block_hash__isnull=True, block_height__isnull=True
        ).exists(),
    )
    walk.loan.refresh_from_db()
    assert (walk.loan.status, walk.loan.bitcoin_status) == (Loan.Status.ACTIVE, Loan.BitcoinStatus.ESCROW_CONFIRMED)
    attempts = BitcoinBroadcast.objects.get(pk=lock.pk).attempts
    stage.wait_for(
        "the automation hands TX_1 to the node again after the reorg",
        lambda: BitcoinBroadcast.objects.filter(pk=lock.pk, attempts__gt=attempts, last_error="").exists(),
    )
    assert lock.txid in stage.btc.getrawmempool()
    walk.borrower.reload()
    walk.shot(walk.borrower, "borrower: TX_1 back in the mempool after a reorg")
    stage.mine_btc(walk.btc_depth)
    walk.collateral_locked()
    seen.refresh_from_db()
    assert seen.block_height == reorg.fork_height + len(reorg.branch) + 1

    walk.repay()
    walk.send_accept_repayment()
    walk.repaid()
    release = walk.release()
    walk.assert_outcome(release)
    assert [(function, source) for function, source, _ in sent_calls(walk.loan)] == [
        ("requestLoan", "wallet"),
        ("commitLenderHash", "server_key"),
        ("extendLoanOffer", "server_key"),
        ("acceptLoanOffer", "wallet"),
        ("attemptRepayment", "wallet"),
        ("acceptLoanRepayment", "server_key"),
    ]
    assert [error for error in console.errors if "WebSocket connection to" not in error] == []


def kill_and_restart(stage: Stage, walk: WalkAtDepth, moment: str) -> tuple[str, str, int]:
    """SIGKILL the worker now (whatever it is doing) and start a new one; what the loan looked like when it died
    (status, Bitcoin status, broadcasts), kept with the screenshots."""
    stage.worker.kill()
    walk.loan.refresh_from_db()
    found = (walk.loan.status, walk.loan.bitcoin_status, BitcoinBroadcast.objects.filter(loan=walk.loan).count())
    stage.waited.append((f"killed {moment}: status, Bitcoin status, broadcasts", found))
    stage.worker.start()
    return found


def test_scenario_worker_killed_mid_loan(walk, stage, recorder, console):
    walk.create()
    walk.pay_escrow()
    walk.request()
    walk.commit_and_presign()
    walk.offer()

    # Killed right after the accept is mined: the automation was about to lock TX_1 (or had just done so).
    walk.send_accept()
    kill_and_restart(stage, walk, "after the accept")
    walk.accept_applied(recorder)
    lock = walk.tx1_broadcast()
    assert lock.txid in stage.btc.getrawmempool()

    # Killed right after the block holding TX_1 is mined: the watcher was following it (or about to).
    stage.mine_btc(1)
    kill_and_restart(stage, walk, "after TX_1's block")
    walk.collateral_locked()

    walk.repay()
    # Killed right after acceptLoanRepayment is mined: the watchtower was about to release (pL public).
    walk.send_accept_repayment()
    kill_and_restart(stage, walk, "after the repayment accepted")
    walk.repaid()
    release = walk.release()

    assert stage.worker.starts == 4
    walk.assert_outcome(release)
    # One TX_1 and one TX_release, whoever broadcast them: on the chain, each outpoint spent once.
    assert list(
        BitcoinTransaction.objects.filter(loan=walk.loan).order_by("block_height").values_list("role", "txid")
    ) == [
        (BitcoinTransaction.Role.ESCROW_FUNDING, walk.loan.escrow_txid),
        (BitcoinTransaction.Role.COLLATERAL_LOCK, lock.txid),
        (BitcoinTransaction.Role.COLLATERAL_RELEASE, release.txid),
    ]
    assert [(function, source) for function, source, _ in sent_calls(walk.loan)] == [
        ("requestLoan", "wallet"),
        ("commitLenderHash", "server_key"),
        ("extendLoanOffer", "server_key"),
        ("acceptLoanOffer", "wallet"),
        ("attemptRepayment", "wallet"),
        ("acceptLoanRepayment", "server_key"),
    ]
    assert [error for error in console.errors if "WebSocket connection to" not in error] == []
