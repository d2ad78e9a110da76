"""The Bitcoin watcher on the regtest node and PostgreSQL: every spend path moves the loan, reorgs rewind and
replay, a node that goes down is retried with backoff, and every fact is stored and applied once.

Loans here have real keys and preimages and the small timelocks of ``bitcoin/tests/test_spend_paths.py``
(t_0 = 3, t_1 = 5); their transactions are built with the protocol library from ``loans.facts.loan_facts`` (or by
another wallet), broadcast and mined on the node. The contract side is moved by hand, through
``loan_status_transition``, to stand for the EVM watcher.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import bdkpython as bdk
import pytest
from django.db import connection
from django.utils import timezone

from bitcoin.descriptors import loan_output_descriptors
from bitcoin.keys import PrivateKey
from bitcoin.loan import LoanFacts
from bitcoin.psbt import create_psbt
from bitcoin.regtest.address import encode_segwit
from bitcoin.rpc import BitcoinRPC, NodeUnavailableError, RPCError
from bitcoin.testing import FundedOutput, fund_output
from bitcoin.transactions import (
    Transaction,
    build_capture,
    build_exit,
    build_release,
    build_tx1,
    finalize_capture,
    finalize_exit,
    finalize_release,
    finalize_tx1,
)
from loans.errors import DeepReorgError
from loans.facts import loan_facts
from loans.models import BitcoinTransaction, ChainBlock, ChainCursor, Loan, LoanStatusChange
from loans.selectors import (
    TimelockPath,
    bitcoin_confirmations,
    bitcoin_followed_height,
    bitcoin_transaction_confirmations,
    loan_timelocks,
)
from loans.services.transitions import loan_status_transition
from loans.sync import bitcoin as watcher_module
from loans.sync.bitcoin import BitcoinSyncReport, Refusal, sync_bitcoin, watch_set
from loans.sync.locks import _key

from .factories import make_loan, make_parameters

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

T_0 = 3
T_1 = 5
LOAN_SATS = 100_000
ESCROW_SATS = 150_000
FEE_RATE = 2
B_PAYOUT = encode_segwit("bcrt", 1, hashlib.sha256(b"borrower payout").digest())
L_PAYOUT = encode_segwit("bcrt", 0, hashlib.sha256(b"lender payout").digest()[:20])
#: Protocol parameters that fit t_0 = 3 and t_1 = 5 under PROTOCOL.md's ordering rules (ratio 20, drift 10 %).
SMALL_TIMELOCKS = {
    "escrow_timelock_btc_blocks": T_0,
    "collateral_timelock_btc_blocks": T_1,
    "offer_window_blocks": 30,
    "request_to_offer_allowance_blocks": 10,
    "accept_cutoff_blocks": 7,
    "loan_duration_blocks": 40,
    "repayment_window_blocks": 20,
    "safety_btc_blocks": 1,
    "min_amount_wei": 10**14,
}
_contract_ids = itertools.count(1000)


# -- loans with real keys, and their transactions ------------------------------------------------------------------


@dataclass
class ChainLoan:
    """A loan in the database and what its parties hold off it: keys and preimages."""

    loan: Loan
    borrower: PrivateKey
    lender: PrivateKey
    p_b: bytes
    p_l: bytes

    @property
    def pk(self) -> int:
        return self.loan.pk

    def refresh(self) -> Loan:
        self.loan.refresh_from_db()
        return self.loan

    def facts(self) -> LoanFacts:
        return loan_facts(loan=self.refresh())

    def fund(self, rpc: BitcoinRPC, sats: int = ESCROW_SATS, confirmations: int = 1) -> FundedOutput:
        return fund_output(rpc, self.facts().escrow.script_pubkey, sats, confirmations)

    def request(self, escrow: FundedOutput, claimed_sats: int | None = None) -> Loan:
        """The EVM side's LoanRequested: the loan claims this escrow outpoint and value."""
        return loan_status_transition(
            loan_id=self.pk,
            to_status=Loan.Status.REQUESTED,
            cause="LoanRequested (simulated EVM side)",
            changes={
                "escrow_txid": escrow.txid,
                "escrow_vout": escrow.vout,
                "escrow_sats": escrow.sats if claimed_sats is None else claimed_sats,
            },
        )

    def contract(self, *statuses: str) -> Loan:
        """Walk the contract side (the EVM watcher's job) through ``statuses``."""
        for status in statuses:
            loan_status_transition(loan_id=self.pk, to_status=status, cause=f"{status} (simulated EVM side)")
        return self.refresh()

    def tx1(self, fee_rate: int = FEE_RATE) -> Transaction:
        prepared = build_tx1(self.facts(), fee_rate_sat_vb=fee_rate)
        return finalize_tx1(
            prepared,
            borrower_signature=prepared.sign(self.borrower),
            lender_signature=prepared.sign(self.lender),
            borrower_preimage=self.p_b,
        )

    def exit(self, fee_rate: int = FEE_RATE) -> Transaction:
        prepared = build_exit(self.facts(), fee_rate_sat_vb=fee_rate)
        return finalize_exit(prepared, borrower_signature=prepared.sign(self.borrower))

    def release(self, tx1_txid: str, fee_rate: int = FEE_RATE) -> Transaction:
        prepared = build_release(self.facts(), tx1_txid=tx1_txid, fee_rate_sat_vb=fee_rate)
        return finalize_release(prepared, borrower_signature=prepared.sign(self.borrower), lender_preimage=self.p_l)

    def capture(self, tx1_txid: str, fee_rate: int = FEE_RATE) -> Transaction:
        prepared = build_capture(self.facts(), tx1_txid=tx1_txid, fee_rate_sat_vb=fee_rate)
        return finalize_capture(prepared, lender_signature=prepared.sign(self.lender))


