"""The four loan transactions: builders, BIP-341 script-path sighashes, signing and witness assembly.

| tx         | spends            | witness (bottom to top)       | nSequence  | outputs                      |
|------------|-------------------|-------------------------------|------------|------------------------------|
| TX_1       | escrow leaf 1     | sigB, sigL, pB, leaf, control | 0xfffffffd | [0] fee -> L, [1] collateral |
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

Usage (TX_1)::

    scripts = loan_outputs(borrower_pubkey=xb, lender_pubkey=xl, borrower_hash=hb, lender_hash=hl,
                           escrow_timelock=100, collateral_timelock=27150)
    prepared = build_tx1(scripts=scripts, escrow_outpoint=OutPoint(txid, vout), escrow_value_sats=value,
                         loan_amount_sats=amount, origination_fee_bps=100, lender_payout_address=addr,
                         network="regtest", fee_rate_sat_vb=2)
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

from bitcoin.addresses import address_to_script_pubkey
from bitcoin.encoding import ByteReader, compact_size, push_bytes, sha256, sha256d, tagged_hash
from bitcoin.errors import InvalidParameterError, TransactionError
from bitcoin.fees import check_not_dust, fee_for_vsize, parse_fee_rate, vsize_from_weight
from bitcoin.keys import PrivateKey, verify_schnorr
from bitcoin.networks import Network
from bitcoin.scripts import HASHLOCK_LEAF, TIMELOCK_LEAF, LoanScripts, TwoLeafTaprootOutput, parse_hash32

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


def check_bps(value: int, name: str, low: int, high: int) -> int:
    """Validate an integer number of basis points in [low, high]; return it."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterError(f"{name} must be an integer between {low} and {high} basis points")
    return value


def origination_fee_sats(loan_amount_sats: int, origination_fee_bps: int) -> int:
    """L's origination fee: amount x bps // 10000 (rounded down)."""
    return loan_amount_sats * origination_fee_bps // BPS


