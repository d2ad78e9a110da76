"""The database itself enforces the invariants: unique chain facts, integer money, parameter ordering rules."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from loans.models import EvmEvent, Loan, LoanStatusChange, ProtocolParameters

from .factories import (
    DEFAULT_CHAIN_PARAMETERS,
    DEFAULT_PARAMETERS,
    hex32,
    make_deployment,
    make_loan,
    make_parameters,
    make_user,
)

pytestmark = pytest.mark.django_db


def evm_event(**overrides) -> EvmEvent:
    values = {
        "chain_id": 31337,
        "contract_address": "0x" + "11" * 20,
        "block_number": 10,
        "block_hash": hex32(),
        "tx_hash": "ab" * 32,
        "log_index": 0,
        "name": "LoanRequested",
        "args": {"loanId": "1"},
        **overrides,
    }
    return EvmEvent.objects.create(**values)


def test_database_is_postgresql_in_the_test_suite():
    # The suite's promise: constraints are proven on the production database, not SQLite.
    assert connection.vendor == "postgresql"


class TestEvmEventNaturalKey:
    def test_the_same_log_is_stored_once(self):
        evm_event()
        with pytest.raises(IntegrityError), transaction.atomic():
            evm_event(block_hash=hex32())  # a scanner seeing the same log again
        assert EvmEvent.objects.count() == 1

    def test_other_log_index_or_chain_is_another_fact(self):
        evm_event()
        evm_event(log_index=1)
        evm_event(chain_id=30)
        assert EvmEvent.objects.count() == 3


class TestMoney:
    def test_wei_round_trips_as_an_exact_int_up_to_uint256(self):
        top = 2**256 - 1  # the processing fee is a uint256 without a cap (max_amount_wei stops at 2^128 - 1)
        parameters = make_parameters(processing_fee_wei=top)
        parameters.refresh_from_db()
        assert parameters.processing_fee_wei == top
        assert type(parameters.processing_fee_wei) is int

    def test_float_wei_is_refused(self):
        with pytest.raises(TypeError, match="never floats"):
            make_parameters(processing_fee_wei=1e15)

    @pytest.mark.parametrize(
        "field, value",
        [
            ("amount_wei", 0),
            ("bond_wei", -1),
            ("escrow_sats", -5),
            ("collateral_sats", 0),
            ("origination_fee_sats", -1),
        ],
    )
    def test_amounts_must_not_be_negative_or_zero_where_meaningless(self, field, value):
        with pytest.raises(IntegrityError), transaction.atomic():
            make_loan(**{field: value})
        assert Loan.objects.count() == 0

    def test_repayment_below_the_amount_is_refused(self):
        with pytest.raises(IntegrityError), transaction.atomic():
            make_loan(amount_wei=10**17, repayment_wei=10**17 - 1)


# Every rule of the contract's `_validate` at its exact edge, both sides: (valid at the edge, one step over, the
# constraint). With PROTOCOL.md's defaults (ratio 20, drift margin 1000 bps: m = 11000 / 10000), in integers:
# t_0 · 200000 > (t_B + allowance) · 11000 and t_1 · 200000 > (t_D + t_L) · 11000 + safety · 200000 (the derivations
# are in contracts/tests/test_parameters.py, which proves the contract draws the same edges).
PARAMETER_BOUNDARIES = [
    ({"escrow_timelock_btc_blocks": 65_535}, {"escrow_timelock_btc_blocks": 65_536}, "timelocks_fit_bip68"),
    ({"collateral_timelock_btc_blocks": 65_535}, {"collateral_timelock_btc_blocks": 65_536}, "timelocks_fit_bip68"),
    (
        {"escrow_timelock_btc_blocks": 200, "collateral_timelock_btc_blocks": 65_535, "drift_margin_bps": 10_000},
        {"escrow_timelock_btc_blocks": 200, "collateral_timelock_btc_blocks": 65_535, "drift_margin_bps": 10_001},
        "drift_margin_in_range",
    ),
    ({"escrow_timelock_btc_blocks": 61}, {"escrow_timelock_btc_blocks": 60}, "escrow_outlasts_offer"),
    ({"request_to_offer_allowance_blocks": 818}, {"request_to_offer_allowance_blocks": 819}, "escrow_outlasts_offer"),
    (
        {"offer_window_blocks": 899, "escrow_timelock_btc_blocks": 55},
        {"offer_window_blocks": 900, "escrow_timelock_btc_blocks": 55},  # 11000000 = 11000000: not greater
        "escrow_outlasts_offer",
    ),
    (
        {"collateral_timelock_btc_blocks": 65_535, "drift_margin_bps": 8181},
        {"collateral_timelock_btc_blocks": 65_535, "drift_margin_bps": 8182},
        "escrow_outlasts_offer",
    ),
    (
        {"collateral_timelock_btc_blocks": 29_789},
        {"collateral_timelock_btc_blocks": 29_788},
        "collateral_outlasts_loan",
    ),
    ({"safety_btc_blocks": 217}, {"safety_btc_blocks": 218}, "collateral_outlasts_loan"),
    ({"loan_duration_blocks": 543_845}, {"loan_duration_blocks": 543_846}, "collateral_outlasts_loan"),
    ({"repayment_window_blocks": 5345}, {"repayment_window_blocks": 5346}, "collateral_outlasts_loan"),
    ({"drift_margin_bps": 1078}, {"drift_margin_bps": 1079}, "collateral_outlasts_loan"),
    ({"evm_blocks_per_btc_block": 20}, {"evm_blocks_per_btc_block": 19}, "collateral_outlasts_loan"),
    (
        {"collateral_timelock_btc_blocks": 29_706, "loan_duration_blocks": 538_499},
        {"collateral_timelock_btc_blocks": 29_706, "loan_duration_blocks": 538_500},  # both sides 5941200000
        "collateral_outlasts_loan",
    ),
    ({"accept_cutoff_blocks": 1}, {"accept_cutoff_blocks": 0}, "accept_cutoff_in_offer_window"),
    ({"accept_cutoff_blocks": 999}, {"accept_cutoff_blocks": 1000}, "accept_cutoff_in_offer_window"),
    ({"offer_window_blocks": 251}, {"offer_window_blocks": 250}, "accept_cutoff_in_offer_window"),
    ({"min_amount_wei": 1}, {"min_amount_wei": 0}, "amount_bounds"),
    ({"min_amount_wei": 100 * 10**18}, {"min_amount_wei": 100 * 10**18 + 1}, "amount_bounds"),
    ({"max_amount_wei": 2**128 - 1}, {"max_amount_wei": 2**128}, "amount_bounds"),
    ({"bond_percent": 1}, {"bond_percent": 0}, "bond_in_range"),
    ({"bond_percent": 100}, {"bond_percent": 101}, "bond_in_range"),
    ({"min_collateral_ratio_bps": 10_000}, {"min_collateral_ratio_bps": 9_999}, "collateral_ratio_capped"),
    ({"min_collateral_ratio_bps": 11_000}, {"min_collateral_ratio_bps": 11_001}, "collateral_ratio_capped"),
    (
        {"bond_percent": 1, "min_collateral_ratio_bps": 10_100},
        {"bond_percent": 1, "min_collateral_ratio_bps": 10_101},
        "collateral_ratio_capped",
    ),
    (
        {"bond_percent": 100, "min_collateral_ratio_bps": 20_000},
        {"bond_percent": 100, "min_collateral_ratio_bps": 20_001},
        "collateral_ratio_capped",
    ),
    ({"origination_fee_bps": 10_000}, {"origination_fee_bps": 10_001}, "rates_in_range"),
    ({"interest_bps": 10_000}, {"interest_bps": 10_001}, "rates_in_range"),
    ({"blocks_per_year": 1}, {"blocks_per_year": 0}, "rates_in_range"),
    ({"loan_duration_blocks": 1}, {"loan_duration_blocks": 0}, "rates_in_range"),
    ({"repayment_window_blocks": 1}, {"repayment_window_blocks": 0}, "rates_in_range"),
]


class TestParameterRules:
    def test_defaults_satisfy_every_rule(self):
        parameters = make_parameters()
        parameters.full_clean()
        assert (parameters.min_collateral_ratio_bps, parameters.drift_margin_bps) == (10_000, 1_000)
        assert (parameters.accept_cutoff_blocks, parameters.collateral_timelock_btc_blocks) == (250, 30_000)

    @pytest.mark.parametrize(
        ("edge", "over", "constraint"), PARAMETER_BOUNDARIES, ids=[str(over) for _, over, _ in PARAMETER_BOUNDARIES]
    )
    def test_each_rule_at_its_exact_edge(self, edge, over, constraint):
        """The edge is stored; one step over is refused by the database, naming the rule."""
        with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
            make_parameters(**over)
        assert ProtocolParameters.objects.count() == 0
        make_parameters(**edge)
        # The loan's own copy of the parameters obeys the same rules.
        with pytest.raises(IntegrityError, match=f"loans_loan_{constraint}"), transaction.atomic():
            make_loan(**over)
        make_loan(**edge)

    @pytest.mark.parametrize(("edge", "over", "constraint"), PARAMETER_BOUNDARIES)
    def test_the_python_mirror_draws_the_same_edges(self, edge, over, constraint):
        assert DEFAULT_CHAIN_PARAMETERS.replace(**edge).problems() == []
        assert DEFAULT_CHAIN_PARAMETERS.replace(**over).problems() != []

    def test_huge_values_are_refused_by_the_rule_not_by_an_integer_overflow(self):
        # The ordering rules compare NUMERIC products: t_D = 2^63 - 1 times m does not overflow a bigint.
        with pytest.raises(IntegrityError, match="collateral_outlasts_loan"), transaction.atomic():
            make_parameters(loan_duration_blocks=2**63 - 1)
        with pytest.raises(IntegrityError, match="escrow_outlasts_offer"), transaction.atomic():
            make_parameters(request_to_offer_allowance_blocks=2**63 - 1)
        top = make_parameters(evm_blocks_per_btc_block=2**31 - 1)  # every product far above 2^63
        assert top.evm_blocks_per_btc_block == 2**31 - 1

    def test_full_clean_reports_the_rule_before_any_write(self):
        parameters = ProtocolParameters(
            version=99, lender_btc_pubkey=hex32(), **{**DEFAULT_PARAMETERS, "offer_window_blocks": 5000}
        )
        with pytest.raises(ValidationError, match="escrow_outlasts_offer"):
            parameters.full_clean()
        parameters.offer_window_blocks = 1000
        parameters.bond_percent = 0
        with pytest.raises(ValidationError, match="bond_in_range"):
            parameters.full_clean()


class TestLoanUniqueness:
    def test_a_borrower_hash_belongs_to_one_live_loan(self):
        loan = make_loan(status="offered")
        with pytest.raises(IntegrityError, match="borrower_hash_unique_live"), transaction.atomic():
            make_loan(borrower_hash=loan.borrower_hash)

    def test_after_a_cancel_the_same_hash_and_escrow_may_be_requested_again(self):
        # The contract reserves hB only at the offer; a cancelled request locked nothing under it.
        outpoint = {"escrow_txid": hex32(), "escrow_vout": 0, "escrow_sats": 200_000}
        cancelled = make_loan(status="cancelled", **outpoint)
        again = make_loan(status="requested", borrower_hash=cancelled.borrower_hash, **outpoint)
        assert again.borrower_hash == cancelled.borrower_hash
        with pytest.raises(IntegrityError), transaction.atomic():
            make_loan(status="draft", borrower_hash=cancelled.borrower_hash)
        with pytest.raises(IntegrityError, match="escrow_outpoint_unique_live"), transaction.atomic():
            make_loan(status="draft", **outpoint)

    def test_a_lender_hash_belongs_to_one_loan(self):
        shared = hex32()
        make_loan(lender_hash=shared)
        with pytest.raises(IntegrityError), transaction.atomic():
            make_loan(lender_hash=shared)

    def test_an_escrow_outpoint_backs_one_loan(self):
        txid = hex32()
        make_loan(escrow_txid=txid, escrow_vout=1, escrow_sats=200_000)
        make_loan(escrow_txid=txid, escrow_vout=0, escrow_sats=200_000)
        with pytest.raises(IntegrityError), transaction.atomic():
            make_loan(escrow_txid=txid, escrow_vout=1, escrow_sats=200_000)

    def test_a_half_outpoint_is_refused(self):
        with pytest.raises(IntegrityError, match="escrow_outpoint_complete"), transaction.atomic():
            make_loan(escrow_txid=hex32())

    def test_hex_fields_must_be_lowercase_32_byte_hex(self):
        with pytest.raises(IntegrityError, match="hex_fields_format"), transaction.atomic():
            make_loan(borrower_btc_pubkey="AB" * 32)

    def test_contract_loan_id_is_unique_per_deployment(self):
        deployment = make_deployment()
        make_loan(deployment=deployment, contract_loan_id=1)
        make_loan(contract_loan_id=1)  # another deployment
        with pytest.raises(IntegrityError), transaction.atomic():
            make_loan(deployment=deployment, contract_loan_id=1)


class TestUsers:
    def test_evm_address_is_unique_whatever_its_case(self):
        address = "0x" + "aB" * 20
        make_user(evm_address=address)
        with pytest.raises(IntegrityError), transaction.atomic():
            make_user(evm_address=address.lower())

    def test_role_must_be_known(self):
        with pytest.raises(IntegrityError, match="user_role_valid"), transaction.atomic():
            make_user(role="admin")


class TestAuditTrailAtTheDatabase:
    def test_a_disallowed_pair_cannot_be_inserted(self):
        loan = make_loan()
        with pytest.raises(IntegrityError, match="status_change_allowed"), transaction.atomic():
            LoanStatusChange.objects.create(loan=loan, from_status="draft", to_status="active", cause="test")

    def test_a_loan_enters_each_status_once(self):
        loan = make_loan()
        LoanStatusChange.objects.create(loan=loan, from_status="draft", to_status="requested", cause="test")
        with pytest.raises(IntegrityError, match="enters_once"), transaction.atomic():
            LoanStatusChange.objects.create(loan=loan, from_status="draft", to_status="requested", cause="again")

    def test_rows_cannot_be_updated_even_with_a_queryset(self):
        loan = make_loan()
        change = LoanStatusChange.objects.create(loan=loan, from_status="draft", to_status="requested", cause="x")
        with pytest.raises(Exception, match="append-only"), transaction.atomic():
            LoanStatusChange.objects.filter(pk=change.pk).update(cause="rewritten")
        with pytest.raises(Exception, match="append-only"), transaction.atomic():
            LoanStatusChange.objects.filter(pk=change.pk).delete()
        change.refresh_from_db()
        assert change.cause == "x"

    def test_model_refuses_edit_and_delete(self):
        loan = make_loan()
        change = LoanStatusChange.objects.create(loan=loan, from_status="draft", to_status="requested", cause="x")
        change.cause = "rewritten"
        with pytest.raises(ValueError, match="append-only"):
            change.save()
        with pytest.raises(ValueError, match="append-only"):
            change.delete()
