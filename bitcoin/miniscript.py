"""The few tapscript miniscript fragments the loan's leaves are made of, compiled to script bytes.

Every leaf of both loan outputs is a miniscript (PROTOCOL.md, Bitcoin outputs), so each output is a plain
``tr(H,{leaf0,leaf1})`` descriptor that Bitcoin Core, BDK, Sparrow and hardware wallets (BIP-388 policies) can
import. This module is the one place a leaf's text becomes its script: the leaf builders in ``bitcoin.scripts``
write the miniscript and compile it here, and ``bitcoin.descriptors`` parses descriptors through the same code,
so the script a wallet derives and the script we spend are the same by construction. (BDK's miniscript derives
the same addresses from PROTOCOL.md's vector: ``bitcoin/tests/test_descriptors.py``.)

Supported, in tapscript context (the translation table of the miniscript spec):

==========================  ==============================================================
``pk_k(K)``                 ``<K>``
``pk(K)`` = ``c:pk_k(K)``   ``<K> OP_CHECKSIG``
``older(n)``                ``<n> OP_CHECKSEQUENCEVERIFY``            (1 <= n < 2^31)
``sha256(h)``               ``OP_SIZE <32> OP_EQUALVERIFY OP_SHA256 <h> OP_EQUAL``
``multi_a(k,K1,..,Kn)``     ``<K1> OP_CHECKSIG <K2> OP_CHECKSIGADD .. <Kn> OP_CHECKSIGADD <k> OP_NUMEQUAL``
``and_v(X,Y)``              ``[X] [Y]``                               (X must be of type V)
``v:X``                     ``[X] OP_VERIFY``, or the -VERIFY form of X's last opcode
``c:X``                     ``[X] OP_CHECKSIG``
==========================  ==============================================================

Anything else is refused with ``DescriptorError``: we never guess at a fragment we do not implement.
"""

from __future__ import annotations

from bitcoin.errors import DescriptorError, InvalidKeyError
from bitcoin.keys import parse_xonly_pubkey

OP_SIZE = 0x82
OP_EQUAL = 0x87
OP_EQUALVERIFY = 0x88
OP_SHA256 = 0xA8
OP_NUMEQUAL = 0x9C
OP_NUMEQUALVERIFY = 0x9D
OP_CHECKSIG = 0xAC
OP_CHECKSIGVERIFY = 0xAD
OP_CHECKSEQUENCEVERIFY = 0xB2
OP_CHECKSIGADD = 0xBA
OP_VERIFY = 0x69
OP_0 = 0x00
OP_1 = 0x51
OP_PUSHDATA1 = 0x4C
OP_PUSHDATA2 = 0x4D

#: An opcode and its -VERIFY form (what the ``v:`` wrapper turns it into).
_VERIFY_FORMS = {OP_EQUAL: OP_EQUALVERIFY, OP_NUMEQUAL: OP_NUMEQUALVERIFY, OP_CHECKSIG: OP_CHECKSIGVERIFY}
#: BIP-342: at most 999 keys in a multi_a.
MAX_MULTI_A_KEYS = 999
#: older(n) takes a BIP-68 nSequence value below the disable flag.
MAX_OLDER = 2**31 - 1


def push_data(data: bytes) -> bytes:
    """Minimal script push of ``data`` (direct push up to 75 bytes, then OP_PUSHDATA1/2)."""
    size = len(data)
    if size < OP_PUSHDATA1:
        return bytes([size]) + data
    if size <= 0xFF:
        return bytes([OP_PUSHDATA1, size]) + data
    if size <= 0xFFFF:
        return bytes([OP_PUSHDATA2]) + size.to_bytes(2, "little") + data
    raise DescriptorError("script push too large")


def script_num_bytes(number: int) -> bytes:
    """Minimal CScriptNum encoding (little-endian sign-magnitude) of ``number``."""
    if number == 0:
        return b""
    magnitude = abs(number)
    encoded = bytearray()
    while magnitude:
        encoded.append(magnitude & 0xFF)
        magnitude >>= 8
    if encoded[-1] & 0x80:
        encoded.append(0x80 if number < 0 else 0x00)
    elif number < 0:
        encoded[-1] |= 0x80
    return bytes(encoded)


def push_number(number: int) -> bytes:
    """Minimal push of a script number: OP_0, OP_1..OP_16, or a push of its CScriptNum bytes."""
    if number == 0:
        return bytes([OP_0])
    if 1 <= number <= 16:
        return bytes([OP_1 + number - 1])
    return push_data(script_num_bytes(number))