def minimum_collateral_sats(loan_amount_sats: int, min_collateral_ratio_bps: int = BPS) -> int:
    """Smallest acceptable collateral: ceil(amount x ratio / 10000)."""
    return -(-loan_amount_sats * min_collateral_ratio_bps // BPS)


def _single_input_tx(outpoint: OutPoint, sequence: int, outputs: list[TxOut]) -> Transaction:
    return Transaction(
        version=TX_VERSION,
        inputs=(TxIn(outpoint=outpoint, sequence=sequence),),
        outputs=tuple(outputs),
        locktime=0,
    )


def build_tx1(
    *,
    scripts: LoanScripts,
    escrow_outpoint: OutPoint,
    escrow_value_sats: int,
    loan_amount_sats: int,
    origination_fee_bps: int,
    lender_payout_address: str,
    network: Network | str,
    fee_rate_sat_vb: FeeRate,
    min_collateral_ratio_bps: int = BPS,
) -> PreparedSpend:
    """Build TX_1 (collateral lock) spending the escrow's hashlock leaf.

    Outputs: [0] origination fee (amount x bps // 10000) to L's payout address, [1] everything else minus
    the miner fee to the collateral output. Refuses (``DustError``/``FeeError``/``InvalidParameterError``)
    if the fee output is dust, or the collateral would fall below amount x ratio, given the miner fee
    ``ceil(rate x final vsize)``.
    """
    check_amount_sats(escrow_value_sats, "escrow value")
    check_amount_sats(loan_amount_sats, "loan amount")
    check_bps(origination_fee_bps, "origination fee", 0, BPS)
    check_bps(min_collateral_ratio_bps, "minimum collateral ratio", BPS, 100 * BPS)
    parse_fee_rate(fee_rate_sat_vb)
    fee_script = address_to_script_pubkey(lender_payout_address, network)
    fee_output_sats = origination_fee_sats(loan_amount_sats, origination_fee_bps)
    check_not_dust(fee_output_sats, fee_script, "origination fee output")
    collateral_script = scripts.collateral.script_pubkey
    shape = PreparedSpend(
        kind=SpendKind.TX_1,
        tx=_single_input_tx(
            escrow_outpoint,
            SEQUENCE_RBF_NO_LOCK,
            [TxOut(fee_output_sats, fee_script), TxOut(0, collateral_script)],
        ),
        prevout=TxOut(escrow_value_sats, scripts.escrow.script_pubkey),
        tree=scripts.escrow,
        leaf_index=HASHLOCK_LEAF,
        signers=(scripts.borrower_pubkey, scripts.lender_pubkey),
        preimage_hash=scripts.borrower_hash,
        collateral=scripts.collateral,
    )
    miner_fee = fee_for_vsize(final_vsize(shape), fee_rate_sat_vb)
    collateral_sats = escrow_value_sats - fee_output_sats - miner_fee
    required = minimum_collateral_sats(loan_amount_sats, min_collateral_ratio_bps)
    if collateral_sats < required:
        raise InvalidParameterError(
            f"escrow of {escrow_value_sats} sat leaves {collateral_sats} sat of collateral after the "
            f"{fee_output_sats} sat origination fee and {miner_fee} sat miner fee; "
            f"at least {required} sat needed"
        )
    check_not_dust(collateral_sats, collateral_script, "collateral output")
    tx = replace(shape.tx, outputs=(TxOut(fee_output_sats, fee_script), TxOut(collateral_sats, collateral_script)))
    return replace(shape, tx=tx, fee_sats=miner_fee)


def _build_sweep(
    *,
    kind: SpendKind,
    tree: TwoLeafTaprootOutput,
    leaf_index: int,
    outpoint: OutPoint,
    value_sats: int,
    sequence: int,
    signers: tuple[bytes, ...],
    preimage_hash: bytes | None,
    payout_address: str,
    network: Network | str,
    fee_rate_sat_vb: FeeRate,
) -> PreparedSpend:
    check_amount_sats(value_sats, "spent output value")
    parse_fee_rate(fee_rate_sat_vb)
    payout_script = address_to_script_pubkey(payout_address, network)
    shape = PreparedSpend(
        kind=kind,
        tx=_single_input_tx(outpoint, sequence, [TxOut(0, payout_script)]),
        prevout=TxOut(value_sats, tree.script_pubkey),
        tree=tree,
        leaf_index=leaf_index,
        signers=signers,
        preimage_hash=preimage_hash,
    )
    miner_fee = fee_for_vsize(final_vsize(shape), fee_rate_sat_vb)
    payout_sats = value_sats - miner_fee
    if payout_sats <= 0:
        raise InvalidParameterError(f"output of {value_sats} sat cannot pay the {miner_fee} sat miner fee")
    check_not_dust(payout_sats, payout_script, "payout output")
    return replace(shape, tx=replace(shape.tx, outputs=(TxOut(payout_sats, payout_script),)), fee_sats=miner_fee)


def build_exit(
    *,
    scripts: LoanScripts,
    escrow_outpoint: OutPoint,
    escrow_value_sats: int,
    borrower_payout_address: str,
    network: Network | str,
    fee_rate_sat_vb: FeeRate,
) -> PreparedSpend:
    """Build TX_exit: B reclaims the escrow via leaf 0 (nSequence = t_0; valid t_0 blocks after TX_0)."""
    return _build_sweep(
        kind=SpendKind.TX_EXIT,
        tree=scripts.escrow,
        leaf_index=TIMELOCK_LEAF,
        outpoint=escrow_outpoint,
        value_sats=escrow_value_sats,
        sequence=scripts.escrow_timelock,
        signers=(scripts.borrower_pubkey,),
        preimage_hash=None,
        payout_address=borrower_payout_address,
        network=network,
        fee_rate_sat_vb=fee_rate_sat_vb,
    )


def build_release(
    *,
    scripts: LoanScripts,
    collateral_outpoint: OutPoint,
    collateral_value_sats: int,
    borrower_payout_address: str,
    network: Network | str,
    fee_rate_sat_vb: FeeRate,
) -> PreparedSpend:
    """Build TX_release: B takes the collateral back with pL via leaf 1 (nSequence 0xfffffffd)."""
    return _build_sweep(
        kind=SpendKind.TX_RELEASE,
        tree=scripts.collateral,
        leaf_index=HASHLOCK_LEAF,
        outpoint=collateral_outpoint,
        value_sats=collateral_value_sats,
        sequence=SEQUENCE_RBF_NO_LOCK,
        signers=(scripts.borrower_pubkey,),
        preimage_hash=scripts.lender_hash,
        payout_address=borrower_payout_address,
        network=network,
        fee_rate_sat_vb=fee_rate_sat_vb,
    )


def build_capture(
    *,
    scripts: LoanScripts,
    collateral_outpoint: OutPoint,
    collateral_value_sats: int,
    lender_payout_address: str,
    network: Network | str,
    fee_rate_sat_vb: FeeRate,
) -> PreparedSpend:
    """Build TX_capture: L takes the collateral via leaf 0 (nSequence = t_1, valid t_1 blocks after TX_1)."""
    return _build_sweep(
        kind=SpendKind.TX_CAPTURE,
        tree=scripts.collateral,
        leaf_index=TIMELOCK_LEAF,
        outpoint=collateral_outpoint,
        value_sats=collateral_value_sats,
        sequence=scripts.collateral_timelock,
        signers=(scripts.lender_pubkey,),
        preimage_hash=None,
        payout_address=lender_payout_address,
        network=network,
        fee_rate_sat_vb=fee_rate_sat_vb,
    )


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
