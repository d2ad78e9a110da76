"""Leaf scripts, taproot trees and the PROTOCOL.md test vector (BIP-341 script-path vectors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bitcoinutils.script import Script

from bitcoin.encoding import sha256
from bitcoin.errors import DescriptorError, InvalidKeyError, InvalidParameterError
from bitcoin.keys import parse_xonly_pubkey
from bitcoin.miniscript import compile_tapscript, push_number
from bitcoin.scripts import (
    BIP341_NUMS_H,
    NUMS_INTERNAL_KEY,
    TwoLeafTaprootOutput,
    collateral_output,
    control_block_commits,
    escrow_hashlock_miniscript,
    escrow_output,
    escrow_timelock_miniscript,
    tap_branch_hash,
    tap_leaf_hash,
    taproot_tweak,
)
from bitcoin.tests.loan_vectors import (
    BORROWER_HASH,
    BORROWER_XONLY,
    COLLATERAL_ADDRESS_REGTEST,
    ESCROW_ADDRESS_REGTEST,
    LENDER_HASH,
    LENDER_XONLY,
    REFERENCE_COLLATERAL_ADDRESS,
    REFERENCE_ESCROW_ADDRESS,
    REFERENCE_INTERNAL_KEY,
    reference_outputs,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "bip341_wallet_vectors.json").read_text())


def _vector_outputs(escrow_timelock: int = 100, collateral_timelock: int = 30000):
    """PROTOCOL.md's test vector: (escrow, collateral) with internal key H and miniscript leaves."""
    escrow = escrow_output(
        borrower_pubkey=BORROWER_XONLY,
        lender_pubkey=LENDER_XONLY,
        borrower_hash=BORROWER_HASH,
        escrow_timelock=escrow_timelock,
    )
    collateral = collateral_output(
        borrower_pubkey=BORROWER_XONLY,
        lender_pubkey=LENDER_XONLY,
        lender_hash=LENDER_HASH,
        collateral_timelock=collateral_timelock,
    )
    return escrow, collateral


def test_protocol_vector_addresses_byte_for_byte() -> None:
    escrow, collateral = _vector_outputs()
    assert escrow.address("regtest") == ESCROW_ADDRESS_REGTEST
    assert collateral.address("regtest") == COLLATERAL_ADDRESS_REGTEST


def test_reference_layout_still_reproduces_the_reference_addresses() -> None:
    """The reference implementation's leaves and key, kept only to show the tree is built as it built it."""
    escrow, collateral = reference_outputs()
    assert escrow.address("regtest") == REFERENCE_ESCROW_ADDRESS
    assert collateral.address("regtest") == REFERENCE_COLLATERAL_ADDRESS


def test_protocol_vector_leaf_bytes_follow_protocol_md() -> None:
    escrow, collateral = _vector_outputs()
    # <xB> OP_CHECKSIGVERIFY <100> OP_CSV
    assert escrow.leaves[0].hex() == "20" + BORROWER_XONLY + "ad" + "0164" + "b2"
    # OP_SIZE <32> OP_EQUALVERIFY OP_SHA256 <hB> OP_EQUALVERIFY <xL> OP_CHECKSIG <xB> OP_CHECKSIGADD OP_2 OP_NUMEQUAL
    assert escrow.leaves[1].hex() == (
        "82012088" + "a820" + BORROWER_HASH + "88" + "20" + LENDER_XONLY + "ac" + "20" + BORROWER_XONLY + "ba529c"
    )
    # <xL> OP_CHECKSIGVERIFY <30000> OP_CSV  (30000 = 0x7530 -> minimal push 02 3075)
    assert collateral.leaves[0].hex() == "20" + LENDER_XONLY + "ad" + "023075" + "b2"
    # OP_SIZE <32> OP_EQUALVERIFY OP_SHA256 <hL> OP_EQUALVERIFY <xB> OP_CHECKSIG
    assert collateral.leaves[1].hex() == "82012088" + "a820" + LENDER_HASH + "88" + "20" + BORROWER_XONLY + "ac"


def test_leaves_match_bitcoin_utils_serialization() -> None:
    """An independent encoder (bitcoin-utils) produces the same leaf bytes from PROTOCOL.md's opcodes."""
    escrow, collateral = _vector_outputs()
    escape = Script([BORROWER_XONLY, "OP_CHECKSIGVERIFY", 100, "OP_CHECKSEQUENCEVERIFY"])
    size_check = ["OP_SIZE", 32, "OP_EQUALVERIFY", "OP_SHA256"]
    lock = Script(
        [
            *size_check,
            BORROWER_HASH,
            "OP_EQUALVERIFY",
            LENDER_XONLY,
            "OP_CHECKSIG",
            BORROWER_XONLY,
            "OP_CHECKSIGADD",
            "OP_2",
            "OP_NUMEQUAL",
        ]
    )
    claim = Script([LENDER_XONLY, "OP_CHECKSIGVERIFY", 30000, "OP_CHECKSEQUENCEVERIFY"])
    release = Script([*size_check, LENDER_HASH, "OP_EQUALVERIFY", BORROWER_XONLY, "OP_CHECKSIG"])
    assert escrow.leaves == (escape.to_bytes(), lock.to_bytes())
    assert collateral.leaves == (claim.to_bytes(), release.to_bytes())


