"""Every refusal of BtcCollateralLoan: wrong caller, unknown loan, wrong state, wrong value, wrong preimage, and the
exact block at which each deadline closes one side and opens the other. A refused call changes nothing."""

from __future__ import annotations

import pytest

from contracts.tests.helpers import (
    BORROWER_XONLY,
    ESCROW_TXID,
    LoanFlow,
    Status,
    new_preimage,
    sha256,
)

pytestmark = pytest.mark.integration

AMOUNT = 10**17


def state_of(dep, loan_ids=None) -> tuple:
    count = dep.loan.functions.loanCount().call()
    ids = range(1, count + 1) if loan_ids is None else loan_ids
    loans = (count, *(repr(dep.loan_struct(i)) for i in ids))
    return loans, dep.held(), dep.loan.functions.lockedBalance().call(), dep.loan.functions.parametersVersion().call()


def refused(dep, call, sender, data, value=0, loan_ids=None):
    """The call reverts with exactly `data` when mined in the next block, and nothing changes but the sender's gas
    (every loan, or only `loan_ids`, the two contracts' balances, lockedBalance, the parameters version)."""
    before = state_of(dep, loan_ids)
    balance = dep.chain.balance(sender)
    receipt = dep.chain.expect_revert(call, sender, data, value)
    assert state_of(dep, loan_ids) == before
    assert dep.chain.balance(sender) == balance - receipt["gasUsed"] * receipt["effectiveGasPrice"]
    return receipt


# ---------------------------------------------------------------------------------------------- callers


