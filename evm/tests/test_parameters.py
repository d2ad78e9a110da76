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
        "collateral_timelock_btc_blocks": 30_000,
        "evm_blocks_per_btc_block": 20,
        "safety_btc_blocks": 6,
        "processing_fee_wei": 10**15,
        "bond_percent": 10,
        "origination_fee_bps": 100,
        "interest_bps": 500,
        "blocks_per_year": 1_051_200,
        "min_amount_wei": 5 * 10**15,
        "max_amount_wei": 100 * 10**18,
        "min_collateral_ratio_bps": 10_000,
        "drift_margin_bps": 1_000,
        "accept_cutoff_blocks": 250,
        "lender_btc_pubkey": X_L.hex(),
    }
    assert DEFAULTS.problems() == []
    assert DEFAULTS.validate() is DEFAULTS


def test_round_trips():
    assert ProtocolParameters.from_abi(DEFAULTS.to_abi()) == DEFAULTS
    by_name = {solidity: value for (_, solidity, _, _), value in zip(FIELDS, DEFAULTS.to_abi(), strict=True)}
    assert ProtocolParameters.from_abi(by_name) == DEFAULTS
    assert ProtocolParameters.from_json_dict(DEFAULTS.to_json_dict()) == DEFAULTS
    with pytest.raises(InvalidArgument, match="19 fields, got 18"):
        ProtocolParameters.from_abi(DEFAULTS.to_abi()[:-1])


def test_a_json_record_of_another_contract_version_is_refused():
    old = DEFAULTS.to_json_dict()
    old["min_collateral_ratio_percent"] = old.pop("min_collateral_ratio_bps") // 100
    with pytest.raises(InvalidArgument, match=r"missing: \['min_collateral_ratio_bps'\], unknown: "):
        ProtocolParameters.from_json_dict(old)
    partial = {k: v for k, v in DEFAULTS.to_json_dict().items() if k != "accept_cutoff_blocks"}
    with pytest.raises(InvalidArgument, match=r"missing: \['accept_cutoff_blocks'\], unknown: none"):
        ProtocolParameters.from_json_dict(partial)


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


T0 = r"t_0 \* ratio \* 10000 \((\d+)\) must exceed \(t_B \+ request-to-offer allowance\) \* \(10000 \+ drift margin\)"
T1 = r"t_1 \* ratio \* 10000 \((\d+)\) must exceed \(t_D \+ t_L\) \* \(10000 \+ drift margin\) \+ safety"
CUTOFF = r"accept_cutoff_blocks must be in \[1, offer_window_blocks - 1\]"
BOND = r"bond_percent must be in \[1, 100\]"
RATIO = r"min_collateral_ratio_bps must be in \[10000, 10000 \+ bond_percent \* 100\]"

