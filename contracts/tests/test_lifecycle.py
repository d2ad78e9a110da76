"""Every path of the loan state machine, with the exact money each party gains or loses and what the two contracts
hold after every step (PROTOCOL.md, "EVM contracts")."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from contracts.tests.helpers import BORROWER_XONLY, ESCROW_TXID, LoanFlow, Status

pytestmark = pytest.mark.integration

AMOUNT = 10**18  # 1 rBTC


def expected_holdings(dep, flow: LoanFlow, status: Status) -> tuple[int, int]:
    """(loan contract, EtherSwap) for a single open loan, per the balance table."""
    loan = dep.loan_struct(flow.loan_id)
    fee, bond, amount, repayment = loan["processingFee"], loan["bond"], loan["amount"], loan["repaymentAmount"]
    return {
        Status.REQUESTED: (fee, 0),
        Status.OFFERED: (fee + bond, amount),
        Status.ACTIVE: (bond, 0),
        Status.REPAYMENT_IN_PROGRESS: (bond, repayment),
    }.get(status, (0, 0))


def assert_holdings(dep, flow: LoanFlow, status: Status) -> None:
    assert dep.status(flow.loan_id) == status
    expected = expected_holdings(dep, flow, status)
    assert dep.held() == expected
    assert dep.loan.functions.lockedBalance().call() == expected[0]


def test_request_snapshot_and_event(fast, people):
    p = fast.params
    flow = LoanFlow(fast, people.borrower, AMOUNT).request()
    receipt = flow.receipts["request"]
    loan = fast.loan_struct(flow.loan_id)
    assert flow.loan_id == 1
    assert loan["borrower"] == people.borrower
    assert loan["lender"] == "0x" + "00" * 20
    assert loan["amount"] == AMOUNT
    assert loan["processingFee"] == p.processing_fee_wei
    assert loan["repaymentAmount"] == p.repayment_for(AMOUNT)
    assert loan["repaymentAmount"] == AMOUNT + AMOUNT * 500 * 40 // (10000 * 1_051_200)
    assert loan["borrowerBtcPubkey"] == BORROWER_XONLY
    assert loan["lenderBtcPubkey"] == p.lender_btc_pubkey
    assert loan["borrowerHash"] == flow.h_b
    assert loan["lenderHash"] == b"\x00" * 32
    assert (loan["escrowTxid"], loan["escrowVout"], loan["escrowSats"]) == (ESCROW_TXID, 1, 2_000_000)
    assert loan["requestBlock"] == receipt["blockNumber"]
    assert loan["parametersVersion"] == 1
    assert tuple(loan["params"].values()) == p.as_tuple()
    (event,) = fast.loan.events.LoanRequested().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {
        "loanId": 1,
        "borrower": people.borrower,
        "amount": AMOUNT,
        "repaymentAmount": p.repayment_for(AMOUNT),
        "borrowerBtcPubkey": BORROWER_XONLY,
        "borrowerHash": flow.h_b,
        "escrowTxid": ESCROW_TXID,
        "escrowVout": 1,
        "escrowSats": 2_000_000,
        "parametersVersion": 1,
    }
    # A request reserves nothing (a copy of it from the mempool must not block the borrower): hB is reserved by
    # the offer, hL by its commit.
    assert not fast.loan.functions.hashUsed(flow.h_b).call()
    assert_holdings(fast, flow, Status.REQUESTED)


def test_repayment_amount_uses_default_duration(dep, people):
    flow = LoanFlow(dep, people.borrower, 3 * 10**18 + 7).request()
    expected = 3 * 10**18 + 7 + (3 * 10**18 + 7) * 500 * 540_000 // (10000 * 1_051_200)
    assert dep.loan_struct(flow.loan_id)["repaymentAmount"] == expected


def test_ids_start_at_one_and_increase(fast, people):
    ids = [LoanFlow(fast, b, 10**16).request().loan_id for b in (people.borrower, people.borrower2, people.borrower)]
    assert ids == [1, 2, 3]
    assert fast.loan.functions.loanCount().call() == 3


def test_happy_path_repaid(fast, people):
    """request -> commit -> offer -> accept -> repay -> accept repayment: B pays R - A net, L gains R - A."""
    chain = fast.chain
    watched = (people.borrower, people.lender)
    before, spent = chain.balances(*watched), dict(chain.gas_spent)
    flow = LoanFlow(fast, people.borrower, AMOUNT)
    p = fast.params
    bond, repayment, fee = p.bond_for(AMOUNT), p.repayment_for(AMOUNT), p.processing_fee_wei

    flow.request()
    assert_holdings(fast, flow, Status.REQUESTED)
    flow.commit()
    assert_holdings(fast, flow, Status.REQUESTED)
    (committed,) = fast.loan.events.LenderHashCommitted().process_receipt(flow.receipts["commit"], errors=DISCARD)
    assert dict(committed["args"]) == {"loanId": flow.loan_id, "lenderHash": flow.h_l}
    assert fast.loan_struct(flow.loan_id)["lenderHash"] == flow.h_l
    assert fast.loan.functions.hashUsed(flow.h_l).call() and not fast.loan.functions.hashUsed(flow.h_b).call()

    flow.offer()
    assert_holdings(fast, flow, Status.OFFERED)
    assert fast.loan.functions.hashUsed(flow.h_b).call()
    offer_block = flow.block_of("offer")
    loan = fast.loan_struct(flow.loan_id)
    assert (loan["lender"], loan["bond"], loan["offerBlock"]) == (people.lender, bond, offer_block)
    (offered,) = fast.loan.events.LoanOffered().process_receipt(flow.receipts["offer"], errors=DISCARD)
    assert dict(offered["args"]) == {
        "loanId": flow.loan_id,
        "amount": AMOUNT,
        "bond": bond,
        "offerDeadlineBlock": offer_block + p.offer_window_blocks,
    }
    (lockup,) = fast.swap.events.Lockup().process_receipt(flow.receipts["offer"], errors=DISCARD)
    assert dict(lockup["args"]) == {
        "preimageHash": flow.h_b,
        "amount": AMOUNT,
        "claimAddress": people.borrower,
        "refundAddress": people.lender,
        "timelock": offer_block + p.offer_window_blocks,
    }
    swap_hash = fast.swap.functions.hashValues(
        flow.h_b, AMOUNT, people.borrower, people.lender, offer_block + p.offer_window_blocks
    ).call()
    assert fast.swap.functions.swaps(swap_hash).call()

    flow.accept()
    assert_holdings(fast, flow, Status.ACTIVE)
    accept_block = flow.block_of("accept")
    assert fast.loan_struct(flow.loan_id)["activationBlock"] == accept_block
    (activated,) = fast.loan.events.LoanActivated().process_receipt(flow.receipts["accept"], errors=DISCARD)
    assert dict(activated["args"]) == {
        "loanId": flow.loan_id,
        "borrowerPreimage": flow.p_b,
        "repaymentDeadlineBlock": accept_block + p.loan_duration_blocks,
    }
    (claim,) = fast.swap.events.Claim().process_receipt(flow.receipts["accept"], errors=DISCARD)
    assert dict(claim["args"]) == {"preimageHash": flow.h_b, "preimage": flow.p_b}
    assert not fast.swap.functions.swaps(swap_hash).call()

    flow.repay()
    assert_holdings(fast, flow, Status.REPAYMENT_IN_PROGRESS)
    repay_block = flow.block_of("repay")
    assert fast.loan_struct(flow.loan_id)["repaymentBlock"] == repay_block
    (attempted,) = fast.loan.events.RepaymentAttempted().process_receipt(flow.receipts["repay"], errors=DISCARD)
    assert dict(attempted["args"]) == {
        "loanId": flow.loan_id,
        "payer": people.borrower,
        "amount": repayment,
        "acceptanceDeadlineBlock": repay_block + p.repayment_window_blocks,
    }

    flow.accept_repayment()
    assert_holdings(fast, flow, Status.REPAID)
    (accepted,) = fast.loan.events.RepaymentAccepted().process_receipt(
        flow.receipts["accept_repayment"], errors=DISCARD
    )
    assert dict(accepted["args"]) == {"loanId": flow.loan_id, "lenderPreimage": flow.p_l}
    (claim,) = fast.swap.events.Claim().process_receipt(flow.receipts["accept_repayment"], errors=DISCARD)
    assert dict(claim["args"]) == {"preimageHash": flow.h_l, "preimage": flow.p_l}

    assert chain.net_changes(before, spent) == {
        people.borrower: AMOUNT - repayment + fee - fee,
        people.lender: repayment - AMOUNT,
    }
    assert repayment > AMOUNT


def test_cancel_path(fast, people):
    chain = fast.chain
    before, spent = chain.balances(people.borrower, people.lender), dict(chain.gas_spent)
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit()
    receipt = chain.transact(fast.loan.functions.cancelRequest(flow.loan_id), people.borrower)
    (event,) = fast.loan.events.LoanRequestCancelled().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["loanId"] == flow.loan_id
    assert_holdings(fast, flow, Status.CANCELLED)
    assert chain.net_changes(before, spent) == {people.borrower: 0, people.lender: 0}


def test_cancel_before_lender_hash(fast, people):
    chain = fast.chain
    before, spent = chain.balances(people.borrower), dict(chain.gas_spent)
    flow = LoanFlow(fast, people.borrower, AMOUNT).request()
    chain.transact(fast.loan.functions.cancelRequest(flow.loan_id), people.borrower)
    assert_holdings(fast, flow, Status.CANCELLED)
    assert chain.net_changes(before, spent) == {people.borrower: 0}


def test_offer_expired_path(fast, people):
    """The lender takes back amount + bond and keeps the processing fee."""
    chain = fast.chain
    before, spent = chain.balances(people.borrower, people.lender), dict(chain.gas_spent)
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    deadline = flow.block_of("offer") + fast.params.offer_window_blocks
    chain.mine_until_next_is(deadline)
    receipt = chain.transact(fast.loan.functions.withdrawLoanOffer(flow.loan_id), people.lender)
    assert receipt["blockNumber"] == deadline
    (event,) = fast.loan.events.LoanOfferWithdrawn().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["loanId"] == flow.loan_id
    (refund,) = fast.swap.events.Refund().process_receipt(receipt, errors=DISCARD)
    assert refund["args"]["preimageHash"] == flow.h_b
    assert_holdings(fast, flow, Status.OFFER_EXPIRED)
    fee = fast.params.processing_fee_wei
    assert chain.net_changes(before, spent) == {people.borrower: -fee, people.lender: fee}


def test_default_path(fast, people):
    """No repayment by activation + t_D: B keeps the amount, L gets the bond back (and the collateral on Bitcoin)."""
    chain = fast.chain
    before, spent = chain.balances(people.borrower, people.lender), dict(chain.gas_spent)
    flow = LoanFlow(fast, people.borrower, AMOUNT).to_active()
    due = flow.block_of("accept") + fast.params.loan_duration_blocks
    chain.mine_until_next_is(due)
    receipt = chain.transact(fast.loan.functions.markAsDefaulted(flow.loan_id), people.lender)
    assert receipt["blockNumber"] == due
    (event,) = fast.loan.events.LoanDefaulted().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["loanId"] == flow.loan_id
    assert_holdings(fast, flow, Status.DEFAULTED)
    assert chain.net_changes(before, spent) == {people.borrower: AMOUNT, people.lender: -AMOUNT}


def test_repayment_refunded_path(fast, people):
    """L does not accept in time: B gets the repayment back and L's bond."""
    chain = fast.chain
    before, spent = chain.balances(people.borrower, people.lender), dict(chain.gas_spent)
    flow = LoanFlow(fast, people.borrower, AMOUNT).to_repayment()
    deadline = flow.block_of("repay") + fast.params.repayment_window_blocks
    chain.mine_until_next_is(deadline)
    receipt = chain.transact(fast.loan.functions.withdrawRepaymentAttempt(flow.loan_id), people.borrower)
    assert receipt["blockNumber"] == deadline
    (event,) = fast.loan.events.RepaymentWithdrawn().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["loanId"] == flow.loan_id
    (refund,) = fast.swap.events.Refund().process_receipt(receipt, errors=DISCARD)
    assert refund["args"]["preimageHash"] == flow.h_l
    assert_holdings(fast, flow, Status.REPAYMENT_REFUNDED)
    bond = fast.params.bond_for(AMOUNT)
    assert chain.net_changes(before, spent) == {people.borrower: AMOUNT + bond, people.lender: -AMOUNT - bond}


