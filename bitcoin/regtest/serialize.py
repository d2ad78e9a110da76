"""Consensus serialization for the regtest node: transactions, blocks, hashes (bytes in, bytes out).

This is deliberately self-contained (the node must not depend on the protocol library it is used to test).
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass, field

MAX_MONEY = 21_000_000 * 100_000_000
SEQUENCE_FINAL = 0xFFFFFFFF
LOCKTIME_THRESHOLD = 500_000_000


class DeserializationError(ValueError):
    """Raw bytes that are not a valid consensus encoding."""


def sha256(data: bytes) -> bytes:
    """Single SHA-256."""
    return hashlib.sha256(data).digest()


def hash256(data: bytes) -> bytes:
    """Double SHA-256 (txids, block hashes, merkle nodes)."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash160(data: bytes) -> bytes:
    """RIPEMD160(SHA256(data))."""
    return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()


def ser_compact_size(n: int) -> bytes:
    """Bitcoin's variable-length integer."""
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def _read(stream: io.BytesIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise DeserializationError("unexpected end of data")
    return data


def read_compact_size(stream: io.BytesIO) -> int:
    """Read a variable-length integer (canonical encodings only)."""
    first = _read(stream, 1)[0]
    if first < 0xFD:
        return first
    if first == 0xFD:
        value = struct.unpack("<H", _read(stream, 2))[0]
        minimum = 0xFD
    elif first == 0xFE:
        value = struct.unpack("<I", _read(stream, 4))[0]
        minimum = 0x10000
    else:
        value = struct.unpack("<Q", _read(stream, 8))[0]
        minimum = 0x100000000
    if value < minimum:
        raise DeserializationError("non-canonical compact size")
    if value > 0x02000000:
        raise DeserializationError("compact size too large")
    return value


def ser_bytes(data: bytes) -> bytes:
    """Length-prefixed byte string."""
    return ser_compact_size(len(data)) + data


def read_bytes(stream: io.BytesIO) -> bytes:
    """Read a length-prefixed byte string."""
    return _read(stream, read_compact_size(stream))


def script_num(n: int) -> bytes:
    """Minimal CScriptNum encoding (without the push opcode)."""
    if n == 0:
        return b""
    negative = n < 0
    value = abs(n)
    out = bytearray()
    while value:
        out.append(value & 0xFF)
        value >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if negative else 0x00)
    elif negative:
        out[-1] |= 0x80
    return bytes(out)


def push_int(n: int) -> bytes:
    """Minimal script push of an integer (OP_0, OP_1..OP_16, OP_1NEGATE or a data push)."""
    if n == 0:
        return b"\x00"
    if n == -1:
        return b"\x4f"
    if 1 <= n <= 16:
        return bytes([0x50 + n])
    data = script_num(n)
    return bytes([len(data)]) + data


def push_data(data: bytes) -> bytes:
    """Minimal script push of a byte string."""
    if len(data) < 0x4C:
        return bytes([len(data)]) + data
    if len(data) <= 0xFF:
        return b"\x4c" + bytes([len(data)]) + data
    if len(data) <= 0xFFFF:
        return b"\x4d" + struct.pack("<H", len(data)) + data
    return b"\x4e" + struct.pack("<I", len(data)) + data


@dataclass(frozen=True)
class OutPoint:
    """A reference to a transaction output; `txid` in internal (little-endian) byte order."""

    txid: bytes
    vout: int

    @property
    def txid_hex(self) -> str:
        """The txid as displayed by Bitcoin Core (big-endian hex)."""
        return self.txid[::-1].hex()

    @classmethod
    def from_hex(cls, txid_hex: str, vout: int) -> OutPoint:
        """Build from a displayed txid."""
        return cls(bytes.fromhex(txid_hex)[::-1], vout)

    def is_null(self) -> bool:
        """True for the coinbase's null prevout."""
        return self.txid == b"\x00" * 32 and self.vout == 0xFFFFFFFF


@dataclass
class TxIn:
    """A transaction input."""

    prevout: OutPoint
    script_sig: bytes = b""
    sequence: int = SEQUENCE_FINAL
    witness: list[bytes] = field(default_factory=list)


@dataclass
class TxOut:
    """A transaction output."""

    value: int
    script_pubkey: bytes


