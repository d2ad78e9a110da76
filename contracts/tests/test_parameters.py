"""Parameter validation in the constructor and updateParameters: every rule, at its exact boundary."""

from __future__ import annotations

import pytest
from web3.exceptions import ContractCustomError, ContractLogicError

from contracts.tests.helpers import DEFAULT_PARAMS, LoanFlow, load_artifact

pytestmark = pytest.mark.integration

D = DEFAULT_PARAMS
# t_0 rule with the defaults: t_0 * 20 > 1000 + 100  <=>  t_0 >= 56.
# t_1 rule with the defaults: t_1 * 20 > 540000 + 1500 + 6 * 20 = 541620  <=>  t_1 >= 27082.
INVALID = [  # each right at its boundary: one step back is valid (VALID_EDGES)
    ({"offer_window_blocks": 0}, "offerWindowBlocks must be positive"),
    ({"loan_duration_blocks": 0}, "loanDurationBlocks must be positive"),
    ({"repayment_window_blocks": 0}, "repaymentWindowBlocks must be positive"),
    ({"evm_blocks_per_btc_block": 0}, "evmBlocksPerBtcBlock must be positive"),
    ({"escrow_timelock_btc_blocks": 0}, "escrowTimelockBtcBlocks must be in [1, 65535]"),
    ({"escrow_timelock_btc_blocks": 65536}, "escrowTimelockBtcBlocks must be in [1, 65535]"),
    ({"collateral_timelock_btc_blocks": 0}, "collateralTimelockBtcBlocks must be in [1, 65535]"),
    ({"collateral_timelock_btc_blocks": 65536}, "collateralTimelockBtcBlocks must be in [1, 65535]"),
    ({"escrow_timelock_btc_blocks": 55}, "t_0 * ratio must exceed t_B + request-to-offer allowance"),
    ({"request_to_offer_allowance_blocks": 1000}, "t_0 * ratio must exceed t_B + request-to-offer allowance"),
    ({"collateral_timelock_btc_blocks": 27081}, "t_1 * ratio must exceed t_D + t_L + safety * ratio"),
    ({"safety_btc_blocks": 75}, "t_1 * ratio must exceed t_D + t_L + safety * ratio"),
    ({"loan_duration_blocks": 541_380}, "t_1 * ratio must exceed t_D + t_L + safety * ratio"),
    ({"min_amount_wei": 0}, "minAmountWei must be positive"),
    ({"min_amount_wei": D.max_amount_wei + 1}, "minAmountWei must not exceed maxAmountWei"),
    ({"max_amount_wei": 2**128}, "maxAmountWei too large"),
    ({"bond_percent": 101}, "bondPercent must not exceed 100"),
    ({"origination_fee_bps": 10001}, "originationFeeBps must not exceed 10000"),
    ({"interest_bps": 10001}, "interestBps must not exceed 10000"),
    ({"blocks_per_year": 0}, "blocksPerYear must be positive"),
    ({"lender_btc_pubkey": b"\x00" * 32}, "lenderBtcPubkey must be set"),
]

VALID_EDGES = [
    {"escrow_timelock_btc_blocks": 56},
    {"request_to_offer_allowance_blocks": 999},
    {"collateral_timelock_btc_blocks": 27082},
    {"safety_btc_blocks": 74},
    {"loan_duration_blocks": 541_379},
    {"escrow_timelock_btc_blocks": 65535, "collateral_timelock_btc_blocks": 65535},
    {"min_amount_wei": D.max_amount_wei},
    {"min_amount_wei": 1, "max_amount_wei": 2**128 - 1},
    {"bond_percent": 100, "origination_fee_bps": 10000, "interest_bps": 10000},
    {"bond_percent": 0, "processing_fee_wei": 0, "interest_bps": 0},
]