def test_third_party_repayment_refund_goes_to_borrower(fast, people):
    """Anyone may repay; an unaccepted repayment and the bond go to the borrower, not to the payer."""
    chain = fast.chain
    watched = (people.borrower, people.lender, people.payer)
    before, spent = chain.balances(*watched), dict(chain.gas_spent)
    flow = LoanFlow(fast, people.borrower, AMOUNT).to_repayment(payer=people.payer)
    (attempted,) = fast.loan.events.RepaymentAttempted().process_receipt(flow.receipts["repay"], errors=DISCARD)
    assert attempted["args"]["payer"] == people.payer
    chain.mine_until_next_is(flow.block_of("repay") + fast.params.repayment_window_blocks)
    chain.transact(fast.loan.functions.withdrawRepaymentAttempt(flow.loan_id), people.borrower)
    repayment, bond = fast.params.repayment_for(AMOUNT), fast.params.bond_for(AMOUNT)
    assert chain.net_changes(before, spent) == {
        people.borrower: AMOUNT + repayment + bond,
        people.lender: -AMOUNT - bond,
        people.payer: -repayment,
    }


def test_third_party_repayment_accepted(fast, people):
    chain = fast.chain
    watched = (people.borrower, people.lender, people.payer)
    before, spent = chain.balances(*watched), dict(chain.gas_spent)
    LoanFlow(fast, people.borrower, AMOUNT).to_repayment(payer=people.payer).accept_repayment()
    repayment = fast.params.repayment_for(AMOUNT)
    assert chain.net_changes(before, spent) == {
        people.borrower: AMOUNT,
        people.lender: repayment - AMOUNT,
        people.payer: -repayment,
    }