# Every rule at its exact edge, both sides: (valid at the edge, one step over, the rule's message). With the defaults
# (ratio 20, drift margin 1000 bps, m = 11000): the t_0 rule is t_0 * 200000 > (t_B + allowance) * 11000, the t_1 rule
# t_1 * 200000 > (t_D + t_L) * 11000 + safety * 200000 (contracts/tests/test_parameters.py derives each edge).
BOUNDARIES = [
    ({"offer_window_blocks": 251}, {"offer_window_blocks": 250}, CUTOFF),
    ({"loan_duration_blocks": 1}, {"loan_duration_blocks": 0}, "loan_duration_blocks must be positive"),
    ({"repayment_window_blocks": 1}, {"repayment_window_blocks": 0}, "repayment_window_blocks must be positive"),
    ({"escrow_timelock_btc_blocks": 65_535}, {"escrow_timelock_btc_blocks": 65_536}, "escrow_timelock_btc_blocks must"),
    ({"collateral_timelock_btc_blocks": 65_535}, {"collateral_timelock_btc_blocks": 65_536}, "collateral_timelock_btc"),
    (
        {"escrow_timelock_btc_blocks": 200, "collateral_timelock_btc_blocks": 65_535, "drift_margin_bps": 10_000},
        {"escrow_timelock_btc_blocks": 200, "collateral_timelock_btc_blocks": 65_535, "drift_margin_bps": 10_001},
        "drift_margin_bps must not exceed 10000",
    ),
    ({"escrow_timelock_btc_blocks": 61}, {"escrow_timelock_btc_blocks": 60}, T0),
    ({"request_to_offer_allowance_blocks": 818}, {"request_to_offer_allowance_blocks": 819}, T0),
    (
        {"offer_window_blocks": 899, "escrow_timelock_btc_blocks": 55},
        {"offer_window_blocks": 900, "escrow_timelock_btc_blocks": 55},  # both sides 11000000: not greater
        T0,
    ),
    (
        {"collateral_timelock_btc_blocks": 65_535, "drift_margin_bps": 8181},
        {"collateral_timelock_btc_blocks": 65_535, "drift_margin_bps": 8182},
        T0,
    ),
    ({"collateral_timelock_btc_blocks": 29_789}, {"collateral_timelock_btc_blocks": 29_788}, T1),
    ({"safety_btc_blocks": 217}, {"safety_btc_blocks": 218}, T1),
    ({"loan_duration_blocks": 543_845}, {"loan_duration_blocks": 543_846}, T1),
    ({"repayment_window_blocks": 5345}, {"repayment_window_blocks": 5346}, T1),
    ({"drift_margin_bps": 1078}, {"drift_margin_bps": 1079}, T1),
    ({"evm_blocks_per_btc_block": 20}, {"evm_blocks_per_btc_block": 19}, T1),
    (
        {"collateral_timelock_btc_blocks": 29_706, "loan_duration_blocks": 538_499},
        {"collateral_timelock_btc_blocks": 29_706, "loan_duration_blocks": 538_500},  # both sides 5941200000
        T1,
    ),
    ({"accept_cutoff_blocks": 1}, {"accept_cutoff_blocks": 0}, CUTOFF),
    ({"accept_cutoff_blocks": 999}, {"accept_cutoff_blocks": 1000}, CUTOFF),
    ({"min_amount_wei": 1}, {"min_amount_wei": 0}, "min_amount_wei must be positive"),
    ({"min_amount_wei": 100 * 10**18}, {"min_amount_wei": 100 * 10**18 + 1}, "must not exceed max_amount_wei"),
    ({"max_amount_wei": 2**128 - 1}, {"max_amount_wei": 2**128}, r"max_amount_wei must not exceed 2\*\*128 - 1"),
    ({"bond_percent": 1}, {"bond_percent": 0}, BOND),
    ({"bond_percent": 100}, {"bond_percent": 101}, BOND),
    ({"min_collateral_ratio_bps": 10_000}, {"min_collateral_ratio_bps": 9_999}, RATIO),
    ({"min_collateral_ratio_bps": 11_000}, {"min_collateral_ratio_bps": 11_001}, RATIO),
    (
        {"bond_percent": 1, "min_collateral_ratio_bps": 10_100},
        {"bond_percent": 1, "min_collateral_ratio_bps": 10_101},
        RATIO,
    ),
    (
        {"bond_percent": 100, "min_collateral_ratio_bps": 20_000},
        {"bond_percent": 100, "min_collateral_ratio_bps": 20_001},
        RATIO,
    ),
    ({"origination_fee_bps": 10_000}, {"origination_fee_bps": 10_001}, "origination_fee_bps must not exceed 10000"),
    ({"interest_bps": 10_000}, {"interest_bps": 10_001}, "interest_bps must not exceed 10000"),
    ({"blocks_per_year": 1}, {"blocks_per_year": 0}, "blocks_per_year must be positive"),
]


@pytest.mark.parametrize(("edge", "over", "message"), BOUNDARIES, ids=[str(over) for _, over, _ in BOUNDARIES])
def test_each_rule_at_its_exact_edge(edge, over, message):
    assert DEFAULTS.replace(**edge).problems() == []
    problems = DEFAULTS.replace(**over).problems()
    assert len(problems) == 1, problems
    with pytest.raises(InvalidParameters, match=message):
        DEFAULTS.replace(**over).validate()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lender_btc_pubkey": bytes(32)}, r"lender_btc_pubkey\) must be set"),
        ({"offer_window_blocks": 0}, "offer_window_blocks must be positive"),
        ({"evm_blocks_per_btc_block": 0}, "evm_blocks_per_btc_block must be positive"),
        ({"escrow_timelock_btc_blocks": 0}, "escrow_timelock_btc_blocks must be a BIP-68"),
        ({"collateral_timelock_btc_blocks": 0}, "collateral_timelock_btc_blocks must be a BIP-68"),
        ({"offer_window_blocks": 1900, "accept_cutoff_blocks": 250}, r"\(20000000\) must exceed .* \(22000000\)"),
        ({"loan_duration_blocks": 545_000}, r"t_1 \* ratio \* 10000 \(6000000000\) must exceed .* \(6012700000\)"),
    ],
)
def test_each_ordering_rule_is_named(changes, message):
    params = DEFAULTS.replace(**changes)
    with pytest.raises(InvalidParameters, match=message):
        params.validate()


def test_problems_lists_every_broken_rule_in_the_contracts_order():
    every = DEFAULTS.replace(offer_window_blocks=0, bond_percent=200, blocks_per_year=0)
    assert [p.split()[0] for p in every.problems()] == [
        "offer_window_blocks",
        "accept_cutoff_blocks",
        "bond_percent",
        "blocks_per_year",
    ]


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
    # Bitcoin amounts (collateral, origination fee) are bitcoin.transactions' business, from sats and bps.
    assert not hasattr(DEFAULTS, "min_collateral_sats") and not hasattr(DEFAULTS, "origination_fee_sats")


