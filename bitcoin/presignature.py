"""Checking a loan transaction against the loan's facts, on both sides.

The lender (flaw 4): before L co-signs TX_1 or offers the loan, ``verify_borrower_presignature`` checks that B's
signature commits to exactly the TX_1 the loan allows, using only facts L holds (``LoanFacts``, with the escrow
value *as observed on chain by the caller*). Nothing the borrower uploaded is believed: the PSBT's witness UTXO,
leaf scripts and control blocks are ignored except to refuse contradictions; the prevout script is derived.

The borrower (attack 16): before B's signer (``python -m bitcoin sign``, the browser) signs anything,
``check_borrower_transaction`` says which of the loan's transactions it is (TX_1, TX_exit or TX_release) and
refuses it unless it pays exactly what the loan says, so a server cannot redirect the escrow or the collateral.

Refusals, each with its own ``PresignatureError.reason``:

* ``malformed_psbt`` / ``malformed_transaction`` / ``malformed_signature`` / ``missing_signature`` /
  ``ambiguous_upload`` (both a PSBT and a raw signature), ``not_a_loan_transaction``
* ``wrong_version`` (must be 2), ``wrong_input_count`` (1), ``wrong_outpoint``, ``wrong_sequence``
  (0xfffffffd, or the CSV of a timelock leaf), ``wrong_locktime`` (0), ``nonempty_script_sig``
* ``witness_utxo_mismatch``: the PSBT claims another prevout script or value than the loan (and the chain)
* TX_1: ``wrong_output_count`` (2 or 3), ``wrong_fee_output`` (output 0 not to L's payout), ``wrong_fee_amount``
  (not amount x bps // 10000), ``dust_fee_output``, ``wrong_collateral_output`` (output 1 not the derived
  collateral script), ``insufficient_collateral`` / ``collateral_above_cap`` (above repayment + bond) /
  ``wrong_collateral_amount`` (the collateral is exactly amount x ratio), ``wrong_change_output`` (output 2 not
  to B's payout), ``dust_change_output``, ``missing_change_output`` (the miner would get B's change)
* sweeps: ``wrong_output_count`` (1), ``wrong_payout_output`` (not to its owner's payout), ``dust_payout_output``
* ``outputs_exceed_input``, ``fee_rate_too_low``, ``fee_rate_too_high`` (rate over the exact final vsize)
* ``wrong_sighash_type`` (a 65-byte signature, or a PSBT sighash field other than SIGHASH_DEFAULT)
* ``wrong_leaf`` (valid, but over the escrow's leaf 0 sighash), ``wrong_signer`` (made by xL, or recorded
  in the PSBT under another key), ``invalid_signature`` (anything else that does not verify for xB)
* ``malformed_witness``: a finalized sweep whose witness is not ``[sigB, (pL), leaf, control]`` of its leaf

The lender's side of B's pre-signed ladders (PROTOCOL.md: the borrower needs no long-lived Bitcoin key):
``verify_borrower_sweep_signature`` checks one TX_release or TX_exit rung (PSBT, or a finalized TX_exit) in full
and its signature over the kind's leaf, with the same reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction

from bitcoin.encoding import sha256
from bitcoin.errors import PresignatureError, PsbtError, TransactionError
from bitcoin.fees import dust_threshold, fee_for_vsize
from bitcoin.keys import verify_schnorr
from bitcoin.loan import LoanFacts
from bitcoin.psbt import Psbt
from bitcoin.scripts import HASHLOCK_LEAF, TIMELOCK_LEAF
from bitcoin.transactions import (
    CHANGE_OUTPUT_INDEX,
    COLLATERAL_OUTPUT_INDEX,
    FEE_OUTPUT_INDEX,
    SEQUENCE_RBF_NO_LOCK,
    SIGHASH_DEFAULT,
    TX_VERSION,
    OutPoint,
    PreparedSpend,
    SpendKind,
    Transaction,
    TxOut,
    collateral_outpoint,
    final_vsize,
    sweep_payout_script,
    sweep_prepared,
    sweep_sequence,
    taproot_sighash,
    tx1_prepared,
)


@dataclass(frozen=True)
class VerifiedBorrowerSignature:
    """A loan transaction whose borrower signature verified: the prepared spend, the signature and its sighash."""

    prepared: PreparedSpend
    borrower_signature: bytes
    sighash: bytes

    @property
    def transaction(self) -> Transaction:
        """The verified unsigned transaction."""
        return self.prepared.tx


@dataclass(frozen=True)
class VerifiedPresignature(VerifiedBorrowerSignature):
    """A TX_1 whose borrower signature L has verified; ``prepared`` is ready for L's signature and pB."""

    @property
    def origination_fee_sats(self) -> int:
        return self.prepared.tx.outputs[FEE_OUTPUT_INDEX].value

    @property
    def collateral_sats(self) -> int:
        return self.prepared.tx.outputs[COLLATERAL_OUTPUT_INDEX].value

    @property
    def change_sats(self) -> int:
        """B's change (output 2), 0 when the remainder was dust and went to the miner."""
        outputs = self.prepared.tx.outputs
        return outputs[CHANGE_OUTPUT_INDEX].value if len(outputs) > CHANGE_OUTPUT_INDEX else 0

    @property
    def miner_fee_sats(self) -> int:
        return self.prepared.fee_sats

    @property
    def fee_rate_sat_vb(self) -> Fraction:
        return self.prepared.fee_rate