def test_happy_path_with_default_parameters(dep, people):
    """The production defaults: same money as the fast deployment, the 540000-block duration is only stored."""
    chain = dep.chain
    before, spent = chain.balances(people.borrower, people.lender), dict(chain.gas_spent)
    flow = LoanFlow(dep, people.borrower, 5 * 10**15).to_repayment().accept_repayment()
    assert dep.status(flow.loan_id) == Status.REPAID
    repayment = DEFAULT_REPAYMENT = 5 * 10**15 + 5 * 10**15 * 500 * 540_000 // (10000 * 1_051_200)
    assert dep.loan_struct(flow.loan_id)["repaymentAmount"] == DEFAULT_REPAYMENT
    assert chain.net_changes(before, spent) == {
        people.borrower: 5 * 10**15 - repayment,
        people.lender: repayment - 5 * 10**15,
    }
    assert dep.held() == (0, 0)


def test_several_open_loans_are_held_separately(fast, people):
    """The contracts hold exactly the sum of what each open loan locks."""
    p = fast.params
    a = LoanFlow(fast, people.borrower, 10**16).request()
    b = LoanFlow(fast, people.borrower2, 2 * 10**16).request().commit().offer()
    c = LoanFlow(fast, people.borrower, 3 * 10**16).to_active()
    d = LoanFlow(fast, people.borrower2, 4 * 10**16).to_repayment()
    e = LoanFlow(fast, people.borrower, 5 * 10**16).to_repayment().accept_repayment()
    fee = p.processing_fee_wei
    expected_loan = fee + (fee + p.bond_for(2 * 10**16)) + p.bond_for(3 * 10**16) + p.bond_for(4 * 10**16)
    expected_swap = 2 * 10**16 + p.repayment_for(4 * 10**16)
    assert fast.held() == (expected_loan, expected_swap)
    assert fast.loan.functions.lockedBalance().call() == expected_loan
    assert [fast.status(f.loan_id) for f in (a, b, c, d, e)] == [
        Status.REQUESTED,
        Status.OFFERED,
        Status.ACTIVE,
        Status.REPAYMENT_IN_PROGRESS,
        Status.REPAID,
    ]


