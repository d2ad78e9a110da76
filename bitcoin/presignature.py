"""Lender-side verification of the borrower's TX_1 pre-signature (protocol flaw 4).

Before L co-signs TX_1 or offers the loan, L checks that B's signature commits to exactly the transaction the
loan allows, using only facts L holds: the loan's snapshotted keys, hashes and timelocks, the escrow outpoint,
the escrow value *as observed on chain by the caller*, the loan amount, the origination fee and L's payout
address. Nothing the borrower uploaded is believed: the PSBT's witness UTXO, leaf scripts and control blocks
are ignored except to refuse contradictions; the prevout script is derived, the value comes from the chain.

Checks, each refused with its own ``PresignatureError.reason``:

* ``malformed_psbt`` / ``malformed_transaction`` / ``malformed_signature`` / ``missing_signature`` /
  ``ambiguous_upload`` (both a PSBT and a raw signature)
* ``wrong_version`` (must be 2), ``wrong_input_count`` (1), ``wrong_outpoint``, ``wrong_sequence``
  (0xfffffffd), ``wrong_locktime`` (0), ``nonempty_script_sig``
* ``witness_utxo_mismatch``: the PSBT claims another prevout script or value than the chain
* ``wrong_output_count`` (2), ``wrong_fee_output`` (output 0 not to L's payout), ``wrong_fee_amount``
  (not amount x bps // 10000), ``wrong_collateral_output`` (output 1 not the derived collateral script),
  ``insufficient_collateral`` (below amount x ratio)
* ``outputs_exceed_input``, ``fee_rate_too_low``, ``fee_rate_too_high`` (rate over the exact final vsize)
* ``wrong_sighash_type`` (a 65-byte signature, or a PSBT sighash field other than SIGHASH_DEFAULT)
* ``wrong_leaf`` (valid, but over the escrow's leaf 0 sighash), ``wrong_signer`` (made by xL, or recorded
  in the PSBT under another key), ``invalid_signature`` (anything else that does not verify for xB)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from bitcoin.addresses import address_to_script_pubkey
from bitcoin.errors import FeeError, InvalidParameterError, PresignatureError, PsbtError, TransactionError
from bitcoin.fees import parse_fee_rate
from bitcoin.keys import verify_schnorr
from bitcoin.networks import Network, get_network
from bitcoin.psbt import Psbt
from bitcoin.scripts import HASHLOCK_LEAF, TIMELOCK_LEAF, LoanScripts
from bitcoin.transactions import (
    BPS,
    SEQUENCE_RBF_NO_LOCK,
    SIGHASH_DEFAULT,
    TX_VERSION,
    FeeRate,
    OutPoint,
    PreparedSpend,
    SpendKind,
    Transaction,
    TxOut,
    check_amount_sats,
    check_bps,
    final_vsize,
    minimum_collateral_sats,
    origination_fee_sats,
    taproot_sighash,
)


@dataclass(frozen=True)
class VerifiedPresignature:
    """A TX_1 whose borrower signature L has verified; ``prepared`` is ready for L's signature and pB."""

    prepared: PreparedSpend
    borrower_signature: bytes
    sighash: bytes
    origination_fee_sats: int
    collateral_sats: int
    miner_fee_sats: int
    fee_rate_sat_vb: Fraction

    @property
    def transaction(self) -> Transaction:
        """The verified unsigned TX_1."""
        return self.prepared.tx


def _refuse(reason: str, message: str) -> PresignatureError:
    return PresignatureError(reason, message)