#: What any uploaded pre-signature can be refused for: its form and the frame of its one input.
_FRAME_REFUSAL_REASONS: tuple[str, ...] = (
    "malformed_psbt",
    "malformed_transaction",
    "malformed_signature",
    "missing_signature",
    "ambiguous_upload",
    "wrong_version",
    "wrong_input_count",
    "wrong_outpoint",
    "wrong_sequence",
    "wrong_locktime",
    "nonempty_script_sig",
    "witness_utxo_mismatch",
    "wrong_output_count",
)
#: The money: inputs and the loan's fee-rate bounds.
_FEE_REFUSAL_REASONS: tuple[str, ...] = ("outputs_exceed_input", "fee_rate_too_low", "fee_rate_too_high")
#: The signature itself.
_SIGNATURE_REFUSAL_REASONS: tuple[str, ...] = ("wrong_sighash_type", "wrong_leaf", "wrong_signer", "invalid_signature")
#: Every reason a TX_1 upload can be refused with (stable: the API returns them as error codes).
TX1_REFUSAL_REASONS: tuple[str, ...] = (
    *_FRAME_REFUSAL_REASONS,
    *(  # TX_1's outputs
        "wrong_fee_output",
        "wrong_fee_amount",
        "dust_fee_output",
        "wrong_collateral_output",
        "insufficient_collateral",
        "collateral_above_cap",
        "wrong_collateral_amount",
        "wrong_change_output",
        "dust_change_output",
        "missing_change_output",
    ),
    *_FEE_REFUSAL_REASONS,
    *_SIGNATURE_REFUSAL_REASONS,
)
#: The reasons only the borrower's check of a sweep (TX_exit, TX_release) or of an unknown transaction gives.
SWEEP_REFUSAL_REASONS: tuple[str, ...] = ("wrong_payout_output", "dust_payout_output", "not_a_loan_transaction")
#: Every reason ``verify_borrower_sweep_signature`` (a TX_release or TX_exit rung of B's ladders) can give;
#: ``malformed_witness`` (a finalized rung whose witness is not its leaf's) is its own.
SWEEP_SIGNATURE_REFUSAL_REASONS: tuple[str, ...] = (
    *_FRAME_REFUSAL_REASONS,
    "wrong_payout_output",
    "dust_payout_output",
    *_FEE_REFUSAL_REASONS,
    *_SIGNATURE_REFUSAL_REASONS,
    "malformed_witness",
)
REFUSAL_REASONS = frozenset(TX1_REFUSAL_REASONS + SWEEP_REFUSAL_REASONS + SWEEP_SIGNATURE_REFUSAL_REASONS)


def _refuse(reason: str, message: str) -> PresignatureError:
    if reason not in REFUSAL_REASONS:  # a new reason must be listed above (and documented by the API)
        raise ValueError(f"unlisted refusal reason {reason!r}")
    return PresignatureError(reason, message)