# Gas budgets (anvil, istanbul bytecode; first loan of a fresh deployment, so cold storage everywhere). Measured
# values are in contracts/README.md; the budgets leave ~10 % headroom so a regression is noticed.
GAS_BUDGET = {
    "requestLoan": 370_000,
    "cancelRequest": 50_000,
    "commitLenderHash": 85_000,
    "extendLoanOffer": 150_000,  # reserves hB (a fresh storage slot, ~22k)
    "acceptLoanOffer": 110_000,
    "withdrawLoanOffer": 87_000,
    "attemptRepayment": 100_000,
    "acceptLoanRepayment": 85_000,
    "withdrawRepaymentAttempt": 83_000,
    "markAsDefaulted": 57_000,
}


def test_gas_of_each_call_within_budget(fast, people):
    chain, f, p = fast.chain, fast.loan.functions, fast.params
    used: dict[str, int] = {}
    repaid = LoanFlow(fast, people.borrower, AMOUNT).to_repayment().accept_repayment()
    for step, name in [
        ("request", "requestLoan"),
        ("commit", "commitLenderHash"),
        ("offer", "extendLoanOffer"),
        ("accept", "acceptLoanOffer"),
        ("repay", "attemptRepayment"),
        ("accept_repayment", "acceptLoanRepayment"),
    ]:
        used[name] = repaid.receipts[step]["gasUsed"]
    cancelled = LoanFlow(fast, people.borrower, AMOUNT).request()
    used["cancelRequest"] = chain.transact(f.cancelRequest(cancelled.loan_id), people.borrower)["gasUsed"]
    expired = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    refunded = LoanFlow(fast, people.borrower, AMOUNT).to_repayment()
    defaulted = LoanFlow(fast, people.borrower, AMOUNT).to_active()
    chain.mine(p.loan_duration_blocks)
    used["withdrawLoanOffer"] = chain.transact(f.withdrawLoanOffer(expired.loan_id), people.lender)["gasUsed"]
    used["withdrawRepaymentAttempt"] = chain.transact(f.withdrawRepaymentAttempt(refunded.loan_id), people.borrower)[
        "gasUsed"
    ]
    used["markAsDefaulted"] = chain.transact(f.markAsDefaulted(defaulted.loan_id), people.lender)["gasUsed"]
    print("gas used:", used)
    over = {name: (gas, GAS_BUDGET[name]) for name, gas in used.items() if gas > GAS_BUDGET[name]}
    assert not over, over
    assert set(used) == set(GAS_BUDGET)
