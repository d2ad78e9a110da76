"""loans.facts.loan_facts: a Loan's Bitcoin facts, with every unit converted once and the rounding stated."""

from __future__ import annotations

import pytest

from bitcoin.errors import InvalidParameterError
from bitcoin.loan import LoanFacts
from bitcoin.tests.loan_vectors import (
    BORROWER_HASH,
    BORROWER_XONLY,
    ESCROW_ADDRESS_REGTEST,
    LENDER_HASH,
    LENDER_XONLY,
    REGTEST_P2TR,
    REGTEST_P2WPKH,
)
from bitcoin.transactions import OutPoint
from loans.facts import loan_facts

from .factories import make_loan, make_parameters

pytestmark = pytest.mark.django_db

ESCROW_TXID = "0f" * 31 + "e1"  # as nodes display it (big-endian hex)


def _loan(**overrides):
    parameters = make_parameters(lender_btc_pubkey=LENDER_XONLY, escrow_timelock_btc_blocks=100)
    values = {
        "parameters": parameters,
        "borrower_btc_pubkey": BORROWER_XONLY,
        "borrower_hash": BORROWER_HASH,
        "lender_hash": LENDER_HASH,
        "amount_wei": 10**16,  # 0.01 rBTC = 1,000,000 sat
        "escrow_txid": ESCROW_TXID,
        "escrow_vout": 1,
        "escrow_sats": 1_200_000,
        "borrower_payout_address": REGTEST_P2TR,
        "lender_payout_address": REGTEST_P2WPKH,
    }
    values.update(overrides)
    return make_loan(**values)


def test_facts_of_a_funded_loan(settings) -> None:
    settings.BITCOIN_NETWORK = "regtest"
    loan = _loan()
    facts = loan_facts(loan=loan)
    assert facts.network == "regtest"
    assert facts.borrower_btc_pubkey.hex() == BORROWER_XONLY and facts.lender_btc_pubkey.hex() == LENDER_XONLY
    assert facts.borrower_hash.hex() == BORROWER_HASH and facts.lender_hash.hex() == LENDER_HASH
    assert facts.escrow_outpoint == OutPoint(ESCROW_TXID, 1)
    assert str(facts.escrow_outpoint) == f"{ESCROW_TXID}:1"  # display order kept, not reversed
    assert facts.escrow_sats == 1_200_000
    assert facts.loan_amount_sats == 1_000_000
    assert facts.collateral_cap_sats == (loan.repayment_wei + loan.bond_wei) // 10**10
    assert facts.min_collateral_ratio_bps == loan.min_collateral_ratio_bps == 10_000
    assert facts.collateral_sats == 1_000_000
    assert facts.origination_fee_bps == loan.origination_fee_bps
    assert (facts.escrow_timelock_btc_blocks, facts.collateral_timelock_btc_blocks) == (
        loan.escrow_timelock_btc_blocks,
        loan.collateral_timelock_btc_blocks,
    )
    assert facts.escrow.address("regtest") == ESCROW_ADDRESS_REGTEST  # PROTOCOL.md's vector, t_0 = 100
    assert LoanFacts.from_json(facts.to_json()) == facts


def test_wei_to_sats_rounding_is_stated_and_exact(settings) -> None:
    settings.BITCOIN_NETWORK = "regtest"
    # One wei above a whole satoshi: the loan rounds up (collateral covers at least the loan) ...
    loan = _loan(amount_wei=10**16 + 1)
    facts = loan_facts(loan=loan)
    assert facts.loan_amount_sats == 1_000_001
    # ... and the cap rounds down (the collateral never exceeds repayment + bond).
    assert facts.collateral_cap_sats == (loan.repayment_wei + loan.bond_wei) // 10**10
    assert facts.collateral_cap_sats * 10**10 <= loan.repayment_wei + loan.bond_wei


def test_a_loan_before_its_escrow_and_hl(settings) -> None:
    settings.BITCOIN_NETWORK = "regtest"
    facts = loan_facts(loan=_loan(escrow_txid=None, escrow_vout=None, escrow_sats=None, lender_hash=None))
    assert facts.escrow_outpoint is None and facts.escrow_sats is None and facts.lender_hash is None
    assert facts.escrow.address("regtest") == ESCROW_ADDRESS_REGTEST  # the escrow address needs neither
    with pytest.raises(InvalidParameterError, match="lender_hash"):
        facts.collateral  # noqa: B018


def test_missing_payout_address_is_a_clear_error(settings) -> None:
    settings.BITCOIN_NETWORK = "regtest"
    with pytest.raises(InvalidParameterError, match="borrower_payout_address"):
        loan_facts(loan=_loan(borrower_payout_address=""))


def test_fee_rate_bounds_come_from_settings(settings) -> None:
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB, settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "1.5", "80"
    facts = loan_facts(loan=_loan())
    assert (facts.min_fee_rate_sat_vb, facts.max_fee_rate_sat_vb) == (1.5, 80)