def _load_inputs(
    psbt: str | bytes | Psbt | None,
    signature: bytes | str | None,
    transaction: bytes | str | Transaction | None,
    facts: LoanFacts,
) -> tuple[Transaction, bytes, Psbt | None]:
    """(unsigned tx, borrower signature, parsed PSBT or None) from either upload form."""
    if psbt is not None:
        if signature is not None or transaction is not None:
            raise _refuse("ambiguous_upload", "send either a PSBT or a raw signature with its transaction")
        escrow = facts.escrow
        parsed, borrower_signature = _borrower_psbt_signature(
            psbt,
            name="TX_1",
            signer=facts.borrower_btc_pubkey,
            leaf_hash=escrow.leaf_hash(HASHLOCK_LEAF),
            other_leaf_hash=escrow.leaf_hash(TIMELOCK_LEAF),
            wrong_leaf="the borrower signed the escrow's timelock leaf, not the hashlock leaf",
            wrong_signer="the PSBT holds no signature of the borrower's key for the hashlock leaf",
        )
        return parsed.unsigned_tx, borrower_signature, parsed
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


def _check_frame(tx: Transaction, outpoint: OutPoint | None, sequence: int, name: str) -> None:
    """Version, the one input (outpoint unless None, nSequence, empty scriptSig) and locktime."""
    if tx.version != TX_VERSION:
        raise _refuse("wrong_version", f"{name} must be version 2, got {tx.version}")
    if len(tx.inputs) != 1:
        raise _refuse("wrong_input_count", f"{name} must have exactly one input, got {len(tx.inputs)}")
    txin = tx.inputs[0]
    if outpoint is not None and txin.outpoint != outpoint:
        raise _refuse("wrong_outpoint", f"{name} spends {txin.outpoint}, not {outpoint}")
    if txin.sequence != sequence:
        raise _refuse("wrong_sequence", f"{name} nSequence must be 0x{sequence:08x}, got 0x{txin.sequence:08x}")
    if tx.locktime != 0:
        raise _refuse("wrong_locktime", f"{name} locktime must be 0, got {tx.locktime}")
    if txin.script_sig:
        raise _refuse("nonempty_script_sig", f"{name}'s input must have an empty scriptSig")


def _check_claimed_prevout(claimed: TxOut | None, prevout: TxOut) -> None:
    if claimed is not None and claimed != prevout:
        raise _refuse(
            "witness_utxo_mismatch",
            f"the PSBT claims the spent output holds {claimed.value} sat under {claimed.script_pubkey.hex()}; "
            f"the loan says {prevout.value} sat under {prevout.script_pubkey.hex()}",
        )


def _check_fee_rate(prepared: PreparedSpend, facts: LoanFacts) -> None:
    if prepared.fee_sats < 0:
        raise _refuse("outputs_exceed_input", f"{prepared.kind.value}'s outputs exceed the value it spends")
    rate = prepared.fee_rate
    if rate < facts.min_fee_rate_sat_vb:
        raise _refuse("fee_rate_too_low", f"pays {_rate(rate)} sat/vB, below {_rate(facts.min_fee_rate_sat_vb)} sat/vB")
    if rate > facts.max_fee_rate_sat_vb:
        raise _refuse(
            "fee_rate_too_high", f"pays {_rate(rate)} sat/vB, above {_rate(facts.max_fee_rate_sat_vb)} sat/vB"
        )


def _rate(rate: Fraction) -> str:
    """A fee rate for messages, to 3 decimals (display only; all checks use the exact fraction)."""
    return str((Decimal(rate.numerator) / rate.denominator).quantize(Decimal("0.001")))


