"""Tapscript leaves and the two-leaf taproot outputs of the loan protocol (BIP-341/BIP-342).

Both loan outputs are P2TR outputs whose internal key is BIP-341's NUMS point ``H`` (nobody knows its discrete
log, so the key path is unspendable) and whose script tree is one branch over two leaves of leaf version 0xc0.
Every leaf is a miniscript (compiled by ``bitcoin.miniscript``), so each output is a standard descriptor
(``bitcoin.descriptors``) that wallets import:

* escrow ``tr(H,{and_v(v:pk(xB),older(t_0)),and_v(v:sha256(hB),multi_a(2,xL,xB))})``
  leaf 0 ``<xB> OP_CHECKSIGVERIFY <t_0> OP_CSV``;
  leaf 1 ``OP_SIZE <32> OP_EQUALVERIFY OP_SHA256 <hB> OP_EQUALVERIFY <xL> OP_CHECKSIG <xB> OP_CHECKSIGADD
  OP_2 OP_NUMEQUAL``
* collateral ``tr(H,{and_v(v:pk(xL),older(t_1)),and_v(v:sha256(hL),pk(xB))})``
  leaf 0 ``<xL> OP_CHECKSIGVERIFY <t_1> OP_CSV``;
  leaf 1 ``OP_SIZE <32> OP_EQUALVERIFY OP_SHA256 <hL> OP_EQUALVERIFY <xB> OP_CHECKSIG``

Each hashlock checks that the preimage is exactly 32 bytes, as the contracts do. BIP-341 hashing: ``TapLeaf`` =
tagged_hash(leaf_version || compact_size(script) || script); ``TapBranch`` = tagged_hash(sorted(a, b)); output
key Q = P + tagged_hash("TapTweak", P || merkle_root)·G; the control block of a leaf is
``(leaf_version | parity(Q)) || x(P) || sibling leaf hash``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import coincurve

from bitcoin.addresses import encode_segwit_address
from bitcoin.encoding import compact_size, tagged_hash
from bitcoin.errors import InvalidKeyError, InvalidParameterError
from bitcoin.keys import parse_xonly_pubkey
from bitcoin.miniscript import compile_tapscript, push_data
from bitcoin.networks import Network

OP_1 = 0x51

#: BIP-342 tapscript leaf version.
TAPSCRIPT_LEAF_VERSION = 0xC0
#: BIP-341's NUMS point H = lift_x(SHA256(uncompressed G)): provably nobody knows its discrete log, so the key
#: path of every loan output is unspendable. This is the internal key of every output the platform creates.
BIP341_NUMS_H = bytes.fromhex("50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0")
NUMS_INTERNAL_KEY = BIP341_NUMS_H

#: Index of the timelock leaf (escape / default claim) in both trees.
TIMELOCK_LEAF = 0
#: Index of the hashlock leaf (collateral lock / release) in both trees.
HASHLOCK_LEAF = 1

#: BIP-68 relative lock range in blocks.
MIN_TIMELOCK_BLOCKS = 1
MAX_TIMELOCK_BLOCKS = 0xFFFF


def validate_timelock(blocks: int, name: str = "timelock") -> int:
    """Check a BIP-68 block-unit relative timelock: an int with 1 <= t <= 65535."""
    if isinstance(blocks, bool) or not isinstance(blocks, int):
        raise InvalidParameterError(f"{name} must be an integer number of blocks")
    if not MIN_TIMELOCK_BLOCKS <= blocks <= MAX_TIMELOCK_BLOCKS:
        raise InvalidParameterError(
            f"{name} must be between {MIN_TIMELOCK_BLOCKS} and {MAX_TIMELOCK_BLOCKS} blocks, got {blocks}"
        )
    return blocks


def parse_hash32(value: str | bytes, name: str = "hash") -> bytes:
    """Validate a 32-byte SHA-256 hash or preimage given as bytes or 64 hex characters."""
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) != 64:
            raise InvalidParameterError(f"{name} must be 64 hex characters (32 bytes), got {len(text)}")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise InvalidParameterError(f"{name} is not valid hex") from None
    else:
        raise InvalidParameterError(f"{name} must be bytes or hex")
    if len(raw) != 32:
        raise InvalidParameterError(f"{name} must be exactly 32 bytes, got {len(raw)}")
    return raw


def escrow_timelock_miniscript(*, borrower_pubkey: bytes, escrow_timelock: int) -> str:
    """Escrow leaf 0, B's escape: ``and_v(v:pk(xB),older(t_0))``."""
    validate_timelock(escrow_timelock, "escrow timelock t_0")
    return f"and_v(v:pk({parse_xonly_pubkey(borrower_pubkey).hex()}),older({escrow_timelock}))"


