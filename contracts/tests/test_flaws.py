"""Regression tests for the reference design's flaws that concern the contracts (PROTOCOL.md, "Flaws" 1, 2, 3, 6, 7,
8, 9 and the deadline side of 11)."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from contracts.tests.helpers import LoanFlow, Status, load_artifact, sha256

pytestmark = pytest.mark.integration

AMOUNT = 2 * 10**17

# The complete external surface of the loan contract. Any new state-changing function must be reviewed against
# "no owner function can move a loan's funds" before it is added here.
LOAN_FUNCTIONS = {
    # state-changing
    "acceptLoanOffer",
    "acceptLoanRepayment",
    "acceptOwnership",
    "attemptRepayment",
    "cancelRequest",
    "commitLenderHash",
    "extendLoanOffer",
    "markAsDefaulted",
    "renounceOwnership",
    "requestLoan",
    "transferOwnership",
    "updateParameters",
    "withdrawLoanOffer",
    "withdrawRepaymentAttempt",
    # views
    "etherSwap",
    "getLoan",
    "hashUsed",
    "loanCount",
    "lockedBalance",
    "owner",
    "parameters",
    "parametersVersion",
    "pendingOwner",
}
SWAP_FUNCTIONS = {"claim", "deployer", "hashValues", "loanContract", "lock", "refund", "setLoanContract", "swaps"}


def lockup_of(dep, receipt) -> dict:
    (event,) = dep.swap.events.Lockup().process_receipt(receipt, errors=DISCARD)
    return dict(event["args"])


def test_flaw_01_borrower_refund_path_executes_under_the_stored_lender_hash(fast, people):
    """The repayment is locked under the loan's stored hL (claim: lender, refund: borrower), and the borrower's
    'take back an unaccepted repayment and the bond' path really pays out: the bond is at risk."""
    chain = fast.chain
    before, spent = chain.balances(people.borrower, people.lender), dict(chain.gas_spent)
    flow = LoanFlow(fast, people.borrower, AMOUNT).to_repayment()
    stored = fast.loan_struct(flow.loan_id)
    repay_block = flow.block_of("repay")
    assert lockup_of(fast, flow.receipts["repay"]) == {
        "preimageHash": stored["lenderHash"],
        "amount": stored["repaymentAmount"],
        "claimAddress": people.lender,
        "refundAddress": people.borrower,
        "timelock": repay_block + fast.params.repayment_window_blocks,
    }
    assert stored["lenderHash"] == flow.h_l
    chain.mine_until_next_is(repay_block + fast.params.repayment_window_blocks)
    chain.transact(fast.loan.functions.withdrawRepaymentAttempt(flow.loan_id), people.borrower)
    assert fast.status(flow.loan_id) == Status.REPAYMENT_REFUNDED
    bond = fast.params.bond_for(AMOUNT)
    assert chain.net_changes(before, spent) == {people.borrower: AMOUNT + bond, people.lender: -AMOUNT - bond}
    assert fast.held() == (0, 0)


def test_flaw_02_no_funds_left_behind_and_no_sweep(fast, people):
    """Refunded offers, refunded repayments and the bond after a repayment leave the contracts at once; there is no
    owner function (emergency withdraw, sweep) that could move them."""
    art = load_artifact("BtcCollateralLoan")
    assert {i["name"] for i in art["abi"] if i["type"] == "function"} == LOAN_FUNCTIONS
    swap_art = load_artifact("EtherSwap")
    assert {i["name"] for i in swap_art["abi"] if i["type"] == "function"} == SWAP_FUNCTIONS
    assert not any(i["type"] in ("receive", "fallback") for i in art["abi"] + swap_art["abi"])

    chain, f, p = fast.chain, fast.loan.functions, fast.params
    expired = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    refunded = LoanFlow(fast, people.borrower, AMOUNT).to_repayment()
    LoanFlow(fast, people.borrower, AMOUNT).to_repayment().accept_repayment()
    open_loan = LoanFlow(fast, people.borrower2, AMOUNT).to_active()
    chain.mine(p.repayment_window_blocks)
    chain.transact(f.withdrawLoanOffer(expired.loan_id), people.lender)
    chain.transact(f.withdrawRepaymentAttempt(refunded.loan_id), people.borrower)
    # Only the open loan's bond remains, and every owner call leaves it exactly in place.
    bond = p.bond_for(AMOUNT)
    assert fast.held() == (bond, 0)
    chain.transact(f.updateParameters(p.with_(bond_percent=50).as_tuple()), people.lender)
    chain.transact(f.transferOwnership(people.next_owner), people.lender)
    chain.transact(f.acceptOwnership(), people.next_owner)
    assert fast.held() == (bond, 0)
    assert f.lockedBalance().call() == bond
    assert fast.loan_struct(open_loan.loan_id)["bond"] == bond


def test_flaw_03_acceptance_has_a_deadline_and_the_refund_opens_exactly_at_it(fast, people):
    chain, f = fast.chain, fast.loan.functions
    flow = LoanFlow(fast, people.borrower, AMOUNT).to_repayment()
    deadline = flow.block_of("repay") + fast.params.repayment_window_blocks
    chain.mine_until_next_is(deadline)
    receipt = chain.expect_revert(
        f.acceptLoanRepayment(flow.loan_id, flow.p_l), people.lender, fast.err("TooLate", flow.loan_id, deadline)
    )
    assert receipt["blockNumber"] == deadline
    # The borrower's refund was open from `deadline` on; it still is one block later.
    chain.transact(f.withdrawRepaymentAttempt(flow.loan_id), people.borrower)
    # Once refunded, acceptance is impossible for good, and so is it after a default.
    chain.expect_revert(
        f.acceptLoanRepayment(flow.loan_id, flow.p_l),
        people.lender,
        fast.err("WrongStatus", flow.loan_id, int(Status.REPAYMENT_REFUNDED)),
    )
    defaulted = LoanFlow(fast, people.borrower, AMOUNT).to_active()
    chain.mine(fast.params.loan_duration_blocks)
    chain.transact(f.markAsDefaulted(defaulted.loan_id), people.lender)
    chain.expect_revert(
        f.attemptRepayment(defaulted.loan_id),
        people.borrower,
        fast.err("WrongStatus", defaulted.loan_id, int(Status.DEFAULTED)),
        fast.params.repayment_for(AMOUNT),
    )


def test_flaw_06_parameter_updates_never_touch_a_running_loan(fast, people):
    """Duration, windows, bond and fees are the loan's snapshot: shortening t_D, t_L, t_B after the request changes
    neither the deadlines nor the amounts of that loan."""
    chain, f, p = fast.chain, fast.loan.functions, fast.params
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit()
    snapshot_before = fast.loan_struct(flow.loan_id)
    harsher = p.with_(
        offer_window_blocks=2,
        accept_cutoff_blocks=1,
        loan_duration_blocks=3,
        repayment_window_blocks=2,
        bond_percent=100,
        interest_bps=10000,
        processing_fee_wei=5 * 10**15,
    )
    chain.transact(f.updateParameters(harsher.as_tuple()), people.lender)
    assert fast.loan_struct(flow.loan_id) == snapshot_before
    flow.offer()
    (offered,) = fast.loan.events.LoanOffered().process_receipt(flow.receipts["offer"], errors=DISCARD)
    assert offered["args"]["bond"] == p.bond_for(AMOUNT)
    assert offered["args"]["offerDeadlineBlock"] == flow.block_of("offer") + p.offer_window_blocks
    chain.mine(harsher.offer_window_blocks + 1)  # past the new window, inside the loan's own
    flow.accept()
    due = flow.block_of("accept") + p.loan_duration_blocks
    chain.mine(harsher.loan_duration_blocks + 1)
    chain.expect_revert(f.markAsDefaulted(flow.loan_id), people.lender, fast.err("TooEarly", flow.loan_id, due))
    flow.repay()
    assert flow.receipts["repay"]["logs"]  # locked
    assert fast.loan_struct(flow.loan_id)["repaymentAmount"] == p.repayment_for(AMOUNT)
    chain.mine(harsher.repayment_window_blocks + 1)
    flow.accept_repayment()  # still inside the loan's own t_L
    assert fast.status(flow.loan_id) == Status.REPAID
    assert fast.loan_struct(flow.loan_id)["params"] == snapshot_before["params"]


def test_flaw_07_non_utf8_preimages_work_on_both_sides(fast, people):
    p_b = bytes(
        [0xFF] * 16 + [0x00, 0xC3, 0x28, 0xA0, 0xA1, 0xE2, 0x28, 0xA1, 0xF0, 0x28, 0x8C, 0xBC, 0x80, 0, 0, 0xFE]
    )
    p_l = bytes([0x80, 0x81, 0xFE, 0xFF] * 8)
    for raw in (p_b, p_l):
        assert len(raw) == 32
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
    flow = LoanFlow(fast, people.borrower, AMOUNT, p_b=p_b, h_b=sha256(p_b), p_l=p_l, h_l=sha256(p_l))
    flow.to_repayment().accept_repayment()
    (activated,) = fast.loan.events.LoanActivated().process_receipt(flow.receipts["accept"], errors=DISCARD)
    assert activated["args"]["borrowerPreimage"] == p_b
    (accepted,) = fast.loan.events.RepaymentAccepted().process_receipt(
        flow.receipts["accept_repayment"], errors=DISCARD
    )
    assert accepted["args"]["lenderPreimage"] == p_l
    assert fast.status(flow.loan_id) == Status.REPAID


def test_flaw_08_offer_and_repayment_use_the_stored_hashes(fast, people):
    """extendLoanOffer and attemptRepayment take no hash argument: the locks use the request's hB and the
    committed hL, whoever pays."""
    abi = {i["name"]: i for i in fast.loan.abi if i["type"] == "function"}
    assert [i["type"] for i in abi["extendLoanOffer"]["inputs"]] == ["uint256"]
    assert [i["type"] for i in abi["attemptRepayment"]["inputs"]] == ["uint256"]
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    assert lockup_of(fast, flow.receipts["offer"])["preimageHash"] == flow.h_b
    assert lockup_of(fast, flow.receipts["offer"])["claimAddress"] == people.borrower
    flow.accept().repay(payer=people.payer)
    assert lockup_of(fast, flow.receipts["repay"])["preimageHash"] == flow.h_l
    assert lockup_of(fast, flow.receipts["repay"])["refundAddress"] == people.borrower


def test_flaw_09_an_unanswered_request_can_always_be_cancelled_with_the_fee_back(fast, people):
    chain = fast.chain
    before, spent = chain.balances(people.borrower), dict(chain.gas_spent)
    flow = LoanFlow(fast, people.borrower, AMOUNT).request()
    chain.mine(300)  # far beyond every window of this deployment (t_B=10, t_D=40, t_L=12): nobody answered
    chain.transact(fast.loan.functions.cancelRequest(flow.loan_id), people.borrower)
    assert fast.status(flow.loan_id) == Status.CANCELLED
    assert chain.net_changes(before, spent) == {people.borrower: 0}
    assert fast.held() == (0, 0)


def test_flaw_11_a_late_accept_is_refused_but_still_reveals_the_preimage(fast, people):
    """The offer closes at offer + t_B exactly (the lender's withdrawal opens in the same block). A refused accept
    still publishes pB in its transaction input, which is why clients keep a safety margin before the deadline."""
    chain, f = fast.chain, fast.loan.functions
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    deadline = flow.block_of("offer") + fast.params.offer_window_blocks
    chain.mine_until_next_is(deadline)
    receipt = chain.expect_revert(
        f.acceptLoanOffer(flow.loan_id, flow.p_b), people.borrower, fast.err("TooLate", flow.loan_id, deadline)
    )
    tx = fast.w3.eth.get_transaction(receipt["transactionHash"])
    assert flow.p_b in bytes(tx["input"])
    chain.transact(f.withdrawLoanOffer(flow.loan_id), people.lender)
    assert fast.status(flow.loan_id) == Status.OFFER_EXPIRED
