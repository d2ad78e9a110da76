"""A loan's Bitcoin facts (``bitcoin.loan.LoanFacts``) made from a ``Loan``: the one place units are converted.

Every builder, verifier and the borrower's loan file take ``LoanFacts``; this function is how the server makes
them, so each conversion happens here once:

* wei -> sats: ``loan_amount_sats = ceil(amount_wei / 10^10)`` (rounded up: the collateral covers at least the
  loan), ``collateral_cap_sats = floor((repayment_wei + bond_wei) / 10^10)`` (rounded down: the collateral never
  exceeds repayment + bond, PROTOCOL.md attack 15). 1 sat = 10^10 wei (rBTC is pegged 1:1).
* basis points stay basis points (the snapshot already stores ``min_collateral_ratio_bps`` and
  ``origination_fee_bps``); timelocks are BTC blocks on both sides.
* hex -> bytes for keys and hashes; the escrow outpoint is the txid as nodes display it (big-endian hex, what
  ``bitcoin.transactions.OutPoint`` takes) and the output index.
* network and fee-rate bounds come from settings (``BITCOIN_NETWORK``, ``BITCOIN_MIN_FEE_RATE_SAT_VB``,
  ``BITCOIN_MAX_FEE_RATE_SAT_VB``).
"""

from __future__ import annotations

from django.conf import settings

from bitcoin.errors import InvalidParameterError
from bitcoin.loan import LoanFacts
from bitcoin.transactions import OutPoint
from evm.parameters import WEI_PER_SAT

from .models import Loan


def wei_to_sats_rounded_up(wei: int) -> int:
    """ceil(wei / 10^10)."""
    return -(-wei // WEI_PER_SAT)


def wei_to_sats_rounded_down(wei: int) -> int:
    """floor(wei / 10^10)."""
    return wei // WEI_PER_SAT


def loan_facts(*, loan: Loan) -> LoanFacts:
    """The loan's ``LoanFacts``; raises ``InvalidParameterError`` when a payout address is not set yet."""
    missing = [name for name in ("borrower_payout_address", "lender_payout_address") if not getattr(loan, name)]
    if missing:
        raise InvalidParameterError(f"loan {loan.pk} has no {' or '.join(missing)} yet")
    funded = loan.escrow_txid is not None and loan.escrow_sats is not None
    return LoanFacts(
        network=settings.BITCOIN_NETWORK,
        borrower_btc_pubkey=bytes.fromhex(loan.borrower_btc_pubkey),
        lender_btc_pubkey=bytes.fromhex(loan.lender_btc_pubkey),
        borrower_hash=bytes.fromhex(loan.borrower_hash),
        lender_hash=bytes.fromhex(loan.lender_hash) if loan.lender_hash else None,
        escrow_timelock_btc_blocks=loan.escrow_timelock_btc_blocks,
        collateral_timelock_btc_blocks=loan.collateral_timelock_btc_blocks,
        escrow_outpoint=OutPoint(loan.escrow_txid, loan.escrow_vout) if funded else None,  # type: ignore[arg-type]
        escrow_sats=loan.escrow_sats if funded else None,
        loan_amount_sats=wei_to_sats_rounded_up(loan.amount_wei),
        min_collateral_ratio_bps=loan.min_collateral_ratio_bps,
        collateral_cap_sats=wei_to_sats_rounded_down(loan.repayment_wei + loan.bond_wei),
        origination_fee_bps=loan.origination_fee_bps,
        lender_payout_address=loan.lender_payout_address,
        borrower_payout_address=loan.borrower_payout_address,
        min_fee_rate_sat_vb=settings.BITCOIN_MIN_FEE_RATE_SAT_VB,
        max_fee_rate_sat_vb=settings.BITCOIN_MAX_FEE_RATE_SAT_VB,
    )