def escrow_hashlock_miniscript(*, borrower_pubkey: bytes, lender_pubkey: bytes, borrower_hash: bytes) -> str:
    """Escrow leaf 1, collateral lock: ``and_v(v:sha256(hB),multi_a(2,xL,xB))`` (needs pB, sigL and sigB)."""
    hash_hex = parse_hash32(borrower_hash, "borrower hash hB").hex()
    lender, borrower = parse_xonly_pubkey(lender_pubkey).hex(), parse_xonly_pubkey(borrower_pubkey).hex()
    return f"and_v(v:sha256({hash_hex}),multi_a(2,{lender},{borrower}))"


def collateral_timelock_miniscript(*, lender_pubkey: bytes, collateral_timelock: int) -> str:
    """Collateral leaf 0, L's claim on default: ``and_v(v:pk(xL),older(t_1))``."""
    validate_timelock(collateral_timelock, "collateral timelock t_1")
    return f"and_v(v:pk({parse_xonly_pubkey(lender_pubkey).hex()}),older({collateral_timelock}))"


def collateral_hashlock_miniscript(*, borrower_pubkey: bytes, lender_hash: bytes) -> str:
    """Collateral leaf 1, B's release: ``and_v(v:sha256(hL),pk(xB))``."""
    hash_hex = parse_hash32(lender_hash, "lender hash hL").hex()
    return f"and_v(v:sha256({hash_hex}),pk({parse_xonly_pubkey(borrower_pubkey).hex()}))"


def tap_leaf_hash(script: bytes, leaf_version: int = TAPSCRIPT_LEAF_VERSION) -> bytes:
    """BIP-341 ``TapLeaf`` hash of one leaf."""
    if leaf_version & 1 or not 0 <= leaf_version <= 0xFE:
        raise InvalidParameterError(f"invalid leaf version 0x{leaf_version:02x}")
    return tagged_hash("TapLeaf", bytes([leaf_version]) + compact_size(len(script)) + script)


def tap_branch_hash(left: bytes, right: bytes) -> bytes:
    """BIP-341 ``TapBranch`` hash: the two child hashes in lexicographic order."""
    first, second = sorted((left, right))
    return tagged_hash("TapBranch", first + second)


def taproot_tweak(internal_key: bytes, merkle_root: bytes | None) -> tuple[bytes, bool]:
    """Output key of BIP-341 ``taproot_tweak_pubkey``: returns (x-only Q, True if Q has odd Y)."""
    tweak = tagged_hash("TapTweak", internal_key + (merkle_root or b""))
    if int.from_bytes(tweak, "big") >= 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141:
        raise InvalidKeyError("taproot tweak is out of range")
    point = coincurve.PublicKeyXOnly(parse_xonly_pubkey(internal_key))
    point.tweak_add(tweak)
    return point.format(), point.parity


def p2tr_script_pubkey(output_key: bytes) -> bytes:
    """``OP_1 <32-byte output key>``."""
    return bytes([OP_1]) + push_data(output_key)


