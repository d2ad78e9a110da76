"""Parameter validation in the constructor and updateParameters: every rule, at its exact boundary on both sides (valid
at the edge, invalid one step over), with the Python mirror (evm.parameters) giving the same verdict and reason."""

from __future__ import annotations

import dataclasses

import pytest
from web3.exceptions import ContractCustomError, ContractLogicError

from contracts.tests.helpers import DEFAULT_PARAMS, LoanFlow, load_artifact
from evm.parameters import ProtocolParameters

pytestmark = pytest.mark.integration

D = DEFAULT_PARAMS
T0_RULE = "t_0 * ratio must exceed (t_B + request-to-offer allowance) * (1 + drift margin)"
T1_RULE = "t_1 * ratio must exceed (t_D + t_L) * (1 + drift margin) + safety * ratio"
# With the defaults (ratio 20, drift margin 1000 bps, so m = 11000 / 10000), in integers:
#   t_0 rule: t_0 * 200000 > (t_B + allowance) * 11000 = 1100 * 11000 = 12100000  <=>  t_0 >= 61;
#             100 * 200000 = 20000000 > (1000 + allowance) * 11000  <=>  allowance <= 818.
#   t_1 rule: t_1 * 200000 > (t_D + t_L) * 11000 + 6 * 200000 = 5957700000  <=>  t_1 >= 29789;
#             6e9 > (t_D + t_L) * 11000 + 1200000  <=>  t_D + t_L <= 545345;
#             6e9 > 5956500000 + safety * 200000  <=>  safety <= 217;
#             6e9 > 541500 * m + 1200000  <=>  m <= 11078 (drift margin <= 1078).
# Each invalid case is one step over its rule's edge; VALID_EDGES holds the edge itself (same order, same rule).
INVALID = [
    ({"offer_window_blocks": 0}, "offerWindowBlocks must be positive"),
    ({"loan_duration_blocks": 0}, "loanDurationBlocks must be positive"),
    ({"repayment_window_blocks": 0}, "repaymentWindowBlocks must be positive"),
    ({"evm_blocks_per_btc_block": 0}, "evmBlocksPerBtcBlock must be positive"),
    ({"escrow_timelock_btc_blocks": 0}, "escrowTimelockBtcBlocks must be in [1, 65535]"),
    ({"escrow_timelock_btc_blocks": 65536}, "escrowTimelockBtcBlocks must be in [1, 65535]"),
    ({"collateral_timelock_btc_blocks": 0}, "collateralTimelockBtcBlocks must be in [1, 65535]"),
    ({"collateral_timelock_btc_blocks": 65536}, "collateralTimelockBtcBlocks must be in [1, 65535]"),
    (
        {"escrow_timelock_btc_blocks": 200, "collateral_timelock_btc_blocks": 65535, "drift_margin_bps": 10001},
        "driftMarginBps must not exceed 10000",
    ),
    ({"escrow_timelock_btc_blocks": 60}, T0_RULE),
    ({"request_to_offer_allowance_blocks": 819}, T0_RULE),
    ({"offer_window_blocks": 900, "escrow_timelock_btc_blocks": 55}, T0_RULE),  # 11000000 = 11000000: not greater
    ({"collateral_timelock_btc_blocks": 65535, "drift_margin_bps": 8182}, T0_RULE),
    ({"collateral_timelock_btc_blocks": 29788}, T1_RULE),
    ({"safety_btc_blocks": 218}, T1_RULE),
    ({"loan_duration_blocks": 543_846}, T1_RULE),
    ({"repayment_window_blocks": 5346}, T1_RULE),
    ({"drift_margin_bps": 1079}, T1_RULE),
    ({"evm_blocks_per_btc_block": 19}, T1_RULE),
    ({"collateral_timelock_btc_blocks": 29706, "loan_duration_blocks": 538_500}, T1_RULE),  # equal sides
    ({"accept_cutoff_blocks": 0}, "acceptCutoffBlocks must be in [1, offerWindowBlocks - 1]"),
    ({"accept_cutoff_blocks": 1000}, "acceptCutoffBlocks must be in [1, offerWindowBlocks - 1]"),
    ({"offer_window_blocks": 250}, "acceptCutoffBlocks must be in [1, offerWindowBlocks - 1]"),
    ({"min_amount_wei": 0}, "minAmountWei must be positive"),
    ({"min_amount_wei": D.max_amount_wei + 1}, "minAmountWei must not exceed maxAmountWei"),
    ({"max_amount_wei": 2**128}, "maxAmountWei too large"),
    ({"bond_percent": 0}, "bondPercent must be in [1, 100]"),
    ({"bond_percent": 101}, "bondPercent must be in [1, 100]"),
    ({"min_collateral_ratio_bps": 9999}, "minCollateralRatioBps must be in [10000, 10000 + bondPercent * 100]"),
    ({"min_collateral_ratio_bps": 11001}, "minCollateralRatioBps must be in [10000, 10000 + bondPercent * 100]"),
    (
        {"bond_percent": 1, "min_collateral_ratio_bps": 10101},
        "minCollateralRatioBps must be in [10000, 10000 + bondPercent * 100]",
    ),
    (
        {"bond_percent": 100, "min_collateral_ratio_bps": 20001},
        "minCollateralRatioBps must be in [10000, 10000 + bondPercent * 100]",
    ),
    ({"origination_fee_bps": 10001}, "originationFeeBps must not exceed 10000"),
    ({"interest_bps": 10001}, "interestBps must not exceed 10000"),
    ({"blocks_per_year": 0}, "blocksPerYear must be positive"),
    ({"lender_btc_pubkey": b"\x00" * 32}, "lenderBtcPubkey must be set"),
]

