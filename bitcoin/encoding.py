"""Byte encodings shared by keys, addresses and transactions.

* Base58Check (used by WIF keys and legacy P2PKH/P2SH addresses, checksum = first 4 bytes of SHA256d).
* Bitcoin's CompactSize ("varint") and a small bounds-checked reader for parsing serialized data.
* Hash helpers: SHA256, SHA256d, HASH160 and BIP-340 tagged hashes.
"""

from __future__ import annotations

import hashlib

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {char: index for index, char in enumerate(_B58_ALPHABET)}


def sha256(data: bytes) -> bytes:
    """Single SHA-256."""
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    """Double SHA-256 (txids, Base58Check checksums)."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash160(data: bytes) -> bytes:
    """RIPEMD-160 of SHA-256 (P2PKH/P2WPKH key hashes)."""
    digest = hashlib.sha256(data).digest()
    try:
        return hashlib.new("ripemd160", digest).digest()
    except ValueError:  # OpenSSL 3 builds without the legacy provider lack RIPEMD-160
        from bitcoinutils.ripemd160 import ripemd160

        return ripemd160(digest)


def tagged_hash(tag: str, data: bytes) -> bytes:
    """BIP-340 tagged hash: SHA256(SHA256(tag) || SHA256(tag) || data)."""
    tag_digest = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(tag_digest + tag_digest + data).digest()


def b58encode(data: bytes) -> str:
    """Encode bytes in Base58 (leading zero bytes become '1')."""
    number = int.from_bytes(data, "big")
    encoded = ""
    while number:
        number, remainder = divmod(number, 58)
        encoded = _B58_ALPHABET[remainder] + encoded
    leading_zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * leading_zeros + encoded


def b58decode(text: str) -> bytes:
    """Decode a Base58 string; raise ``ValueError`` on a character outside the alphabet."""
    number = 0
    for char in text:
        if char not in _B58_INDEX:
            raise ValueError(f"invalid base58 character {char!r}")
        number = number * 58 + _B58_INDEX[char]
    leading_ones = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * leading_ones + body


def b58check_encode(payload: bytes) -> str:
    """Base58Check: payload followed by the first 4 bytes of its SHA256d."""
    return b58encode(payload + sha256d(payload)[:4])


def b58check_decode(text: str) -> bytes:
    """Decode Base58Check and verify the checksum; raise ``ValueError`` if it is wrong."""
    raw = b58decode(text)
    if len(raw) < 5:
        raise ValueError("base58check string too short")
    payload, checksum = raw[:-4], raw[-4:]
    if sha256d(payload)[:4] != checksum:
        raise ValueError("base58check checksum mismatch")
    return payload


def compact_size(value: int) -> bytes:
    """Serialize an integer as Bitcoin's CompactSize."""
    if value < 0:
        raise ValueError("compact size cannot be negative")
    if value < 0xFD:
        return bytes([value])
    if value <= 0xFFFF:
        return b"\xfd" + value.to_bytes(2, "little")
    if value <= 0xFFFFFFFF:
        return b"\xfe" + value.to_bytes(4, "little")
    return b"\xff" + value.to_bytes(8, "little")


def push_bytes(data: bytes) -> bytes:
    """CompactSize length prefix followed by the data (witness items, scripts inside transactions)."""
    return compact_size(len(data)) + data


class ByteReader:
    """Read serialized data front to back; every read checks that enough bytes are left."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.position = 0

    def read(self, size: int) -> bytes:
        """Read exactly ``size`` bytes or raise ``ValueError``."""
        if size < 0 or self.position + size > len(self.data):
            raise ValueError(f"unexpected end of data: wanted {size} bytes at offset {self.position}")
        chunk = self.data[self.position : self.position + size]
        self.position += size
        return chunk

    def read_int(self, size: int) -> int:
        """Read a little-endian unsigned integer of ``size`` bytes."""
        return int.from_bytes(self.read(size), "little")

    def read_compact_size(self) -> int:
        """Read a CompactSize, refusing non-canonical encodings."""
        first = self.read(1)[0]
        if first < 0xFD:
            return first
        width = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        value = self.read_int(width)
        if value < {2: 0xFD, 4: 0x10000, 8: 0x100000000}[width]:
            raise ValueError("non-canonical compact size")
        return value

    def read_var_bytes(self) -> bytes:
        """Read a CompactSize length followed by that many bytes."""
        return self.read(self.read_compact_size())

    def remaining(self) -> int:
        """Number of unread bytes."""
        return len(self.data) - self.position
