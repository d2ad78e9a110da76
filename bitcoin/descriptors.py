"""Output script descriptors for the loan outputs (BIP-380 checksums, BIP-386 ``tr()`` with miniscript leaves).

Every leaf of a loan output is a miniscript (``bitcoin.miniscript``), so each output has two exact descriptions:

* ``tree_descriptor``: ``tr(H,{leaf0,leaf1})#checksum`` -- the spending policy itself, e.g.
  ``tr(H,{and_v(v:pk(xB),older(t_0)),and_v(v:sha256(hB),multi_a(2,xL,xB))})``. Bitcoin Core (``importdescriptors``),
  BDK and Sparrow import it, and a hardware wallet can show it as a BIP-388 policy; with the borrower's private key
  in place of xB, such a wallet signs the loan's transactions itself.
* ``watch_descriptor``: ``rawtr(<output key>)#checksum`` -- the same scriptPubKey as a watch-only key, for tools
  that know no miniscript.

Checksums are BIP-380's 8-character BCH code over the descriptor's character classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitcoin.addresses import address_to_script_pubkey
from bitcoin.errors import DescriptorError
from bitcoin.keys import parse_xonly_pubkey
from bitcoin.miniscript import compile_tapscript, split_top_level
from bitcoin.networks import Network
from bitcoin.scripts import (
    TwoLeafTaprootOutput,
    p2tr_script_pubkey,
    tap_branch_hash,
    tap_leaf_hash,
    taproot_tweak,
)

_INPUT_CHARSET = "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ "
_CHECKSUM_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)


def _polymod(symbols: list[int]) -> int:
    checksum = 1
    for value in symbols:
        top = checksum >> 35
        checksum = (checksum & 0x7FFFFFFFF) << 5 ^ value
        for bit in range(5):
            if (top >> bit) & 1:
                checksum ^= _GENERATOR[bit]
    return checksum


def _expand(descriptor: str) -> list[int]:
    symbols: list[int] = []
    groups: list[int] = []
    for char in descriptor:
        position = _INPUT_CHARSET.find(char)
        if position < 0:
            raise DescriptorError(f"invalid character {char!r} in descriptor")
        symbols.append(position & 31)
        groups.append(position >> 5)
        if len(groups) == 3:
            symbols.append(groups[0] * 9 + groups[1] * 3 + groups[2])
            groups = []
    if len(groups) == 1:
        symbols.append(groups[0])
    elif len(groups) == 2:
        symbols.append(groups[0] * 3 + groups[1])
    return symbols


def descriptor_checksum(descriptor: str) -> str:
    """The 8-character BIP-380 checksum of ``descriptor`` (given without ``#``)."""
    checksum = _polymod([*_expand(descriptor), 0, 0, 0, 0, 0, 0, 0, 0]) ^ 1
    return "".join(_CHECKSUM_CHARSET[(checksum >> (5 * (7 - index))) & 31] for index in range(8))


def add_checksum(descriptor: str) -> str:
    """``descriptor#checksum``."""
    return f"{descriptor}#{descriptor_checksum(descriptor)}"


def split_checksum(text: str, require_checksum: bool = True) -> str:
    """Verify and strip the ``#checksum`` suffix; raise ``DescriptorError`` if it is missing or wrong."""
    if "#" not in text:
        if require_checksum:
            raise DescriptorError("descriptor has no checksum")
        return text
    body, _, checksum = text.rpartition("#")
    if len(checksum) != 8:
        raise DescriptorError(f"descriptor checksum must be 8 characters, got {len(checksum)}")
    if any(char not in _CHECKSUM_CHARSET for char in checksum):
        raise DescriptorError("descriptor checksum has invalid characters")
    if descriptor_checksum(body) != checksum:
        raise DescriptorError(f"descriptor checksum mismatch: expected {descriptor_checksum(body)}")
    return body


@dataclass(frozen=True)
class OutputDescriptors:
    """The two exact descriptors of one taproot output (see module docstring)."""

    tree_descriptor: str
    watch_descriptor: str


def loan_output_descriptors(output: TwoLeafTaprootOutput) -> OutputDescriptors:
    """Descriptors of a loan output: the miniscript ``tr(H,{...})`` and the watch-only ``rawtr()``."""
    return OutputDescriptors(
        tree_descriptor=add_checksum(output.descriptor_body),
        watch_descriptor=add_checksum(f"rawtr({output.output_key.hex()})"),
    )


def _split_call(text: str) -> tuple[str, str]:
    """``name(args)`` -> (name, args); the closing parenthesis must end the text."""
    open_at = text.find("(")
    if open_at <= 0 or not text.endswith(")"):
        raise DescriptorError(f"expected NAME(...), got {text!r}")
    return text[:open_at], text[open_at + 1 : -1]


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise DescriptorError(f"{what} is not valid hex") from None


def _tree_hash(text: str, depth: int = 0) -> bytes:
    """Merkle hash of a BIP-386 tree expression whose leaves are miniscript (``bitcoin.miniscript``)."""
    if depth > 128:
        raise DescriptorError("taproot tree deeper than 128")
    if text.startswith("{"):
        if not text.endswith("}"):
            raise DescriptorError("unterminated tree branch")
        children = split_top_level(text[1:-1])
        if len(children) != 2:
            raise DescriptorError("a tree branch needs exactly two children")
        return tap_branch_hash(_tree_hash(children[0], depth + 1), _tree_hash(children[1], depth + 1))
    return tap_leaf_hash(compile_tapscript(text))


def parse_descriptor(text: str, network: Network | str, require_checksum: bool = True) -> bytes:
    """scriptPubKey described by ``text``: ``tr(KEY[,TREE])`` with miniscript leaves, ``rawtr(KEY)``,
    ``addr(ADDRESS)`` or ``raw(HEX)``; keys must be x-only hex. Raises ``DescriptorError``."""
    body = split_checksum(text.strip(), require_checksum)
    name, arguments = _split_call(body)
    try:
        if name == "tr":
            parts = split_top_level(arguments)
            if len(parts) > 2:
                raise DescriptorError("tr() takes a key and at most one tree")
            internal_key = parse_xonly_pubkey(parts[0])
            merkle_root = _tree_hash(parts[1]) if len(parts) == 2 else None
            return p2tr_script_pubkey(taproot_tweak(internal_key, merkle_root)[0])
        if name == "rawtr":
            return p2tr_script_pubkey(parse_xonly_pubkey(arguments))
        if name == "addr":
            return address_to_script_pubkey(arguments, network)
        if name == "raw":
            return _hex(arguments, "raw script")
    except DescriptorError:
        raise
    except ValueError as error:
        raise DescriptorError(f"invalid descriptor: {error}") from None
    raise DescriptorError(f"unsupported descriptor {name}()")
