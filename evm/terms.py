"""What the borrower asked for, and the check of a loan's on-chain snapshot against it.

PROTOCOL.md, "A request binds the terms B saw": `requestLoan` carries the parameters version B was shown, and B's
client checks the loan's snapshot (`getLoan`) against what B asked for before every later step, above all before
`acceptLoanOffer` reveals pB. `BorrowerTerms` is what B asked for; `check_loan_terms` compares a `Loan` with it
and raises `BorrowerStepRefused` with a stable reason code for the first difference.

Reason codes (stable; `BorrowerStepRefused.reason`):

- ``wrong_borrower``, ``wrong_amount``, ``wrong_borrower_btc_pubkey``, ``wrong_borrower_hash``,
  ``wrong_escrow_txid``, ``wrong_escrow_vout``, ``wrong_escrow_sats``, ``wrong_parameters_version``: that field of
  the loan is not what B asked for (usually: the loan id names another loan);
- ``wrong_parameters``: the loan's parameter snapshot differs from the values B was shown (`fields` names them);
- ``wrong_lender_btc_pubkey``, ``wrong_processing_fee``, ``wrong_repayment_amount``, ``wrong_bond``: an amount or
  key the contract derives from the snapshot is not what those parameters give (a contract that is not ours);
- ``not_offered`` (an accept for a loan that is not Offered) and ``accept_cutoff`` (fewer than the loan's
  `accept_cutoff_blocks` blocks left in the offer window), raised by `LoanContractClient.accept_loan_offer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BorrowerStepRefused, InvalidArgument
from .parameters import FIELDS, UINT32, UINT64, ProtocolParameters, as_bytes32, as_uint

if TYPE_CHECKING:  # evm.client imports this module
    from .client import Loan

#: The reasons ``check_loan_terms`` gives: the loan's snapshot is not what the borrower asked for.
TERMS_REFUSAL_REASONS: tuple[str, ...] = (
    "wrong_borrower",
    "wrong_amount",
    "wrong_borrower_btc_pubkey",
    "wrong_borrower_hash",
    "wrong_escrow_txid",
    "wrong_escrow_vout",
    "wrong_escrow_sats",
    "wrong_parameters_version",
    "wrong_parameters",
    "wrong_lender_btc_pubkey",
    "wrong_processing_fee",
    "wrong_repayment_amount",
    "wrong_bond",
)
REFUSAL_REASONS: tuple[str, ...] = (*TERMS_REFUSAL_REASONS, "not_offered", "accept_cutoff")


@dataclass(frozen=True, kw_only=True)
class BorrowerTerms:
    """The terms B asked for: the request's arguments, B's EVM address and the parameters (version and values) B was
    shown. Build it when B requests and keep it with the loan; never rebuild it from the chain (it is what the chain
    is checked against)."""

    borrower: str  # B's EVM address, the request's sender
    amount_wei: int
    borrower_btc_pubkey: bytes  # xB, x-only
    borrower_hash: bytes  # hB
    escrow_txid: bytes  # as passed to requestLoan (the displayed byte order)
    escrow_vout: int
    escrow_sats: int
    parameters_version: int
    parameters: ProtocolParameters

    def __post_init__(self) -> None:
        from .client import as_address  # evm.client imports this module

        object.__setattr__(self, "borrower", as_address(self.borrower, "borrower"))
        as_uint(self.amount_wei, "amount_wei")
        for name in ("borrower_btc_pubkey", "borrower_hash", "escrow_txid"):
            value = as_bytes32(getattr(self, name), name)
            if value == bytes(32):
                raise InvalidArgument(f"{name} must not be zero")
            object.__setattr__(self, name, value)
        as_uint(self.escrow_vout, "escrow_vout", UINT32)
        if as_uint(self.escrow_sats, "escrow_sats", UINT64) == 0:
            raise InvalidArgument("escrow_sats must be positive")
        if as_uint(self.parameters_version, "parameters_version") == 0:
            raise InvalidArgument("parameters_version must be positive (versions start at 1)")
        if not isinstance(self.parameters, ProtocolParameters):
            raise InvalidArgument("parameters must be a ProtocolParameters")

    @property
    def processing_fee_wei(self) -> int:
        return self.parameters.processing_fee_wei

    @property
    def repayment_wei(self) -> int:
        """What B agreed to repay: amount + interest under the parameters shown."""
        return self.parameters.repayment_amount(self.amount_wei)

    @property
    def bond_wei(self) -> int:
        """The bond B is promised if L does not accept a repayment."""
        return self.parameters.bond(self.amount_wei)


def _refuse(loan: Loan, reason: str, what: str, on_chain: object, asked: object) -> BorrowerStepRefused:
    def show(value: object) -> str:
        return "0x" + value.hex() if isinstance(value, bytes) else str(value)

    return BorrowerStepRefused(
        reason, f"loan {loan.loan_id}: {what} is {show(on_chain)} on chain, but the borrower asked for {show(asked)}"
    )


def check_loan_terms(loan: Loan, terms: BorrowerTerms) -> None:
    """Raise `BorrowerStepRefused` unless the loan's on-chain snapshot is exactly what `terms` asked for: every field
    of the request, the parameters version and every parameter value, and what the contract derived from them
    (processing fee, repayment, xL, and the bond once offered). The first difference found is reported."""
    for reason, what, on_chain, asked in (
        ("wrong_borrower", "the borrower", loan.borrower, terms.borrower),
        ("wrong_amount", "the amount (wei)", loan.amount, terms.amount_wei),
        ("wrong_borrower_btc_pubkey", "xB", loan.borrower_btc_pubkey, terms.borrower_btc_pubkey),
        ("wrong_borrower_hash", "hB", loan.borrower_hash, terms.borrower_hash),
        ("wrong_escrow_txid", "the escrow txid", loan.escrow_txid, terms.escrow_txid),
        ("wrong_escrow_vout", "the escrow vout", loan.escrow_vout, terms.escrow_vout),
        ("wrong_escrow_sats", "the escrow value (sats)", loan.escrow_sats, terms.escrow_sats),
        ("wrong_parameters_version", "the parameters version", loan.parameters_version, terms.parameters_version),
    ):
        if on_chain != asked:
            raise _refuse(loan, reason, what, on_chain, asked)
    differing = tuple(name for name, _, _, _ in FIELDS if getattr(loan.params, name) != getattr(terms.parameters, name))
    if differing:
        shown = ", ".join(
            f"{name} {getattr(loan.params, name)!r} (shown {getattr(terms.parameters, name)!r})" for name in differing
        )
        raise BorrowerStepRefused(
            "wrong_parameters",
            f"loan {loan.loan_id}: its parameters differ from those the borrower was shown: {shown}",
            fields=differing,
        )
    p = terms.parameters
    for reason, what, on_chain, asked in (
        ("wrong_lender_btc_pubkey", "xL", loan.lender_btc_pubkey, p.lender_btc_pubkey),
        ("wrong_processing_fee", "the processing fee (wei)", loan.processing_fee, terms.processing_fee_wei),
        ("wrong_repayment_amount", "the repayment (wei)", loan.repayment_amount, terms.repayment_wei),
    ):
        if on_chain != asked:
            raise _refuse(loan, reason, what, on_chain, asked)
    if loan.offer_block and loan.bond != terms.bond_wei:
        raise _refuse(loan, "wrong_bond", "the bond (wei)", loan.bond, terms.bond_wei)


__all__ = ("REFUSAL_REASONS", "TERMS_REFUSAL_REASONS", "BorrowerStepRefused", "BorrowerTerms", "check_loan_terms")