def make_chain_loan(**overrides: object) -> ChainLoan:
    """A draft loan with fresh keys and preimages, hL committed, t_0 = 3 and t_1 = 5."""
    borrower, lender = PrivateKey.generate(), PrivateKey.generate()
    p_b, p_l = secrets.token_bytes(32), secrets.token_bytes(32)
    parameters = make_parameters(lender_btc_pubkey=lender.xonly_pubkey.hex(), **SMALL_TIMELOCKS)
    loan = make_loan(
        parameters=parameters,
        contract_loan_id=next(_contract_ids),
        amount_wei=LOAN_SATS * 10**10,
        borrower_btc_pubkey=borrower.xonly_pubkey.hex(),
        borrower_hash=hashlib.sha256(p_b).hexdigest(),
        lender_hash=hashlib.sha256(p_l).hexdigest(),
        borrower_payout_address=B_PAYOUT,
        lender_payout_address=L_PAYOUT,
        **overrides,
    )
    return ChainLoan(loan, borrower, lender, p_b, p_l)


def send(rpc: BitcoinRPC, tx: Transaction) -> str:
    txid = rpc.sendrawtransaction(tx.hex())
    assert txid == tx.txid
    return txid


def bitcoin_trail(loan: ChainLoan) -> list[tuple[str, str, str]]:
    """The loan's Bitcoin-side audit rows: (from, to, role of the transaction that caused it)."""
    return list(
        LoanStatusChange.objects.filter(loan_id=loan.pk, side=LoanStatusChange.Side.BITCOIN)
        .order_by("pk")
        .values_list("from_status", "to_status", "bitcoin_transaction__role")
    )


def row(loan: ChainLoan, txid: str) -> BitcoinTransaction:
    return BitcoinTransaction.objects.get(loan_id=loan.pk, txid=txid)


def cursor() -> ChainCursor:
    return ChainCursor.objects.get(chain=ChainCursor.Chain.BITCOIN)


@pytest.fixture(autouse=True)
def _regtest(settings) -> None:
    settings.BITCOIN_NETWORK = "regtest"


@pytest.fixture
def watch(btc_rpc: BitcoinRPC) -> Callable[..., BitcoinSyncReport]:
    """``watch(confirmations=1, **options)``: one watcher run against the node, first run from the block after
    the tip at the test's start."""
    start = btc_rpc.getblockcount() + 1

    def run(confirmations: int = 1, **options: object) -> BitcoinSyncReport:
        report = sync_bitcoin(rpc=btc_rpc, confirmations=confirmations, start_height=start, **options)
        assert not report.skipped, report
        return report

    return run


# -- every spend path ----------------------------------------------------------------------------------------------


