"""The four loan transactions: builders, BIP-341 script-path sighashes, signing and witness assembly.

| tx         | spends            | witness (bottom to top)       | nSequence  | outputs                      |
|------------|-------------------|-------------------------------|------------|------------------------------|
| TX_1       | escrow leaf 1     | sigB, sigL, pB, leaf, control | 0xfffffffd | [0] fee -> L, [1] collateral,|
|            |                   |                               |            | [2] change -> B (above dust) |
| TX_exit    | escrow leaf 0     | sigB, leaf, control           | t_0        | all but fee -> B's payout    |
| TX_release | collateral leaf 1 | sigB, pL, leaf, control       | 0xfffffffd | all but fee -> B's payout    |
| TX_capture | collateral leaf 0 | sigL, leaf, control           | t_1        | all but fee -> L's payout    |

All are version 2, one input, locktime 0. Serialization follows BIP-144; txid = SHA256d of the non-witness
serialization. The signature hash is BIP-341's ``SigMsg`` with ``ext_flag = 1`` (BIP-342 tapscript extension:
leaf hash, key version 0, no OP_CODESEPARATOR) and ``SIGHASH_DEFAULT``; signatures are 64-byte BIP-340
signatures (no hash-type byte). The witness stack order follows the leaf scripts: the top element (last in the
list, just below the leaf and control block) is consumed first, e.g. escrow leaf 1 hashes pB first, then
checks sigL under xL, then adds sigB under xB.

Fees are computed from the exact final vsize: the unsigned transaction is measured with a witness of the final
shape (64-byte signatures, 32-byte preimages, the leaf script and the 65-byte control block).

Usage (TX_1), with a loan's ``bitcoin.loan.LoanFacts``::

    prepared = build_tx1(facts, fee_rate_sat_vb=2)
    sig_b = prepared.sign(borrower_key)          # B, or B's wallet through bitcoin.psbt
    sig_l = prepared.sign(lender_key)
    tx = finalize_tx1(prepared, borrower_signature=sig_b, lender_signature=sig_l, borrower_preimage=pb)
    tx.hex()                                     # for sendrawtransaction; tx.txid
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

from bitcoin.encoding import ByteReader, compact_size, push_bytes, sha256, sha256d, tagged_hash
from bitcoin.errors import FeeError, InvalidParameterError, TransactionError
from bitcoin.fees import check_not_dust, dust_threshold, fee_for_vsize, parse_fee_rate, vsize_from_weight
from bitcoin.keys import PrivateKey, verify_schnorr
from bitcoin.scripts import HASHLOCK_LEAF, TIMELOCK_LEAF, TwoLeafTaprootOutput, parse_hash32

if TYPE_CHECKING:
    from bitcoin.loan import LoanFacts

SIGHASH_DEFAULT = 0x00
SIGHASH_ALL = 0x01
SIGHASH_NONE = 0x02
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80
_VALID_TAPROOT_HASH_TYPES = {0x00, 0x01, 0x02, 0x03, 0x81, 0x82, 0x83}

#: nSequence of TX_1 and TX_release: signals RBF (BIP-125), no BIP-68 lock, locktime enabled.
SEQUENCE_RBF_NO_LOCK = 0xFFFFFFFD
TX_VERSION = 2
MAX_MONEY_SATS = 21_000_000 * 100_000_000
#: Basis points in 100 %.
BPS = 10_000
#: TX_1's outputs: [0] origination fee, [1] collateral, [2] change (when above dust).
FEE_OUTPUT_INDEX = 0
COLLATERAL_OUTPUT_INDEX = 1
CHANGE_OUTPUT_INDEX = 2

FeeRate = int | Decimal | str | Fraction


@dataclass(frozen=True, slots=True)
class OutPoint:
    """A transaction output reference. ``txid`` is the usual display (big-endian) hex."""

    txid: str
    vout: int

    def __post_init__(self) -> None:
        if not isinstance(self.txid, str) or len(self.txid) != 64:
            raise InvalidParameterError("txid must be 64 hex characters")
        try:
            bytes.fromhex(self.txid)
        except ValueError:
            raise InvalidParameterError("txid is not valid hex") from None
        object.__setattr__(self, "txid", self.txid.lower())
        if isinstance(self.vout, bool) or not isinstance(self.vout, int) or not 0 <= self.vout <= 0xFFFFFFFF:
            raise InvalidParameterError("vout must be an integer between 0 and 2^32-1")

    @classmethod
    def parse(cls, text: str) -> OutPoint:
        """Parse ``TXID:VOUT`` (display-order txid)."""
        txid, separator, vout = text.strip().partition(":")
        if not separator or not vout.isdigit():
            raise InvalidParameterError(f"outpoint must be TXID:VOUT, got {text!r}")
        return cls(txid, int(vout))

    def serialize(self) -> bytes:
        """36 bytes: txid in internal byte order, vout little-endian."""
        return bytes.fromhex(self.txid)[::-1] + self.vout.to_bytes(4, "little")

    def __str__(self) -> str:
        return f"{self.txid}:{self.vout}"


@dataclass(frozen=True, slots=True)
class TxOut:
    """An output: value in satoshis and its scriptPubKey."""

    value: int
    script_pubkey: bytes

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise InvalidParameterError("output value must be an integer number of satoshis")
        if not 0 <= self.value <= MAX_MONEY_SATS:
            raise InvalidParameterError(f"output value {self.value} sat is out of range")

    def serialize(self) -> bytes:
        """value (8 bytes LE) || compact_size(script) || script."""
        return self.value.to_bytes(8, "little") + push_bytes(self.script_pubkey)


@dataclass(frozen=True, slots=True)
class TxIn:
    """An input; ``witness`` is the list of stack items (empty when unsigned)."""

    outpoint: OutPoint
    sequence: int
    witness: tuple[bytes, ...] = ()
    script_sig: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.outpoint, OutPoint):
            raise InvalidParameterError("input outpoint must be an OutPoint")
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int):
            raise InvalidParameterError("nSequence must be an integer")
        if not 0 <= self.sequence <= 0xFFFFFFFF:
            raise InvalidParameterError(f"nSequence {self.sequence} is out of range")
        if not all(isinstance(item, bytes) for item in self.witness) or not isinstance(self.script_sig, bytes):
            raise InvalidParameterError("witness items and scriptSig must be bytes")


@dataclass(frozen=True)
class Transaction:
    """An immutable Bitcoin transaction."""

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int = 0

    def __post_init__(self) -> None:
        for name in ("version", "locktime"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
                raise InvalidParameterError(f"transaction {name} must be a 32-bit unsigned integer")

    @property
    def has_witness(self) -> bool:
        """True if any input carries witness items."""
        return any(txin.witness for txin in self.inputs)

    def serialize(self, include_witness: bool = True) -> bytes:
        """BIP-144 serialization (legacy form when there is no witness or ``include_witness`` is False)."""
        with_witness = include_witness and self.has_witness
        parts = [self.version.to_bytes(4, "little")]
        if with_witness:
            parts.append(b"\x00\x01")
        parts.append(compact_size(len(self.inputs)))
        for txin in self.inputs:
            parts += [
                txin.outpoint.serialize(),
                push_bytes(txin.script_sig),
                txin.sequence.to_bytes(4, "little"),
            ]
        parts.append(compact_size(len(self.outputs)))
        parts += [txout.serialize() for txout in self.outputs]
        if with_witness:
            for txin in self.inputs:
                parts.append(compact_size(len(txin.witness)))
                parts += [push_bytes(item) for item in txin.witness]
        parts.append(self.locktime.to_bytes(4, "little"))
        return b"".join(parts)

    @property
    def txid(self) -> str:
        """Display hex of SHA256d(non-witness serialization)."""
        return sha256d(self.serialize(include_witness=False))[::-1].hex()

    @property
    def wtxid(self) -> str:
        """Display hex of SHA256d(witness serialization)."""
        return sha256d(self.serialize())[::-1].hex()

    @property
    def weight(self) -> int:
        """BIP-141 weight: 3 x base size + total size."""
        return 3 * len(self.serialize(include_witness=False)) + len(self.serialize())

    @property
    def vsize(self) -> int:
        """Virtual size in vbytes."""
        return vsize_from_weight(self.weight)

    def hex(self) -> str:
        """Hex of the full serialization (what ``sendrawtransaction`` takes)."""
        return self.serialize().hex()

    def with_witness(self, input_index: int, witness: list[bytes] | tuple[bytes, ...]) -> Transaction:
        """A copy with ``witness`` set on input ``input_index``."""
        inputs = list(self.inputs)
        inputs[input_index] = replace(inputs[input_index], witness=tuple(bytes(item) for item in witness))
        return replace(self, inputs=tuple(inputs))

    def without_witness(self) -> Transaction:
        """A copy with every witness removed (the form PSBTs carry)."""
        return replace(self, inputs=tuple(replace(txin, witness=()) for txin in self.inputs))

    @classmethod
    def parse(cls, data: bytes | str) -> Transaction:
        """Parse a serialized transaction (bytes or hex); trailing bytes are an error."""
        try:
            raw = bytes.fromhex(data.strip()) if isinstance(data, str) else bytes(data)
            reader = ByteReader(raw)
            version = reader.read_int(4)
            input_count = reader.read_compact_size()
            segwit = False
            if input_count == 0:
                flag = reader.read(1)[0]
                if flag != 1:
                    raise ValueError("invalid segwit flag")
                segwit = True
                input_count = reader.read_compact_size()
            inputs = []
            for _ in range(input_count):
                txid = reader.read(32)[::-1].hex()
                vout = reader.read_int(4)
                script_sig = reader.read_var_bytes()
                sequence = reader.read_int(4)
                inputs.append(TxIn(OutPoint(txid, vout), sequence, (), script_sig))
            output_count = reader.read_compact_size()
            outputs = []
            for _ in range(output_count):
                value = reader.read_int(8)
                outputs.append(TxOut(value, reader.read_var_bytes()))
            if segwit:
                for index in range(input_count):
                    items = tuple(reader.read_var_bytes() for _ in range(reader.read_compact_size()))
                    inputs[index] = replace(inputs[index], witness=items)
                if not any(txin.witness for txin in inputs):
                    raise ValueError("segwit marker with empty witnesses")
            locktime = reader.read_int(4)
            if reader.remaining():
                raise ValueError("trailing bytes after transaction")
        except (ValueError, KeyError, InvalidParameterError) as error:
            raise TransactionError(f"cannot parse transaction: {error}") from None
        return cls(version=version, inputs=tuple(inputs), outputs=tuple(outputs), locktime=locktime)


def taproot_sighash(
    tx: Transaction,
    input_index: int,
    spent_outputs: list[TxOut] | tuple[TxOut, ...],
    hash_type: int = SIGHASH_DEFAULT,
    leaf_hash: bytes | None = None,
    annex: bytes | None = None,
) -> bytes:
    """BIP-341 signature hash (``TapSighash``) of input ``input_index``.

    ``leaf_hash`` selects the BIP-342 script-path message (ext_flag 1, key version 0, no code separator);
    without it this is the key-path hash. ``spent_outputs`` are the outputs every input spends, in order.
    """
    if hash_type not in _VALID_TAPROOT_HASH_TYPES:
        raise TransactionError(f"invalid taproot sighash type 0x{hash_type:02x}")
    if not 0 <= input_index < len(tx.inputs):
        raise TransactionError(f"input index {input_index} out of range")
    if len(spent_outputs) != len(tx.inputs):
        raise TransactionError("one spent output per input is required")
    output_type = SIGHASH_ALL if hash_type == SIGHASH_DEFAULT else hash_type & 0x03
    anyone_can_pay = bool(hash_type & SIGHASH_ANYONECANPAY)
    message = bytes([hash_type]) + tx.version.to_bytes(4, "little") + tx.locktime.to_bytes(4, "little")
    if not anyone_can_pay:
        message += sha256(b"".join(txin.outpoint.serialize() for txin in tx.inputs))
        message += sha256(b"".join(out.value.to_bytes(8, "little") for out in spent_outputs))
        message += sha256(b"".join(push_bytes(out.script_pubkey) for out in spent_outputs))
        message += sha256(b"".join(txin.sequence.to_bytes(4, "little") for txin in tx.inputs))
    if output_type not in (SIGHASH_NONE, SIGHASH_SINGLE):
        message += sha256(b"".join(out.serialize() for out in tx.outputs))
    ext_flag = 1 if leaf_hash is not None else 0
    message += bytes([2 * ext_flag + (1 if annex is not None else 0)])
    if anyone_can_pay:
        txin = tx.inputs[input_index]
        spent = spent_outputs[input_index]
        message += txin.outpoint.serialize() + spent.serialize() + txin.sequence.to_bytes(4, "little")
    else:
        message += input_index.to_bytes(4, "little")
    if annex is not None:
        message += sha256(push_bytes(annex))
    if output_type == SIGHASH_SINGLE:
        if input_index >= len(tx.outputs):
            raise TransactionError("SIGHASH_SINGLE without a matching output")
        message += sha256(tx.outputs[input_index].serialize())
    if leaf_hash is not None:
        if len(leaf_hash) != 32:
            raise TransactionError("leaf hash must be 32 bytes")
        message += leaf_hash + b"\x00" + b"\xff\xff\xff\xff"
    return tagged_hash("TapSighash", b"\x00" + message)


class SpendKind(enum.Enum):
    """The four loan transactions."""

    TX_1 = "tx_1"
    TX_EXIT = "tx_exit"
    TX_RELEASE = "tx_release"
    TX_CAPTURE = "tx_capture"


@dataclass(frozen=True)
class PreparedSpend:
    """An unsigned loan transaction with everything needed to sign and finalize it.

    ``signers`` are the x-only keys whose signatures the witness needs, in witness order (bottom first);
    ``preimage_hash`` is the hash the leaf checks (None for timelock leaves).
    """

    kind: SpendKind
    tx: Transaction
    prevout: TxOut
    tree: TwoLeafTaprootOutput
    leaf_index: int
    signers: tuple[bytes, ...]
    preimage_hash: bytes | None
    fee_sats: int = field(default=0)
    #: TX_1 only: the collateral output it creates (output 1), for PSBT output fields.
    collateral: TwoLeafTaprootOutput | None = None

    @property
    def leaf_script(self) -> bytes:
        """Script of the leaf being spent."""
        return self.tree.leaf_script(self.leaf_index)

    @property
    def leaf_hash(self) -> bytes:
        """TapLeaf hash of the leaf being spent."""
        return self.tree.leaf_hash(self.leaf_index)

    @property
    def control_block(self) -> bytes:
        """65-byte control block of the leaf being spent."""
        return self.tree.control_block(self.leaf_index)

    @property
    def final_vsize(self) -> int:
        """Exact vsize of the fully signed transaction."""
        return final_vsize(self)

    @property
    def fee_rate(self) -> Fraction:
        """Fee rate (sat/vB) of the signed transaction, exact."""
        return Fraction(self.fee_sats, self.final_vsize)

    def sighash(self) -> bytes:
        """BIP-341 script-path SIGHASH_DEFAULT hash every signer signs."""
        return taproot_sighash(self.tx, 0, [self.prevout], SIGHASH_DEFAULT, self.leaf_hash)

    def sign(self, private_key: PrivateKey, aux_randomness: bytes | None = None) -> bytes:
        """64-byte BIP-340 signature of ``private_key`` (which must be one of ``signers``)."""
        if private_key.xonly_pubkey not in self.signers:
            raise TransactionError(
                f"key {private_key.xonly_pubkey.hex()} is not a signer of this {self.kind.value} leaf"
            )
        return private_key.sign_schnorr(self.sighash(), aux_randomness)

    def verify_signature(self, xonly_pubkey: bytes, signature: bytes) -> bool:
        """True if ``signature`` is a valid 64-byte SIGHASH_DEFAULT signature of ``xonly_pubkey``."""
        return len(signature) == 64 and verify_schnorr(xonly_pubkey, self.sighash(), signature)


def _witness_shape(prepared: PreparedSpend) -> list[bytes]:
    """A witness with the exact item sizes of the final one (zeros instead of signatures/preimages)."""
    items = [b"\x00" * 64 for _ in prepared.signers]
    if prepared.preimage_hash is not None:
        items.append(b"\x00" * 32)
    return [*items, prepared.leaf_script, prepared.control_block]


def final_vsize(prepared: PreparedSpend) -> int:
    """vsize of ``prepared.tx`` once its witness of the final shape is in place."""
    return prepared.tx.with_witness(0, _witness_shape(prepared)).vsize


def check_amount_sats(value: int, name: str) -> int:
    """Validate a positive whole number of satoshis (at most 21 million BTC); return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(f"{name} must be an integer number of satoshis")
    if not 0 < value <= MAX_MONEY_SATS:
        raise InvalidParameterError(f"{name} must be between 1 and {MAX_MONEY_SATS} sat, got {value}")
    return value


