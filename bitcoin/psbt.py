"""Partially Signed Bitcoin Transactions: BIP-174 (version 0) with the BIP-371 taproot fields.

B's pre-signature of TX_1 travels as a PSBT so any taproot-capable wallet can produce it. ``create_psbt``
writes, for the one input: ``PSBT_IN_WITNESS_UTXO`` (escrow value and script), ``PSBT_IN_TAP_LEAF_SCRIPT``
(keyed by the leaf's control block), ``PSBT_IN_TAP_INTERNAL_KEY`` (the NUMS point),
``PSBT_IN_TAP_MERKLE_ROOT`` and ``PSBT_IN_TAP_BIP32_DERIVATION`` for every signer of the leaf, naming the
leaf hash it signs (wallets such as BDK sign a script path only for keys listed there; a key without HD origin
gets its own fingerprint, ``hash160(xonly)[:4]``, and an empty path, as rust-miniscript writes it). For a
taproot output it creates (the collateral output of TX_1) it writes ``PSBT_OUT_TAP_INTERNAL_KEY`` and
``PSBT_OUT_TAP_TREE`` so the wallet can show what it locks. A signer adds ``PSBT_IN_TAP_SCRIPT_SIG`` keyed by
(x-only key, leaf hash); a revealed preimage travels as ``PSBT_IN_SHA256`` (BIP-174). Unknown fields are kept.

Nothing read from a PSBT is trusted by the lender: ``bitcoin.presignature`` rebuilds every fact itself and
only takes the signature out of it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from bitcoin.encoding import ByteReader, compact_size, hash160, push_bytes, sha256
from bitcoin.errors import PsbtError, TransactionError
from bitcoin.keys import PrivateKey
from bitcoin.scripts import TAPSCRIPT_LEAF_VERSION, control_block_commits, tap_leaf_hash
from bitcoin.transactions import (
    SIGHASH_DEFAULT,
    PreparedSpend,
    Transaction,
    TxOut,
    taproot_sighash,
)

PSBT_MAGIC = b"psbt\xff"

PSBT_GLOBAL_UNSIGNED_TX = 0x00
PSBT_GLOBAL_VERSION = 0xFB

PSBT_IN_NON_WITNESS_UTXO = 0x00
PSBT_IN_WITNESS_UTXO = 0x01
PSBT_IN_SIGHASH_TYPE = 0x03
PSBT_IN_SHA256 = 0x0B
PSBT_IN_FINAL_SCRIPTWITNESS = 0x08
PSBT_IN_TAP_KEY_SIG = 0x13
PSBT_IN_TAP_SCRIPT_SIG = 0x14
PSBT_IN_TAP_LEAF_SCRIPT = 0x15
PSBT_IN_TAP_BIP32_DERIVATION = 0x16
PSBT_IN_TAP_INTERNAL_KEY = 0x17
PSBT_IN_TAP_MERKLE_ROOT = 0x18

PSBT_OUT_TAP_INTERNAL_KEY = 0x05
PSBT_OUT_TAP_TREE = 0x06

KeyMap = dict[bytes, bytes]


def _read_map(reader: ByteReader) -> KeyMap:
    """Read one key-value map up to its 0x00 separator; duplicate keys are an error (BIP-174)."""
    entries: KeyMap = {}
    while True:
        key_length = reader.read_compact_size()
        if key_length == 0:
            return entries
        key = reader.read(key_length)
        value = reader.read_var_bytes()
        if key in entries:
            raise PsbtError(f"duplicate PSBT key {key.hex()}")
        entries[key] = value


def _write_map(entries: KeyMap) -> bytes:
    return b"".join(push_bytes(key) + push_bytes(value) for key, value in entries.items()) + b"\x00"


@dataclass
class Psbt:
    """A version-0 PSBT: the unsigned transaction plus one key-value map per input and per output."""

    unsigned_tx: Transaction
    global_map: KeyMap = field(default_factory=dict)
    inputs: list[KeyMap] = field(default_factory=list)
    outputs: list[KeyMap] = field(default_factory=list)

    def __post_init__(self) -> None:
        if any(txin.witness or txin.script_sig for txin in self.unsigned_tx.inputs):
            raise PsbtError("the PSBT's unsigned transaction must have empty scriptSigs and witnesses")
        if not self.inputs:
            self.inputs = [{} for _ in self.unsigned_tx.inputs]
        if not self.outputs:
            self.outputs = [{} for _ in self.unsigned_tx.outputs]
        if len(self.inputs) != len(self.unsigned_tx.inputs) or len(self.outputs) != len(self.unsigned_tx.outputs):
            raise PsbtError("PSBT map count does not match the transaction's inputs and outputs")

    # -- encoding --

    @classmethod
    def parse(cls, data: bytes) -> Psbt:
        """Parse binary PSBT data, validating the fields this module relies on."""
        if not data.startswith(PSBT_MAGIC):
            raise PsbtError("not a PSBT (missing magic bytes)")
        reader = ByteReader(data[len(PSBT_MAGIC) :])
        try:
            global_map = _read_map(reader)
            raw_tx = global_map.pop(bytes([PSBT_GLOBAL_UNSIGNED_TX]), None)
            if raw_tx is None:
                raise PsbtError("PSBT has no unsigned transaction")
            version = global_map.get(bytes([PSBT_GLOBAL_VERSION]))
            if version is not None and int.from_bytes(version, "little") != 0:
                raise PsbtError("only PSBT version 0 is supported")
            unsigned_tx = Transaction.parse(raw_tx)
            inputs = [_read_map(reader) for _ in unsigned_tx.inputs]
            outputs = [_read_map(reader) for _ in unsigned_tx.outputs]
        except ValueError as error:
            if isinstance(error, PsbtError):
                raise
            raise PsbtError(f"malformed PSBT: {error}") from None
        if reader.remaining():
            raise PsbtError("trailing bytes after the PSBT")
        psbt = cls(unsigned_tx=unsigned_tx, global_map=global_map, inputs=inputs, outputs=outputs)
        for index in range(len(inputs)):
            psbt._validate_input(index)
        return psbt

    @classmethod
    def from_base64(cls, text: str) -> Psbt:
        """Parse a base64 PSBT (what wallets export)."""
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise PsbtError("PSBT is not valid base64") from None
        return cls.parse(data)

    @classmethod
    def load(cls, data: bytes | str) -> Psbt:
        """Parse a PSBT given as binary, base64 text or hex text."""
        if isinstance(data, bytes):
            if data.startswith(PSBT_MAGIC):
                return cls.parse(data)
            try:
                data = data.decode("ascii")
            except UnicodeDecodeError:
                raise PsbtError("not a PSBT (neither binary nor base64)") from None
        text = data.strip()
        if text.startswith("70736274ff"):
            try:
                return cls.parse(bytes.fromhex(text))
            except ValueError:
                raise PsbtError("PSBT hex is invalid") from None
        return cls.from_base64(text)

    def serialize(self) -> bytes:
        """Binary PSBT."""
        global_map = {bytes([PSBT_GLOBAL_UNSIGNED_TX]): self.unsigned_tx.serialize(include_witness=False)}
        global_map.update(self.global_map)
        parts = [PSBT_MAGIC, _write_map(global_map)]
        parts += [_write_map(entries) for entries in self.inputs]
        parts += [_write_map(entries) for entries in self.outputs]
        return b"".join(parts)

    def to_base64(self) -> str:
        """Base64 PSBT."""
        return base64.b64encode(self.serialize()).decode("ascii")

    # -- typed accessors --

    def _input(self, index: int) -> KeyMap:
        if not 0 <= index < len(self.inputs):
            raise PsbtError(f"PSBT has no input {index}")
        return self.inputs[index]

    def _validate_input(self, index: int) -> None:
        self.witness_utxo(index)
        self.tap_leaf_scripts(index)
        self.tap_script_sigs(index)
        self.sighash_type(index)
        self.sha256_preimages(index)
        self.tap_key_leaf_hashes(index)

    def sha256_preimages(self, index: int) -> dict[bytes, bytes]:
        """{hash: preimage} of every PSBT_IN_SHA256 of input ``index`` (each checked to hash to its key)."""
        found = {}
        for key, value in self._input(index).items():
            if key[0] != PSBT_IN_SHA256:
                continue
            if len(key) != 33 or sha256(value) != key[1:]:
                raise PsbtError(f"malformed SHA-256 preimage of input {index}")
            found[key[1:]] = value
        return found

    def add_sha256_preimage(self, index: int, preimage: bytes) -> None:
        """Record a preimage (pL for TX_release) so any wallet can finalize the input."""
        self._input(index)[bytes([PSBT_IN_SHA256]) + sha256(preimage)] = bytes(preimage)

    def tap_key_leaf_hashes(self, index: int) -> dict[bytes, list[bytes]]:
        """{x-only key: leaf hashes} of every PSBT_IN_TAP_BIP32_DERIVATION of input ``index``."""
        found = {}
        for key, value in self._input(index).items():
            if key[0] != PSBT_IN_TAP_BIP32_DERIVATION:
                continue
            reader = ByteReader(value)
            try:
                count = reader.read_compact_size()
                leaf_hashes = [reader.read(32) for _ in range(count)]
                origin = reader.read(reader.remaining())
            except ValueError as error:
                raise PsbtError(f"malformed tap BIP-32 derivation of input {index}: {error}") from None
            if len(key) != 33 or len(origin) < 4 or len(origin) % 4:
                raise PsbtError(f"malformed tap BIP-32 derivation of input {index}")
            found[key[1:]] = leaf_hashes
        return found

    def witness_utxo(self, index: int) -> TxOut | None:
        """The PSBT's *claim* about the output input ``index`` spends (never trust it for verification)."""
        raw = self._input(index).get(bytes([PSBT_IN_WITNESS_UTXO]))
        if raw is None:
            return None
        reader = ByteReader(raw)
        try:
            value = reader.read_int(8)
            script = reader.read_var_bytes()
            if reader.remaining():
                raise ValueError("trailing bytes")
            return TxOut(value, script)
        except ValueError as error:
            raise PsbtError(f"malformed witness UTXO of input {index}: {error}") from None

    def sighash_type(self, index: int) -> int | None:
        """PSBT_IN_SIGHASH_TYPE of input ``index`` if present."""
        raw = self._input(index).get(bytes([PSBT_IN_SIGHASH_TYPE]))
        if raw is None:
            return None
        if len(raw) != 4:
            raise PsbtError(f"malformed sighash type of input {index}")
        return int.from_bytes(raw, "little")

    def tap_leaf_scripts(self, index: int) -> list[tuple[bytes, bytes, int]]:
        """(control block, script, leaf version) of every PSBT_IN_TAP_LEAF_SCRIPT of input ``index``."""
        found = []
        for key, value in self._input(index).items():
            if key[0] != PSBT_IN_TAP_LEAF_SCRIPT:
                continue
            control = key[1:]
            if len(control) < 33 or (len(control) - 33) % 32 or not value:
                raise PsbtError(f"malformed tap leaf script of input {index}")
            found.append((control, value[:-1], value[-1]))
        return found

    def tap_script_sigs(self, index: int) -> dict[tuple[bytes, bytes], bytes]:
        """{(x-only key, leaf hash): signature} of input ``index`` (signatures are 64 or 65 bytes)."""
        found = {}
        for key, value in self._input(index).items():
            if key[0] != PSBT_IN_TAP_SCRIPT_SIG:
                continue
            if len(key) != 65 or len(value) not in (64, 65):
                raise PsbtError(f"malformed tap script signature of input {index}")
            found[(key[1:33], key[33:65])] = value
        return found

    def add_tap_script_sig(self, index: int, xonly_pubkey: bytes, leaf_hash: bytes, signature: bytes) -> None:
        """Record a script-path signature keyed by (x-only key, leaf hash)."""
        if len(xonly_pubkey) != 32 or len(leaf_hash) != 32 or len(signature) not in (64, 65):
            raise PsbtError("tap script signature needs a 32-byte key, a 32-byte leaf hash and a 64/65-byte sig")
        self._input(index)[bytes([PSBT_IN_TAP_SCRIPT_SIG]) + xonly_pubkey + leaf_hash] = signature

    def spent_outputs(self) -> list[TxOut]:
        """Witness UTXOs of every input (taproot sighashes commit to all of them)."""
        outputs = []
        for index in range(len(self.inputs)):
            utxo = self.witness_utxo(index)
            if utxo is None:
                raise PsbtError(f"input {index} has no witness UTXO")
            outputs.append(utxo)
        return outputs