def _load_inputs(
    psbt: str | bytes | Psbt | None,
    signature: bytes | str | None,
    transaction: bytes | str | Transaction | None,
    scripts: LoanScripts,
) -> tuple[Transaction, bytes, Psbt | None]:
    """(unsigned tx, borrower signature, parsed PSBT or None) from either upload form."""
    if psbt is not None:
        if signature is not None or transaction is not None:
            raise _refuse("ambiguous_upload", "send either a PSBT or a raw signature with its transaction")
        try:
            parsed = psbt if isinstance(psbt, Psbt) else Psbt.load(psbt)
        except PsbtError as error:
            raise _refuse("malformed_psbt", str(error)) from None
        if len(parsed.inputs) != 1:
            raise _refuse("wrong_input_count", f"TX_1 has exactly one input, the PSBT has {len(parsed.inputs)}")
        try:
            hash_type = parsed.sighash_type(0)
            signatures = parsed.tap_script_sigs(0)
        except PsbtError as error:
            raise _refuse("malformed_psbt", str(error)) from None
        if hash_type not in (None, SIGHASH_DEFAULT):
            raise _refuse("wrong_sighash_type", f"PSBT asks for sighash type {hash_type}, not SIGHASH_DEFAULT")
        escrow = scripts.escrow
        wanted = (scripts.borrower_pubkey, escrow.leaf_hash(HASHLOCK_LEAF))
        if wanted in signatures:
            return parsed.unsigned_tx, signatures[wanted], parsed
        if (scripts.borrower_pubkey, escrow.leaf_hash(TIMELOCK_LEAF)) in signatures:
            raise _refuse("wrong_leaf", "the borrower signed the escrow's timelock leaf, not the hashlock leaf")
        if signatures:
            raise _refuse("wrong_signer", "the PSBT holds no signature of the borrower's key for the hashlock leaf")
        raise _refuse("missing_signature", "the PSBT carries no tap script signature")
    if signature is None or transaction is None:
        raise _refuse("missing_signature", "send a PSBT, or a raw 64-byte signature together with the transaction")
    if isinstance(signature, str):
        try:
            signature = bytes.fromhex(signature.strip())
        except ValueError:
            raise _refuse("malformed_signature", "signature is not valid hex") from None
    if isinstance(transaction, Transaction):
        tx = transaction
    else:
        try:
            tx = Transaction.parse(transaction)
        except TransactionError as error:
            raise _refuse("malformed_transaction", str(error)) from None
    return tx.without_witness(), bytes(signature), None


@dataclass(frozen=True)
class _Expected:
    """Everything the loan's own facts say TX_1 must be."""

    scripts: LoanScripts
    escrow_outpoint: OutPoint
    prevout: TxOut
    fee_script: bytes
    fee_sats: int
    required_collateral_sats: int
    min_rate: Fraction
    max_rate: Fraction


def _expectations(
    *,
    network: Network | str,
    borrower_pubkey: bytes | str,
    lender_pubkey: bytes | str,
    borrower_hash: bytes | str,
    lender_hash: bytes | str,
    escrow_timelock: int,
    collateral_timelock: int,
    escrow_outpoint: OutPoint,
    escrow_value_sats: int,
    loan_amount_sats: int,
    origination_fee_bps: int,
    lender_payout_address: str,
    min_fee_rate_sat_vb: FeeRate,
    max_fee_rate_sat_vb: FeeRate,
    min_collateral_ratio_bps: int,
) -> _Expected:
    """Validate the caller's facts (plain protocol errors, not refusals) and derive the expected TX_1."""
    net = get_network(network)
    scripts = LoanScripts(
        borrower_pubkey=borrower_pubkey,  # type: ignore[arg-type]
        lender_pubkey=lender_pubkey,  # type: ignore[arg-type]
        borrower_hash=borrower_hash,  # type: ignore[arg-type]
        lender_hash=lender_hash,  # type: ignore[arg-type]
        escrow_timelock=escrow_timelock,
        collateral_timelock=collateral_timelock,
    )
    if not isinstance(escrow_outpoint, OutPoint):
        raise InvalidParameterError("escrow outpoint must be an OutPoint")
    check_amount_sats(loan_amount_sats, "loan amount")
    check_amount_sats(escrow_value_sats, "escrow value")
    check_bps(origination_fee_bps, "origination fee", 0, BPS)
    check_bps(min_collateral_ratio_bps, "minimum collateral ratio", BPS, 100 * BPS)
    min_rate = parse_fee_rate(min_fee_rate_sat_vb)
    max_rate = parse_fee_rate(max_fee_rate_sat_vb)
    if min_rate > max_rate:
        raise FeeError("minimum fee rate is above the maximum")
    return _Expected(
        scripts=scripts,
        escrow_outpoint=escrow_outpoint,
        prevout=TxOut(escrow_value_sats, scripts.escrow.script_pubkey),
        fee_script=address_to_script_pubkey(lender_payout_address, net),
        fee_sats=origination_fee_sats(loan_amount_sats, origination_fee_bps),
        required_collateral_sats=minimum_collateral_sats(loan_amount_sats, min_collateral_ratio_bps),
        min_rate=min_rate,
        max_rate=max_rate,
    )