def _single_input_tx(outpoint: OutPoint, sequence: int, outputs: list[TxOut]) -> Transaction:
    return Transaction(
        version=TX_VERSION,
        inputs=(TxIn(outpoint=outpoint, sequence=sequence),),
        outputs=tuple(outputs),
        locktime=0,
    )


def check_fee_rate_bounds(facts: LoanFacts, fee_rate_sat_vb: FeeRate) -> Fraction:
    """A target fee rate within the loan's bounds, as an exact fraction (``FeeError`` otherwise)."""
    rate = parse_fee_rate(fee_rate_sat_vb)
    if not facts.min_fee_rate_sat_vb <= rate <= facts.max_fee_rate_sat_vb:
        raise FeeError(
            f"fee rate {fee_rate_sat_vb} sat/vB is outside the loan's bounds "
            f"[{facts.min_fee_rate_sat_vb}, {facts.max_fee_rate_sat_vb}] sat/vB"
        )
    return rate


def tx1_prepared(facts: LoanFacts, tx: Transaction, miner_fee_sats: int = 0) -> PreparedSpend:
    """``tx`` as this loan's TX_1 (escrow leaf 1, signers xB then xL, preimage hB): for signing and measuring."""
    facts.require("escrow_outpoint", "lender_hash")
    return PreparedSpend(
        kind=SpendKind.TX_1,
        tx=tx,
        prevout=TxOut(facts.escrow_sats, facts.escrow.script_pubkey),  # type: ignore[arg-type]
        tree=facts.escrow,
        leaf_index=HASHLOCK_LEAF,
        signers=(facts.borrower_btc_pubkey, facts.lender_btc_pubkey),
        preimage_hash=facts.borrower_hash,
        fee_sats=miner_fee_sats,
        collateral=facts.collateral,
    )