def create_psbt(prepared: PreparedSpend, key_origins: dict[bytes, tuple[bytes, list[int]]] | None = None) -> Psbt:
    """Unsigned PSBT of a prepared loan transaction, with the BIP-371 fields of the leaf being spent.

    Every signer of the leaf gets a PSBT_IN_TAP_BIP32_DERIVATION naming the leaf hash; ``key_origins``
    optionally maps a signer's x-only key to its (4-byte master fingerprint, BIP-32 path) so a hardware or HD
    wallet can find its key; without it the key's own fingerprint and an empty path are written.
    """
    tree = prepared.tree
    input_map: KeyMap = {
        bytes([PSBT_IN_WITNESS_UTXO]): prepared.prevout.serialize()[:8] + push_bytes(prepared.prevout.script_pubkey),
        bytes([PSBT_IN_TAP_LEAF_SCRIPT]) + prepared.control_block: prepared.leaf_script
        + bytes([TAPSCRIPT_LEAF_VERSION]),
        bytes([PSBT_IN_TAP_INTERNAL_KEY]): tree.internal_key,
        bytes([PSBT_IN_TAP_MERKLE_ROOT]): tree.merkle_root,
    }
    origins = {signer: (hash160(signer)[:4], []) for signer in prepared.signers}
    origins.update(key_origins or {})
    for xonly, (fingerprint, path) in origins.items():
        if len(fingerprint) != 4 or any(not 0 <= step <= 0xFFFFFFFF for step in path):
            raise PsbtError("key origin needs a 4-byte fingerprint and 32-bit path elements")
        value = compact_size(1) + prepared.leaf_hash + fingerprint
        value += b"".join(step.to_bytes(4, "little") for step in path)
        input_map[bytes([PSBT_IN_TAP_BIP32_DERIVATION]) + xonly] = value
    psbt = Psbt(unsigned_tx=prepared.tx.without_witness(), inputs=[input_map])
    if prepared.collateral is not None:
        # TX_1: describe the collateral output (index 1) so the borrower's wallet can show what it locks.
        tap_tree = b"".join(
            bytes([1, TAPSCRIPT_LEAF_VERSION]) + push_bytes(leaf) for leaf in prepared.collateral.leaves
        )
        psbt.outputs[1] = {
            bytes([PSBT_OUT_TAP_INTERNAL_KEY]): prepared.collateral.internal_key,
            bytes([PSBT_OUT_TAP_TREE]): tap_tree,
        }
    return psbt


