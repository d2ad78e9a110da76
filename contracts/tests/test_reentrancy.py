"""A malicious borrower contract re-enters on every payout it receives; it can never be paid twice."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from contracts.tests.helpers import BORROWER_XONLY, ESCROW_TXID, Status, load_artifact, new_preimage

pytestmark = pytest.mark.integration

AMOUNT = 10**17
NONE, CANCEL, ACCEPT, WITHDRAW_REPAYMENT, SWAP_CLAIM = range(5)
REENTRANT = "0x" + keccak(text="ReentrancyGuardReentrantCall()")[:4].hex()


@pytest.fixture
def attacker(fast, people):
    art = load_artifact("ReentrantBorrower", "test")
    factory = fast.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    receipt = fast.chain.transact(factory.constructor(fast.loan.address, fast.swap.address), people.stranger)
    return fast.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])


def request_via(fast, attacker, people) -> tuple[int, bytes, bytes]:
    p_b, h_b = new_preimage()
    fee = fast.params.processing_fee_wei
    fast.chain.transact(
        attacker.functions.request(AMOUNT, BORROWER_XONLY, h_b, ESCROW_TXID, 0, 1000, 1), people.stranger, fee
    )
    loan_id = fast.loan.functions.loanCount().call()
    assert fast.loan_struct(loan_id)["borrower"] == attacker.address
    return loan_id, p_b, h_b


def offer(fast, people, loan_id) -> bytes:
    p_l, h_l = new_preimage()
    fast.chain.transact(fast.loan.functions.commitLenderHash(loan_id, h_l), people.lender)
    fast.chain.transact(fast.loan.functions.extendLoanOffer(loan_id), people.lender, AMOUNT + AMOUNT // 10)
    return p_l


def stats(attacker) -> tuple[int, int, int, str]:
    f = attacker.functions
    return (
        f.receipts().call(),
        f.reentryAttempts().call(),
        f.reentrySuccesses().call(),
        "0x" + bytes(f.lastRevertData().call()).hex(),
    )


def test_reentering_cancel_pays_the_fee_once(fast, people, attacker):
    loan_id, _, _ = request_via(fast, attacker, people)
    fast.chain.transact(attacker.functions.configure(CANCEL, False, loan_id, b"\x00" * 32), people.stranger)
    fast.chain.transact(attacker.functions.cancel(loan_id), people.stranger)
    assert stats(attacker) == (1, 1, 0, REENTRANT)
    assert fast.chain.balance(attacker.address) == fast.params.processing_fee_wei
    assert fast.status(loan_id) == Status.CANCELLED
    assert fast.held() == (0, 0)


def test_reentering_accept_pays_amount_and_fee_once(fast, people, attacker):
    loan_id, p_b, _ = request_via(fast, attacker, people)
    offer(fast, people, loan_id)
    fast.chain.transact(attacker.functions.configure(ACCEPT, False, loan_id, p_b), people.stranger)
    fast.chain.transact(attacker.functions.accept(loan_id, p_b), people.stranger)
    # Two payouts (amount from EtherSwap, fee from the loan contract), each re-entered, both refused by the guard.
    assert stats(attacker) == (2, 2, 0, REENTRANT)
    assert fast.chain.balance(attacker.address) == AMOUNT + fast.params.processing_fee_wei
    assert fast.status(loan_id) == Status.ACTIVE
    assert fast.held() == (fast.params.bond_for(AMOUNT), 0)


def test_reentering_repayment_withdrawal_pays_once(fast, people, attacker):
    loan_id, p_b, _ = request_via(fast, attacker, people)
    offer(fast, people, loan_id)
    fast.chain.transact(attacker.functions.accept(loan_id, p_b), people.stranger)
    repayment = fast.params.repayment_for(AMOUNT)
    fast.chain.transact(fast.loan.functions.attemptRepayment(loan_id), people.payer, repayment)
    fast.chain.mine(fast.params.repayment_window_blocks)
    fast.chain.transact(attacker.functions.configure(WITHDRAW_REPAYMENT, False, loan_id, b"\x00" * 32), people.stranger)
    held_before = fast.chain.balance(attacker.address)
    fast.chain.transact(attacker.functions.withdrawRepayment(loan_id), people.stranger)
    receipts, attempts, successes, last = stats(attacker)
    assert (receipts - 2, attempts, successes, last) == (2, 2, 0, REENTRANT)  # 2 receipts came with the accept
    bond = fast.params.bond_for(AMOUNT)
    assert fast.chain.balance(attacker.address) == held_before + repayment + bond
    assert fast.status(loan_id) == Status.REPAYMENT_REFUNDED
    assert fast.held() == (0, 0)


def test_reentering_the_vault_directly_is_refused(fast, people, attacker):
    loan_id, p_b, _ = request_via(fast, attacker, people)
    offer(fast, people, loan_id)
    loan = fast.loan_struct(loan_id)
    deadline = loan["offerBlock"] + fast.params.offer_window_blocks
    fast.chain.transact(attacker.functions.configure(SWAP_CLAIM, False, loan_id, p_b), people.stranger)
    fast.chain.transact(attacker.functions.configureSwap(AMOUNT, deadline, people.lender), people.stranger)
    fast.chain.transact(attacker.functions.accept(loan_id, p_b), people.stranger)
    receipts, attempts, successes, last = stats(attacker)
    assert (receipts, attempts, successes) == (2, 2, 0)
    assert last == fast.swap_err("NotLoanContract", attacker.address)
    assert fast.chain.balance(attacker.address) == AMOUNT + fast.params.processing_fee_wei


def test_a_borrower_refusing_payment_blocks_only_itself(fast, people, attacker):
    """When the re-entry failure is bubbled up the payout fails (PayoutFailed) and the whole call reverts: nothing
    changes, and the lender's own exits are unaffected."""
    loan_id, p_b, _ = request_via(fast, attacker, people)
    offer(fast, people, loan_id)
    fast.chain.transact(attacker.functions.configure(ACCEPT, True, loan_id, p_b), people.stranger)
    before = (fast.loan_struct(loan_id), fast.held())
    fast.chain.expect_revert(
        attacker.functions.accept(loan_id, p_b),
        people.stranger,
        fast.swap_err("PayoutFailed", attacker.address, AMOUNT),
    )
    assert (fast.loan_struct(loan_id), fast.held()) == before
    assert fast.chain.balance(attacker.address) == 0
    # The lender withdraws the offer at the deadline as usual.
    fast.chain.mine(fast.params.offer_window_blocks)
    fast.chain.transact(fast.loan.functions.withdrawLoanOffer(loan_id), people.lender)
    assert fast.status(loan_id) == Status.OFFER_EXPIRED

    loan_id, _, _ = request_via(fast, attacker, people)
    fast.chain.transact(attacker.functions.configure(CANCEL, True, loan_id, b"\x00" * 32), people.stranger)
    fast.chain.expect_revert(
        attacker.functions.cancel(loan_id),
        people.stranger,
        fast.err("PayoutFailed", attacker.address, fast.params.processing_fee_wei),
    )
    assert fast.status(loan_id) == Status.REQUESTED
