"""Tapscript leaves and the two-leaf taproot outputs of the loan protocol (BIP-341/BIP-342).

Both loan outputs are P2TR outputs whose internal key is the BIP-341 NUMS point ``H`` (nobody knows its
discrete log, so the key path is unspendable; see ``REFERENCE_INTERNAL_KEY`` for the key PROTOCOL.md prints)
and whose script tree is one branch over two leaves of leaf version 0xc0:

* escrow: leaf 0 ``<t_0> OP_CSV OP_DROP <xB> OP_CHECKSIG``;
  leaf 1 ``OP_SHA256 <hB> OP_EQUALVERIFY <xL> OP_CHECKSIG <xB> OP_CHECKSIGADD OP_2 OP_NUMEQUALVERIFY OP_TRUE``
* collateral: leaf 0 ``<t_1> OP_CSV OP_DROP <xL> OP_CHECKSIG``;
  leaf 1 ``OP_SHA256 <hL> OP_EQUALVERIFY <xB> OP_CHECKSIG``

BIP-341 hashing: ``TapLeaf`` = tagged_hash(leaf_version || compact_size(script) || script); ``TapBranch`` =
tagged_hash(sorted(a, b)); output key Q = P + tagged_hash("TapTweak", P || merkle_root)·G; the control block
of a leaf is ``(leaf_version | parity(Q)) || x(P) || sibling leaf hash``. Numbers are minimal CScriptNum
pushes (OP_1..OP_16 for 1..16), as Bitcoin Core's ``CScript() << n`` and bitcoin-utils produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import coincurve

from bitcoin.addresses import encode_segwit_address
from bitcoin.encoding import compact_size, tagged_hash
from bitcoin.errors import InvalidKeyError, InvalidParameterError
from bitcoin.keys import parse_xonly_pubkey
from bitcoin.networks import Network

# Opcodes used by the loan scripts (values from Bitcoin Core's script/script.h).
OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_PUSHDATA2 = 0x4D
OP_1 = 0x51
OP_2 = 0x52
OP_DROP = 0x75
OP_EQUAL = 0x87
OP_EQUALVERIFY = 0x88
OP_DUP = 0x76
OP_HASH160 = 0xA9
OP_SHA256 = 0xA8
OP_NUMEQUALVERIFY = 0x9D
OP_CHECKSIG = 0xAC
OP_CHECKSEQUENCEVERIFY = 0xB2
OP_CHECKSIGADD = 0xBA
OP_TRUE = OP_1

#: BIP-342 tapscript leaf version.
TAPSCRIPT_LEAF_VERSION = 0xC0
#: BIP-341's NUMS point H = lift_x(SHA256(uncompressed G)): provably nobody knows its discrete log, so the key
#: path of every loan output is unspendable. This is the internal key of every output the platform creates.
BIP341_NUMS_H = bytes.fromhex("50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0")
NUMS_INTERNAL_KEY = BIP341_NUMS_H
#: The key PROTOCOL.md prints (x-only ...b60c595c2...59e6), inherited from the reference implementation and
#: described there as "the BIP-341 NUMS point H". It is not H: it shares H's first 12 bytes and differs after,
#: so it is no provable NUMS point (at best ~96-bit assurance that nobody ground a known scalar to that prefix,
#: against 128 bits for H) and no wallet recognises it. Kept only to reproduce PROTOCOL.md's test vector, which
#: proves the leaves, tree, tweak and addresses are built exactly as the reference builds them. Never used for
#: real outputs.
REFERENCE_INTERNAL_KEY = bytes.fromhex("50929b74c1a04954b78b4b60c595c211f8b853e6e84bfa2be95712a7b0dd59e6")

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


def push_data(data: bytes) -> bytes:
    """Minimal script push of ``data`` (direct push up to 75 bytes, then OP_PUSHDATA1/2)."""
    size = len(data)
    if size < OP_PUSHDATA1:
        return bytes([size]) + data
    if size <= 0xFF:
        return bytes([OP_PUSHDATA1, size]) + data
    if size <= 0xFFFF:
        return bytes([OP_PUSHDATA2]) + size.to_bytes(2, "little") + data
    raise InvalidParameterError("script push too large")


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


def escrow_timelock_leaf(*, borrower_pubkey: bytes, escrow_timelock: int) -> bytes:
    """Escrow leaf 0, B's escape: ``<t_0> OP_CSV OP_DROP <xB> OP_CHECKSIG``."""
    validate_timelock(escrow_timelock, "escrow timelock t_0")
    return (
        push_number(escrow_timelock)
        + bytes([OP_CHECKSEQUENCEVERIFY, OP_DROP])
        + push_data(parse_xonly_pubkey(borrower_pubkey))
        + bytes([OP_CHECKSIG])
    )


