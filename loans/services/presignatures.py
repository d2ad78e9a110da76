"""The borrower's TX_1 pre-signature: ``presignature_upload`` (PSBT or raw 64-byte signature), verified in full.

The loan must be Requested on the contract with hL committed, and its escrow confirmed on Bitcoin (so the escrow
outpoint and value on the loan are the chain's, written by the watcher). The upload is checked by
``bitcoin.presignature.verify_borrower_presignature`` against ``loans.facts.loan_facts`` only: nothing the
borrower sent is believed. A refusal is a ``LoanServiceError`` (``PermissionDenied`` for anyone but the loan's
borrower) whose code is one of ``PRESIGNATURE_UPLOAD_CODES``; the verifier's reasons pass through unchanged.
Nothing is written on a refusal.

The same TX_1 again (same txid) returns its row: uploading twice is harmless. A signature over another valid TX_1
(e.g. at another fee rate) is stored as a row of its own.
"""

from __future__ import annotations

from django.db import transaction as db_transaction
from django.utils import timezone

from bitcoin.errors import BitcoinProtocolError, PresignatureError
from bitcoin.presignature import (
    TX1_REFUSAL_REASONS,
    VerifiedPresignature,
    check_tx1_transaction,
    verify_borrower_presignature,
)
from bitcoin.psbt import Psbt
from bitcoin.transactions import Transaction

from ..errors import LoanServiceError
from ..facts import loan_facts
from ..models import BorrowerSignature, Loan, User
from ..permissions import is_loan_borrower, require

# bitcoin.presignature's reasons a TX_1 upload can meet, listed there once.
PRESIGNATURE_REASONS: tuple[str, ...] = TX1_REFUSAL_REASONS
PRESIGNATURE_UPLOAD_CODES: tuple[str, ...] = (
    "wrong_state",
    "lender_hash_missing",
    "escrow_not_confirmed",
    "invalid_loan_terms",
    *PRESIGNATURE_REASONS,
)


def _refuse(code: str, message: str) -> LoanServiceError:
    return LoanServiceError(message, code=code)


def _check_state(loan: Loan) -> None:
    if loan.status != Loan.Status.REQUESTED:
        raise _refuse("wrong_state", f"loan {loan.pk} is {loan.status}: TX_1 is pre-signed while it is requested")
    if loan.lender_hash is None:
        raise _refuse("lender_hash_missing", f"loan {loan.pk} has no hL yet: TX_1's collateral output needs it")
    funded = loan.escrow_txid is not None and loan.escrow_vout is not None and loan.escrow_sats is not None
    if loan.bitcoin_status != Loan.BitcoinStatus.ESCROW_CONFIRMED or not funded:
        raise _refuse(
            "escrow_not_confirmed",
            f"loan {loan.pk}'s escrow is {loan.bitcoin_status}: TX_1 is pre-signed once the escrow is confirmed",
        )


def _verify(loan: Loan, **upload: object) -> VerifiedPresignature:
    try:
        facts = loan_facts(loan=loan)
        return verify_borrower_presignature(facts, **upload)  # type: ignore[arg-type]
    except PresignatureError as error:
        raise _refuse(error.reason, str(error.args[0])) from None
    except BitcoinProtocolError as error:
        raise _refuse("invalid_loan_terms", f"loan {loan.pk}'s facts make no TX_1: {error}") from None


def presignature_upload(
    *,
    loan: Loan,
    actor: User,
    psbt: str | None = None,
    signature: str | None = None,
    transaction: str | None = None,
) -> BorrowerSignature:
    """Verify and store the borrower's TX_1 pre-signature: ``psbt`` (base64 or hex), or ``signature`` (hex, 64
    bytes) with the unsigned ``transaction`` (hex). Returns the stored row (the existing one for the same TX_1)."""
    require(is_loan_borrower(actor, loan), "only the loan's borrower uploads its TX_1 pre-signature")
    with db_transaction.atomic():
        locked = Loan.objects.select_for_update().get(pk=loan.pk)
        require(is_loan_borrower(actor, locked), "only the loan's borrower uploads its TX_1 pre-signature")
        _check_state(locked)
        verified = _verify(locked, psbt=psbt, signature=signature, transaction=transaction)
        tx = verified.transaction
        existing = BorrowerSignature.objects.filter(loan=locked, txid=tx.txid).first()
        if existing is not None:
            return existing
        return BorrowerSignature.objects.create(
            loan=locked,
            form=BorrowerSignature.Form.PSBT if psbt is not None else BorrowerSignature.Form.RAW,
            psbt_base64=_psbt_base64(psbt) if psbt is not None else "",
            signature_hex=verified.borrower_signature.hex(),
            sighash_hex=verified.sighash.hex(),
            unsigned_tx_hex=tx.serialize(include_witness=False).hex(),
            txid=tx.txid,
            verified_at=timezone.now(),
            uploaded_by=actor,
        )


def _psbt_base64(psbt: str) -> str:
    """The uploaded PSBT as base64 (it verified, so it parses)."""
    return Psbt.load(psbt).to_base64()


def presignature_amounts(*, signature: BorrowerSignature) -> VerifiedPresignature:
    """A stored pre-signature's TX_1 re-checked against its loan's facts, for its amounts and fee rate."""
    facts = loan_facts(loan=signature.loan)
    prepared = check_tx1_transaction(facts, Transaction.parse(signature.unsigned_tx_hex))
    return VerifiedPresignature(
        prepared=prepared,
        borrower_signature=bytes.fromhex(signature.signature_hex),
        sighash=bytes.fromhex(signature.sighash_hex),
    )


__all__ = ["PRESIGNATURE_REASONS", "PRESIGNATURE_UPLOAD_CODES", "presignature_amounts", "presignature_upload"]
