"""Address <-> scriptPubKey for the regtest node (BIP-173 bech32, BIP-350 bech32m, base58check)."""

from __future__ import annotations

from bitcoin.regtest.serialize import hash256

REGTEST_HRP = "bcrt"
REGTEST_P2PKH_PREFIX = 0x6F
REGTEST_P2SH_PREFIX = 0xC4

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class InvalidAddressError(ValueError):
    """Not a valid regtest address."""


def _polymod(values: list[int]) -> int:
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if ((top >> i) & 1) else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise InvalidAddressError("invalid data value")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise InvalidAddressError("invalid padding")
    return out


def encode_segwit(hrp: str, version: int, program: bytes) -> str:
    """Encode a segwit address (bech32 for v0, bech32m for v1+)."""
    data = [version, *_convertbits(program, 8, 5, True)]
    const = _BECH32_CONST if version == 0 else _BECH32M_CONST
    polymod = _polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in data + checksum)


def decode_segwit(hrp: str, address: str) -> tuple[int, bytes]:
    """Decode a segwit address for `hrp` into (witness version, program)."""
    if address.lower() != address and address.upper() != address:
        raise InvalidAddressError("mixed case")
    address = address.lower()
    pos = address.rfind("1")
    if pos < 1 or pos + 7 > len(address) or len(address) > 90:
        raise InvalidAddressError("bad bech32 layout")
    if address[:pos] != hrp:
        raise InvalidAddressError(f"address is not for this network (expected {hrp}1...)")
    try:
        data = [_CHARSET.index(c) for c in address[pos + 1 :]]
    except ValueError as exc:
        raise InvalidAddressError("invalid bech32 character") from exc
    const = _polymod(_hrp_expand(hrp) + data)
    if const not in (_BECH32_CONST, _BECH32M_CONST):
        raise InvalidAddressError("bad bech32 checksum")
    version = data[0]
    program = bytes(_convertbits(data[1:-6], 5, 8, False))
    if version > 16 or not 2 <= len(program) <= 40:
        raise InvalidAddressError("invalid witness program")
    if version == 0 and len(program) not in (20, 32):
        raise InvalidAddressError("invalid v0 witness program length")
    if (version == 0) != (const == _BECH32_CONST):
        raise InvalidAddressError("wrong checksum variant for witness version")
    return version, program


def _b58decode_check(address: str) -> bytes:
    num = 0
    for char in address:
        index = _B58.find(char)
        if index < 0:
            raise InvalidAddressError("invalid base58 character")
        num = num * 58 + index
    raw = num.to_bytes((num.bit_length() + 7) // 8, "big")
    raw = b"\x00" * (len(address) - len(address.lstrip("1"))) + raw
    if len(raw) < 5 or hash256(raw[:-4])[:4] != raw[-4:]:
        raise InvalidAddressError("bad base58 checksum")
    return raw[:-4]


def address_to_script(address: str) -> bytes:
    """scriptPubKey for a regtest address (P2PKH, P2SH, segwit v0, taproot and future versions)."""
    if not isinstance(address, str) or not address:
        raise InvalidAddressError("address must be a non-empty string")
    if address.lower().startswith(REGTEST_HRP + "1"):
        version, program = decode_segwit(REGTEST_HRP, address)
        op_version = 0 if version == 0 else 0x50 + version
        return bytes([op_version, len(program)]) + program
    if address.lower().startswith(("bc1", "tb1")):
        raise InvalidAddressError("address is for another network (expected bcrt1... on regtest)")
    payload = _b58decode_check(address)
    if len(payload) != 21:
        raise InvalidAddressError("bad base58 payload length")
    if payload[0] == REGTEST_P2PKH_PREFIX:
        return b"\x76\xa9\x14" + payload[1:] + b"\x88\xac"
    if payload[0] == REGTEST_P2SH_PREFIX:
        return b"\xa9\x14" + payload[1:] + b"\x87"
    raise InvalidAddressError("address is for another network (not a regtest version byte)")


def script_to_address(script: bytes) -> str | None:
    """Regtest address of a standard scriptPubKey, or None (e.g. OP_RETURN, bare scripts)."""
    if len(script) >= 4 and len(script) == script[1] + 2 and 2 <= script[1] <= 40:
        if script[0] == 0 and script[1] in (20, 32):
            return encode_segwit(REGTEST_HRP, 0, script[2:])
        if 0x51 <= script[0] <= 0x60:
            return encode_segwit(REGTEST_HRP, script[0] - 0x50, script[2:])
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return _b58encode_check(bytes([REGTEST_P2PKH_PREFIX]) + script[3:23])
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87:
        return _b58encode_check(bytes([REGTEST_P2SH_PREFIX]) + script[2:22])
    return None


def _b58encode_check(payload: bytes) -> str:
    raw = payload + hash256(payload)[:4]
    num = int.from_bytes(raw, "big")
    out = ""
    while num:
        num, rem = divmod(num, 58)
        out = _B58[rem] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\x00"))) + out


def script_type(script: bytes) -> str:
    """Bitcoin Core's `scriptPubKey.type` name."""
    if len(script) == 34 and script[0] == 0x51 and script[1] == 32:
        return "witness_v1_taproot"
    if len(script) == 22 and script[:2] == b"\x00\x14":
        return "witness_v0_keyhash"
    if len(script) == 34 and script[:2] == b"\x00\x20":
        return "witness_v0_scripthash"
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return "pubkeyhash"
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87:
        return "scripthash"
    if script[:1] == b"\x6a":
        return "nulldata"
    if ((len(script) == 35 and script[0] == 33) or (len(script) == 67 and script[0] == 65)) and script[-1] == 0xAC:
        return "pubkey"
    if script_to_address(script) is not None:
        return "witness_unknown"
    return "nonstandard"