def escrow_hashlock_leaf(*, borrower_pubkey: bytes, lender_pubkey: bytes, borrower_hash: bytes) -> bytes:
    """Escrow leaf 1, collateral lock: ``OP_SHA256 <hB> OP_EQUALVERIFY <xL> OP_CHECKSIG <xB> OP_CHECKSIGADD
    OP_2 OP_NUMEQUALVERIFY OP_TRUE`` (needs pB, sigL and sigB)."""
    return (
        bytes([OP_SHA256])
        + push_data(parse_hash32(borrower_hash, "borrower hash hB"))
        + bytes([OP_EQUALVERIFY])
        + push_data(parse_xonly_pubkey(lender_pubkey))
        + bytes([OP_CHECKSIG])
        + push_data(parse_xonly_pubkey(borrower_pubkey))
        + bytes([OP_CHECKSIGADD, OP_2, OP_NUMEQUALVERIFY, OP_TRUE])
    )


def collateral_timelock_leaf(*, lender_pubkey: bytes, collateral_timelock: int) -> bytes:
    """Collateral leaf 0, L's claim on default: ``<t_1> OP_CSV OP_DROP <xL> OP_CHECKSIG``."""
    validate_timelock(collateral_timelock, "collateral timelock t_1")
    return (
        push_number(collateral_timelock)
        + bytes([OP_CHECKSEQUENCEVERIFY, OP_DROP])
        + push_data(parse_xonly_pubkey(lender_pubkey))
        + bytes([OP_CHECKSIG])
    )


def collateral_hashlock_leaf(*, borrower_pubkey: bytes, lender_hash: bytes) -> bytes:
    """Collateral leaf 1, B's release: ``OP_SHA256 <hL> OP_EQUALVERIFY <xB> OP_CHECKSIG``."""
    return (
        bytes([OP_SHA256])
        + push_data(parse_hash32(lender_hash, "lender hash hL"))
        + bytes([OP_EQUALVERIFY])
        + push_data(parse_xonly_pubkey(borrower_pubkey))
        + bytes([OP_CHECKSIG])
    )


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
    """A P2TR output with the NUMS internal key and a single branch over two tapscript leaves.

    ``leaves[0]`` is the timelock leaf and ``leaves[1]`` the hashlock leaf of the loan protocol; the control
    block of each leaf carries the other leaf's hash as its one-element merkle path.
    """

    leaves: tuple[bytes, bytes]
    internal_key: bytes = NUMS_INTERNAL_KEY

    def __post_init__(self) -> None:
        if len(self.leaves) != 2 or not all(isinstance(leaf, bytes) and leaf for leaf in self.leaves):
            raise InvalidParameterError("a two-leaf tree needs exactly two non-empty leaf scripts")
        parse_xonly_pubkey(self.internal_key)

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
    *,
    borrower_pubkey: bytes | str,
    lender_pubkey: bytes | str,
    borrower_hash: bytes | str,
    escrow_timelock: int,
    internal_key: bytes = NUMS_INTERNAL_KEY,
) -> TwoLeafTaprootOutput:
    """The escrow output B funds with TX_0 (leaf 0: B's escape after t_0; leaf 1: collateral lock)."""
    borrower = parse_xonly_pubkey(borrower_pubkey)
    lender = parse_xonly_pubkey(lender_pubkey)
    return TwoLeafTaprootOutput(
        leaves=(
            escrow_timelock_leaf(borrower_pubkey=borrower, escrow_timelock=escrow_timelock),
            escrow_hashlock_leaf(
                borrower_pubkey=borrower,
                lender_pubkey=lender,
                borrower_hash=parse_hash32(borrower_hash, "hB"),
            ),
        ),
        internal_key=internal_key,
    )