@dataclass(frozen=True)
class TwoLeafTaprootOutput:
    """A P2TR output with a single branch over two tapscript leaves.

    ``leaves[0]`` is the timelock leaf and ``leaves[1]`` the hashlock leaf of the loan protocol; the control
    block of each leaf carries the other leaf's hash as its one-element merkle path. Loan outputs are made with
    ``from_miniscripts`` (internal key H) and know their descriptor; a tree of raw leaves (tests reproducing
    another layout) has none.
    """

    leaves: tuple[bytes, bytes]
    internal_key: bytes = NUMS_INTERNAL_KEY
    miniscripts: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if len(self.leaves) != 2 or not all(isinstance(leaf, bytes) and leaf for leaf in self.leaves):
            raise InvalidParameterError("a two-leaf tree needs exactly two non-empty leaf scripts")
        parse_xonly_pubkey(self.internal_key)

    @classmethod
    def from_miniscripts(cls, timelock_leaf: str, hashlock_leaf: str) -> TwoLeafTaprootOutput:
        """The output ``tr(H,{timelock_leaf,hashlock_leaf})``: each leaf compiled from its miniscript."""
        return cls(
            leaves=(compile_tapscript(timelock_leaf), compile_tapscript(hashlock_leaf)),
            miniscripts=(timelock_leaf, hashlock_leaf),
        )

    @property
    def descriptor_body(self) -> str:
        """``tr(H,{leaf0,leaf1})`` without checksum (``bitcoin.descriptors`` adds it)."""
        if self.miniscripts is None:
            raise InvalidParameterError("a tree of raw leaves has no miniscript descriptor")
        return f"tr({self.internal_key.hex()},{{{self.miniscripts[0]},{self.miniscripts[1]}}})"

    @cached_property
    def leaf_hashes(self) -> tuple[bytes, bytes]:
        """TapLeaf hashes of leaf 0 and leaf 1."""
        return (tap_leaf_hash(self.leaves[0]), tap_leaf_hash(self.leaves[1]))

    @cached_property
    def merkle_root(self) -> bytes:
        """TapBranch of the two leaf hashes."""
        return tap_branch_hash(*self.leaf_hashes)

    @cached_property
    def _tweaked(self) -> tuple[bytes, bool]:
        return taproot_tweak(self.internal_key, self.merkle_root)

    @property
    def output_key(self) -> bytes:
        """The tweaked x-only output key Q."""
        return self._tweaked[0]

    @property
    def output_key_parity(self) -> int:
        """1 if Q has odd Y, else 0 (the low bit of the control block's first byte)."""
        return int(self._tweaked[1])

    @property
    def script_pubkey(self) -> bytes:
        """``OP_1 <Q>``."""
        return p2tr_script_pubkey(self.output_key)

    def leaf_script(self, leaf_index: int) -> bytes:
        """The script of leaf 0 or 1."""
        self._check_index(leaf_index)
        return self.leaves[leaf_index]

    def leaf_hash(self, leaf_index: int) -> bytes:
        """The TapLeaf hash of leaf 0 or 1."""
        self._check_index(leaf_index)
        return self.leaf_hashes[leaf_index]

    def control_block(self, leaf_index: int) -> bytes:
        """BIP-341 control block for spending leaf ``leaf_index`` (65 bytes)."""
        self._check_index(leaf_index)
        sibling = self.leaf_hashes[1 - leaf_index]
        return bytes([TAPSCRIPT_LEAF_VERSION | self.output_key_parity]) + self.internal_key + sibling

    def address(self, network: Network | str) -> str:
        """Bech32m (BIP-350) address of this output on ``network``."""
        return encode_segwit_address(network, 1, self.output_key)

    @staticmethod
    def _check_index(leaf_index: int) -> None:
        if leaf_index not in (TIMELOCK_LEAF, HASHLOCK_LEAF):
            raise InvalidParameterError(f"leaf index must be 0 or 1, got {leaf_index!r}")


def escrow_output(
    *, borrower_pubkey: bytes | str, lender_pubkey: bytes | str, borrower_hash: bytes | str, escrow_timelock: int
) -> TwoLeafTaprootOutput:
    """The escrow output B funds with TX_0 (leaf 0: B's escape after t_0; leaf 1: collateral lock)."""
    borrower = parse_xonly_pubkey(borrower_pubkey)
    return TwoLeafTaprootOutput.from_miniscripts(
        escrow_timelock_miniscript(borrower_pubkey=borrower, escrow_timelock=escrow_timelock),
        escrow_hashlock_miniscript(
            borrower_pubkey=borrower,
            lender_pubkey=parse_xonly_pubkey(lender_pubkey),
            borrower_hash=parse_hash32(borrower_hash, "borrower hash hB"),
        ),
    )


def collateral_output(
    *, borrower_pubkey: bytes | str, lender_pubkey: bytes | str, lender_hash: bytes | str, collateral_timelock: int
) -> TwoLeafTaprootOutput:
    """The collateral output TX_1 creates (leaf 0: L's claim after t_1; leaf 1: B's release with pL)."""
    return TwoLeafTaprootOutput.from_miniscripts(
        collateral_timelock_miniscript(
            lender_pubkey=parse_xonly_pubkey(lender_pubkey), collateral_timelock=collateral_timelock
        ),
        collateral_hashlock_miniscript(
            borrower_pubkey=parse_xonly_pubkey(borrower_pubkey),
            lender_hash=parse_hash32(lender_hash, "lender hash hL"),
        ),
    )


def control_block_commits(control_block: bytes, script: bytes, script_pubkey: bytes) -> bool:
    """True if ``control_block`` proves ``script`` is a leaf of P2TR ``script_pubkey`` (BIP-341)."""
    if len(script_pubkey) != 34 or script_pubkey[:2] != b"\x51\x20":
        return False
    if len(control_block) < 33 or (len(control_block) - 33) % 32 or len(control_block) > 33 + 32 * 128:
        return False
    leaf_version = control_block[0] & 0xFE
    try:
        node = tap_leaf_hash(script, leaf_version)
        for offset in range(33, len(control_block), 32):
            node = tap_branch_hash(node, control_block[offset : offset + 32])
        output_key, odd = taproot_tweak(control_block[1:33], node)
    except (InvalidKeyError, InvalidParameterError):
        return False
    return output_key == script_pubkey[2:] and int(odd) == control_block[0] & 1
