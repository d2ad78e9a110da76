"""Regression tests for the attacks found in review of the protocol (PROTOCOL.md, "Attacks found in review" 13, 14
and 17; 15 and 16 are Bitcoin-side and live in bitcoin/tests).

13: the lender front-runs a pending requestLoan with updateParameters (t_B = 1, t_D = 1, bond 0 %);
14: a flat safety margin lets t_1 mature before the repayment deadline when Bitcoin blocks come faster;
17: an accept sent late in the offer window reveals pB and may miss the deadline.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from contracts.tests.helpers import BORROWER_XONLY, DEFAULT_PARAMS, ESCROW_TXID, LoanFlow, new_preimage
from contracts.tests.test_parameters import T1_RULE, constructor_revert_data, deploys, python_mirror
from evm.client import LoanContractClient, LoanStatus
from evm.deploy import dev_accounts
from evm.errors import BorrowerStepRefused
from evm.testing import LoanFlow as ClientLoanFlow

pytestmark = pytest.mark.integration

AMOUNT = 10**17
CUTOFF_RULE = "acceptCutoffBlocks must be in [1, offerWindowBlocks - 1]"


def rpc(chain, method, params=None):
    response = chain.w3.provider.make_request(method, params or [])
    assert "error" not in response, response
    return response.get("result")


def front_run(dep, people, update_params) -> tuple[dict, dict]:
    """B's request for version 1 waits in the mempool; L sees it and sends updateParameters with a higher tip. Both
    are mined in one block, the update first. Returns (request receipt, update receipt)."""
    chain, w3, f = dep.chain, dep.w3, dep.loan.functions
    fee = dep.params.processing_fee_wei
    _, h_b = new_preimage()
    request = f.requestLoan(AMOUNT, BORROWER_XONLY, h_b, ESCROW_TXID, 1, 2_000_000, dep.version())
    base = w3.eth.get_block("latest")["baseFeePerGas"]
    rpc(chain, "evm_setAutomine", [False])
    try:
        request_hash = request.transact(
            {"from": people.borrower, "value": fee, "gas": 400_000, "maxPriorityFeePerGas": 1,
             "maxFeePerGas": 2 * base + 1}
        )  # fmt: skip
        update_hash = f.updateParameters(update_params.as_tuple()).transact(
            {"from": people.lender, "gas": 400_000, "maxPriorityFeePerGas": 10**9, "maxFeePerGas": 2 * base + 10**9}
        )
        rpc(chain, "evm_mine")
    finally:
        rpc(chain, "evm_setAutomine", [True])
    request_receipt, update_receipt = chain.wait(request_hash), chain.wait(update_hash)
    chain._charge(people.borrower, request_receipt)
    chain._charge(people.lender, update_receipt)
    assert request_receipt["blockNumber"] == update_receipt["blockNumber"]
    assert update_receipt["transactionIndex"] < request_receipt["transactionIndex"]  # front-run
    return request_receipt, update_receipt


@pytest.mark.parametrize(
    ("harsher", "refused"),
    [
        # t_B = 1: B could never accept in time and would lose the fee. Now no valid set has t_B = 1 (the accept
        # cutoff needs 1 <= cutoff < t_B); the harshest window left is t_B = 2 with cutoff 1.
        ({"offer_window_blocks": 1, "accept_cutoff_blocks": 1}, CUTOFF_RULE),
        ({"offer_window_blocks": 2, "accept_cutoff_blocks": 1}, None),
        # t_D = 1: B would default a block after accepting.
        ({"loan_duration_blocks": 1}, None),
        # bond 0 %: refusing a repayment would cost L nothing. Now the bond is at least 1 %; a cut to 1 % is valid.
        ({"bond_percent": 0}, "bondPercent must be in [1, 100]"),
        ({"bond_percent": 1}, None),
    ],
    ids=["t_B=1", "t_B=2", "t_D=1", "bond=0", "bond=1"],
)  # fmt: skip
def test_attack_13_a_front_run_parameter_update_makes_the_pending_request_revert(fast, people, harsher, refused):
    chain, f = fast.chain, fast.loan.functions
    new = fast.params.with_(**harsher)
    if refused:
        # The update itself is refused; the request goes through on the terms B saw.
        reason = fast.err("InvalidParameters", refused)
        assert python_mirror(new).problems()
        chain.expect_revert(f.updateParameters(new.as_tuple()), people.lender, reason)
        flow = LoanFlow(fast, people.borrower, AMOUNT).request()
        assert fast.loan_struct(flow.loan_id)["parametersVersion"] == 1
        return
    before, spent = chain.balances(people.borrower, fast.loan.address), dict(chain.gas_spent)
    request_receipt, _ = front_run(fast, people, new)
    assert request_receipt["status"] == 0
    assert chain.revert_data(  # replayed now: the same error
        f.requestLoan(AMOUNT, BORROWER_XONLY, new_preimage()[1], ESCROW_TXID, 1, 2_000_000, 1),
        people.borrower,
        fast.params.processing_fee_wei,
    ) == fast.err("ParametersVersionMismatch", 1, 2)
    # Nothing happened to B but the gas: no loan, no fee taken; the new terms are in force for whoever opts in.
    assert f.loanCount().call() == 0 and f.lockedBalance().call() == 0
    assert chain.net_changes(before, spent) == {people.borrower: 0, fast.loan.address: 0}
    assert f.parametersVersion().call() == 2
    # B, shown version 2, may still request on the new terms knowingly.
    flow = LoanFlow(fast, people.borrower, AMOUNT).request(fee=new.processing_fee_wei)
    loan = fast.loan_struct(flow.loan_id)
    assert loan["parametersVersion"] == 2 and tuple(loan["params"].values()) == new.as_tuple()


def test_attack_13_without_a_front_run_the_request_keeps_the_terms_shown(fast, people):
    """The update mined after the request does not touch the loan (flaw 6), and the request named its version."""
    chain, f = fast.chain, fast.loan.functions
    flow = LoanFlow(fast, people.borrower, AMOUNT).request()
    chain.transact(f.updateParameters(fast.params.with_(loan_duration_blocks=1).as_tuple()), people.lender)
    loan = fast.loan_struct(flow.loan_id)
    assert loan["parametersVersion"] == 1 and loan["params"]["loanDurationBlocks"] == fast.params.loan_duration_blocks


def test_attack_14_the_drift_margin_keeps_t1_beyond_the_repayment_deadline(fast, people):
    """With the reference's flat rule, t_1 = 27150 passed (27150 · 20 = 543000 > 540000 + 1500 + 120); but if Bitcoin
    blocks come 4 % faster than one per 20 EVM blocks, 27150 BTC blocks last only ~522115 EVM blocks, and L could
    take the collateral about 19000 EVM blocks (~6.6 days at 30 s) before B's repayment window closes. With a 10 %
    drift margin the contract refuses it, and accepts t_1 from 29789 on (the default is 30000)."""
    D = DEFAULT_PARAMS
    reference = D.with_(collateral_timelock_btc_blocks=27_150)
    evm_blocks_at_4_percent_faster = Fraction(27_150 * 20, 1) / Fraction(104, 100)
    assert evm_blocks_at_4_percent_faster < D.loan_duration_blocks + D.repayment_window_blocks
    expected = fast.err("InvalidParameters", T1_RULE)
    assert constructor_revert_data(fast.chain, people.lender, fast.swap.address, reference) == expected
    assert python_mirror(reference).problems()[0].startswith("t_1")
    # The exact edge, both sides, on chain and in the Python mirror.
    for t_1, drift, valid in ((29_788, 1000, False), (29_789, 1000, True), (30_000, 1078, True), (30_000, 1079, False)):
        params = D.with_(collateral_timelock_btc_blocks=t_1, drift_margin_bps=drift)
        assert (python_mirror(params).problems() == []) is valid
        if valid:
            assert deploys(fast.chain, people.lender, fast.swap.address, params)
        else:
            assert constructor_revert_data(fast.chain, people.lender, fast.swap.address, params) == expected
    # The default t_1 covers t_D + t_L even when Bitcoin is 10 % faster, with the safety margin on top.
    assert Fraction(30_000 * 20) / Fraction(110, 100) > D.loan_duration_blocks + D.repayment_window_blocks + 6 * 20


@pytest.fixture
def client_flow(fast, people):
    """The borrower's and the lender's app (evm.client) on the short-window deployment (t_B = 10, cutoff 2)."""
    client = LoanContractClient(fast.w3, fast.loan.address, fast.swap.address)
    accounts = {account.address: account for account in dev_accounts(10)}
    return ClientLoanFlow(client, accounts[people.lender], accounts[people.borrower])


def test_attack_17_the_client_starts_no_accept_inside_the_cutoff(fast, people, client_flow):
    """Offer in block o: B may accept in blocks o+1 .. o+9 (deadline o+10); with cutoff 2 the client starts an accept
    only if it can be mined in a block that leaves 2 blocks, i.e. in block o+8 at the latest (head o+7)."""
    chain, client = fast.chain, client_flow.client
    loan_id, p_b, _ = client_flow.offered(AMOUNT)
    terms = client_flow.terms[loan_id]
    loan = client.get_loan(loan_id)
    o = loan.offer_block
    assert (loan.offer_deadline_block, loan.params.accept_cutoff_blocks, loan.last_accept_start_block) == (
        o + 10, 2, o + 8
    )  # fmt: skip
    chain.mine_until_next_is(o + 8)  # head o+7: the accept would be mined in o+8, leaving o+8 and o+9
    at_the_edge = chain.snapshot()
    chain.mine(1)  # head o+8: it would be mined in o+9, one block left
    nonce = fast.w3.eth.get_transaction_count(people.borrower)
    with pytest.raises(BorrowerStepRefused) as refused:
        client.accept_loan_offer(loan_id, p_b, terms=terms, sender=people.borrower)
    assert refused.value.reason == "accept_cutoff"
    assert fast.w3.eth.get_transaction_count(people.borrower) == nonce  # nothing sent: pB still secret
    assert client.get_loan(loan_id).status is LoanStatus.OFFERED
    # The contract itself would still take it in o+9: the cutoff is the client's margin, not a contract rule.
    fast.loan.functions.acceptLoanOffer(loan_id, p_b).call({"from": people.borrower}, block_identifier="pending")
    chain.revert_to(at_the_edge)
    receipt = client_flow.accept(loan_id, p_b)
    assert receipt["blockNumber"] == o + 8
    assert client.get_loan(loan_id).status is LoanStatus.ACTIVE