def check_tx1_transaction(
    facts: LoanFacts, transaction: Transaction, claimed_prevout: TxOut | None = None
) -> PreparedSpend:
    """Check an *unsigned* TX_1 against the loan's facts (every check except the signature).

    For the borrower before signing and for the lender. ``facts.escrow_sats`` must be the escrow's value as
    read from the chain by the caller. Returns the TX_1 prepared for signing; raises ``PresignatureError`` with
    the reasons listed in the module docstring; facts that lack the escrow or hL raise
    ``InvalidParameterError`` (the caller's own data).
    """
    facts.require("escrow_outpoint", "lender_hash")
    tx = transaction.without_witness()
    _check_frame(tx, facts.escrow_outpoint, SEQUENCE_RBF_NO_LOCK, "TX_1")
    prepared = tx1_prepared(facts, tx)
    _check_claimed_prevout(claimed_prevout, prepared.prevout)
    if len(tx.outputs) not in (2, 3):
        raise _refuse("wrong_output_count", f"TX_1 must have two or three outputs, got {len(tx.outputs)}")
    fee_output, collateral_output = tx.outputs[FEE_OUTPUT_INDEX], tx.outputs[COLLATERAL_OUTPUT_INDEX]
    if fee_output.script_pubkey != facts.lender_payout_script:
        raise _refuse("wrong_fee_output", "output 0 does not pay the lender's payout address")
    if fee_output.value != facts.origination_fee_sats:
        raise _refuse(
            "wrong_fee_amount",
            f"output 0 pays {fee_output.value} sat; the origination fee is {facts.origination_fee_sats} sat",
        )
    if fee_output.value < dust_threshold(fee_output.script_pubkey):
        raise _refuse("dust_fee_output", f"the {fee_output.value} sat origination fee output is dust")
    if collateral_output.script_pubkey != facts.collateral.script_pubkey:
        raise _refuse("wrong_collateral_output", "output 1 is not the loan's collateral output")
    if collateral_output.value < facts.collateral_sats:
        raise _refuse(
            "insufficient_collateral",
            f"output 1 locks {collateral_output.value} sat; the loan requires {facts.collateral_sats} sat",
        )
    if collateral_output.value > facts.collateral_cap_sats:
        raise _refuse(
            "collateral_above_cap",
            f"output 1 locks {collateral_output.value} sat, above repayment + bond "
            f"({facts.collateral_cap_sats} sat): the lender would gain by refusing the repayment",
        )
    if collateral_output.value != facts.collateral_sats:
        raise _refuse(
            "wrong_collateral_amount",
            f"output 1 locks {collateral_output.value} sat; the collateral is exactly {facts.collateral_sats} sat",
        )
    change_script = facts.borrower_payout_script
    if len(tx.outputs) == 3:
        change = tx.outputs[CHANGE_OUTPUT_INDEX]
        if change.script_pubkey != change_script:
            raise _refuse("wrong_change_output", "output 2 does not pay the borrower's payout address")
        if change.value < dust_threshold(change_script):
            raise _refuse("dust_change_output", f"the {change.value} sat change output is dust")
    prepared = replace(prepared, fee_sats=prepared.prevout.value - sum(output.value for output in tx.outputs))
    if len(tx.outputs) == 2 and prepared.fee_sats >= 0:
        # Without a change output the remainder goes to the miner: only right when a change output would be
        # dust even at the highest fee rate the loan allows.
        with_change = replace(tx, outputs=(*tx.outputs, TxOut(0, change_script)))
        room = prepared.fee_sats - fee_for_vsize(
            final_vsize(tx1_prepared(facts, with_change)), facts.max_fee_rate_sat_vb
        )
        if room >= dust_threshold(change_script):
            raise _refuse(
                "missing_change_output",
                f"TX_1 gives the miner {prepared.fee_sats} sat; {room} sat of it belong to the borrower's change",
            )
    _check_fee_rate(prepared, facts)
    return prepared


def check_sweep_transaction(
    facts: LoanFacts,
    kind: SpendKind,
    transaction: Transaction,
    claimed_prevout: TxOut | None = None,
    tx1_txid: str | None = None,
) -> PreparedSpend:
    """Check an unsigned TX_exit, TX_release or TX_capture against the loan's facts (all but signatures).

    One output paying the party the path belongs to (B for exit and release, L for capture), above dust, at a
    fee rate within the loan's bounds. TX_release and TX_capture spend TX_1's output 1; given ``tx1_txid``, that
    exact outpoint.
    """
    name = kind.value
    tx = transaction.without_witness()
    if kind is SpendKind.TX_EXIT:
        facts.require("escrow_outpoint")
        outpoint = facts.escrow_outpoint
    else:
        facts.require("lender_hash")
        outpoint = collateral_outpoint(tx1_txid) if tx1_txid is not None else None
    _check_frame(tx, outpoint, sweep_sequence(facts, kind), name)
    if kind is not SpendKind.TX_EXIT and tx.inputs[0].outpoint.vout != COLLATERAL_OUTPUT_INDEX:
        raise _refuse("wrong_outpoint", f"{name} must spend TX_1's output 1, not {tx.inputs[0].outpoint}")
    prepared = sweep_prepared(facts, kind, tx)
    _check_claimed_prevout(claimed_prevout, prepared.prevout)
    if len(tx.outputs) != 1:
        raise _refuse("wrong_output_count", f"{name} must have exactly one output, got {len(tx.outputs)}")
    payout = tx.outputs[0]
    whose = "lender" if kind is SpendKind.TX_CAPTURE else "borrower"
    if payout.script_pubkey != sweep_payout_script(facts, kind):
        raise _refuse("wrong_payout_output", f"{name} does not pay the {whose}'s payout address")
    if payout.value < dust_threshold(payout.script_pubkey):
        raise _refuse("dust_payout_output", f"{name}'s {payout.value} sat payout is dust")
    prepared = replace(prepared, fee_sats=prepared.prevout.value - payout.value)
    _check_fee_rate(prepared, facts)
    return prepared