def extract_tap_script_sig(psbt: Psbt, input_index: int, xonly_pubkey: bytes, leaf_hash: bytes) -> bytes | None:
    """The signature recorded for (``xonly_pubkey``, ``leaf_hash``) on input ``input_index``, if any.

    Only extracts: whether it is valid is for ``bitcoin.presignature`` (or ``PreparedSpend.verify_signature``).
    """
    return psbt.tap_script_sigs(input_index).get((bytes(xonly_pubkey), bytes(leaf_hash)))


def sign_psbt(psbt: Psbt, private_key: PrivateKey, aux_randomness: bytes | None = None) -> int:
    """Add ``private_key``'s script-path signatures (SIGHASH_DEFAULT) to every input it can sign.

    An input is signed for a leaf only if the leaf contains the key as a 32-byte push and the control block
    proves the leaf belongs to the input's witness UTXO script. Returns the number of signatures added.
    """
    xonly = private_key.xonly_pubkey
    spent_outputs = psbt.spent_outputs()
    added = 0
    for index in range(len(psbt.inputs)):
        hash_type = psbt.sighash_type(index)
        if hash_type not in (None, SIGHASH_DEFAULT):
            raise PsbtError(f"input {index} asks for sighash type {hash_type}; only SIGHASH_DEFAULT is signed")
        for control, script, leaf_version in psbt.tap_leaf_scripts(index):
            if b"\x20" + xonly not in script:
                continue
            if not control_block_commits(control, script, spent_outputs[index].script_pubkey):
                raise PsbtError(f"input {index}: the leaf is not committed to by the witness UTXO's script")
            leaf_hash = tap_leaf_hash(script, leaf_version)
            try:
                sighash = taproot_sighash(psbt.unsigned_tx, index, spent_outputs, SIGHASH_DEFAULT, leaf_hash)
            except TransactionError as error:
                raise PsbtError(str(error)) from None
            psbt.add_tap_script_sig(index, xonly, leaf_hash, private_key.sign_schnorr(sighash, aux_randomness))
            added += 1
    return added
