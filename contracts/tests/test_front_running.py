"""Front-running a request: hB is reserved when an offer commits money to it, not when it is requested.

A copy of a borrower's `requestLoan` taken from the mempool (same amount, xB, hB, escrow) may be mined first; it
must not block the real request, and it must never be offered. Several requests may share an hB, but at most one
loan is ever offered (hence activated) under it, so a preimage still never serves two loans."""

from __future__ import annotations

import pytest

from contracts.tests.helpers import BORROWER_XONLY, ESCROW_TXID, LoanFlow, Status, new_preimage
from contracts.tests.test_reverts import refused

pytestmark = pytest.mark.integration

AMOUNT = 10**17


def copy_request(dep, sender: str, flow: LoanFlow) -> int:
    """`sender` sends exactly the arguments of `flow.request()` (as seen in the mempool); returns the new id."""
    version = dep.version()
    call = dep.loan.functions.requestLoan(flow.amount, BORROWER_XONLY, flow.h_b, ESCROW_TXID, 1, 2_000_000, version)
    dep.chain.transact(call, sender, dep.params.processing_fee_wei)
    return dep.loan.functions.loanCount().call()


def test_front_run_copy_of_a_request_does_not_block_the_real_borrower(fast, people):
    chain, f, p = fast.chain, fast.loan.functions, fast.params
    watched = (people.borrower, people.lender, people.stranger)
    before, spent = chain.balances(*watched), dict(chain.gas_spent)
    bond = p.bond_for(AMOUNT)
    flow = LoanFlow(fast, people.borrower, AMOUNT)

    # The stranger's copy is mined first; B's own request (same arguments) still succeeds.
    copy_id = copy_request(fast, people.stranger, flow)
    flow.request()
    assert (copy_id, flow.loan_id) == (1, 2)
    copy, real = fast.loan_struct(copy_id), fast.loan_struct(flow.loan_id)
    assert (copy["borrower"], real["borrower"]) == (people.stranger, people.borrower)
    assert copy["borrowerHash"] == real["borrowerHash"] == flow.h_b
    assert copy["escrowTxid"] == real["escrowTxid"] and copy["borrowerBtcPubkey"] == real["borrowerBtcPubkey"]
    assert not f.hashUsed(flow.h_b).call()

    # The lender offers the request whose sender is the borrower it knows; B accepts with pB.
    flow.commit().offer()
    assert f.hashUsed(flow.h_b).call()
    flow.accept()
    assert fast.status(flow.loan_id) == Status.ACTIVE

    # The copy can never be offered (even with its own hL committed) nor accepted; the stranger can only cancel.
    chain.transact(f.commitLenderHash(copy_id, new_preimage()[1]), people.lender)
    refused(fast, f.extendLoanOffer(copy_id), people.lender, fast.err("HashAlreadyUsed", flow.h_b), AMOUNT + bond)
    refused(fast, f.acceptLoanOffer(copy_id, flow.p_b), people.stranger,
            fast.err("WrongStatus", copy_id, int(Status.REQUESTED)))  # fmt: skip
    refused(fast, f.acceptLoanOffer(flow.loan_id, flow.p_b), people.stranger,
            fast.err("NotBorrower", flow.loan_id, people.stranger))  # fmt: skip
    chain.transact(f.cancelRequest(copy_id), people.stranger)
    assert fast.status(copy_id) == Status.CANCELLED
    refused(fast, f.extendLoanOffer(copy_id), people.lender, fast.err("WrongStatus", copy_id, int(Status.CANCELLED)),
            AMOUNT + bond)  # fmt: skip

    # B got the amount (fee back), the lender paid amount + bond, the stranger got its fee back and nothing else.
    assert chain.net_changes(before, spent) == {
        people.borrower: AMOUNT,
        people.lender: -AMOUNT - bond,
        people.stranger: 0,
    }
    assert fast.held() == (bond, 0)
    assert f.lockedBalance().call() == bond


def test_borrower_can_request_again_with_the_same_hash_and_escrow_after_cancelling(fast, people):
    chain, f = fast.chain, fast.loan.functions
    before, spent = chain.balances(people.borrower), dict(chain.gas_spent)
    first = LoanFlow(fast, people.borrower, AMOUNT).request().commit()  # unanswered (hL committed, never offered)
    chain.transact(f.cancelRequest(first.loan_id), people.borrower)
    assert not f.hashUsed(first.h_b).call() and f.hashUsed(first.h_l).call()

    again = LoanFlow(fast, people.borrower, AMOUNT, p_b=first.p_b, h_b=first.h_b).request()
    assert again.loan_id == first.loan_id + 1
    stored = fast.loan_struct(again.loan_id)
    assert (stored["borrowerHash"], stored["escrowTxid"], stored["escrowVout"], stored["escrowSats"]) == (
        first.h_b, ESCROW_TXID, 1, 2_000_000,
    )  # fmt: skip
    again.commit().offer().accept()
    assert fast.status(again.loan_id) == Status.ACTIVE
    assert chain.net_changes(before, spent) == {people.borrower: AMOUNT}
    assert fast.held() == (fast.params.bond_for(AMOUNT), 0)