def split_top_level(text: str) -> list[str]:
    """Split on the commas that are not inside parentheses or braces (miniscript arguments, descriptor trees)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "({":
            depth += 1
        elif char in ")}":
            depth -= 1
            if depth < 0:
                raise DescriptorError("unbalanced brackets")
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth:
        raise DescriptorError("unbalanced brackets")
    parts.append(text[start:])
    return parts


def _integer(text: str, what: str, low: int, high: int) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise DescriptorError(f"{what} must be a decimal integer without leading zeros, got {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise DescriptorError(f"{what} must be between {low} and {high}, got {value}")
    return value


def _key(text: str) -> bytes:
    try:
        return parse_xonly_pubkey(text)
    except InvalidKeyError as error:
        raise DescriptorError(f"invalid x-only key in miniscript: {error}") from None


def _hash32(text: str) -> bytes:
    if len(text) != 64:
        raise DescriptorError(f"sha256() takes 64 hex characters, got {len(text)}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise DescriptorError("sha256() argument is not valid hex") from None


def _compile(text: str) -> tuple[bytes, str]:
    """(script, basic type) of one miniscript expression; the type is 'B', 'V' or 'K'."""
    wrappers, colon, rest = text.partition(":")
    if colon and "(" not in wrappers:
        script, kind = _compile(rest)
        for wrapper in reversed(wrappers):
            script, kind = _wrap(wrapper, script, kind)
        return script, kind
    open_at = text.find("(")
    if open_at <= 0 or not text.endswith(")"):
        raise DescriptorError(f"expected a miniscript fragment NAME(...), got {text!r}")
    name, arguments = text[:open_at], split_top_level(text[open_at + 1 : -1])
    if name == "pk_k" and len(arguments) == 1:
        return push_data(_key(arguments[0])), "K"
    if name == "pk" and len(arguments) == 1:
        return push_data(_key(arguments[0])) + bytes([OP_CHECKSIG]), "B"
    if name == "older" and len(arguments) == 1:
        return push_number(_integer(arguments[0], "older()", 1, MAX_OLDER)) + bytes([OP_CHECKSEQUENCEVERIFY]), "B"
    if name == "sha256" and len(arguments) == 1:
        script = bytes([OP_SIZE]) + push_number(32) + bytes([OP_EQUALVERIFY, OP_SHA256])
        return script + push_data(_hash32(arguments[0])) + bytes([OP_EQUAL]), "B"
    if name == "multi_a" and len(arguments) >= 2:
        keys = [_key(argument) for argument in arguments[1:]]
        if len(keys) > MAX_MULTI_A_KEYS or len(set(keys)) != len(keys):
            raise DescriptorError("multi_a() takes at most 999 distinct keys")
        threshold = _integer(arguments[0], "multi_a() threshold", 1, len(keys))
        script = push_data(keys[0]) + bytes([OP_CHECKSIG])
        script += b"".join(push_data(key) + bytes([OP_CHECKSIGADD]) for key in keys[1:])
        return script + push_number(threshold) + bytes([OP_NUMEQUAL]), "B"
    if name == "and_v" and len(arguments) == 2:
        first, first_kind = _compile(arguments[0])
        second, second_kind = _compile(arguments[1])
        if first_kind != "V":
            raise DescriptorError("and_v() needs a V-type first argument (wrap it in v:)")
        return first + second, second_kind
    raise DescriptorError(f"unsupported miniscript fragment {name}() with {len(arguments)} argument(s)")


def _wrap(wrapper: str, script: bytes, kind: str) -> tuple[bytes, str]:
    if wrapper == "c":
        if kind != "K":
            raise DescriptorError("c: wraps a K-type expression (pk_k)")
        return script + bytes([OP_CHECKSIG]), "B"
    if wrapper == "v":
        if kind != "B":
            raise DescriptorError("v: wraps a B-type expression")
        last = script[-1]
        if last in _VERIFY_FORMS:
            return script[:-1] + bytes([_VERIFY_FORMS[last]]), "V"
        return script + bytes([OP_VERIFY]), "V"
    raise DescriptorError(f"unsupported miniscript wrapper {wrapper}:")


def compile_tapscript(miniscript: str) -> bytes:
    """The tapscript of a miniscript expression (a top-level expression must be of type B)."""
    script, kind = _compile(miniscript.strip())
    if kind != "B":
        raise DescriptorError(f"a leaf's miniscript must be of type B, {miniscript!r} is of type {kind}")
    return script
