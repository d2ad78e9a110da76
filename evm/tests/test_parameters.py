"""ProtocolParameters: defaults, the ordering rules (same verdict as the contract), ABI round trips, and the money
maths (property tests, and the contract's own results for random amounts and parameters)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from evm.client import PreparedTransaction, dry_run
from evm.errors import ContractRevert, InvalidArgument
from evm.events import LoanOffered, fetch_events
from evm.parameters import FIELDS, InvalidParameters, ProtocolParameters

X_L = bytes.fromhex("64b4b84f42da9bdb84f7eda2de12524516686e73849645627fb7a034c79c81c8")
DEFAULTS = ProtocolParameters(lender_btc_pubkey=X_L)


def test_defaults_are_protocol_md_and_valid():
    assert DEFAULTS.to_json_dict() == {
        "offer_window_blocks": 1000,
        "request_to_offer_allowance_blocks": 100,
        "escrow_timelock_btc_blocks": 100,
        "loan_duration_blocks": 540_000,
        "repayment_window_blocks": 1500,
        "collateral_timelock_btc_blocks": 27_150,
        "evm_blocks_per_btc_block": 20,
        "safety_btc_blocks": 6,
        "processing_fee_wei": 10**15,
        "bond_percent": 10,
        "origination_fee_bps": 100,
        "interest_bps": 500,
        "blocks_per_year": 1_051_200,
        "min_amount_wei": 5 * 10**15,
        "max_amount_wei": 100 * 10**18,
        "min_collateral_ratio_percent": 100,
        "lender_btc_pubkey": X_L.hex(),
    }
    assert DEFAULTS.problems() == []
    assert DEFAULTS.validate() is DEFAULTS


def test_round_trips():
    assert ProtocolParameters.from_abi(DEFAULTS.to_abi()) == DEFAULTS
    by_name = {solidity: value for (_, solidity, _, _), value in zip(FIELDS, DEFAULTS.to_abi(), strict=True)}
    assert ProtocolParameters.from_abi(by_name) == DEFAULTS
    assert ProtocolParameters.from_json_dict(DEFAULTS.to_json_dict()) == DEFAULTS
    with pytest.raises(InvalidArgument, match="17 fields, got 16"):
        ProtocolParameters.from_abi(DEFAULTS.to_abi()[:-1])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lender_btc_pubkey": b"\x01" * 31}, "exactly 32 bytes"),
        ({"lender_btc_pubkey": "xyz"}, "32 bytes of hex"),
        ({"bond_percent": 10.0}, "bond_percent must be an integer"),
        ({"interest_bps": True}, "interest_bps must be an integer"),
        ({"processing_fee_wei": "1000"}, "processing_fee_wei must be an integer"),
        ({"evm_blocks_per_btc_block": -1}, "between 0 and"),
        ({"escrow_timelock_btc_blocks": 2**32}, "between 0 and 4294967295"),
    ],
)
def test_values_that_do_not_fit_the_struct_are_refused(changes, message):
    with pytest.raises(InvalidArgument, match=message):
        ProtocolParameters(**({"lender_btc_pubkey": X_L} | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lender_btc_pubkey": bytes(32)}, r"lender_btc_pubkey\) must be set"),
        ({"offer_window_blocks": 0}, "offer_window_blocks must be positive"),
        ({"escrow_timelock_btc_blocks": 0}, "escrow_timelock_btc_blocks must be a BIP-68"),
        ({"collateral_timelock_btc_blocks": 65_536}, "collateral_timelock_btc_blocks must be a BIP-68"),
        (
            {"offer_window_blocks": 1900},
            r"t_0 \* ratio \(2000\) must exceed t_B \+ request-to-offer allowance \(2000\)",
        ),
        ({"loan_duration_blocks": 541_380}, r"t_1 \* ratio \(543000\) must exceed t_D \+ t_L \+ safety \* ratio"),
        ({"min_amount_wei": 0}, "min_amount_wei must be positive"),
        ({"min_amount_wei": 10**21}, "must not exceed max_amount_wei"),
        ({"max_amount_wei": 2**128}, "max_amount_wei must not exceed 2\\*\\*128 - 1"),
        ({"bond_percent": 101}, "bond_percent must not exceed 100"),
        ({"origination_fee_bps": 10_001}, "origination_fee_bps must not exceed 10000"),
        ({"interest_bps": 10_001}, "interest_bps must not exceed 10000"),
        ({"blocks_per_year": 0}, "blocks_per_year must be positive"),
    ],
)
def test_each_ordering_rule_is_named(changes, message):
    params = DEFAULTS.replace(**changes)
    with pytest.raises(InvalidParameters, match=message):
        params.validate()


def test_boundaries_of_the_ordering_rules():
    # t_0 * ratio = 2000 > t_B + allowance = 1899 + 100: just valid
    assert DEFAULTS.replace(offer_window_blocks=1899).problems() == []
    # t_1 * ratio = 543000 > 540000 + 1500 + 120 = 541620; 541379 + 1500 + 120 = 542999
    assert DEFAULTS.replace(loan_duration_blocks=541_379).problems() == []
    assert len(DEFAULTS.replace(loan_duration_blocks=541_380).problems()) == 1
    every = DEFAULTS.replace(offer_window_blocks=0, bond_percent=200, blocks_per_year=0)
    assert len(every.problems()) == 3


@given(amount=st.integers(0, 2**128 - 1), rate=st.integers(0, 10_000), duration=st.integers(1, 2**64 - 1),
       per_year=st.integers(1, 2**64 - 1), bond=st.integers(0, 100))  # fmt: skip
def test_money_formulas(amount, rate, duration, per_year, bond):
    p = DEFAULTS.replace(interest_bps=rate, loan_duration_blocks=duration, blocks_per_year=per_year, bond_percent=bond)
    exact_interest = Fraction(amount * rate * duration, 10_000 * per_year)
    assert p.interest(amount) == math.floor(exact_interest)
    assert p.repayment_amount(amount) == amount + math.floor(exact_interest)
    assert p.repayment_amount(amount) >= amount
    assert p.bond(amount) == math.floor(Fraction(amount * bond, 100)) <= amount
    assert p.offer_value(amount) == amount + p.bond(amount)


def test_known_amounts():
    # 0.02 rBTC for 540000 blocks at 5 %/year over 1051200 blocks/year: 0.02 * 0.05 * 540000/1051200
    assert DEFAULTS.interest(2 * 10**16) == 513_698_630_136_986
    assert DEFAULTS.bond(2 * 10**16) == 2 * 10**15
    assert DEFAULTS.origination_fee_sats(1_000_000) == 10_000
    assert DEFAULTS.min_collateral_sats(2 * 10**16 + 1) == 2_000_001  # a partial sat rounds up


def test_deadlines_and_the_escrow_room_check():
    assert DEFAULTS.offer_deadline(100) == 1100
    assert DEFAULTS.repayment_deadline(100) == 540_100
    assert DEFAULTS.acceptance_deadline(100) == 1600
    # t_0 - confirmations >= ceil(1000 / 20) + 6 = 56
    assert DEFAULTS.offer_escrow_min_btc_blocks_left() == 56
    assert DEFAULTS.escrow_has_room_for_offer(44)
    assert not DEFAULTS.escrow_has_room_for_offer(45)
    assert DEFAULTS.replace(offer_window_blocks=1001).offer_escrow_min_btc_blocks_left() == 57


def test_amount_bounds():
    assert DEFAULTS.check_amount(5 * 10**15) == 5 * 10**15
    assert DEFAULTS.check_amount(100 * 10**18) == 100 * 10**18
    for bad in (5 * 10**15 - 1, 100 * 10**18 + 1):
        with pytest.raises(InvalidArgument, match="outside"):
            DEFAULTS.check_amount(bad)


# -- against the contract -----------------------------------------------------------------------------------

parameter_sets = st.builds(
    ProtocolParameters,
    lender_btc_pubkey=st.sampled_from([X_L, bytes(32)]),
    offer_window_blocks=st.integers(0, 3000),
    request_to_offer_allowance_blocks=st.integers(0, 300),
    escrow_timelock_btc_blocks=st.sampled_from([0, 1, 50, 100, 65_535, 65_536]),
    loan_duration_blocks=st.integers(0, 600_000),
    repayment_window_blocks=st.integers(0, 3000),
    collateral_timelock_btc_blocks=st.sampled_from([0, 1, 27_150, 30_000, 65_535, 65_536]),
    evm_blocks_per_btc_block=st.integers(0, 40),
    safety_btc_blocks=st.integers(0, 20),
    bond_percent=st.integers(0, 120),
    origination_fee_bps=st.integers(9_990, 10_010),
    interest_bps=st.integers(9_990, 10_010),
    blocks_per_year=st.integers(0, 2),
    min_amount_wei=st.sampled_from([0, 1, 10**18]),
    max_amount_wei=st.sampled_from([0, 10**18, 2**128 - 1, 2**128]),
)


@pytest.mark.integration
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=parameter_sets)
@example(params=DEFAULTS)
@example(params=DEFAULTS.replace(offer_window_blocks=1899, loan_duration_blocks=541_379, max_amount_wei=2**128 - 1))
@example(params=DEFAULTS.replace(offer_window_blocks=1900))
@example(params=DEFAULTS.replace(escrow_timelock_btc_blocks=65_535, collateral_timelock_btc_blocks=65_535))
def test_the_contract_accepts_exactly_the_parameters_python_accepts(w3, deployment, loan_client, lender, params):
    """A dry run of updateParameters, bypassing the client's own check: same verdict, same first reason."""
    forced = PreparedTransaction(
        to=deployment.loan_address,
        data=loan_client.loan.encode_abi("updateParameters", args=[params.to_abi()]),
        value=0,
        chain_id=31337,
    )
    problems = params.problems()
    if not problems:
        dry_run(w3, forced, lender.address, loan_client.decoder)
        return
    with pytest.raises(ContractRevert) as refused:
        dry_run(w3, forced, lender.address, loan_client.decoder)
    assert refused.value.error_name == "InvalidParameters"
    contract_reason = refused.value.error_args["reason"]
    # Both name the same rule first (the contract says it in camelCase, Python in snake_case).
    first_words = {
        "offerWindowBlocks": "offer_window_blocks",
        "loanDurationBlocks": "loan_duration_blocks",
        "repaymentWindowBlocks": "repayment_window_blocks",
        "evmBlocksPerBtcBlock": "evm_blocks_per_btc_block",
        "escrowTimelockBtcBlocks": "escrow_timelock_btc_blocks",
        "collateralTimelockBtcBlocks": "collateral_timelock_btc_blocks",
        "t_0": "t_0",
        "t_1": "t_1",
        "minAmountWei": "min_amount_wei",
        "maxAmountWei": "max_amount_wei",
        "bondPercent": "bond_percent",
        "originationFeeBps": "origination_fee_bps",
        "interestBps": "interest_bps",
        "blocksPerYear": "blocks_per_year",
        "lenderBtcPubkey": "the lender's Bitcoin key",
    }
    assert problems[0].startswith(first_words[contract_reason.split()[0]]), (problems, contract_reason)