VALID_EDGES = [
    {"offer_window_blocks": 251},  # the smallest t_B the default cutoff (250) allows
    {"escrow_timelock_btc_blocks": 200, "collateral_timelock_btc_blocks": 65535, "drift_margin_bps": 10000},
    {"drift_margin_bps": 0},
    {"escrow_timelock_btc_blocks": 61},
    {"request_to_offer_allowance_blocks": 818},
    {"offer_window_blocks": 899, "escrow_timelock_btc_blocks": 55},
    {"collateral_timelock_btc_blocks": 65535, "drift_margin_bps": 8181},
    {"collateral_timelock_btc_blocks": 29789},
    {"safety_btc_blocks": 217},
    {"loan_duration_blocks": 543_845},
    {"repayment_window_blocks": 5345},
    {"drift_margin_bps": 1078},
    {"collateral_timelock_btc_blocks": 29706, "loan_duration_blocks": 538_499},
    {"escrow_timelock_btc_blocks": 65535, "collateral_timelock_btc_blocks": 65535},
    {"accept_cutoff_blocks": 1},
    {"accept_cutoff_blocks": 999},
    {"min_amount_wei": D.max_amount_wei},
    {"min_amount_wei": 1, "max_amount_wei": 2**128 - 1},
    {"bond_percent": 1, "min_collateral_ratio_bps": 10100, "processing_fee_wei": 0, "interest_bps": 0},
    {"min_collateral_ratio_bps": 11000},
    {"bond_percent": 100, "min_collateral_ratio_bps": 20000, "origination_fee_bps": 10000, "interest_bps": 10000},
]

# The Python mirror (evm.parameters) names the same rule first: the contract's reason starts with the Solidity
# name, Python's with the snake_case one.
PYTHON_FIRST_WORDS = {
    "offerWindowBlocks": "offer_window_blocks",
    "loanDurationBlocks": "loan_duration_blocks",
    "repaymentWindowBlocks": "repayment_window_blocks",
    "evmBlocksPerBtcBlock": "evm_blocks_per_btc_block",
    "escrowTimelockBtcBlocks": "escrow_timelock_btc_blocks",
    "collateralTimelockBtcBlocks": "collateral_timelock_btc_blocks",
    "driftMarginBps": "drift_margin_bps",
    "t_0": "t_0",
    "t_1": "t_1",
    "acceptCutoffBlocks": "accept_cutoff_blocks",
    "minAmountWei": "min_amount_wei",
    "maxAmountWei": "max_amount_wei",
    "bondPercent": "bond_percent",
    "minCollateralRatioBps": "min_collateral_ratio_bps",
    "originationFeeBps": "origination_fee_bps",
    "interestBps": "interest_bps",
    "blocksPerYear": "blocks_per_year",
    "lenderBtcPubkey": "the lender's Bitcoin key",
}


def python_mirror(params) -> ProtocolParameters:
    return ProtocolParameters(**dataclasses.asdict(params))


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
    problems = python_mirror(params).problems()
    assert problems and problems[0].startswith(PYTHON_FIRST_WORDS[reason.split()[0]]), problems
    fast.chain.expect_revert(fast.loan.functions.updateParameters(params.as_tuple()), people.lender, expected)
    assert fast.loan.functions.parametersVersion().call() == 1
    assert tuple(fast.parameters().values()) == fast.params.as_tuple()


@pytest.mark.parametrize("changes", VALID_EDGES, ids=[str(c) for c in VALID_EDGES])
def test_parameters_at_the_edge_are_accepted(fast, people, changes):
    params = D.with_(**changes)
    assert python_mirror(params).problems() == []
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
    call = f.requestLoan(10**16, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 0, 1, 3)
    fast.chain.expect_revert(
        call, people.borrower, fast.err("WrongValue", 3 * 10**15, fast.params.processing_fee_wei),
        fast.params.processing_fee_wei,
    )  # fmt: skip
