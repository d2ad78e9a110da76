"""The borrower's actions. ``loan_create``: a draft loan on the newest parameters, with its escrow ready to fund.

Every refusal is a ``LoanServiceError`` with one of ``LOAN_CREATE_CODES`` (or ``PermissionDenied`` for a caller who
is not an active borrower), raised before anything is written.
"""

from __future__ import annotations

from fractions import Fraction

from django.conf import settings
from django.db import IntegrityError, transaction

from bitcoin.addresses import validate_address
from bitcoin.errors import BitcoinProtocolError
from bitcoin.fees import dust_threshold, parse_fee_rate
from bitcoin.keys import parse_xonly_pubkey
from bitcoin.scripts import parse_hash32
from evm.parameters import ProtocolParameters as OnChainParameters

from ..errors import LoanServiceError
from ..facts import loan_facts
from ..funding import fee_rate_bounds, funding_instructions_for_facts
from ..models import PARAMETER_FIELDS, ContractDeployment, Loan, ProtocolParameters, User
from ..permissions import can_borrow, require
from .operators import new_loans_paused

LOAN_CREATE_CODES: tuple[str, ...] = (
    "no_parameters",
    "no_deployment",
    "new_loans_paused",
    "no_lender_payout_address",
    "amount_out_of_bounds",
    "invalid_key",
    "same_key_as_lender",
    "invalid_hash",
    "borrower_hash_in_use",
    "invalid_payout_address",
    "invalid_fee_rate",
    "origination_fee_dust",
    "invalid_loan_terms",
)


def _refuse(code: str, message: str) -> LoanServiceError:
    return LoanServiceError(message, code=code)


def on_chain_parameters(parameters: ProtocolParameters) -> OnChainParameters:
    """A stored version as ``evm.parameters.ProtocolParameters`` (the contract's maths)."""
    values = {name: getattr(parameters, name) for name in PARAMETER_FIELDS}
    return OnChainParameters(lender_btc_pubkey=bytes.fromhex(parameters.lender_btc_pubkey), **values)


def loan_create(
    *,
    borrower: User,
    amount_wei: int,
    borrower_btc_pubkey: str,
    borrower_hash: str,
    borrower_payout_address: str,
    fee_rate_sat_vb: Fraction | str | None = None,
) -> Loan:
    """A draft loan for ``borrower``: the newest parameters snapshotted, bond and repayment fixed, payout addresses
    set. With ``fee_rate_sat_vb``, also checks that TX_1 can be sized at that rate within the loan's bounds."""
    require(can_borrow(borrower), "only an active borrower may create a loan")
    parameters = ProtocolParameters.objects.order_by("-version").first()
    if parameters is None:
        raise _refuse("no_parameters", "no protocol parameters have been set yet")
    deployment = (
        ContractDeployment.objects.filter(chain_id=settings.EVM_CHAIN_ID).order_by("-created_at", "-id").first()
    )
    if deployment is None:
        raise _refuse("no_deployment", f"no contract deployment is recorded on chain {settings.EVM_CHAIN_ID}")
    paused = new_loans_paused(deployment=deployment)
    if paused is not None:
        raise _refuse("new_loans_paused", f"the desk is not taking new loans for now: {paused.paused_reason}")
    network = settings.BITCOIN_NETWORK
    lender_payout = getattr(settings, "LENDER_BTC_PAYOUT_ADDRESS", "")
    if not lender_payout:
        raise _refuse("no_lender_payout_address", "the desk has no LENDER_BTC_PAYOUT_ADDRESS configured")
    try:
        lender_payout = validate_address(lender_payout, network)
    except BitcoinProtocolError as error:
        raise _refuse("no_lender_payout_address", f"LENDER_BTC_PAYOUT_ADDRESS is not usable: {error}") from None

    terms = on_chain_parameters(parameters)
    if isinstance(amount_wei, bool) or not isinstance(amount_wei, int):
        raise _refuse("amount_out_of_bounds", "the amount must be a whole number of wei")
    if not parameters.min_amount_wei <= amount_wei <= parameters.max_amount_wei:
        raise _refuse(
            "amount_out_of_bounds",
            f"amount {amount_wei} wei is outside [{parameters.min_amount_wei}, {parameters.max_amount_wei}] wei",
        )
    try:
        xonly = parse_xonly_pubkey(borrower_btc_pubkey).hex()
    except BitcoinProtocolError as error:
        raise _refuse("invalid_key", f"xB: {error}") from None
    if xonly == parameters.lender_btc_pubkey.lower():
        raise _refuse("same_key_as_lender", "xB must not be the lender's key xL")
    try:
        hash_hex = parse_hash32(borrower_hash, "hB").hex()
    except BitcoinProtocolError as error:
        raise _refuse("invalid_hash", str(error)) from None
    if Loan.objects.filter(borrower_hash=hash_hex).exclude(status=Loan.Status.CANCELLED).exists():
        raise _refuse("borrower_hash_in_use", "hB is already used by a live loan: make a new preimage pB")
    try:
        payout = validate_address(borrower_payout_address, network)
    except BitcoinProtocolError as error:
        raise _refuse("invalid_payout_address", f"not a payout address on {network}: {error}") from None
    rate = None
    if fee_rate_sat_vb is not None:
        try:
            rate = parse_fee_rate(fee_rate_sat_vb)
        except BitcoinProtocolError as error:
            raise _refuse("invalid_fee_rate", str(error)) from None
        minimum, maximum = fee_rate_bounds()
        if not minimum <= rate <= maximum:
            raise _refuse("invalid_fee_rate", f"fee rate {rate} sat/vB is outside [{minimum}, {maximum}] sat/vB")

    loan = Loan(
        **{name: getattr(parameters, name) for name in PARAMETER_FIELDS},
        parameters=parameters,
        deployment=deployment,
        borrower=borrower,
        amount_wei=amount_wei,
        bond_wei=terms.bond(amount_wei),
        repayment_wei=terms.repayment_amount(amount_wei),
        borrower_btc_pubkey=xonly,
        lender_btc_pubkey=parameters.lender_btc_pubkey.lower(),
        borrower_hash=hash_hex,
        borrower_payout_address=payout,
        lender_payout_address=lender_payout,
    )
    try:
        facts = loan_facts(loan=loan)
    except BitcoinProtocolError as error:
        raise _refuse("invalid_loan_terms", f"these terms make no valid loan: {error}") from None
    threshold = dust_threshold(facts.lender_payout_script)
    if facts.origination_fee_sats < threshold:
        raise _refuse(
            "origination_fee_dust",
            f"the origination fee of {facts.origination_fee_sats} sat would be a dust output (below {threshold} "
            "sat): borrow more",
        )
    if rate is not None:
        try:
            funding_instructions_for_facts(facts, fee_rate_sat_vb=rate, fee_rate_source="requested")
        except BitcoinProtocolError as error:
            raise _refuse("invalid_fee_rate", f"TX_1 cannot be built at {rate} sat/vB: {error}") from None
    loan.collateral_sats = facts.collateral_sats
    loan.origination_fee_sats = facts.origination_fee_sats
    try:
        with transaction.atomic():
            loan.save(force_insert=True)
    except IntegrityError:
        if Loan.objects.filter(borrower_hash=hash_hex).exclude(status=Loan.Status.CANCELLED).exists():
            raise _refuse("borrower_hash_in_use", "hB is already used by a live loan: make a new preimage pB") from None
        raise
    return loan