@dataclass
class Tx:
    """A transaction with optional segwit witnesses."""

    version: int
    vin: list[TxIn]
    vout: list[TxOut]
    locktime: int = 0

    def has_witness(self) -> bool:
        """True when any input carries witness data."""
        return any(txin.witness for txin in self.vin)

    def serialize(self, with_witness: bool = True) -> bytes:
        """Consensus encoding (BIP-144 when there are witnesses and `with_witness`)."""
        witness = with_witness and self.has_witness()
        out = bytearray(struct.pack("<i", self.version))
        if witness:
            out += b"\x00\x01"
        out += ser_compact_size(len(self.vin))
        for txin in self.vin:
            out += txin.prevout.txid + struct.pack("<I", txin.prevout.vout)
            out += ser_bytes(txin.script_sig) + struct.pack("<I", txin.sequence)
        out += ser_compact_size(len(self.vout))
        for txout in self.vout:
            out += struct.pack("<q", txout.value) + ser_bytes(txout.script_pubkey)
        if witness:
            for txin in self.vin:
                out += ser_compact_size(len(txin.witness))
                for item in txin.witness:
                    out += ser_bytes(item)
        out += struct.pack("<I", self.locktime)
        return bytes(out)

    @property
    def txid(self) -> bytes:
        """Txid in internal byte order."""
        return hash256(self.serialize(with_witness=False))

    @property
    def txid_hex(self) -> str:
        """Txid as displayed."""
        return self.txid[::-1].hex()

    @property
    def wtxid(self) -> bytes:
        """Witness txid in internal byte order."""
        return hash256(self.serialize())

    @property
    def weight(self) -> int:
        """BIP-141 weight."""
        return len(self.serialize(with_witness=False)) * 3 + len(self.serialize())

    @property
    def vsize(self) -> int:
        """Virtual size in vbytes (rounded up)."""
        return (self.weight + 3) // 4

    def is_coinbase(self) -> bool:
        """True for a coinbase transaction."""
        return len(self.vin) == 1 and self.vin[0].prevout.is_null()

    @classmethod
    def parse(cls, stream: io.BytesIO) -> Tx:
        """Read one transaction from `stream`."""
        version = struct.unpack("<i", _read(stream, 4))[0]
        n_in = read_compact_size(stream)
        segwit = False
        if n_in == 0:
            flag = _read(stream, 1)[0]
            if flag != 1:
                raise DeserializationError("unknown transaction serialization flag")
            segwit = True
            n_in = read_compact_size(stream)
        vin = []
        for _ in range(n_in):
            prevout = OutPoint(_read(stream, 32), struct.unpack("<I", _read(stream, 4))[0])
            script_sig = read_bytes(stream)
            sequence = struct.unpack("<I", _read(stream, 4))[0]
            vin.append(TxIn(prevout, script_sig, sequence))
        vout = []
        for _ in range(read_compact_size(stream)):
            value = struct.unpack("<q", _read(stream, 8))[0]
            vout.append(TxOut(value, read_bytes(stream)))
        if segwit:
            for txin in vin:
                txin.witness = [read_bytes(stream) for _ in range(read_compact_size(stream))]
            if not any(txin.witness for txin in vin):
                raise DeserializationError("superfluous witness record")
        locktime = struct.unpack("<I", _read(stream, 4))[0]
        return cls(version, vin, vout, locktime)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Tx:
        """Parse exactly one transaction; trailing bytes are an error."""
        stream = io.BytesIO(raw)
        tx = cls.parse(stream)
        if stream.read(1):
            raise DeserializationError("trailing bytes after transaction")
        return tx

    @classmethod
    def from_hex(cls, raw_hex: str) -> Tx:
        """Parse a hex-encoded transaction."""
        try:
            raw = bytes.fromhex(raw_hex)
        except (ValueError, TypeError) as exc:
            raise DeserializationError("transaction is not hex") from exc
        return cls.from_bytes(raw)


@dataclass
class BlockHeader:
    """An 80-byte block header; hashes in internal byte order."""

    version: int
    prev_hash: bytes
    merkle_root: bytes
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        """80-byte encoding."""
        return (
            struct.pack("<i", self.version)
            + self.prev_hash
            + self.merkle_root
            + struct.pack("<III", self.time, self.bits, self.nonce)
        )

    @property
    def hash(self) -> bytes:
        """Block hash in internal byte order."""
        return hash256(self.serialize())

    @classmethod
    def from_bytes(cls, raw: bytes) -> BlockHeader:
        """Parse an 80-byte header."""
        if len(raw) != 80:
            raise DeserializationError("block header must be 80 bytes")
        version = struct.unpack("<i", raw[:4])[0]
        time_, bits, nonce = struct.unpack("<III", raw[68:80])
        return cls(version, raw[4:36], raw[36:68], time_, bits, nonce)


@dataclass
class Block:
    """A block: header plus transactions."""

    header: BlockHeader
    txs: list[Tx]

    def serialize(self) -> bytes:
        """Consensus encoding with witnesses."""
        out = bytearray(self.header.serialize())
        out += ser_compact_size(len(self.txs))
        for tx in self.txs:
            out += tx.serialize()
        return bytes(out)

    @property
    def hash(self) -> bytes:
        """Block hash in internal byte order."""
        return self.header.hash

    @classmethod
    def from_bytes(cls, raw: bytes) -> Block:
        """Parse a serialized block."""
        stream = io.BytesIO(raw)
        header = BlockHeader.from_bytes(_read(stream, 80))
        txs = [Tx.parse(stream) for _ in range(read_compact_size(stream))]
        if stream.read(1):
            raise DeserializationError("trailing bytes after block")
        return cls(header, txs)


def merkle_root(hashes: list[bytes]) -> bytes:
    """Bitcoin's merkle root (duplicating the last node of odd levels)."""
    if not hashes:
        raise ValueError("merkle root of nothing")
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [hash256(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def bits_to_target(bits: int) -> int:
    """Expand compact nBits to the 256-bit target."""
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))