def build_tx1(facts: LoanFacts, *, fee_rate_sat_vb: FeeRate) -> PreparedSpend:
    """Build TX_1 (collateral lock) spending the escrow's hashlock leaf (PROTOCOL.md, TX_1 amounts).

    Outputs: [0] the origination fee to L's payout address; [1] exactly the required collateral to the
    collateral output (never above repayment + bond: ``LoanFacts`` refuses such a loan); [2] what is left after
    the miner fee (``ceil(rate x final vsize)``) back to B's payout address, when that is above dust; a sub-dust
    remainder goes to the miner. Refuses (``DustError``/``FeeError``/``InvalidParameterError``) a dust fee output,
    an escrow that cannot pay collateral, fee and miner fee, and a rate outside the loan's bounds (before or
    after a sub-dust remainder is added to the fee).
    """
    rate = check_fee_rate_bounds(facts, fee_rate_sat_vb)
    facts.require("escrow_outpoint", "lender_hash")
    escrow_sats: int = facts.escrow_sats  # type: ignore[assignment]
    fee_output = TxOut(facts.origination_fee_sats, facts.lender_payout_script)
    check_not_dust(fee_output.value, fee_output.script_pubkey, "origination fee output")
    collateral = TxOut(facts.collateral_sats, facts.collateral.script_pubkey)
    change_script = facts.borrower_payout_script
    outpoint: OutPoint = facts.escrow_outpoint  # type: ignore[assignment]

    def measured(outputs: list[TxOut]) -> int:
        return final_vsize(tx1_prepared(facts, _single_input_tx(outpoint, SEQUENCE_RBF_NO_LOCK, outputs)))

    with_change = [fee_output, collateral, TxOut(0, change_script)]
    remainder = escrow_sats - fee_output.value - collateral.value
    change_sats = remainder - fee_for_vsize(measured(with_change), rate)
    if change_sats >= dust_threshold(change_script):
        outputs = [fee_output, collateral, TxOut(change_sats, change_script)]
    else:
        outputs = [fee_output, collateral]
        needed = fee_for_vsize(measured(outputs), rate)
        if remainder < needed:
            raise InvalidParameterError(
                f"an escrow of {escrow_sats} sat cannot pay the {collateral.value} sat collateral, the "
                f"{fee_output.value} sat origination fee and a {needed} sat miner fee"
            )
    prepared = tx1_prepared(
        facts,
        _single_input_tx(outpoint, SEQUENCE_RBF_NO_LOCK, outputs),
        escrow_sats - sum(output.value for output in outputs),
    )
    if prepared.fee_rate > facts.max_fee_rate_sat_vb:
        raise FeeError(
            f"the escrow's sub-dust remainder raises TX_1's fee rate to {prepared.fee_rate} sat/vB (exact), "
            f"above the loan's maximum of {facts.max_fee_rate_sat_vb} sat/vB"
        )
    return prepared