def test_tx1_then_release_locks_and_releases_with_preimages_from_the_witnesses_and_closes_the_loan(
    btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]], watch: Callable[..., BitcoinSyncReport]
) -> None:
    loan = make_chain_loan()
    escrow = loan.fund(btc_rpc)
    loan.request(escrow)
    report = watch()
    assert (report.recorded, report.applied, report.refused) == (1, 1, ())
    assert loan.refresh().bitcoin_status == "escrow_confirmed"
    assert loan.loan.escrow_btc_height == escrow.height
    funding = row(loan, escrow.txid)
    assert (funding.role, funding.vout, funding.value_sats, funding.block_height) == (
        "escrow_funding",
        escrow.vout,
        ESCROW_SATS,
        escrow.height,
    )
    assert funding.raw_hex == btc_rpc.getrawtransaction(escrow.txid, False)

    loan.contract("offered", "active")  # LoanActivated would carry pB; here only TX_1's witness tells it
    tx1 = send(btc_rpc, loan.tx1())
    btc_mine(1)
    assert watch().applied == 1
    assert loan.refresh().bitcoin_status == "collateral_locked"
    assert loan.loan.borrower_preimage == loan.p_b.hex()
    assert row(loan, tx1).revealed_preimage == loan.p_b.hex()
    assert loan.loan.collateral_btc_height == btc_rpc.getblockcount()

    loan.contract("repayment_in_progress", "repaid")  # RepaymentAccepted would carry pL; TX_release tells it
    assert not loan.refresh().is_closed  # the contract is settled, the collateral not yet back
    release = send(btc_rpc, loan.release(tx1))
    btc_mine(1)
    assert watch().applied == 1
    loan.refresh()
    assert (loan.loan.bitcoin_status, loan.loan.lender_preimage) == ("released", loan.p_l.hex())
    assert row(loan, release).revealed_preimage == loan.p_l.hex()
    assert loan.loan.is_closed
    assert bitcoin_trail(loan) == [
        ("none", "escrow_confirmed", "escrow_funding"),
        ("escrow_confirmed", "collateral_locked", "collateral_lock"),
        ("collateral_locked", "released", "collateral_release"),
    ]
    # A closed loan is no longer watched.
    assert loan.pk not in {w.loan.pk for holders in watch_set().scripts.values() for w in holders}


def test_tx_exit_of_a_drafts_escrow_matures_after_t0_and_closes_the_cancelled_loan(
    btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]], watch: Callable[..., BitcoinSyncReport]
) -> None:
    """A draft (no outpoint claimed yet) takes its escrow from the chain; after t_0, B's TX_exit takes it back."""
    loan = make_chain_loan()
    escrow = loan.fund(btc_rpc)
    watch()
    loan.refresh()
    assert (loan.loan.bitcoin_status, loan.loan.escrow_txid, loan.loan.escrow_vout, loan.loan.escrow_sats) == (
        "escrow_confirmed",
        escrow.txid,
        escrow.vout,
        ESCROW_SATS,
    )
    loan.contract("requested", "cancelled")  # the request was withdrawn: the escrow must come back
    assert not loan.refresh().is_closed

    exit_tx = loan.exit()
    for remaining in range(T_0 - 1, 0, -1):
        timelocks = loan_timelocks(loan=loan.refresh())
        assert (timelocks.exit.output_height, timelocks.exit.mature_height) == (escrow.height, escrow.height + T_0)
        assert timelocks.exit.blocks_remaining == remaining and not timelocks.exit.is_mature
        with pytest.raises(RPCError, match="non-BIP68-final"):  # the node agrees: not yet
            btc_rpc.sendrawtransaction(exit_tx.hex())
        btc_mine(1)
        watch()
    assert loan_timelocks(loan=loan.loan).exit.is_mature
    send(btc_rpc, exit_tx)  # ... and it agrees the moment the selector says 0
    btc_mine(1)
    assert watch().applied == 1
    loan.refresh()
    assert loan.loan.bitcoin_status == "exited" and loan.loan.is_closed
    assert bitcoin_trail(loan) == [
        ("none", "escrow_confirmed", "escrow_funding"),
        ("escrow_confirmed", "exited", "escrow_exit"),
    ]