def constructor_revert_data(chain, sender, swap_address, params) -> str:
    art = load_artifact("BtcCollateralLoan")
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    data = factory.constructor(swap_address, params.as_tuple()).data_in_transaction
    try:
        chain.w3.eth.call({"from": sender, "data": data}, "pending")
    except (ContractCustomError, ContractLogicError) as exc:
        return exc.data
    raise AssertionError("constructor did not revert")


def deploys(chain, sender, swap_address, params) -> bool:
    art = load_artifact("BtcCollateralLoan")
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    receipt = chain.transact(factory.constructor(swap_address, params.as_tuple()), sender)
    return receipt["status"] == 1 and len(chain.w3.eth.get_code(receipt["contractAddress"])) > 0


@pytest.mark.parametrize(("changes", "reason"), INVALID, ids=[r + str(c) for c, r in INVALID])
def test_invalid_parameters_refused(fast, people, changes, reason):
    params = D.with_(**changes)
    expected = fast.err("InvalidParameters", reason)
    assert constructor_revert_data(fast.chain, people.lender, fast.swap.address, params) == expected
    fast.chain.expect_revert(fast.loan.functions.updateParameters(params.as_tuple()), people.lender, expected)
    assert fast.loan.functions.parametersVersion().call() == 1
    assert tuple(fast.parameters().values()) == fast.params.as_tuple()


@pytest.mark.parametrize("changes", VALID_EDGES, ids=[str(c) for c in VALID_EDGES])
def test_parameters_at_the_edge_are_accepted(fast, people, changes):
    params = D.with_(**changes)
    assert deploys(fast.chain, people.lender, fast.swap.address, params)
    receipt = fast.chain.transact(fast.loan.functions.updateParameters(params.as_tuple()), people.lender)
    (event,) = fast.loan.events.ParametersUpdated().process_receipt(receipt)
    assert event["args"]["version"] == 2
    assert fast.loan.functions.parametersVersion().call() == 2
    assert tuple(fast.parameters().values()) == params.as_tuple()


def test_constructor_requires_a_contract_as_etherswap(fast, people):
    expected = fast.err("InvalidParameters", "etherSwap is not a contract")
    assert constructor_revert_data(fast.chain, people.lender, people.stranger, D) == expected


def test_constructor_sets_owner_version_and_parameters(dep, people):
    f = dep.loan.functions
    assert f.owner().call() == people.lender
    assert f.parametersVersion().call() == 1
    assert f.loanCount().call() == 0
    assert f.lockedBalance().call() == 0
    assert tuple(dep.parameters().values()) == DEFAULT_PARAMS.as_tuple()


def test_versions_increase_and_new_loans_take_the_new_snapshot(fast, people):
    f = fast.loan.functions
    first = LoanFlow(fast, people.borrower, 10**16).request()
    new = fast.params.with_(processing_fee_wei=2 * 10**15, interest_bps=900, bond_percent=20)
    fast.chain.transact(f.updateParameters(new.as_tuple()), people.lender)
    newer = new.with_(processing_fee_wei=3 * 10**15)
    fast.chain.transact(f.updateParameters(newer.as_tuple()), people.lender)
    assert f.parametersVersion().call() == 3
    second = LoanFlow(fast, people.borrower, 10**16).request()
    old_loan, new_loan = fast.loan_struct(first.loan_id), fast.loan_struct(second.loan_id)
    assert old_loan["parametersVersion"] == 1
    assert tuple(old_loan["params"].values()) == fast.params.as_tuple()
    assert new_loan["parametersVersion"] == 3
    assert tuple(new_loan["params"].values()) == newer.as_tuple()
    assert new_loan["processingFee"] == 3 * 10**15
    assert new_loan["repaymentAmount"] == newer.repayment_for(10**16)
    # A request paying the old fee under the new parameters is refused.
    call = f.requestLoan(10**16, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 0, 1)
    fast.chain.expect_revert(
        call, people.borrower, fast.err("WrongValue", 3 * 10**15, fast.params.processing_fee_wei),
        fast.params.processing_fee_wei,
    )  # fmt: skip