def sweep_prepared(facts: LoanFacts, kind: SpendKind, tx: Transaction, miner_fee_sats: int = 0) -> PreparedSpend:
    """``tx`` as this loan's TX_exit, TX_release or TX_capture (prevout, leaf and signers from the facts)."""
    if kind is SpendKind.TX_EXIT:
        facts.require("escrow_outpoint")
        prevout = TxOut(facts.escrow_sats, facts.escrow.script_pubkey)  # type: ignore[arg-type]
        tree, leaf_index, signer, preimage_hash = facts.escrow, TIMELOCK_LEAF, facts.borrower_btc_pubkey, None
    elif kind is SpendKind.TX_RELEASE:
        prevout = TxOut(facts.collateral_sats, facts.collateral.script_pubkey)
        tree, leaf_index, signer = facts.collateral, HASHLOCK_LEAF, facts.borrower_btc_pubkey
        preimage_hash = facts.lender_hash
    elif kind is SpendKind.TX_CAPTURE:
        prevout = TxOut(facts.collateral_sats, facts.collateral.script_pubkey)
        tree, leaf_index, signer, preimage_hash = facts.collateral, TIMELOCK_LEAF, facts.lender_btc_pubkey, None
    else:
        raise TransactionError(f"{kind.value} is not a sweep")
    return PreparedSpend(
        kind=kind,
        tx=tx,
        prevout=prevout,
        tree=tree,
        leaf_index=leaf_index,
        signers=(signer,),
        preimage_hash=preimage_hash,
        fee_sats=miner_fee_sats,
    )