def test_same_program_on_every_network() -> None:
    escrow, _ = _vector_outputs()
    mainnet = escrow.address("mainnet")
    testnet = escrow.address("testnet")
    signet = escrow.address("signet")
    assert mainnet.startswith("bc1p") and testnet.startswith("tb1p") and signet == testnet
    assert ESCROW_ADDRESS_REGTEST.startswith("bcrt1p")
    # Same witness program, different HRP and therefore checksum.
    assert mainnet[4:-6] == testnet[4:-6] == ESCROW_ADDRESS_REGTEST[6:-6]


def test_control_blocks_commit_to_the_output() -> None:
    escrow, collateral = _vector_outputs()
    for output in (escrow, collateral):
        for index in (0, 1):
            control = output.control_block(index)
            assert len(control) == 65
            assert control[1:33] == BIP341_NUMS_H
            assert control[33:] == output.leaf_hashes[1 - index]
            assert control[0] == 0xC0 | output.output_key_parity
            assert control_block_commits(control, output.leaves[index], output.script_pubkey)
            assert not control_block_commits(control, output.leaves[1 - index], output.script_pubkey)
    # A control block with the wrong parity bit does not commit.
    flipped = bytes([escrow.control_block(1)[0] ^ 1]) + escrow.control_block(1)[1:]
    assert not control_block_commits(flipped, escrow.leaves[1], escrow.script_pubkey)


def test_branch_hash_is_order_independent() -> None:
    first, second = bytes(range(32)), bytes(range(1, 33))
    assert tap_branch_hash(first, second) == tap_branch_hash(second, first)


@pytest.mark.parametrize(
    ("blocks", "encoded"),
    [
        (1, "51"),
        (16, "60"),
        (17, "0111"),
        (127, "017f"),
        (128, "028000"),
        (255, "02ff00"),
        (256, "020001"),
        (32767, "02ff7f"),
        (32768, "03008000"),
        (65535, "03ffff00"),
    ],
)
def test_timelocks_use_minimal_script_numbers(blocks: int, encoded: str) -> None:
    assert push_number(blocks).hex() == encoded
    leaf = compile_tapscript(escrow_timelock_miniscript(borrower_pubkey=BORROWER_XONLY, escrow_timelock=blocks))
    assert leaf.hex() == "20" + BORROWER_XONLY + "ad" + encoded + "b2"
    assert leaf == Script([BORROWER_XONLY, "OP_CHECKSIGVERIFY", blocks, "OP_CHECKSEQUENCEVERIFY"]).to_bytes()


@pytest.mark.parametrize("blocks", [0, -1, 65536, 1 << 22, True, "100", 100.0])
def test_out_of_range_timelocks_are_refused(blocks: object) -> None:
    with pytest.raises(InvalidParameterError):
        _vector_outputs(escrow_timelock=blocks)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError):
        _vector_outputs(collateral_timelock=blocks)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad_hash", ["11" * 31, "11" * 33, "zz" * 32, b"\x11" * 20, ""])
def test_hashes_must_be_32_bytes(bad_hash: object) -> None:
    with pytest.raises(InvalidParameterError):
        escrow_hashlock_miniscript(
            borrower_pubkey=BORROWER_XONLY,
            lender_pubkey=LENDER_XONLY,
            borrower_hash=bad_hash,  # type: ignore[arg-type]
        )


def test_invalid_keys_are_refused_when_deriving_outputs() -> None:
    with pytest.raises(InvalidKeyError):
        escrow_output(
            borrower_pubkey="00" * 32, lender_pubkey=LENDER_XONLY, borrower_hash=BORROWER_HASH, escrow_timelock=100
        )


@pytest.mark.parametrize(
    ("miniscript", "script"),
    [
        ("pk(" + BORROWER_XONLY + ")", "20" + BORROWER_XONLY + "ac"),
        ("c:pk_k(" + BORROWER_XONLY + ")", "20" + BORROWER_XONLY + "ac"),
        ("older(144)", "029000b2"),
        ("sha256(" + BORROWER_HASH + ")", "82012088a820" + BORROWER_HASH + "87"),
        ("and_v(v:older(5),pk(" + LENDER_XONLY + "))", "55b269" + "20" + LENDER_XONLY + "ac"),
        (
            "multi_a(1," + LENDER_XONLY + "," + BORROWER_XONLY + ")",
            "20" + LENDER_XONLY + "ac20" + BORROWER_XONLY + "ba519c",
        ),
    ],
)
def test_miniscript_fragments_compile_as_the_spec_translates_them(miniscript: str, script: str) -> None:
    assert compile_tapscript(miniscript).hex() == script