def test_tx1_then_capture_after_t1_closes_the_defaulted_loan(
    btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]], watch: Callable[..., BitcoinSyncReport]
) -> None:
    loan = make_chain_loan()
    loan.request(loan.fund(btc_rpc))
    loan.contract("offered", "active")
    tx1 = send(btc_rpc, loan.tx1())
    btc_mine(1)
    watch()
    tx1_height = btc_rpc.getblockcount()
    assert loan.refresh().bitcoin_status == "collateral_locked"
    assert loan_timelocks(loan=loan.loan).capture == TimelockPath(T_1, tx1_height, tx1_height + T_1, T_1 - 1)

    capture = loan.capture(tx1)
    btc_mine(T_1 - 2)
    watch()
    assert loan_timelocks(loan=loan.loan).capture.blocks_remaining == 1
    with pytest.raises(RPCError, match="non-BIP68-final"):
        btc_rpc.sendrawtransaction(capture.hex())
    btc_mine(1)
    watch()
    assert loan_timelocks(loan=loan.loan).capture.is_mature
    send(btc_rpc, capture)
    btc_mine(1)
    loan.contract("defaulted")
    assert watch().applied == 1
    loan.refresh()
    assert loan.loan.bitcoin_status == "captured" and loan.loan.is_closed
    assert bitcoin_trail(loan) == [
        ("none", "escrow_confirmed", "escrow_funding"),
        ("escrow_confirmed", "collateral_locked", "collateral_lock"),
        ("collateral_locked", "captured", "collateral_capture"),
    ]


def test_a_release_built_and_signed_by_another_wallet_is_recognised(
    btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]], watch: Callable[..., BitcoinSyncReport]
) -> None:
    """B's own wallet (BDK) signs and finalizes a TX_release paying another of B's addresses at another fee rate:
    the platform never saw it, the witness alone tells what it is and reveals pL."""
    loan = make_chain_loan()
    loan.request(loan.fund(btc_rpc))
    tx1 = send(btc_rpc, loan.tx1())
    btc_mine(1)
    watch()

    facts = dataclasses.replace(loan.facts(), borrower_payout_address=encode_segwit("bcrt", 0, b"\x07" * 20))
    prepared = build_release(facts, tx1_txid=tx1, fee_rate_sat_vb=7)
    psbt = create_psbt(prepared)
    psbt.add_sha256_preimage(0, loan.p_l)
    descriptor = loan_output_descriptors(facts.collateral).tree_descriptor.rpartition("#")[0]
    descriptor = descriptor.replace(loan.borrower.xonly_pubkey.hex(), loan.borrower.to_wif("regtest"))
    wallet = bdk.Wallet.create_single(
        bdk.Descriptor(descriptor, bdk.NetworkKind.TEST), bdk.Network.REGTEST, bdk.Persister.new_in_memory()
    )
    foreign = bdk.Psbt(psbt.to_base64())
    assert wallet.sign(foreign) is True  # signed and finalized by BDK
    raw = bytes(foreign.extract_tx().serialize()).hex()
    txid = btc_rpc.sendrawtransaction(raw)
    assert txid != loan.release(tx1).txid  # not the platform's TX_release
    btc_mine(1)
    assert watch().applied == 1
    loan.refresh()
    assert (loan.loan.bitcoin_status, loan.loan.lender_preimage) == ("released", loan.p_l.hex())
    assert (row(loan, txid).role, row(loan, txid).raw_hex) == ("collateral_release", raw)


def test_an_escrow_holding_another_value_than_claimed_is_refused_and_changes_nothing(
    btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]], watch: Callable[..., BitcoinSyncReport], caplog
) -> None:
    loan = make_chain_loan()
    other = make_chain_loan()
    short = loan.fund(btc_rpc, ESCROW_SATS - 1)
    loan.request(short, claimed_sats=ESCROW_SATS)
    other.request(other.fund(btc_rpc))
    with caplog.at_level(logging.WARNING, logger="loans.sync.bitcoin"):
        report = watch()
    assert report.refused == (Refusal(loan.pk, short.txid, "escrow_value_mismatch"),)
    assert report.applied == 1  # the other loan is not held up
    assert f"loan {loan.pk}: final escrow_funding {short.txid} not applied" in caplog.text
    assert loan.refresh().bitcoin_status == "none" and bitcoin_trail(loan) == []
    assert row(loan, short.txid).applied_at is None
    assert other.refresh().bitcoin_status == "escrow_confirmed"
    # Refused again next run, still changing nothing; another payment to the same address changes nothing either.
    stray = loan.fund(btc_rpc, 5_000)
    report = watch()
    assert report.refused == (Refusal(loan.pk, short.txid, "escrow_value_mismatch"),)
    assert row(loan, stray.txid).applied_at is not None
    assert loan.refresh().bitcoin_status == "none" and bitcoin_trail(loan) == []
    assert "refused loan" in str(report)