def sweep_sequence(facts: LoanFacts, kind: SpendKind) -> int:
    """The nSequence a sweep of ``kind`` carries: the timelock leaves their CSV, TX_release 0xfffffffd (RBF)."""
    if kind is SpendKind.TX_EXIT:
        return facts.escrow_timelock_btc_blocks
    if kind is SpendKind.TX_CAPTURE:
        return facts.collateral_timelock_btc_blocks
    return SEQUENCE_RBF_NO_LOCK


def sweep_payout_script(facts: LoanFacts, kind: SpendKind) -> bytes:
    """Where a sweep of ``kind`` pays: B's payout address, or L's for TX_capture."""
    return facts.lender_payout_script if kind is SpendKind.TX_CAPTURE else facts.borrower_payout_script


def _build_sweep(facts: LoanFacts, kind: SpendKind, outpoint: OutPoint, fee_rate_sat_vb: FeeRate) -> PreparedSpend:
    rate = check_fee_rate_bounds(facts, fee_rate_sat_vb)
    payout_script = sweep_payout_script(facts, kind)
    shape = sweep_prepared(
        facts, kind, _single_input_tx(outpoint, sweep_sequence(facts, kind), [TxOut(0, payout_script)])
    )
    miner_fee = fee_for_vsize(final_vsize(shape), rate)
    payout_sats = shape.prevout.value - miner_fee
    if payout_sats <= 0:
        raise InvalidParameterError(f"output of {shape.prevout.value} sat cannot pay the {miner_fee} sat miner fee")
    check_not_dust(payout_sats, payout_script, "payout output")
    return replace(shape, tx=replace(shape.tx, outputs=(TxOut(payout_sats, payout_script),)), fee_sats=miner_fee)