def collateral_output(
    *,
    borrower_pubkey: bytes | str,
    lender_pubkey: bytes | str,
    lender_hash: bytes | str,
    collateral_timelock: int,
    internal_key: bytes = NUMS_INTERNAL_KEY,
) -> TwoLeafTaprootOutput:
    """The collateral output TX_1 creates (leaf 0: L's claim after t_1; leaf 1: B's release with pL)."""
    borrower = parse_xonly_pubkey(borrower_pubkey)
    lender = parse_xonly_pubkey(lender_pubkey)
    return TwoLeafTaprootOutput(
        leaves=(
            collateral_timelock_leaf(lender_pubkey=lender, collateral_timelock=collateral_timelock),
            collateral_hashlock_leaf(borrower_pubkey=borrower, lender_hash=parse_hash32(lender_hash, "hL")),
        ),
        internal_key=internal_key,
    )


@dataclass(frozen=True)
class LoanScripts:
    """The snapshotted Bitcoin facts of one loan and the two outputs derived from them.

    Accepts bytes or hex for keys and hashes and stores validated bytes; ``escrow`` and ``collateral`` are
    the derived outputs. This is the one object the transaction builders take.
    """

    borrower_pubkey: bytes
    lender_pubkey: bytes
    borrower_hash: bytes
    lender_hash: bytes
    escrow_timelock: int
    collateral_timelock: int
    internal_key: bytes = NUMS_INTERNAL_KEY  # REFERENCE_INTERNAL_KEY only to reproduce PROTOCOL.md's vector

    def __post_init__(self) -> None:
        object.__setattr__(self, "internal_key", parse_xonly_pubkey(self.internal_key))
        object.__setattr__(self, "borrower_pubkey", parse_xonly_pubkey(self.borrower_pubkey))
        object.__setattr__(self, "lender_pubkey", parse_xonly_pubkey(self.lender_pubkey))
        object.__setattr__(self, "borrower_hash", parse_hash32(self.borrower_hash, "borrower hash hB"))
        object.__setattr__(self, "lender_hash", parse_hash32(self.lender_hash, "lender hash hL"))
        validate_timelock(self.escrow_timelock, "escrow timelock t_0")
        validate_timelock(self.collateral_timelock, "collateral timelock t_1")

    @cached_property
    def escrow(self) -> TwoLeafTaprootOutput:
        """The escrow output (B's TX_0 pays it)."""
        return escrow_output(
            borrower_pubkey=self.borrower_pubkey,
            lender_pubkey=self.lender_pubkey,
            borrower_hash=self.borrower_hash,
            escrow_timelock=self.escrow_timelock,
            internal_key=self.internal_key,
        )

    @cached_property
    def collateral(self) -> TwoLeafTaprootOutput:
        """The collateral output (TX_1 output 1)."""
        return collateral_output(
            borrower_pubkey=self.borrower_pubkey,
            lender_pubkey=self.lender_pubkey,
            lender_hash=self.lender_hash,
            collateral_timelock=self.collateral_timelock,
            internal_key=self.internal_key,
        )


def loan_outputs(
    *,
    borrower_pubkey: bytes | str,
    lender_pubkey: bytes | str,
    borrower_hash: bytes | str,
    lender_hash: bytes | str,
    escrow_timelock: int,
    collateral_timelock: int,
    internal_key: bytes = NUMS_INTERNAL_KEY,
) -> LoanScripts:
    """Validate a loan's facts and return its ``LoanScripts`` (escrow and collateral outputs)."""
    return LoanScripts(
        internal_key=internal_key,
        borrower_pubkey=borrower_pubkey,  # type: ignore[arg-type]
        lender_pubkey=lender_pubkey,  # type: ignore[arg-type]
        borrower_hash=borrower_hash,  # type: ignore[arg-type]
        lender_hash=lender_hash,  # type: ignore[arg-type]
        escrow_timelock=escrow_timelock,
        collateral_timelock=collateral_timelock,
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