def test_a_funding_after_the_request_was_cancelled_reopens_the_loan_until_tx_exit(
    btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]], watch: Callable[..., BitcoinSyncReport]
) -> None:
    loan = make_chain_loan()
    loan.contract("requested", "cancelled")
    assert loan.refresh().is_closed  # nothing locked on Bitcoin
    watch()
    loan.fund(btc_rpc)
    watch()
    assert loan.refresh().bitcoin_status == "escrow_confirmed" and not loan.loan.is_closed
    btc_mine(T_0 - 1)
    send(btc_rpc, loan.exit())
    btc_mine(1)
    watch()
    assert loan.refresh().bitcoin_status == "exited" and loan.loan.is_closed


# -- finality, reorgs ----------------------------------------------------------------------------------------------


def test_facts_apply_only_at_the_configured_depth(
    btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]], watch: Callable[..., BitcoinSyncReport]
) -> None:
    loan = make_chain_loan()
    escrow = loan.fund(btc_rpc)
    loan.request(escrow)
    for confirmations in (1, 2):
        report = watch(confirmations=3)
        funding = row(loan, escrow.txid)
        assert bitcoin_transaction_confirmations(bitcoin_transaction=funding) == confirmations
        assert report.applied == 0 and funding.applied_at is None
        assert loan.refresh().bitcoin_status == "none"
        btc_mine(1)
    assert watch(confirmations=3).applied == 1
    assert bitcoin_transaction_confirmations(bitcoin_transaction=row(loan, escrow.txid)) == 3
    assert loan.refresh().bitcoin_status == "escrow_confirmed"


def test_a_reorg_of_depth_1_unconfirms_and_the_new_chain_confirms_again(
    btc_rpc: BitcoinRPC,
    btc_mine: Callable[..., list[str]],
    btc_reorg: Callable[..., object],
    watch: Callable[..., BitcoinSyncReport],
) -> None:
    loan = make_chain_loan()
    escrow = loan.fund(btc_rpc)
    loan.request(escrow)
    watch(confirmations=2)
    assert row(loan, escrow.txid).block_height == escrow.height

    reorg = btc_reorg(1)  # the funding goes back to the mempool
    report = watch(confirmations=2)
    assert (report.orphaned, report.unconfirmed, report.blocks) == (1, 1, 2)
    funding = row(loan, escrow.txid)
    assert (funding.block_hash, funding.block_height, funding.applied_at) == (None, None, None)
    assert bitcoin_transaction_confirmations(bitcoin_transaction=funding) == 0
    assert (cursor().block_number, cursor().block_hash) == (escrow.height + 1, reorg.tip_hash)
    assert "rewound 1 orphaned blocks" in str(report)

    [mined] = btc_mine(1)  # mined again, in a block of the new chain
    watch(confirmations=2)
    funding = row(loan, escrow.txid)
    assert (funding.block_hash, funding.block_height, funding.applied_at) == (mined, escrow.height + 2, None)
    btc_mine(1)
    assert watch(confirmations=2).applied == 1
    assert loan.refresh().escrow_btc_height == escrow.height + 2
    assert bitcoin_trail(loan) == [("none", "escrow_confirmed", "escrow_funding")]
    assert_blocks_follow_the_node(btc_rpc)


def test_a_reorg_of_depth_3_before_finality_rewinds_and_replays_to_the_right_state(
    btc_rpc: BitcoinRPC,
    btc_mine: Callable[..., list[str]],
    btc_reorg: Callable[..., object],
    watch: Callable[..., BitcoinSyncReport],
) -> None:
    """Funding at h and TX_1 at h+1, neither final at 4 confirmations; the branch re-confirms the funding in
    another block at h and leaves TX_1 in the mempool; the watcher follows the new chain to the right state."""
    loan = make_chain_loan()
    escrow = loan.fund(btc_rpc)
    loan.request(escrow)
    watch(confirmations=4)
    tx1 = send(btc_rpc, loan.tx1())
    btc_mine(2)
    watch(confirmations=4)
    assert row(loan, tx1).block_height == escrow.height + 1
    assert loan.refresh().bitcoin_status == "none"

    reorg = btc_reorg(3, txs=[btc_rpc.getrawtransaction(escrow.txid, False)])
    report = watch(confirmations=4)
    assert (report.orphaned, report.unconfirmed, report.blocks, report.applied) == (3, 2, 4, 1)
    funding = row(loan, escrow.txid)
    assert (funding.block_hash, funding.block_height) == (reorg.branch[0], escrow.height)
    assert (row(loan, tx1).block_hash, row(loan, tx1).block_height) == (None, None)
    assert loan.refresh().bitcoin_status == "escrow_confirmed"  # 4 confirmations on the new chain

    btc_mine(1)  # TX_1 is mined again, at h+4
    watch(confirmations=4)
    assert row(loan, tx1).block_height == escrow.height + 4
    assert loan.refresh().bitcoin_status == "escrow_confirmed"
    btc_mine(3)
    assert watch(confirmations=4).applied == 1
    loan.refresh()
    assert (loan.loan.bitcoin_status, loan.loan.collateral_btc_height) == ("collateral_locked", escrow.height + 4)
    assert bitcoin_trail(loan) == [
        ("none", "escrow_confirmed", "escrow_funding"),
        ("escrow_confirmed", "collateral_locked", "collateral_lock"),
    ]
    assert_blocks_follow_the_node(btc_rpc)