def _check_structure(tx: Transaction, expected: _Expected, claimed_prevout: TxOut | None) -> PreparedSpend:
    """Refuse any TX_1 that is not exactly what the loan allows; return it prepared for signing."""
    scripts = expected.scripts
    if tx.version != TX_VERSION:
        raise _refuse("wrong_version", f"TX_1 must be version 2, got {tx.version}")
    if len(tx.inputs) != 1:
        raise _refuse("wrong_input_count", f"TX_1 must have exactly one input, got {len(tx.inputs)}")
    txin = tx.inputs[0]
    if txin.outpoint != expected.escrow_outpoint:
        raise _refuse(
            "wrong_outpoint", f"TX_1 spends {txin.outpoint}, not the loan's escrow {expected.escrow_outpoint}"
        )
    if txin.sequence != SEQUENCE_RBF_NO_LOCK:
        raise _refuse("wrong_sequence", f"TX_1 nSequence must be 0xfffffffd, got 0x{txin.sequence:08x}")
    if tx.locktime != 0:
        raise _refuse("wrong_locktime", f"TX_1 locktime must be 0, got {tx.locktime}")
    if txin.script_sig:
        raise _refuse("nonempty_script_sig", "TX_1's input must have an empty scriptSig")
    prevout = expected.prevout
    if claimed_prevout is not None and claimed_prevout != prevout:
        raise _refuse(
            "witness_utxo_mismatch",
            f"the PSBT claims the escrow holds {claimed_prevout.value} sat under "
            f"{claimed_prevout.script_pubkey.hex()}; the chain says {prevout.value} sat under "
            f"{prevout.script_pubkey.hex()}",
        )
    if len(tx.outputs) != 2:
        raise _refuse("wrong_output_count", f"TX_1 must have exactly two outputs, got {len(tx.outputs)}")
    fee_output, collateral_output = tx.outputs
    if fee_output.script_pubkey != expected.fee_script:
        raise _refuse("wrong_fee_output", "output 0 does not pay the lender's payout address")
    if fee_output.value != expected.fee_sats:
        raise _refuse(
            "wrong_fee_amount",
            f"output 0 pays {fee_output.value} sat; the origination fee is {expected.fee_sats} sat",
        )
    if collateral_output.script_pubkey != scripts.collateral.script_pubkey:
        raise _refuse("wrong_collateral_output", "output 1 is not the loan's collateral output")
    if collateral_output.value < expected.required_collateral_sats:
        raise _refuse(
            "insufficient_collateral",
            f"output 1 locks {collateral_output.value} sat; "
            f"at least {expected.required_collateral_sats} sat are required",
        )
    miner_fee = prevout.value - fee_output.value - collateral_output.value
    if miner_fee < 0:
        raise _refuse("outputs_exceed_input", "TX_1's outputs exceed the escrow's on-chain value")
    prepared = PreparedSpend(
        kind=SpendKind.TX_1,
        tx=tx,
        prevout=prevout,
        tree=scripts.escrow,
        leaf_index=HASHLOCK_LEAF,
        signers=(scripts.borrower_pubkey, scripts.lender_pubkey),
        preimage_hash=scripts.borrower_hash,
        fee_sats=miner_fee,
        collateral=scripts.collateral,
    )
    fee_rate = Fraction(miner_fee, final_vsize(prepared))
    if fee_rate < expected.min_rate:
        raise _refuse(
            "fee_rate_too_low", f"TX_1 pays {_rate(fee_rate)} sat/vB, below {_rate(expected.min_rate)} sat/vB"
        )
    if fee_rate > expected.max_rate:
        raise _refuse(
            "fee_rate_too_high", f"TX_1 pays {_rate(fee_rate)} sat/vB, above {_rate(expected.max_rate)} sat/vB"
        )
    return prepared


def _rate(rate: Fraction) -> str:
    """A fee rate for messages, to 3 decimals (display only; all checks use the exact fraction)."""
    return str((Decimal(rate.numerator) / rate.denominator).quantize(Decimal("0.001")))


def check_tx1_transaction(
    *,
    network: Network | str,
    borrower_pubkey: bytes | str,
    lender_pubkey: bytes | str,
    borrower_hash: bytes | str,
    lender_hash: bytes | str,
    escrow_timelock: int,
    collateral_timelock: int,
    escrow_outpoint: OutPoint,
    escrow_value_sats: int,
    loan_amount_sats: int,
    origination_fee_bps: int,
    lender_payout_address: str,
    min_fee_rate_sat_vb: FeeRate,
    max_fee_rate_sat_vb: FeeRate,
    transaction: Transaction,
    claimed_prevout: TxOut | None = None,
    min_collateral_ratio_bps: int = BPS,
) -> PreparedSpend:
    """Check an *unsigned* TX_1 against the loan's facts (every check except the signature).

    For the borrower before signing (``python -m bitcoin sign`` with the loan's facts) and for the lender.
    Returns the TX_1 prepared for signing; raises ``PresignatureError`` with the same reasons as
    ``verify_borrower_presignature``.
    """
    expected = _expectations(
        network=network,
        borrower_pubkey=borrower_pubkey,
        lender_pubkey=lender_pubkey,
        borrower_hash=borrower_hash,
        lender_hash=lender_hash,
        escrow_timelock=escrow_timelock,
        collateral_timelock=collateral_timelock,
        escrow_outpoint=escrow_outpoint,
        escrow_value_sats=escrow_value_sats,
        loan_amount_sats=loan_amount_sats,
        origination_fee_bps=origination_fee_bps,
        lender_payout_address=lender_payout_address,
        min_fee_rate_sat_vb=min_fee_rate_sat_vb,
        max_fee_rate_sat_vb=max_fee_rate_sat_vb,
        min_collateral_ratio_bps=min_collateral_ratio_bps,
    )
    return _check_structure(transaction.without_witness(), expected, claimed_prevout)