def test_lender_calls_refuse_everyone_but_the_owner(fast, people):
    flow = LoanFlow(fast, people.borrower, AMOUNT).request()
    f = fast.loan.functions
    _, h = new_preimage()
    for caller in (people.borrower, people.stranger):
        err = fast.err("OwnableUnauthorizedAccount", caller)
        refused(fast, f.commitLenderHash(flow.loan_id, h), caller, err)
        refused(fast, f.extendLoanOffer(flow.loan_id), caller, err, AMOUNT + AMOUNT // 10)
        refused(fast, f.withdrawLoanOffer(flow.loan_id), caller, err)
        refused(fast, f.acceptLoanRepayment(flow.loan_id, h), caller, err)
        refused(fast, f.markAsDefaulted(flow.loan_id), caller, err)
        refused(fast, f.updateParameters(fast.params.as_tuple()), caller, err)
        refused(fast, f.transferOwnership(caller), caller, err)


def test_borrower_calls_refuse_everyone_but_the_borrower(fast, people):
    flow = LoanFlow(fast, people.borrower, AMOUNT).request()
    f = fast.loan.functions
    for caller in (people.lender, people.stranger, people.borrower2):
        err = fast.err("NotBorrower", flow.loan_id, caller)
        refused(fast, f.cancelRequest(flow.loan_id), caller, err)
        refused(fast, f.acceptLoanOffer(flow.loan_id, flow.p_b), caller, err)
        refused(fast, f.withdrawRepaymentAttempt(flow.loan_id), caller, err)


def test_accept_offer_by_a_stranger_with_the_right_preimage_is_refused(fast, people):
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    refused(
        fast,
        fast.loan.functions.acceptLoanOffer(flow.loan_id, flow.p_b),
        people.stranger,
        fast.err("NotBorrower", flow.loan_id, people.stranger),
    )


def test_renounce_ownership_is_disabled(fast, people):
    refused(fast, fast.loan.functions.renounceOwnership(), people.lender, fast.err("RenounceOwnershipDisabled"))
    assert fast.loan.functions.owner().call() == people.lender


def test_ownership_transfer_keeps_payouts_with_the_offering_lender(fast, people):
    """Lender-only calls check the current owner; the loan's payouts go to the owner at offer time."""
    chain = fast.chain
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    f = fast.loan.functions
    chain.transact(f.transferOwnership(people.next_owner), people.lender)
    assert f.owner().call() == people.lender  # two-step: nothing changes until accepted
    assert f.pendingOwner().call() == people.next_owner
    chain.transact(f.acceptOwnership(), people.next_owner)
    assert f.owner().call() == people.next_owner

    deadline = flow.block_of("offer") + fast.params.offer_window_blocks
    chain.mine_until_next_is(deadline)
    refused(
        fast, f.withdrawLoanOffer(flow.loan_id), people.lender, fast.err("OwnableUnauthorizedAccount", people.lender)
    )
    before, spent = chain.balances(people.lender, people.next_owner), dict(chain.gas_spent)
    chain.transact(f.withdrawLoanOffer(flow.loan_id), people.next_owner)
    bond, fee = fast.params.bond_for(AMOUNT), fast.params.processing_fee_wei
    assert chain.net_changes(before, spent) == {people.lender: AMOUNT + bond + fee, people.next_owner: 0}

    # A loan offered by the new owner pays the new owner.
    flow2 = LoanFlow(fast, people.borrower, AMOUNT).request()
    chain.transact(f.commitLenderHash(flow2.loan_id, flow2.h_l), people.next_owner)
    flow2.offer(sender=people.next_owner)
    assert fast.loan_struct(flow2.loan_id)["lender"] == people.next_owner


# ---------------------------------------------------------------------------------------------- unknown loans


@pytest.mark.parametrize("loan_id", [0, 2, 2**256 - 1])
def test_unknown_loan(fast, people, loan_id):
    LoanFlow(fast, people.borrower, AMOUNT).request()
    f = fast.loan.functions
    err = fast.err("UnknownLoan", loan_id)
    _, h = new_preimage()
    refused(fast, f.cancelRequest(loan_id), people.borrower, err)
    refused(fast, f.commitLenderHash(loan_id, h), people.lender, err)
    refused(fast, f.extendLoanOffer(loan_id), people.lender, err, AMOUNT)
    refused(fast, f.acceptLoanOffer(loan_id, h), people.borrower, err)
    refused(fast, f.withdrawLoanOffer(loan_id), people.lender, err)
    refused(fast, f.attemptRepayment(loan_id), people.borrower, err, AMOUNT)
    refused(fast, f.acceptLoanRepayment(loan_id, h), people.lender, err)
    refused(fast, f.withdrawRepaymentAttempt(loan_id), people.borrower, err)
    refused(fast, f.markAsDefaulted(loan_id), people.lender, err)
    assert fast.chain.revert_data(f.getLoan(loan_id), people.stranger) == err


# ---------------------------------------------------------------------------------------------- wrong state

ALLOWED = {
    "cancelRequest": {Status.REQUESTED},
    "commitLenderHash": {Status.REQUESTED},
    "extendLoanOffer": {Status.REQUESTED},
    "acceptLoanOffer": {Status.OFFERED},
    "withdrawLoanOffer": {Status.OFFERED},
    "attemptRepayment": {Status.ACTIVE},
    "markAsDefaulted": {Status.ACTIVE},
    "acceptLoanRepayment": {Status.REPAYMENT_IN_PROGRESS},
    "withdrawRepaymentAttempt": {Status.REPAYMENT_IN_PROGRESS},
}


def loans_in_every_status(fast, people) -> dict[Status, LoanFlow]:
    chain, f, p = fast.chain, fast.loan.functions, fast.params
    flows = {
        Status.REQUESTED: LoanFlow(fast, people.borrower, AMOUNT).request(),
        Status.CANCELLED: LoanFlow(fast, people.borrower, AMOUNT).request(),
        Status.OFFER_EXPIRED: LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer(),
        Status.REPAYMENT_REFUNDED: LoanFlow(fast, people.borrower, AMOUNT).to_repayment(),
        Status.DEFAULTED: LoanFlow(fast, people.borrower, AMOUNT).to_active(),
        Status.REPAID: LoanFlow(fast, people.borrower, AMOUNT).to_repayment().accept_repayment(),
    }
    chain.transact(f.cancelRequest(flows[Status.CANCELLED].loan_id), people.borrower)
    chain.mine(max(p.offer_window_blocks, p.loan_duration_blocks, p.repayment_window_blocks))
    chain.transact(f.withdrawLoanOffer(flows[Status.OFFER_EXPIRED].loan_id), people.lender)
    chain.transact(f.withdrawRepaymentAttempt(flows[Status.REPAYMENT_REFUNDED].loan_id), people.borrower)
    chain.transact(f.markAsDefaulted(flows[Status.DEFAULTED].loan_id), people.lender)
    # Fresh loans for the three open states, created after the mining so that their windows are open.
    flows[Status.OFFERED] = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    flows[Status.ACTIVE] = LoanFlow(fast, people.borrower, AMOUNT).to_active()
    flows[Status.REPAYMENT_IN_PROGRESS] = LoanFlow(fast, people.borrower, AMOUNT).to_repayment()
    for status, flow in flows.items():
        assert fast.status(flow.loan_id) == status
    return flows


def test_every_call_refused_in_every_other_status(fast, people):
    flows = loans_in_every_status(fast, people)
    f = fast.loan.functions
    checked = 0
    for status, flow in flows.items():
        i = flow.loan_id
        loan = fast.loan_struct(i)
        _, fresh_hash = new_preimage()
        calls = {
            "cancelRequest": (f.cancelRequest(i), people.borrower, 0),
            "commitLenderHash": (f.commitLenderHash(i, fresh_hash), people.lender, 0),
            "extendLoanOffer": (f.extendLoanOffer(i), people.lender, AMOUNT + AMOUNT // 10),
            "acceptLoanOffer": (f.acceptLoanOffer(i, flow.p_b), people.borrower, 0),
            "withdrawLoanOffer": (f.withdrawLoanOffer(i), people.lender, 0),
            "attemptRepayment": (f.attemptRepayment(i), people.borrower, loan["repaymentAmount"]),
            "markAsDefaulted": (f.markAsDefaulted(i), people.lender, 0),
            "acceptLoanRepayment": (f.acceptLoanRepayment(i, flow.p_l), people.lender, 0),
            "withdrawRepaymentAttempt": (f.withdrawRepaymentAttempt(i), people.borrower, 0),
        }
        for name, (call, sender, value) in calls.items():
            if status in ALLOWED[name]:
                continue
            refused(fast, call, sender, fast.err("WrongStatus", i, int(status)), value, loan_ids=[i])
            checked += 1
    assert checked == 9 * 9 - 9


# ---------------------------------------------------------------------------------------------- request checks


def test_request_fee_must_be_exact(fast, people):
    fee = fast.params.processing_fee_wei
    call = fast.loan.functions.requestLoan(AMOUNT, BORROWER_XONLY, new_preimage()[1], ESCROW_TXID, 0, 1000, 1)
    for sent in (0, fee - 1, fee + 1, 2 * fee):
        refused(fast, call, people.borrower, fast.err("WrongValue", fee, sent), sent)


def test_request_amount_bounds_are_inclusive(fast, people):
    p = fast.params
    f = fast.loan.functions
    for amount in (0, p.min_amount_wei - 1, p.max_amount_wei + 1, 2**256 - 1):
        call = f.requestLoan(amount, BORROWER_XONLY, new_preimage()[1], ESCROW_TXID, 0, 1000, 1)
        refused(
            fast,
            call,
            people.borrower,
            fast.err("AmountOutOfBounds", amount, p.min_amount_wei, p.max_amount_wei),
            p.processing_fee_wei,
        )
    low = LoanFlow(fast, people.borrower, p.min_amount_wei).request()
    high = LoanFlow(fast, people.borrower, p.max_amount_wei).request()
    assert fast.loan_struct(low.loan_id)["amount"] == p.min_amount_wei
    assert fast.loan_struct(high.loan_id)["amount"] == p.max_amount_wei


@pytest.mark.parametrize("field", ["borrowerBtcPubkey", "borrowerHash", "escrowTxid", "escrowSats"])
def test_request_zero_fields(fast, people, field):
    args = {
        "borrowerBtcPubkey": BORROWER_XONLY,
        "borrowerHash": new_preimage()[1],
        "escrowTxid": ESCROW_TXID,
        "escrowSats": 1000,
    }
    args[field] = 0 if field == "escrowSats" else b"\x00" * 32
    call = fast.loan.functions.requestLoan(
        AMOUNT, args["borrowerBtcPubkey"], args["borrowerHash"], args["escrowTxid"], 0, args["escrowSats"], 1
    )
    refused(fast, call, people.borrower, fast.err("ZeroValue", field), fast.params.processing_fee_wei)


def test_borrower_hash_is_reserved_by_the_offer_not_by_the_request(fast, people):
    """A request neither reserves hB nor is refused for an hB only requested (by anyone, even after a cancel); once
    the hB backs an offer it is refused to everyone, for good (front-running cases: test_front_running.py)."""
    f = fast.loan.functions
    flow = LoanFlow(fast, people.borrower, AMOUNT).request()
    fast.chain.transact(f.cancelRequest(flow.loan_id), people.borrower)
    assert not f.hashUsed(flow.h_b).call()
    again = LoanFlow(fast, people.borrower, AMOUNT, p_b=flow.p_b, h_b=flow.h_b).request().commit()
    assert again.loan_id == flow.loan_id + 1 and not f.hashUsed(flow.h_b).call()
    again.offer()
    assert f.hashUsed(flow.h_b).call()
    call = f.requestLoan(AMOUNT, BORROWER_XONLY, flow.h_b, ESCROW_TXID, 0, 1000, 1)
    for who in (people.borrower, people.borrower2):
        refused(fast, call, who, fast.err("HashAlreadyUsed", flow.h_b), fast.params.processing_fee_wei)


# ---------------------------------------------------------------------------------------------- lender hash


def test_commit_lender_hash_checks(fast, people):
    f = fast.loan.functions
    first = LoanFlow(fast, people.borrower, AMOUNT).request()
    second = LoanFlow(fast, people.borrower, AMOUNT).request()
    refused(fast, f.extendLoanOffer(first.loan_id), people.lender, fast.err("LenderHashNotSet", first.loan_id),
            AMOUNT + AMOUNT // 10)  # fmt: skip
    refused(fast, f.commitLenderHash(first.loan_id, b"\x00" * 32), people.lender, fast.err("ZeroValue", "lenderHash"))
    # An offered borrower hash can never become a lender hash (its preimage is the borrower's). A hash only
    # requested is not reserved, so the contract does not refuse it as hL: the lender picks hL itself
    # (test_front_running.py::test_lender_hash_equal_to_a_requested_borrower_hash_only_blocks_that_request).
    offered = LoanFlow(fast, people.borrower2, AMOUNT).request().commit().offer()
    for h in (offered.h_b, offered.h_l):
        refused(fast, f.commitLenderHash(first.loan_id, h), people.lender, fast.err("HashAlreadyUsed", h))
    first.commit()
    refused(fast, f.commitLenderHash(first.loan_id, second.h_l), people.lender,
            fast.err("LenderHashAlreadySet", first.loan_id))  # fmt: skip
    # The same lender hash for a second loan is refused, and so is a borrower reusing a lender hash.
    refused(fast, f.commitLenderHash(second.loan_id, first.h_l), people.lender, fast.err("HashAlreadyUsed", first.h_l))
    call = f.requestLoan(AMOUNT, BORROWER_XONLY, first.h_l, ESCROW_TXID, 0, 1000, 1)
    refused(fast, call, people.borrower, fast.err("HashAlreadyUsed", first.h_l), fast.params.processing_fee_wei)


# ---------------------------------------------------------------------------------------------- values


def test_offer_value_must_be_amount_plus_bond(fast, people):
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit()
    bond = fast.params.bond_for(AMOUNT)
    call = fast.loan.functions.extendLoanOffer(flow.loan_id)
    for sent in (0, AMOUNT, AMOUNT + bond - 1, AMOUNT + bond + 1):
        refused(fast, call, people.lender, fast.err("WrongValue", AMOUNT + bond, sent), sent)
    flow.offer()
    assert fast.status(flow.loan_id) == Status.OFFERED


def test_repayment_value_must_be_exact(fast, people):
    flow = LoanFlow(fast, people.borrower, AMOUNT).to_active()
    repayment = fast.params.repayment_for(AMOUNT)
    call = fast.loan.functions.attemptRepayment(flow.loan_id)
    for sent in (0, AMOUNT, repayment - 1, repayment + 1):
        for who in (people.borrower, people.stranger):
            refused(fast, call, who, fast.err("WrongValue", repayment, sent), sent)


def test_plain_transfers_are_refused(fast, people):
    """Neither contract accepts coin outside a loan call (no receive, no fallback)."""
    for target in (fast.loan.address, fast.swap.address):
        tx_hash = fast.w3.eth.send_transaction({"from": people.stranger, "to": target, "value": 1, "gas": 100_000})
        assert fast.w3.eth.wait_for_transaction_receipt(tx_hash)["status"] == 0
    assert fast.held() == (0, 0)


# ---------------------------------------------------------------------------------------------- preimages


def test_wrong_preimages_are_refused(fast, people):
    f = fast.loan.functions
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    wrong = fast.err("WrongPreimage")
    for preimage in (flow.p_l, flow.h_b, b"\x00" * 32, new_preimage()[0]):
        refused(fast, f.acceptLoanOffer(flow.loan_id, preimage), people.borrower, wrong)
    flow.accept().repay()
    for preimage in (flow.p_b, flow.h_l, b"\x00" * 32, new_preimage()[0]):
        refused(fast, f.acceptLoanRepayment(flow.loan_id, preimage), people.lender, wrong)
    flow.accept_repayment()
    assert fast.status(flow.loan_id) == Status.REPAID
    assert sha256(flow.p_l) == flow.h_l


# ---------------------------------------------------------------------------------------------- deadlines


def boundary(fast, deadline, before_ok, before_refused, at_ok, at_refused):
    """At block deadline-1 only `before_ok` may act; from block `deadline` on only `at_ok` may (checked at the
    deadline and 7 blocks after it). Each claim is proven by a transaction mined in exactly that block
    (evm_snapshot/evm_revert to try both sides)."""
    chain = fast.chain
    chain.mine_until_next_is(deadline - 1)
    snap = chain.snapshot()
    assert chain.transact(*before_ok)["blockNumber"] == deadline - 1
    chain.revert_to(snap)
    snap = chain.snapshot()
    assert refused(fast, *before_refused)["blockNumber"] == deadline - 1
    chain.revert_to(snap)
    chain.mine_until_next_is(deadline)
    snap = chain.snapshot()
    chain.mine(7)
    assert refused(fast, *at_refused)["blockNumber"] == deadline + 7
    assert chain.transact(*at_ok)["blockNumber"] == deadline + 8
    chain.revert_to(snap)
    snap = chain.snapshot()
    assert refused(fast, *at_refused)["blockNumber"] == deadline
    chain.revert_to(snap)
    assert chain.transact(*at_ok)["blockNumber"] == deadline


def test_offer_deadline_boundary(fast, people):
    f = fast.loan.functions
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    i, deadline = flow.loan_id, flow.block_of("offer") + fast.params.offer_window_blocks
    boundary(
        fast,
        deadline,
        before_ok=(f.acceptLoanOffer(i, flow.p_b), people.borrower),
        before_refused=(f.withdrawLoanOffer(i), people.lender, fast.err("TooEarly", i, deadline)),
        at_ok=(f.withdrawLoanOffer(i), people.lender),
        at_refused=(f.acceptLoanOffer(i, flow.p_b), people.borrower, fast.err("TooLate", i, deadline)),
    )
    assert fast.status(i) == Status.OFFER_EXPIRED


def test_repayment_deadline_boundary(fast, people):
    f = fast.loan.functions
    flow = LoanFlow(fast, people.borrower, AMOUNT).to_active()
    i, due = flow.loan_id, flow.block_of("accept") + fast.params.loan_duration_blocks
    repayment = fast.params.repayment_for(AMOUNT)
    boundary(
        fast,
        due,
        before_ok=(f.attemptRepayment(i), people.borrower, repayment),
        before_refused=(f.markAsDefaulted(i), people.lender, fast.err("TooEarly", i, due)),
        at_ok=(f.markAsDefaulted(i), people.lender),
        at_refused=(f.attemptRepayment(i), people.borrower, fast.err("TooLate", i, due), repayment),
    )
    assert fast.status(i) == Status.DEFAULTED


def test_acceptance_deadline_boundary(fast, people):
    f = fast.loan.functions
    flow = LoanFlow(fast, people.borrower, AMOUNT).to_repayment()
    i, deadline = flow.loan_id, flow.block_of("repay") + fast.params.repayment_window_blocks
    boundary(
        fast,
        deadline,
        before_ok=(f.acceptLoanRepayment(i, flow.p_l), people.lender),
        before_refused=(f.withdrawRepaymentAttempt(i), people.borrower, fast.err("TooEarly", i, deadline)),
        at_ok=(f.withdrawRepaymentAttempt(i), people.borrower),
        at_refused=(f.acceptLoanRepayment(i, flow.p_l), people.lender, fast.err("TooLate", i, deadline)),
    )
    assert fast.status(i) == Status.REPAYMENT_REFUNDED


def test_cancel_races_the_offer(fast, people):
    """While Requested the borrower may cancel at any time; once cancelled the offer is refused, and vice versa."""
    f = fast.loan.functions
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit()
    fast.chain.mine(500)
    fast.chain.transact(f.cancelRequest(flow.loan_id), people.borrower)
    refused(fast, f.extendLoanOffer(flow.loan_id), people.lender,
            fast.err("WrongStatus", flow.loan_id, int(Status.CANCELLED)), AMOUNT + AMOUNT // 10)  # fmt: skip
