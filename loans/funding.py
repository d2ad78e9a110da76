"""What the borrower sends to a new loan's escrow: the funding instructions, computed from the loan (no writes).

The exact sats to send (``total_sats``) are the sum of

* ``collateral_sats``: TX_1 output 1, exactly the required collateral (``LoanFacts.collateral_sats``);
* ``origination_fee_sats``: TX_1 output 0, the lender's fee;
* ``miner_fee_sats``: TX_1's miner fee at ``fee_rate_sat_vb``: ``ceil(rate x vsize)``, the vsize measured on TX_1
  as ``bitcoin.transactions.build_tx1`` builds it *with* its change output [2] (any surplus returns to the
  borrower, so TX_1 has that output), with its final witness shape;
* ``margin_sats``: room for the fee to rise before TX_1 is signed: ``max(ceil(2 x rate x vsize) - miner fee,
  dust threshold of the borrower's payout script)``, i.e. enough for TX_1 at twice the rate, and never so little
  that TX_1 at the stated rate would drop the change. At the stated rate the margin is exactly TX_1's change back
  to the borrower's payout address.

The fee rate (``current_fee_rate_sat_vb``): the node's ``estimatesmartfee`` for ``FEE_ESTIMATE_TARGET_BLOCKS``
(converted from BTC/kvB exactly), clamped into the loan's bounds (``BITCOIN_MIN_FEE_RATE_SAT_VB`` ..
``BITCOIN_MAX_FEE_RATE_SAT_VB``). When the node has no estimate (regtest, a fresh node) or cannot be reached, the
minimum of the bounds is used and ``fee_rate_source`` says ``"minimum"``: the margin then covers twice it, and the
borrower may pass a rate of their own.

TX_1 needs hL and the escrow outpoint, neither known before the loan is offered and funded; the sizes do not depend
on them (a 32-byte hash in a fixed-size collateral output, a 36-byte outpoint), so placeholders stand in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction

from django.conf import settings

from bitcoin.descriptors import loan_output_descriptors
from bitcoin.fees import dust_threshold, parse_fee_rate
from bitcoin.loan import LoanFacts
from bitcoin.rpc import BitcoinRPC, BitcoinRPCError
from bitcoin.transactions import CHANGE_OUTPUT_INDEX, OutPoint, build_tx1, final_vsize

from .chains import bitcoin_rpc
from .facts import loan_facts
from .models import Loan

FEE_ESTIMATE_TARGET_BLOCKS = 6
MARGIN_FEE_RATE_MULTIPLIER = 2
SATS_PER_BTC = 100_000_000
SAT_VB_PER_BTC_KVB = 100_000  # 1 BTC/kvB = 10^8 sat / 1000 vB
_PLACEHOLDER_HASH = b"\x00" * 32
_PLACEHOLDER_OUTPOINT = OutPoint("00" * 32, 0)
_PLACEHOLDER_SURPLUS_SATS = SATS_PER_BTC  # enough change at any allowed rate; its size is fixed (8 bytes)


@dataclass(frozen=True)
class FundingInstructions:
    escrow_address: str
    escrow_descriptor: str
    collateral_sats: int
    origination_fee_sats: int
    fee_rate_sat_vb: Fraction
    fee_rate_source: str  # "requested", "estimate" or "minimum"
    tx1_vsize: int
    miner_fee_sats: int
    margin_sats: int
    total_sats: int
    bip21_uri: str
    loan_file: str


def fee_rate_bounds() -> tuple[Fraction, Fraction]:
    return parse_fee_rate(settings.BITCOIN_MIN_FEE_RATE_SAT_VB), parse_fee_rate(settings.BITCOIN_MAX_FEE_RATE_SAT_VB)


def current_fee_rate_sat_vb(*, rpc: BitcoinRPC | None = None) -> tuple[Fraction, str]:
    """The node's estimate clamped into the bounds (``"estimate"``), or the minimum (``"minimum"``) without one."""
    minimum, maximum = fee_rate_bounds()
    try:
        result = (rpc or bitcoin_rpc(retries=0)).estimatesmartfee(FEE_ESTIMATE_TARGET_BLOCKS)
    except (BitcoinRPCError, OSError):
        return minimum, "minimum"
    feerate = result.get("feerate") if isinstance(result, dict) else None
    if feerate is None or isinstance(feerate, (bool, float)):
        return minimum, "minimum"
    try:
        rate = Fraction(Decimal(feerate)) * SAT_VB_PER_BTC_KVB
    except (ArithmeticError, ValueError, TypeError):
        return minimum, "minimum"
    if rate <= 0:
        return minimum, "minimum"
    return min(max(rate, minimum), maximum), "estimate"


def _ceil(value: Fraction) -> int:
    return -(-value.numerator // value.denominator)


def btc_text(sats: int) -> str:
    """Sats as an exact BTC decimal without trailing zeros (``1234500`` -> ``"0.012345"``)."""
    whole, fraction = divmod(sats, SATS_PER_BTC)
    return f"{whole}.{fraction:08d}".rstrip("0").rstrip(".")


def tx1_vsize_with_change(facts: LoanFacts, fee_rate_sat_vb: Fraction) -> int:
    """TX_1's final vsize with all three outputs (fee, collateral, change), placeholders for hL and the outpoint."""
    sizing = facts if facts.lender_hash is not None else replace(facts, lender_hash=_PLACEHOLDER_HASH)
    surplus = facts.collateral_sats + facts.origination_fee_sats + _PLACEHOLDER_SURPLUS_SATS
    prepared = build_tx1(sizing.with_escrow(_PLACEHOLDER_OUTPOINT, surplus), fee_rate_sat_vb=fee_rate_sat_vb)
    assert len(prepared.tx.outputs) == CHANGE_OUTPUT_INDEX + 1
    return final_vsize(prepared)


def funding_instructions_for_facts(
    facts: LoanFacts, *, fee_rate_sat_vb: Fraction, fee_rate_source: str
) -> FundingInstructions:
    """The instructions for ``facts`` (see the module docstring); raises the builder's errors (dust, fee bounds)."""
    vsize = tx1_vsize_with_change(facts, fee_rate_sat_vb)
    miner_fee = _ceil(fee_rate_sat_vb * vsize)
    margin = max(
        _ceil(MARGIN_FEE_RATE_MULTIPLIER * fee_rate_sat_vb * vsize) - miner_fee,
        dust_threshold(facts.borrower_payout_script),
    )
    total = facts.collateral_sats + facts.origination_fee_sats + miner_fee + margin
    address = facts.escrow.address(facts.network)
    return FundingInstructions(
        escrow_address=address,
        escrow_descriptor=loan_output_descriptors(facts.escrow).tree_descriptor,
        collateral_sats=facts.collateral_sats,
        origination_fee_sats=facts.origination_fee_sats,
        fee_rate_sat_vb=fee_rate_sat_vb,
        fee_rate_source=fee_rate_source,
        tx1_vsize=vsize,
        miner_fee_sats=miner_fee,
        margin_sats=margin,
        total_sats=total,
        bip21_uri=f"bitcoin:{address}?amount={btc_text(total)}",
        loan_file=facts.to_json(),
    )


def loan_funding_instructions(*, loan: Loan, fee_rate_sat_vb: Fraction, fee_rate_source: str) -> FundingInstructions:
    """The funding instructions of ``loan`` at ``fee_rate_sat_vb``."""
    return funding_instructions_for_facts(
        loan_facts(loan=loan), fee_rate_sat_vb=fee_rate_sat_vb, fee_rate_source=fee_rate_source
    )