def verify_borrower_presignature(
    *,
    network: Network | str,
    borrower_pubkey: bytes | str,
    lender_pubkey: bytes | str,
    borrower_hash: bytes | str,
    lender_hash: bytes | str,
    escrow_timelock: int,
    collateral_timelock: int,
    escrow_outpoint: OutPoint,
    escrow_value_sats: int,
    loan_amount_sats: int,
    origination_fee_bps: int,
    lender_payout_address: str,
    min_fee_rate_sat_vb: FeeRate,
    max_fee_rate_sat_vb: FeeRate,
    min_collateral_ratio_bps: int = BPS,
    psbt: str | bytes | Psbt | None = None,
    signature: bytes | str | None = None,
    transaction: bytes | str | Transaction | None = None,
) -> VerifiedPresignature:
    """Verify B's TX_1 pre-signature against the loan's own facts; raise ``PresignatureError`` if refused.

    Pass either ``psbt`` (base64, hex or binary BIP-174 with a BIP-371 tap script sig keyed by
    (xB, hashlock leaf hash)), or ``signature`` (64 bytes or hex) plus ``transaction`` (the unsigned TX_1).
    ``escrow_value_sats`` must be the value of the escrow UTXO as read from the chain by the caller.
    Invalid expected facts (the caller's own data) raise ``InvalidParameterError``/``InvalidKeyError``.
    """
    expected = _expectations(
        network=network,
        borrower_pubkey=borrower_pubkey,
        lender_pubkey=lender_pubkey,
        borrower_hash=borrower_hash,
        lender_hash=lender_hash,
        escrow_timelock=escrow_timelock,
        collateral_timelock=collateral_timelock,
        escrow_outpoint=escrow_outpoint,
        escrow_value_sats=escrow_value_sats,
        loan_amount_sats=loan_amount_sats,
        origination_fee_bps=origination_fee_bps,
        lender_payout_address=lender_payout_address,
        min_fee_rate_sat_vb=min_fee_rate_sat_vb,
        max_fee_rate_sat_vb=max_fee_rate_sat_vb,
        min_collateral_ratio_bps=min_collateral_ratio_bps,
    )
    scripts = expected.scripts
    tx, borrower_signature, parsed_psbt = _load_inputs(psbt, signature, transaction, scripts)
    claimed_prevout = None
    if parsed_psbt is not None:
        try:
            claimed_prevout = parsed_psbt.witness_utxo(0)
        except PsbtError as error:
            raise _refuse("malformed_psbt", str(error)) from None
    prepared = _check_structure(tx, expected, claimed_prevout)

    if len(borrower_signature) == 65:
        raise _refuse(
            "wrong_sighash_type",
            f"65-byte signature with sighash type 0x{borrower_signature[64]:02x}; only SIGHASH_DEFAULT is accepted",
        )
    if len(borrower_signature) != 64:
        raise _refuse("malformed_signature", f"signature must be 64 bytes, got {len(borrower_signature)}")
    sighash = prepared.sighash()
    if not verify_schnorr(scripts.borrower_pubkey, sighash, borrower_signature):
        other_leaf = taproot_sighash(
            prepared.tx, 0, [prepared.prevout], SIGHASH_DEFAULT, scripts.escrow.leaf_hash(TIMELOCK_LEAF)
        )
        if verify_schnorr(scripts.borrower_pubkey, other_leaf, borrower_signature):
            raise _refuse("wrong_leaf", "the signature is over the escrow's timelock leaf, not the hashlock leaf")
        if verify_schnorr(scripts.lender_pubkey, sighash, borrower_signature):
            raise _refuse("wrong_signer", "the signature was made with the lender's key, not the borrower's")
        raise _refuse("invalid_signature", "the signature does not verify for the borrower's key over TX_1")
    fee_output, collateral_output = prepared.tx.outputs
    return VerifiedPresignature(
        prepared=prepared,
        borrower_signature=borrower_signature,
        sighash=sighash,
        origination_fee_sats=fee_output.value,
        collateral_sats=collateral_output.value,
        miner_fee_sats=prepared.fee_sats,
        fee_rate_sat_vb=prepared.fee_rate,
    )