def test_a_reorg_that_takes_back_a_final_fact_stops_the_watcher_and_changes_nothing(
    btc_rpc: BitcoinRPC, btc_reorg: Callable[..., object], watch: Callable[..., BitcoinSyncReport]
) -> None:
    loan = make_chain_loan()
    escrow = loan.fund(btc_rpc)
    loan.request(escrow)
    watch(confirmations=1)
    before = cursor()
    btc_reorg(1)
    with pytest.raises(DeepReorgError):
        watch(confirmations=1)
    after = cursor()
    assert (after.block_number, after.block_hash) == (before.block_number, before.block_hash)
    assert after.failures == 1 and after.last_error.startswith("DeepReorgError: deep_reorg")
    assert row(loan, escrow.txid).block_hash == before.block_hash
    assert loan.refresh().bitcoin_status == "escrow_confirmed"


def assert_blocks_follow_the_node(rpc: BitcoinRPC) -> None:
    """The stored blocks are a chain without gaps, and the node's active chain."""
    blocks = list(ChainBlock.objects.filter(chain="bitcoin").order_by("number"))
    assert [b.number for b in blocks] == list(range(blocks[0].number, blocks[-1].number + 1))
    assert all(b.parent_hash == a.hash for a, b in itertools.pairwise(blocks))
    assert all(rpc.getblockhash(b.number) == b.hash for b in blocks)
    assert (cursor().block_number, cursor().block_hash) == (blocks[-1].number, blocks[-1].hash)


# -- idempotency, bounded runs, the lock ---------------------------------------------------------------------------


def test_following_the_same_blocks_again_stores_and_applies_nothing_twice(
    btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]], watch: Callable[..., BitcoinSyncReport]
) -> None:
    loan = make_chain_loan()
    loan.request(loan.fund(btc_rpc))
    tx1 = send(btc_rpc, loan.tx1())
    btc_mine(1)
    send(btc_rpc, loan.release(tx1))
    btc_mine(1)
    first = watch()
    assert (first.recorded, first.applied) == (3, 3)
    facts = list(BitcoinTransaction.objects.order_by("pk").values_list("pk", "txid", "block_hash", "applied_at"))
    trail = bitcoin_trail(loan)

    again = watch()
    assert (again.blocks, again.recorded, again.applied) == (0, 0, 0)
    # Lose the cursor (a restored backup, a new deployment): the same blocks are followed again.
    ChainBlock.objects.all().delete()
    ChainCursor.objects.all().delete()
    replay = watch()
    assert (replay.blocks, replay.recorded, replay.applied) == (first.blocks, 3, 0)
    assert list(BitcoinTransaction.objects.order_by("pk").values_list("pk", "txid", "block_hash", "applied_at")) == (
        facts
    )
    assert bitcoin_trail(loan) == trail


def test_max_blocks_bounds_a_run_and_the_next_run_continues(
    btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]], watch: Callable[..., BitcoinSyncReport]
) -> None:
    loan = make_chain_loan()
    escrow = loan.fund(btc_rpc)
    btc_mine(4)
    start = escrow.height
    report = watch(max_blocks=2)
    assert (report.blocks, report.height) == (2, start + 1)
    assert loan.refresh().bitcoin_status == "escrow_confirmed"  # the funding block was among them
    assert bitcoin_followed_height() == start + 1
    report = watch(max_blocks=2)
    assert (report.blocks, report.height, report.tip_height) == (2, start + 3, start + 4)
    assert watch().height == start + 4
    assert_blocks_follow_the_node(btc_rpc)