def test_deadlines_and_the_escrow_room_check():
    assert DEFAULTS.offer_deadline(100) == 1100
    assert DEFAULTS.repayment_deadline(100) == 540_100
    assert DEFAULTS.acceptance_deadline(100) == 1600
    # t_0 - confirmations >= ceil(1000 * 11000 / (20 * 10000)) + 6 = 55 + 6 = 61 (exact: no rounding up)
    assert DEFAULTS.drift_factor_bps == 11_000
    assert DEFAULTS.offer_escrow_min_btc_blocks_left() == 61
    assert DEFAULTS.escrow_has_room_for_offer(39)
    assert not DEFAULTS.escrow_has_room_for_offer(40)
    # 1001 * 11000 / 200000 = 55.055: rounds up to 56
    assert DEFAULTS.replace(offer_window_blocks=1001).offer_escrow_min_btc_blocks_left() == 62
    assert DEFAULTS.replace(drift_margin_bps=0).offer_escrow_min_btc_blocks_left() == 56  # ceil(1000 / 20) + 6


@given(
    t_b=st.integers(1, 10**6),
    drift=st.integers(0, 10_000),
    ratio=st.integers(1, 100),
    safety=st.integers(0, 50),
    confirmations=st.integers(0, 70_000),
)
def test_escrow_room_is_the_exact_rational_rule(t_b, drift, ratio, safety, confirmations):
    p = DEFAULTS.replace(
        offer_window_blocks=t_b, drift_margin_bps=drift, evm_blocks_per_btc_block=ratio, safety_btc_blocks=safety
    )
    needed = math.ceil(Fraction(t_b * (10_000 + drift), ratio * 10_000)) + safety
    assert p.offer_escrow_min_btc_blocks_left() == needed
    assert p.escrow_has_room_for_offer(confirmations) == (p.escrow_timelock_btc_blocks - confirmations >= needed)


def test_accept_cutoff_counts_from_the_block_the_accept_would_be_mined_in():
    # Offer in block 100: deadline 1100; the borrower may accept in blocks 101 .. 1099. Cutoff 250: an accept may be
    # started while the block it would be mined in (head + 1) leaves at least 250 blocks: next block <= 850.
    p = DEFAULTS
    assert p.last_accept_start_block(100) == 850
    assert p.accept_blocks_left(100, 850) == 250 and p.may_start_accept(100, 850)
    assert p.accept_blocks_left(100, 851) == 249 and not p.may_start_accept(100, 851)
    assert p.may_start_accept(100, 101)
    assert p.accept_blocks_left(100, 1100) == 0 and not p.may_start_accept(100, 1100)
    assert p.accept_blocks_left(100, 1200) == -100
    one = p.replace(accept_cutoff_blocks=1)  # the smallest cutoff: only the closed window is refused
    assert one.may_start_accept(100, 1099) and not one.may_start_accept(100, 1100)


@given(offer=st.integers(0, 10**9), t_b=st.integers(2, 10**6), data=st.data())
def test_accept_cutoff_agrees_with_its_three_forms(offer, t_b, data):
    cutoff = data.draw(st.integers(1, t_b - 1))
    next_block = data.draw(st.integers(offer, offer + t_b + 5))
    p = DEFAULTS.replace(offer_window_blocks=t_b, accept_cutoff_blocks=cutoff)
    allowed = p.may_start_accept(offer, next_block)
    assert allowed == (p.accept_blocks_left(offer, next_block) >= cutoff)
    assert allowed == (next_block <= p.last_accept_start_block(offer))
    if allowed:  # an accept that may be started has at least one block left to be mined in before the deadline
        assert next_block < p.offer_deadline(offer)


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
    collateral_timelock_btc_blocks=st.sampled_from([0, 1, 29_788, 29_789, 30_000, 65_535, 65_536]),
    evm_blocks_per_btc_block=st.integers(0, 40),
    safety_btc_blocks=st.integers(0, 20),
    bond_percent=st.integers(0, 120),
    min_collateral_ratio_bps=st.sampled_from([0, 9_999, 10_000, 10_500, 11_000, 11_001, 20_000, 20_001, 65_535]),
    drift_margin_bps=st.sampled_from([0, 1, 1_000, 1_078, 1_079, 10_000, 10_001, 65_535]),
    accept_cutoff_blocks=st.integers(0, 3001),
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
@example(params=DEFAULTS.replace(request_to_offer_allowance_blocks=818, loan_duration_blocks=543_845))
@example(params=DEFAULTS.replace(request_to_offer_allowance_blocks=819))
@example(params=DEFAULTS.replace(loan_duration_blocks=543_846))
@example(params=DEFAULTS.replace(escrow_timelock_btc_blocks=65_535, collateral_timelock_btc_blocks=65_535))
@example(params=DEFAULTS.replace(bond_percent=0))
@example(params=DEFAULTS.replace(accept_cutoff_blocks=1000))
@example(params=DEFAULTS.replace(drift_margin_bps=10_001))
@example(params=DEFAULTS.replace(min_collateral_ratio_bps=11_001))
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
    assert problems[0].startswith(first_words[contract_reason.split()[0]]), (problems, contract_reason)


@pytest.mark.integration
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    amount=st.integers(5 * 10**15, 100 * 10**18),
    rate=st.integers(0, 10_000),
    duration=st.integers(1, 540_000),
    per_year=st.integers(1, 2**64 - 1),
    bond=st.integers(1, 100),
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
