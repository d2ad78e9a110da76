"""The node's development faucet: one P2WPKH key whose coinbase outputs fund `sendtoaddress`.

Signing is BIP-143 (segwit v0) with SIGHASH_ALL and low-S DER ECDSA from libsecp256k1 (coincurve).
"""

from __future__ import annotations

import os
import secrets
import struct
from pathlib import Path

import coincurve

from bitcoin.regtest.address import REGTEST_HRP, encode_segwit
from bitcoin.regtest.serialize import OutPoint, Tx, TxOut, hash160, hash256, ser_bytes

SIGHASH_ALL = 1
# vbytes of one P2WPKH input (41 non-witness + ~108 witness / 4) and one output, for fee estimates.
P2WPKH_INPUT_VBYTES = 68
OUTPUT_VBYTES = 43
TX_OVERHEAD_VBYTES = 11


class FaucetKey:
    """A secp256k1 key kept in the node's data directory (regtest only: never use it for real money)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("faucet secret must be 32 bytes")
        self._key = coincurve.PrivateKey(secret)
        self.pubkey = self._key.public_key.format(compressed=True)
        self.script_pubkey = b"\x00\x14" + hash160(self.pubkey)
        self.address = encode_segwit(REGTEST_HRP, 0, hash160(self.pubkey))

    @classmethod
    def load_or_create(cls, path: Path) -> FaucetKey:
        """Read the key from `path`, creating it (mode 0600) on first start."""
        if path.exists():
            secret = bytes.fromhex(path.read_text().strip())
        else:
            secret = secrets.token_bytes(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secret.hex())
        return cls(secret)

    def sign_p2wpkh_inputs(self, tx: Tx, amounts: list[int]) -> None:
        """Fill the witness of every input (all must spend this key's P2WPKH outputs with `amounts`)."""
        if len(amounts) != len(tx.vin):
            raise ValueError("one amount per input")
        hash_prevouts = hash256(b"".join(i.prevout.txid + struct.pack("<I", i.prevout.vout) for i in tx.vin))
        hash_sequence = hash256(b"".join(struct.pack("<I", i.sequence) for i in tx.vin))
        hash_outputs = hash256(b"".join(_ser_txout(o) for o in tx.vout))
        script_code = ser_bytes(b"\x76\xa9\x14" + hash160(self.pubkey) + b"\x88\xac")
        for index, txin in enumerate(tx.vin):
            preimage = (
                struct.pack("<i", tx.version)
                + hash_prevouts
                + hash_sequence
                + _ser_outpoint(txin.prevout)
                + script_code
                + struct.pack("<q", amounts[index])
                + struct.pack("<I", txin.sequence)
                + hash_outputs
                + struct.pack("<I", tx.locktime)
                + struct.pack("<I", SIGHASH_ALL)
            )
            signature = self._key.sign(hash256(preimage), hasher=None)
            txin.witness = [signature + bytes([SIGHASH_ALL]), self.pubkey]


def _ser_outpoint(outpoint: OutPoint) -> bytes:
    return outpoint.txid + struct.pack("<I", outpoint.vout)


def _ser_txout(txout: TxOut) -> bytes:
    return struct.pack("<q", txout.value) + ser_bytes(txout.script_pubkey)