def check_borrower_transaction(
    facts: LoanFacts, transaction: Transaction, claimed_prevout: TxOut | None = None, tx1_txid: str | None = None
) -> PreparedSpend:
    """Which of this loan's transactions B is asked to sign (TX_1, TX_exit or TX_release), fully checked.

    The borrower's signer calls this before every signature (PROTOCOL.md attack 16): anything that is not
    exactly one of them, paying exactly what the loan says, is refused (``not_a_loan_transaction`` when it
    spends neither the escrow nor a collateral output).
    """
    inputs = transaction.inputs
    if len(inputs) != 1:
        raise _refuse("wrong_input_count", f"a loan transaction has exactly one input, got {len(inputs)}")
    txin = inputs[0]
    if facts.escrow_outpoint is not None and txin.outpoint == facts.escrow_outpoint:
        if txin.sequence == facts.escrow_timelock_btc_blocks:
            return check_sweep_transaction(facts, SpendKind.TX_EXIT, transaction, claimed_prevout)
        return check_tx1_transaction(facts, transaction, claimed_prevout)
    if facts.lender_hash is not None and txin.outpoint.vout == COLLATERAL_OUTPUT_INDEX:
        return check_sweep_transaction(facts, SpendKind.TX_RELEASE, transaction, claimed_prevout, tx1_txid)
    raise _refuse(
        "not_a_loan_transaction",
        f"the transaction spends {txin.outpoint}: neither this loan's escrow nor its collateral output",
    )


def verify_borrower_presignature(
    facts: LoanFacts,
    *,
    psbt: str | bytes | Psbt | None = None,
    signature: bytes | str | None = None,
    transaction: bytes | str | Transaction | None = None,
) -> VerifiedPresignature:
    """Verify B's TX_1 pre-signature against the loan's own facts; raise ``PresignatureError`` if refused.

    Pass either ``psbt`` (base64, hex or binary BIP-174 with a BIP-371 tap script sig keyed by
    (xB, hashlock leaf hash)), or ``signature`` (64 bytes or hex) plus ``transaction`` (the unsigned TX_1).
    ``facts.escrow_sats`` must be the value of the escrow UTXO as read from the chain by the caller.
    """
    facts.require("escrow_outpoint", "lender_hash")
    tx, borrower_signature, parsed_psbt = _load_inputs(psbt, signature, transaction, facts)
    claimed_prevout = None
    if parsed_psbt is not None:
        try:
            claimed_prevout = parsed_psbt.witness_utxo(0)
        except PsbtError as error:
            raise _refuse("malformed_psbt", str(error)) from None
    prepared = check_tx1_transaction(facts, tx, claimed_prevout)

    if len(borrower_signature) == 65:
        raise _refuse(
            "wrong_sighash_type",
            f"65-byte signature with sighash type 0x{borrower_signature[64]:02x}; only SIGHASH_DEFAULT is accepted",
        )
    if len(borrower_signature) != 64:
        raise _refuse("malformed_signature", f"signature must be 64 bytes, got {len(borrower_signature)}")
    sighash = prepared.sighash()
    if not verify_schnorr(facts.borrower_btc_pubkey, sighash, borrower_signature):
        other_leaf = taproot_sighash(
            prepared.tx, 0, [prepared.prevout], SIGHASH_DEFAULT, facts.escrow.leaf_hash(TIMELOCK_LEAF)
        )
        if verify_schnorr(facts.borrower_btc_pubkey, other_leaf, borrower_signature):
            raise _refuse("wrong_leaf", "the signature is over the escrow's timelock leaf, not the hashlock leaf")
        if verify_schnorr(facts.lender_btc_pubkey, sighash, borrower_signature):
            raise _refuse("wrong_signer", "the signature was made with the lender's key, not the borrower's")
        raise _refuse("invalid_signature", "the signature does not verify for the borrower's key over TX_1")
    return VerifiedPresignature(prepared=prepared, borrower_signature=borrower_signature, sighash=sighash)