def build_exit(facts: LoanFacts, *, fee_rate_sat_vb: FeeRate) -> PreparedSpend:
    """Build TX_exit: B reclaims the escrow via leaf 0 (nSequence = t_0; valid t_0 blocks after TX_0)."""
    facts.require("escrow_outpoint")
    return _build_sweep(facts, SpendKind.TX_EXIT, facts.escrow_outpoint, fee_rate_sat_vb)  # type: ignore[arg-type]


def collateral_outpoint(tx1_txid: str) -> OutPoint:
    """TX_1's collateral output: output 1 of TX_1 (its txid is fixed before it is broadcast: segwit)."""
    return OutPoint(tx1_txid, COLLATERAL_OUTPUT_INDEX)


def build_release(facts: LoanFacts, *, tx1_txid: str, fee_rate_sat_vb: FeeRate) -> PreparedSpend:
    """Build TX_release: B takes the collateral back with pL via leaf 1 (nSequence 0xfffffffd)."""
    return _build_sweep(facts, SpendKind.TX_RELEASE, collateral_outpoint(tx1_txid), fee_rate_sat_vb)


def build_capture(facts: LoanFacts, *, tx1_txid: str, fee_rate_sat_vb: FeeRate) -> PreparedSpend:
    """Build TX_capture: L takes the collateral via leaf 0 (nSequence = t_1, valid t_1 blocks after TX_1)."""
    return _build_sweep(facts, SpendKind.TX_CAPTURE, collateral_outpoint(tx1_txid), fee_rate_sat_vb)