def test_a_run_is_skipped_while_another_holds_the_lock(btc_rpc: BitcoinRPC) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the cross-process lock is PostgreSQL's advisory lock")
    import psycopg

    params = connection.get_connection_params()
    with psycopg.connect(
        **{k: v for k, v in params.items() if k in {"host", "port", "user", "password", "dbname"}},
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [_key("bitcoin")])
        report = sync_bitcoin(rpc=btc_rpc)
        assert report.skipped == "another Bitcoin watcher run holds the lock"
        assert str(report) == "skipped: another Bitcoin watcher run holds the lock"
    assert not ChainCursor.objects.exists()


# -- a node that goes down ---------------------------------------------------------------------------------------


def _dead_node() -> BitcoinRPC:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return BitcoinRPC(f"http://127.0.0.1:{port}", retries=0, timeout=2)


def test_a_node_down_backs_off_readyz_names_it_and_nothing_is_lost_when_it_returns(
    btc_rpc: BitcoinRPC,
    btc_mine: Callable[..., list[str]],
    watch: Callable[..., BitcoinSyncReport],
    client,
    settings,
) -> None:
    loan = make_chain_loan()
    escrow = loan.fund(btc_rpc)
    loan.request(escrow)
    watch()
    followed = cursor().block_number
    dead = _dead_node()

    # The node goes down: the run raises, the cursor counts the failure and backs off.
    for failures in (1, 2):
        ChainCursor.objects.update(retry_after=None)  # the backoff has passed
        before = timezone.now()
        with pytest.raises(NodeUnavailableError):
            sync_bitcoin(rpc=dead)
        state = cursor()
        assert state.failures == failures and "unreachable" in state.last_error
        assert before + timedelta(seconds=2**failures) <= state.retry_after
        assert state.retry_after <= timezone.now() + timedelta(seconds=2**failures)
        assert state.block_number == followed
    # Within the backoff a run does nothing (not even call the node).
    report = sync_bitcoin(rpc=dead)
    assert report.skipped.startswith("backing off until") and "after 2 failures" in report.skipped
    # The settings' node is the one /readyz checks: down, named.
    settings.BITCOIN_RPC_URL = dead.url
    body = client.get("/readyz").json()
    assert body["status"] == "down"
    assert body["checks"]["bitcoin_node"]["ok"] is False
    assert dead.url.removeprefix("http://") in body["checks"]["bitcoin_node"]["detail"]

    # Meanwhile the chain moves on.
    loan.contract("offered", "active")
    tx1 = send(btc_rpc, loan.tx1())
    btc_mine(2)

    # The node is back.
    settings.BITCOIN_RPC_URL = btc_rpc.url
    assert client.get("/readyz").json()["checks"]["bitcoin_node"]["ok"] is True
    ChainCursor.objects.update(retry_after=timezone.now() - timedelta(seconds=1))
    report = watch()
    assert (report.blocks, report.recorded, report.applied) == (2, 1, 1)
    state = cursor()
    assert (state.failures, state.last_error, state.retry_after) == (0, "", None)
    assert loan.refresh().bitcoin_status == "collateral_locked" and row(loan, tx1).applied_at is not None


def test_a_run_that_follows_no_new_block_still_clears_the_failures_and_records_the_tip(
    btc_rpc: BitcoinRPC, watch: Callable[..., BitcoinSyncReport]
) -> None:
    """Between blocks most runs follow nothing: a successful one must still end the failure streak (the operators'
    alert and the lag metric read the cursor) and record the node's tip."""
    watch()
    ChainCursor.objects.update(failures=3, last_error="NodeUnavailableError: unreachable", tip_number=0)
    ChainCursor.objects.update(retry_after=timezone.now() - timedelta(seconds=1))
    report = watch()
    assert report.blocks == 0
    state = cursor()
    assert (state.failures, state.last_error, state.retry_after) == (0, "", None)
    assert state.tip_number == btc_rpc.getblockcount()


def test_the_backoff_is_capped_at_five_minutes(btc_rpc: BitcoinRPC, watch: Callable[..., BitcoinSyncReport]) -> None:
    watch()
    ChainCursor.objects.update(failures=12)
    with pytest.raises(NodeUnavailableError):
        sync_bitcoin(rpc=_dead_node())
    state = cursor()
    assert state.failures == 13
    assert timedelta(seconds=299) < state.retry_after - timezone.now() <= timedelta(seconds=300)