# -- the borrower's pre-signed sweeps (TX_release, TX_exit ladders) --------------------------------------------------


@dataclass(frozen=True)
class VerifiedSweep(VerifiedBorrowerSignature):
    """A TX_release or TX_exit whose borrower signature verified; ``prepared`` is ready to finalize (with pL for
    TX_release). ``form`` says how it came: ``"psbt"`` or ``"transaction"`` (a finalized TX_exit)."""

    form: str

    @property
    def payout_sats(self) -> int:
        return self.prepared.tx.outputs[0].value

    @property
    def fee_sats(self) -> int:
        return self.prepared.fee_sats

    @property
    def fee_rate_sat_vb(self) -> Fraction:
        return self.prepared.fee_rate


_BORROWER_SWEEPS = (SpendKind.TX_RELEASE, SpendKind.TX_EXIT)


def _sweep_tree_and_leaf(facts: LoanFacts, kind: SpendKind) -> tuple[bytes, bytes]:
    """(leaf hash B signs for ``kind``, the other leaf's hash of the same output)."""
    tree = facts.escrow if kind is SpendKind.TX_EXIT else facts.collateral
    return tree.leaf_hash(TIMELOCK_LEAF if kind is SpendKind.TX_EXIT else HASHLOCK_LEAF), tree.leaf_hash(
        HASHLOCK_LEAF if kind is SpendKind.TX_EXIT else TIMELOCK_LEAF
    )


def _sweep_psbt_signature(facts: LoanFacts, kind: SpendKind, psbt: str | bytes | Psbt) -> tuple[Psbt, bytes]:
    leaf_hash, other_leaf_hash = _sweep_tree_and_leaf(facts, kind)
    return _borrower_psbt_signature(
        psbt,
        name=kind.value,
        signer=facts.borrower_btc_pubkey,
        leaf_hash=leaf_hash,
        other_leaf_hash=other_leaf_hash,
        wrong_leaf=f"the borrower signed the other leaf of the output {kind.value} spends",
        wrong_signer=f"the PSBT holds no signature of the borrower's key for {kind.value}'s leaf",
    )


def _borrower_psbt_signature(
    psbt: str | bytes | Psbt,
    *,
    name: str,
    signer: bytes,
    leaf_hash: bytes,
    other_leaf_hash: bytes,
    wrong_leaf: str,
    wrong_signer: str,
) -> tuple[Psbt, bytes]:
    """(parsed PSBT, B's tap script signature for ``leaf_hash``) from an uploaded one-input PSBT (TX_1 or a sweep);
    refused when malformed, asking for another sighash type, or signed for the other leaf or by another key."""
    try:
        parsed = psbt if isinstance(psbt, Psbt) else Psbt.load(psbt)
    except PsbtError as error:
        raise _refuse("malformed_psbt", str(error)) from None
    if len(parsed.inputs) != 1:
        raise _refuse("wrong_input_count", f"{name} has exactly one input, the PSBT has {len(parsed.inputs)}")
    try:
        hash_type = parsed.sighash_type(0)
        signatures = parsed.tap_script_sigs(0)
    except PsbtError as error:
        raise _refuse("malformed_psbt", str(error)) from None
    if hash_type not in (None, SIGHASH_DEFAULT):
        raise _refuse("wrong_sighash_type", f"PSBT asks for sighash type {hash_type}, not SIGHASH_DEFAULT")
    if (signer, leaf_hash) in signatures:
        return parsed, signatures[(signer, leaf_hash)]
    if (signer, other_leaf_hash) in signatures:
        raise _refuse("wrong_leaf", wrong_leaf)
    if signatures:
        raise _refuse("wrong_signer", wrong_signer)
    raise _refuse("missing_signature", "the PSBT carries no tap script signature")


