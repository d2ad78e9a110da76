"""BIP-86 / BIP-341 key-path spends: a single-key P2TR output (no script tree) and its signature.

* ``bip86_output_key(internal_key)``: Q = P + H_TapTweak(P)·G (BIP-341 ``taproot_tweak_pubkey`` with no merkle root,
  as BIP-86 wallets derive their addresses).
* ``tweaked_private_key(key)``: BIP-341 ``taproot_tweak_seckey`` with no merkle root: d negated when P has odd Y,
  plus the tweak, mod n. Signing with it (libsecp256k1 negates again when Q has odd Y) gives a key-path signature.
* ``build_keypath_spend(key, outpoint=, spent=, outputs=)``: a one-input transaction spending a BIP-86 output of
  ``key``, signed (SIGHASH_DEFAULT, 64-byte signature, the witness is that signature alone).

Bytes in, bytes out; no ORM.
"""

from __future__ import annotations

from collections.abc import Sequence

from bitcoin.encoding import tagged_hash
from bitcoin.errors import InvalidKeyError, TransactionError
from bitcoin.keys import CURVE_ORDER, PrivateKey, verify_schnorr
from bitcoin.scripts import p2tr_script_pubkey, taproot_tweak
from bitcoin.transactions import SIGHASH_DEFAULT, OutPoint, Transaction, TxIn, TxOut, taproot_sighash

#: nSequence of the child: final for BIP-68, signals BIP-125 replaceability (so it can itself be bumped).
KEYPATH_SPEND_SEQUENCE = 0xFFFFFFFD


def bip86_output_key(internal_key: bytes) -> bytes:
    """The x-only output key of a BIP-86 (key-path only) P2TR output of the x-only ``internal_key``."""
    return taproot_tweak(internal_key, None)[0]


def bip86_script_pubkey(internal_key: bytes) -> bytes:
    """``OP_1 <Q>`` for the BIP-86 output of ``internal_key``."""
    return p2tr_script_pubkey(bip86_output_key(internal_key))


def tweaked_private_key(key: PrivateKey, merkle_root: bytes | None = None) -> PrivateKey:
    """BIP-341 ``taproot_tweak_seckey``: the secret of the output key Q (``merkle_root`` None for BIP-86)."""
    secret = int.from_bytes(key.secret, "big")
    if key.has_odd_y:
        secret = CURVE_ORDER - secret
    tweak = int.from_bytes(tagged_hash("TapTweak", key.xonly_pubkey + (merkle_root or b"")), "big")
    if tweak >= CURVE_ORDER:
        raise InvalidKeyError("taproot tweak is out of range")
    tweaked = (secret + tweak) % CURVE_ORDER
    if tweaked == 0:
        raise InvalidKeyError("the tweaked key is zero")
    return PrivateKey(tweaked.to_bytes(32, "big"))


def keypath_signature(
    key: PrivateKey, tx: Transaction, input_index: int, spent_outputs: Sequence[TxOut], aux: bytes | None = None
) -> bytes:
    """The 64-byte SIGHASH_DEFAULT key-path signature of input ``input_index`` by the BIP-86 output of ``key``."""
    spent = spent_outputs[input_index]
    if spent.script_pubkey != bip86_script_pubkey(key.xonly_pubkey):
        raise TransactionError("the spent output is not the BIP-86 key-path output of this key")
    sighash = taproot_sighash(tx, input_index, list(spent_outputs), SIGHASH_DEFAULT)
    tweaked = tweaked_private_key(key)
    signature = tweaked.sign_schnorr(sighash, aux)
    if not verify_schnorr(bip86_output_key(key.xonly_pubkey), sighash, signature):  # belt and braces
        raise TransactionError("the key-path signature does not verify")
    return signature


def build_keypath_spend(
    key: PrivateKey,
    *,
    outpoint: OutPoint,
    spent: TxOut,
    outputs: Sequence[TxOut],
    sequence: int = KEYPATH_SPEND_SEQUENCE,
    version: int = 2,
) -> Transaction:
    """A signed one-input transaction spending ``outpoint`` (the BIP-86 output ``spent`` of ``key``)."""
    if not outputs:
        raise TransactionError("a spend needs at least one output")
    if sum(output.value for output in outputs) > spent.value:
        raise TransactionError(f"the outputs pay more than the {spent.value} sat spent")
    unsigned = Transaction(version=version, inputs=(TxIn(outpoint, sequence),), outputs=tuple(outputs))
    return unsigned.with_witness(0, [keypath_signature(key, unsigned, 0, [spent])])


__all__ = [
    "KEYPATH_SPEND_SEQUENCE",
    "bip86_output_key",
    "bip86_script_pubkey",
    "build_keypath_spend",
    "keypath_signature",
    "tweaked_private_key",
]