@pytest.mark.parametrize("stage", ["offered", "offer_expired", "active", "repayment", "repaid", "defaulted"])
def test_a_hash_that_backed_an_offer_can_never_be_requested_again(fast, people, stage):
    chain, f, p = fast.chain, fast.loan.functions, fast.params
    flow = LoanFlow(fast, people.borrower, AMOUNT).request().commit().offer()
    if stage == "offer_expired":
        chain.mine_until_next_is(flow.block_of("offer") + p.offer_window_blocks)
        chain.transact(f.withdrawLoanOffer(flow.loan_id), people.lender)
    elif stage != "offered":
        flow.accept()
        if stage in ("repayment", "repaid"):
            flow.repay()
        if stage == "repaid":
            flow.accept_repayment()
        if stage == "defaulted":
            chain.mine_until_next_is(flow.block_of("accept") + p.loan_duration_blocks)
            chain.transact(f.markAsDefaulted(flow.loan_id), people.lender)
    assert f.hashUsed(flow.h_b).call() and f.hashUsed(flow.h_l).call()
    for h in (flow.h_b, flow.h_l):  # neither the loan's hB nor its hL
        call = f.requestLoan(AMOUNT, BORROWER_XONLY, h, ESCROW_TXID, 1, 2_000_000, 1)
        for who in (people.borrower, people.borrower2, people.stranger):
            refused(fast, call, who, fast.err("HashAlreadyUsed", h), p.processing_fee_wei)


@pytest.mark.parametrize("first_ends", ["offered", "offer_expired", "active"])
def test_second_request_sharing_a_hash_cannot_be_offered_after_the_first(fast, people, first_ends):
    chain, f, p = fast.chain, fast.loan.functions, fast.params
    first = LoanFlow(fast, people.borrower, AMOUNT).request().commit()
    second = LoanFlow(fast, people.borrower2, AMOUNT, p_b=first.p_b, h_b=first.h_b).request().commit()
    first.offer()
    if first_ends == "offer_expired":  # the offer ended unaccepted: hB stays reserved all the same
        chain.mine_until_next_is(first.block_of("offer") + p.offer_window_blocks)
        chain.transact(f.withdrawLoanOffer(first.loan_id), people.lender)
    elif first_ends == "active":
        first.accept()
    refused(fast, f.extendLoanOffer(second.loan_id), people.lender, fast.err("HashAlreadyUsed", first.h_b),
            AMOUNT + p.bond_for(AMOUNT))  # fmt: skip
    assert fast.status(second.loan_id) == Status.REQUESTED
    assert f.hashUsed(first.h_b).call() and f.hashUsed(second.h_l).call()
    # The second borrower's only way out: cancel, fee back.
    before, spent = chain.balances(people.borrower2), dict(chain.gas_spent)
    chain.transact(f.cancelRequest(second.loan_id), people.borrower2)
    assert chain.net_changes(before, spent) == {people.borrower2: p.processing_fee_wei}


def test_two_requests_sharing_a_hash_either_may_be_offered_first(fast, people):
    """The contract does not pick which request gets hB: the lender does (the one whose sender it knows)."""
    f = fast.loan.functions
    first = LoanFlow(fast, people.stranger, AMOUNT).request().commit()
    second = LoanFlow(fast, people.borrower, AMOUNT, p_b=first.p_b, h_b=first.h_b).request().commit().offer()
    second.accept()
    refused(fast, f.extendLoanOffer(first.loan_id), people.lender, fast.err("HashAlreadyUsed", first.h_b),
            AMOUNT + fast.params.bond_for(AMOUNT))  # fmt: skip
    assert (fast.status(first.loan_id), fast.status(second.loan_id)) == (Status.REQUESTED, Status.ACTIVE)


def test_lender_hash_equal_to_a_requested_borrower_hash_only_blocks_that_request(fast, people):
    """Not guarded by design (README, "Front-running"): the lender picks hL, and using a requested hB as hL only
    stops the lender itself from offering that request, which it could simply decline to do. Guarding it would let
    anyone block a pending commitLenderHash by requesting with hB = the hL seen in the mempool."""
    chain, f = fast.chain, fast.loan.functions
    victim = LoanFlow(fast, people.borrower, AMOUNT).request().commit()
    other = LoanFlow(fast, people.borrower2, AMOUNT).request()
    chain.transact(f.commitLenderHash(other.loan_id, victim.h_b), people.lender)
    assert f.hashUsed(victim.h_b).call()
    refused(fast, f.extendLoanOffer(victim.loan_id), people.lender, fast.err("HashAlreadyUsed", victim.h_b),
            AMOUNT + fast.params.bond_for(AMOUNT))  # fmt: skip
    before, spent = chain.balances(people.borrower), dict(chain.gas_spent)
    chain.transact(f.cancelRequest(victim.loan_id), people.borrower)
    assert chain.net_changes(before, spent) == {people.borrower: fast.params.processing_fee_wei}


def test_request_with_a_pending_lender_hash_does_not_block_the_commit(fast, people):
    """The converse race: a request naming the hL of a commit still in the mempool reserves nothing, so the commit
    goes through; that request can then never be offered."""
    chain, f = fast.chain, fast.loan.functions
    flow = LoanFlow(fast, people.borrower, AMOUNT).request()
    squat = LoanFlow(fast, people.stranger, AMOUNT, p_b=b"\x01" * 32, h_b=flow.h_l).request().commit()
    flow.commit().offer().accept()
    assert fast.status(flow.loan_id) == Status.ACTIVE
    refused(fast, f.extendLoanOffer(squat.loan_id), people.lender, fast.err("HashAlreadyUsed", flow.h_l),
            AMOUNT + fast.params.bond_for(AMOUNT))  # fmt: skip
    chain.transact(f.cancelRequest(squat.loan_id), people.stranger)