@pytest.mark.parametrize(
    "miniscript",
    [
        "pk()",
        "older(0)",
        "older(012)",
        "older(2147483648)",
        "sha256(00)",
        "multi_a(3," + LENDER_XONLY + "," + BORROWER_XONLY + ")",
        "multi_a(1," + LENDER_XONLY + "," + LENDER_XONLY + ")",
        "and_v(pk(" + LENDER_XONLY + "),older(5))",  # first argument must be V
        "v:pk(" + LENDER_XONLY + ")",  # a leaf must be of type B
        "pk_k(" + LENDER_XONLY + ")",
        "after(5)",  # not a fragment we implement
        "x:pk(" + LENDER_XONLY + ")",
        "pk(" + LENDER_XONLY,
    ],
)
def test_unsupported_or_malformed_miniscript_is_refused(miniscript: str) -> None:
    with pytest.raises(DescriptorError):
        compile_tapscript(miniscript)


def _tree_hashes(tree: object) -> tuple[bytes, list[tuple[bytes, int, bytes]]]:
    """(merkle hash, [(script, version, path)]) of a BIP-341 vector's scriptTree, computed generically."""
    if isinstance(tree, dict):
        script = bytes.fromhex(tree["script"])
        return tap_leaf_hash(script, tree["leafVersion"]), [(script, tree["leafVersion"], b"")]
    left_hash, left_leaves = _tree_hashes(tree[0])  # type: ignore[index]
    right_hash, right_leaves = _tree_hashes(tree[1])  # type: ignore[index]
    leaves = [(s, v, p + right_hash) for s, v, p in left_leaves] + [(s, v, p + left_hash) for s, v, p in right_leaves]
    return tap_branch_hash(left_hash, right_hash), leaves


@pytest.mark.parametrize("case", VECTORS["scriptPubKey"], ids=lambda case: case["internalPubkey"][:8])
def test_bip341_script_path_vectors(case: dict) -> None:
    internal = bytes.fromhex(case["internalPubkey"])
    merkle_root, leaves = _tree_hashes(case["scriptTree"])
    assert [tap_leaf_hash(script, version).hex() for script, version, _ in leaves] == case["leafHashes"]
    assert merkle_root.hex() == case["merkleRoot"]
    output_key, odd = taproot_tweak(internal, merkle_root)
    assert output_key.hex() == case["tweakedPubkey"]
    spk = "5120" + output_key.hex()
    assert spk == case["scriptPubKey"]
    controls = [(bytes([version | odd]) + internal + path).hex() for _, version, path in leaves]
    assert controls == case["scriptPathControlBlocks"]
    for (script, _, _), control in zip(leaves, controls, strict=True):
        assert control_block_commits(bytes.fromhex(control), script, bytes.fromhex(spk))


def test_two_leaf_output_class_against_bip341_vector() -> None:
    """Vector with two tapscript leaves and an odd-parity output key, through TwoLeafTaprootOutput."""
    case = next(c for c in VECTORS["scriptPubKey"] if c["internalPubkey"].startswith("f9f40080"))
    output = TwoLeafTaprootOutput(
        leaves=(bytes.fromhex(case["scriptTree"][0]["script"]), bytes.fromhex(case["scriptTree"][1]["script"])),
        internal_key=bytes.fromhex(case["internalPubkey"]),
    )
    assert [h.hex() for h in output.leaf_hashes] == case["leafHashes"]
    assert output.merkle_root.hex() == case["merkleRoot"]
    assert output.output_key_parity == 1
    assert output.script_pubkey.hex() == case["scriptPubKey"]
    assert output.address("mainnet") == case["bip350Address"]
    assert [output.control_block(i).hex() for i in (0, 1)] == case["scriptPathControlBlocks"]


def test_leaf_index_must_be_zero_or_one() -> None:
    with pytest.raises(InvalidParameterError):
        _vector_outputs()[0].control_block(2)


def test_platform_outputs_use_bip341_h_not_the_reference_key() -> None:
    """The reference's internal key is not BIP-341's H (they share a 12-byte prefix only).

    H = lift_x(SHA256(uncompressed G)) is provably nobody's key; the reference's is merely unlikely to be.
    """
    generator_uncompressed = bytes.fromhex(
        "0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"
    )
    assert sha256(generator_uncompressed) == BIP341_NUMS_H == NUMS_INTERNAL_KEY
    assert REFERENCE_INTERNAL_KEY != BIP341_NUMS_H
    assert REFERENCE_INTERNAL_KEY[:12] == BIP341_NUMS_H[:12]
    parse_xonly_pubkey(REFERENCE_INTERNAL_KEY)  # a valid curve point
    escrow, _ = _vector_outputs()
    assert escrow.internal_key == BIP341_NUMS_H
    assert escrow.control_block(1)[1:33] == BIP341_NUMS_H


def test_a_tree_of_raw_leaves_has_no_descriptor() -> None:
    escrow, _ = reference_outputs()
    with pytest.raises(InvalidParameterError):
        escrow.descriptor_body  # noqa: B018
    assert isinstance(escrow, TwoLeafTaprootOutput)