def test_without_a_client_the_settings_node_is_used(settings, btc_rpc: BitcoinRPC) -> None:
    settings.BITCOIN_RPC_URL = _dead_node().url
    with pytest.raises(NodeUnavailableError):
        sync_bitcoin(confirmations=1)
    settings.BITCOIN_RPC_URL = btc_rpc.url
    settings.BITCOIN_SYNC_START_HEIGHT = btc_rpc.getblockcount()
    report = sync_bitcoin()
    assert (report.blocks, report.height) == (1, btc_rpc.getblockcount())


def test_the_first_run_starts_a_day_of_blocks_below_the_tip(btc_rpc: BitcoinRPC, btc_mine) -> None:
    tip = btc_rpc.getblockcount()
    if tip < watcher_module.FIRST_RUN_BLOCKS_BELOW_TIP:
        btc_mine(watcher_module.FIRST_RUN_BLOCKS_BELOW_TIP - tip)
        tip = btc_rpc.getblockcount()
    report = sync_bitcoin(rpc=btc_rpc, max_blocks=1)
    assert report.height == tip - watcher_module.FIRST_RUN_BLOCKS_BELOW_TIP


# -- the watch set, the selectors, the report ---------------------------------------------------------------------


def test_the_watch_set_is_built_with_a_fixed_number_of_queries(django_assert_max_num_queries) -> None:
    loans = [make_chain_loan() for _ in range(30)]
    for n, loan in enumerate(loans[:10]):
        BitcoinTransaction.objects.create(
            loan=loan.loan, role="collateral_lock", txid=f"{n:064x}", block_hash="ab" * 32, block_height=5,
            spent_txid="cd" * 32, spent_vout=n,
        )  # fmt: skip
    with django_assert_max_num_queries(2):
        watched = watch_set()
    assert watched.loans == 30
    assert len(watched.collateral_outpoints) == 10
    assert len(watched.escrow_outpoints) == 0  # drafts with no funding recorded


def test_a_closed_loans_escrow_is_left_to_the_live_loan_that_reuses_it() -> None:
    """A borrower who cancelled may request again with the same escrow: it is the new loan's."""
    old = make_chain_loan()
    old.contract("requested", "cancelled")
    new = make_loan(
        parameters=old.loan.parameters,
        borrower_btc_pubkey=old.loan.borrower_btc_pubkey,
        borrower_hash=old.loan.borrower_hash,
    )
    [holders] = watch_set().scripts.values()
    assert [w.loan.pk for w in holders] == [new.pk]


def test_confirmations_and_maturity_are_derived_from_heights() -> None:
    assert bitcoin_confirmations(block_height=None, tip_height=10) == 0
    assert bitcoin_confirmations(block_height=10, tip_height=None) == 0
    assert bitcoin_confirmations(block_height=10, tip_height=9) == 0  # the watcher is behind the fact
    assert bitcoin_confirmations(block_height=10, tip_height=10) == 1
    assert bitcoin_confirmations(block_height=10, tip_height=14) == 5
    # Output at 10, t = 3: a block at 13 may hold the spend; from tip 10 two blocks (11, 12) come first.
    assert TimelockPath.of(output_height=10, timelock_blocks=3, tip_height=10) == TimelockPath(3, 10, 13, 2)
    assert TimelockPath.of(output_height=10, timelock_blocks=3, tip_height=12).is_mature
    assert TimelockPath.of(output_height=10, timelock_blocks=3, tip_height=99).blocks_remaining == 0
    assert TimelockPath.of(output_height=None, timelock_blocks=3, tip_height=12) == TimelockPath(3, None, None, None)
    loan = make_chain_loan()
    assert bitcoin_followed_height() is None
    timelocks = loan_timelocks(loan=loan.loan)
    assert (timelocks.tip_height, timelocks.exit.blocks_remaining, timelocks.capture.blocks_remaining) == (
        None,
        None,
        None,
    )


def test_the_report_reads_as_a_sentence() -> None:
    report = BitcoinSyncReport(height=120, tip_height=121, blocks=3, orphaned=1, unconfirmed=2, recorded=4, applied=2)
    assert str(report) == (
        "followed 3 blocks to height 120 (node tip 121), rewound 1 orphaned blocks (2 transactions unconfirmed), "
        "recorded 4 and applied 2 loan transactions in 0.00 s"
    )
    with pytest.raises(ValueError, match="confirmations"):
        sync_bitcoin(confirmations=0)