def finalize(prepared: PreparedSpend, *, signatures: list[bytes], preimage: bytes | None = None) -> Transaction:
    """Assemble the witness ``[*signatures, (preimage), leaf, control]`` after checking every piece.

    ``signatures`` are in ``prepared.signers`` order (TX_1: [sigB, sigL]). Each must be a valid 64-byte
    SIGHASH_DEFAULT signature of its signer; the preimage must hash (SHA-256) to the leaf's hash.
    """
    if len(signatures) != len(prepared.signers):
        raise TransactionError(f"{prepared.kind.value} needs {len(prepared.signers)} signature(s)")
    for signer, signature in zip(prepared.signers, signatures, strict=True):
        if len(signature) != 64:
            raise TransactionError("signatures must be 64-byte BIP-340 signatures with SIGHASH_DEFAULT")
        if not prepared.verify_signature(signer, signature):
            raise TransactionError(f"signature for key {signer.hex()} does not verify for {prepared.kind.value}")
    items = list(signatures)
    if prepared.preimage_hash is not None:
        if preimage is None:
            raise TransactionError(f"{prepared.kind.value} needs the preimage of {prepared.preimage_hash.hex()}")
        preimage_bytes = parse_hash32(preimage, "preimage")
        if sha256(preimage_bytes) != prepared.preimage_hash:
            raise TransactionError("preimage does not hash to the leaf's hash")
        items.append(preimage_bytes)
    elif preimage is not None:
        raise TransactionError(f"{prepared.kind.value} takes no preimage")
    return prepared.tx.with_witness(0, [*items, prepared.leaf_script, prepared.control_block])


def finalize_tx1(
    prepared: PreparedSpend, *, borrower_signature: bytes, lender_signature: bytes, borrower_preimage: bytes
) -> Transaction:
    """TX_1 witness: sigB, sigL, pB, leaf, control."""
    _expect_kind(prepared, SpendKind.TX_1)
    return finalize(prepared, signatures=[borrower_signature, lender_signature], preimage=borrower_preimage)


def finalize_exit(prepared: PreparedSpend, *, borrower_signature: bytes) -> Transaction:
    """TX_exit witness: sigB, leaf, control."""
    _expect_kind(prepared, SpendKind.TX_EXIT)
    return finalize(prepared, signatures=[borrower_signature])


def finalize_release(prepared: PreparedSpend, *, borrower_signature: bytes, lender_preimage: bytes) -> Transaction:
    """TX_release witness: sigB, pL, leaf, control."""
    _expect_kind(prepared, SpendKind.TX_RELEASE)
    return finalize(prepared, signatures=[borrower_signature], preimage=lender_preimage)


def finalize_capture(prepared: PreparedSpend, *, lender_signature: bytes) -> Transaction:
    """TX_capture witness: sigL, leaf, control."""
    _expect_kind(prepared, SpendKind.TX_CAPTURE)
    return finalize(prepared, signatures=[lender_signature])


def _expect_kind(prepared: PreparedSpend, kind: SpendKind) -> None:
    if prepared.kind is not kind:
        raise TransactionError(f"expected a prepared {kind.value}, got {prepared.kind.value}")
