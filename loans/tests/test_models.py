"""The database itself enforces the invariants: unique chain facts, integer money, parameter ordering rules."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from loans.models import EvmEvent, Loan, LoanStatusChange, ProtocolParameters

from .factories import DEFAULT_PARAMETERS, hex32, make_deployment, make_loan, make_parameters, make_user

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
        top = 2**256 - 1
        parameters = make_parameters(max_amount_wei=top)
        parameters.refresh_from_db()
        assert parameters.max_amount_wei == top
        assert type(parameters.max_amount_wei) is int

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


class TestParameterRules:
    def test_defaults_satisfy_every_rule(self):
        parameters = make_parameters()
        parameters.full_clean()

    @pytest.mark.parametrize(
        "overrides, constraint",
        [
            # t_0 · ratio must exceed t_B + allowance: 100·20 = 2000 is not > 1900 + 100.
            ({"offer_window_blocks": 1900}, "escrow_outlasts_offer"),
            # t_1 · ratio must exceed t_D + t_L + safety·ratio: 27150·20 = 543000 is not > 541380 + 1500 + 120.
            ({"loan_duration_blocks": 541_380}, "collateral_outlasts_loan"),
            ({"escrow_timelock_btc_blocks": 65_536, "offer_window_blocks": 10}, "timelocks_fit_bip68"),
            ({"collateral_timelock_btc_blocks": 65_536}, "timelocks_fit_bip68"),
            ({"min_amount_wei": 0}, "amount_bounds"),
            ({"min_amount_wei": 10**19, "max_amount_wei": 10**18}, "amount_bounds"),
            ({"bond_percent": 101}, "rates_in_range"),
            ({"origination_fee_bps": 10_001}, "rates_in_range"),
        ],
    )
    def test_rule_breaking_parameters_are_refused(self, overrides, constraint):
        with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
            make_parameters(**overrides)
        assert ProtocolParameters.objects.count() == 0

    def test_boundary_of_the_escrow_rule_is_exclusive(self):
        # 2000 > 1899 + 100 holds; 2000 > 1900 + 100 does not (tested above).
        make_parameters(offer_window_blocks=1899)

    def test_full_clean_reports_the_rule_before_any_write(self):
        parameters = ProtocolParameters(
            version=99, lender_btc_pubkey=hex32(), **{**DEFAULT_PARAMETERS, "offer_window_blocks": 5000}
        )
        with pytest.raises(ValidationError, match="escrow_outlasts_offer"):
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