def _sweep_witness_signature(prepared: PreparedSpend, witness: tuple[bytes, ...]) -> bytes:
    """B's signature from a finalized sweep's witness: ``[sigB, (preimage), leaf, control]`` of exactly this leaf."""
    if not witness:
        raise _refuse("missing_signature", f"the {prepared.kind.value} carries no witness")
    expected = 3 + (prepared.preimage_hash is not None)
    if len(witness) != expected or witness[-2] != prepared.leaf_script or witness[-1] != prepared.control_block:
        raise _refuse(
            "malformed_witness",
            f"the witness is not [signature{', preimage' if expected == 4 else ''}, leaf, control block] of "
            f"{prepared.kind.value}'s leaf",
        )
    if prepared.preimage_hash is not None and sha256(witness[1]) != prepared.preimage_hash:
        raise _refuse("malformed_witness", "the witness's preimage does not hash to the leaf's hash")
    return witness[0]


def verify_borrower_sweep_signature(
    facts: LoanFacts,
    kind: SpendKind,
    *,
    psbt: str | bytes | Psbt | None = None,
    transaction: bytes | str | Transaction | None = None,
    tx1_txid: str | None = None,
) -> VerifiedSweep:
    """Verify one rung of B's pre-signed ladders against the loan's own facts; raise ``PresignatureError``.

    ``kind`` is ``SpendKind.TX_RELEASE`` (collateral leaf 1; ``tx1_txid`` is the TX_1 whose output 1 it must
    spend) or ``SpendKind.TX_EXIT`` (escrow leaf 0, nSequence t_0). Pass ``psbt`` (base64, hex or binary, with
    B's BIP-371 tap script sig for the kind's leaf) or ``transaction``: a finalized transaction whose witness is
    ``[sigB, (pL), leaf, control]``. The transaction is checked in full (``check_sweep_transaction``: input,
    nSequence, the one output to B's payout address, the fee rate) and the signature over its BIP-341 script-path
    sighash, with the refusal reasons of ``verify_borrower_presignature`` (``malformed_witness`` too).
    """
    if kind not in _BORROWER_SWEEPS:
        raise ValueError(f"{kind.value} is not a borrower's sweep")
    if (psbt is None) == (transaction is None):
        if psbt is not None:
            raise _refuse("ambiguous_upload", "send either a PSBT or a finalized transaction, not both")
        raise _refuse("missing_signature", "send a signed PSBT or a finalized transaction")
    claimed_prevout = None
    if psbt is not None:
        parsed, borrower_signature = _sweep_psbt_signature(facts, kind, psbt)
        try:
            claimed_prevout = parsed.witness_utxo(0)
        except PsbtError as error:
            raise _refuse("malformed_psbt", str(error)) from None
        tx, form = parsed.unsigned_tx, "psbt"
    else:
        if isinstance(transaction, Transaction):
            full = transaction
        else:
            try:
                full = Transaction.parse(transaction)  # type: ignore[arg-type]
            except TransactionError as error:
                raise _refuse("malformed_transaction", str(error)) from None
        tx, form = full, "transaction"
    if len(tx.inputs) != 1:
        raise _refuse("wrong_input_count", f"{kind.value} must have exactly one input, got {len(tx.inputs)}")
    prepared = check_sweep_transaction(facts, kind, tx, claimed_prevout, tx1_txid)
    if form == "transaction":
        borrower_signature = _sweep_witness_signature(prepared, tx.inputs[0].witness)
    if len(borrower_signature) == 65:
        raise _refuse(
            "wrong_sighash_type",
            f"65-byte signature with sighash type 0x{borrower_signature[64]:02x}; only SIGHASH_DEFAULT is accepted",
        )
    if len(borrower_signature) != 64:
        raise _refuse("malformed_signature", f"signature must be 64 bytes, got {len(borrower_signature)}")
    sighash = prepared.sighash()
    if not verify_schnorr(facts.borrower_btc_pubkey, sighash, borrower_signature):
        _, other_leaf_hash = _sweep_tree_and_leaf(facts, kind)
        other_leaf = taproot_sighash(prepared.tx, 0, [prepared.prevout], SIGHASH_DEFAULT, other_leaf_hash)
        if verify_schnorr(facts.borrower_btc_pubkey, other_leaf, borrower_signature):
            raise _refuse("wrong_leaf", f"the signature is over the other leaf, not {kind.value}'s")
        if verify_schnorr(facts.lender_btc_pubkey, sighash, borrower_signature):
            raise _refuse("wrong_signer", "the signature was made with the lender's key, not the borrower's")
        raise _refuse("invalid_signature", f"the signature does not verify for the borrower's key over {kind.value}")
    return VerifiedSweep(prepared=prepared, borrower_signature=borrower_signature, sighash=sighash, form=form)