@pytest.mark.integration
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    amount=st.integers(5 * 10**15, 100 * 10**18),
    rate=st.integers(0, 10_000),
    duration=st.integers(1, 540_000),
    per_year=st.integers(1, 2**64 - 1),
    bond=st.integers(0, 100),
)
def test_repayment_and_bond_match_the_contract(
    w3, deployment, loan_client, loan_flow, lender, amount, rate, duration, per_year, bond
):
    params = loan_client.parameters().replace(
        interest_bps=rate, loan_duration_blocks=duration, blocks_per_year=per_year, bond_percent=bond
    )
    loan_client.send(loan_client.update_parameters(params), lender)
    loan_id, _ = loan_flow.request(amount)
    loan_flow.commit(loan_id)
    receipt = loan_flow.offer(loan_id)
    loan = loan_client.get_loan(loan_id)
    assert loan.params == params
    assert loan.repayment_amount == params.repayment_amount(amount)
    assert loan.bond == params.bond(amount)
    (offered,) = [
        e
        for e in fetch_events(w3, [deployment.loan_address], receipt["blockNumber"], receipt["blockNumber"])
        if isinstance(e, LoanOffered)
    ]
    assert offered.bond == params.bond(amount)
    assert offered.offer_deadline_block == params.offer_deadline(receipt["blockNumber"])
