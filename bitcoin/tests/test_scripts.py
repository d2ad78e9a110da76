"""Leaf scripts, taproot trees and the PROTOCOL.md test vector (BIP-341 script-path vectors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bitcoinutils.script import Script

from bitcoin.encoding import sha256
from bitcoin.errors import InvalidKeyError, InvalidParameterError
from bitcoin.keys import parse_xonly_pubkey
from bitcoin.scripts import (
    BIP341_NUMS_H,
    NUMS_INTERNAL_KEY,
    REFERENCE_INTERNAL_KEY,
    TwoLeafTaprootOutput,
    control_block_commits,
    escrow_hashlock_leaf,
    escrow_timelock_leaf,
    loan_outputs,
    push_number,
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
)

VECTORS = json.loads((Path(__file__).parent / "data" / "bip341_wallet_vectors.json").read_text())


def _vector_outputs(escrow_timelock: int = 100, collateral_timelock: int = 27150):
    """PROTOCOL.md's vector, with the internal key it prints (the platform itself uses BIP-341's H)."""
    return loan_outputs(
        internal_key=REFERENCE_INTERNAL_KEY,
        borrower_pubkey=BORROWER_XONLY,
        lender_pubkey=LENDER_XONLY,
        borrower_hash=BORROWER_HASH,
        lender_hash=LENDER_HASH,
        escrow_timelock=escrow_timelock,
        collateral_timelock=collateral_timelock,
    )


def test_protocol_vector_addresses_byte_for_byte() -> None:
    scripts = _vector_outputs()
    assert scripts.escrow.address("regtest") == ESCROW_ADDRESS_REGTEST
    assert scripts.collateral.address("regtest") == COLLATERAL_ADDRESS_REGTEST


def test_protocol_vector_leaf_bytes_follow_protocol_md() -> None:
    scripts = _vector_outputs()
    # <100> OP_CSV OP_DROP <xB> OP_CHECKSIG
    assert scripts.escrow.leaves[0].hex() == "0164b27520" + BORROWER_XONLY + "ac"
    # OP_SHA256 <hB> OP_EQUALVERIFY <xL> OP_CHECKSIG <xB> OP_CHECKSIGADD OP_2 OP_NUMEQUALVERIFY OP_TRUE
    assert scripts.escrow.leaves[1].hex() == (
        "a820" + BORROWER_HASH + "8820" + LENDER_XONLY + "ac20" + BORROWER_XONLY + "ba529d51"
    )
    # <27150> OP_CSV OP_DROP <xL> OP_CHECKSIG  (27150 = 0x6a0e -> minimal push 02 0e6a)
    assert scripts.collateral.leaves[0].hex() == "020e6ab27520" + LENDER_XONLY + "ac"
    # OP_SHA256 <hL> OP_EQUALVERIFY <xB> OP_CHECKSIG
    assert scripts.collateral.leaves[1].hex() == "a820" + LENDER_HASH + "8820" + BORROWER_XONLY + "ac"


def test_leaves_match_bitcoin_utils_serialization() -> None:
    """An independent encoder (bitcoin-utils) produces the same leaf bytes."""
    scripts = _vector_outputs()
    escape = Script([100, "OP_CHECKSEQUENCEVERIFY", "OP_DROP", BORROWER_XONLY, "OP_CHECKSIG"])
    lock = Script(
        [
            "OP_SHA256",
            BORROWER_HASH,
            "OP_EQUALVERIFY",
            LENDER_XONLY,
            "OP_CHECKSIG",
            BORROWER_XONLY,
            "OP_CHECKSIGADD",
            "OP_2",
            "OP_NUMEQUALVERIFY",
            "OP_TRUE",
        ]
    )
    assert scripts.escrow.leaves[0] == escape.to_bytes()
    assert scripts.escrow.leaves[1] == lock.to_bytes()


def test_same_program_on_every_network() -> None:
    scripts = _vector_outputs()
    mainnet = scripts.escrow.address("mainnet")
    testnet = scripts.escrow.address("testnet")
    signet = scripts.escrow.address("signet")
    assert mainnet.startswith("bc1p") and testnet.startswith("tb1p") and signet == testnet
    assert ESCROW_ADDRESS_REGTEST.startswith("bcrt1p")
    # Same witness program, different HRP and therefore checksum.
    assert mainnet[4:-6] == testnet[4:-6] == ESCROW_ADDRESS_REGTEST[6:-6]


def test_control_blocks_commit_to_the_output() -> None:
    scripts = _vector_outputs()
    for output in (scripts.escrow, scripts.collateral):
        for index in (0, 1):
            control = output.control_block(index)
            assert len(control) == 65
            assert control[1:33] == REFERENCE_INTERNAL_KEY
            assert control[33:] == output.leaf_hashes[1 - index]
            assert control[0] == 0xC0 | output.output_key_parity
            assert control_block_commits(control, output.leaves[index], output.script_pubkey)
            assert not control_block_commits(control, output.leaves[1 - index], output.script_pubkey)
    # A control block with the wrong parity bit does not commit.
    flipped = bytes([scripts.escrow.control_block(1)[0] ^ 1]) + scripts.escrow.control_block(1)[1:]
    assert not control_block_commits(flipped, scripts.escrow.leaves[1], scripts.escrow.script_pubkey)


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
    leaf = escrow_timelock_leaf(borrower_pubkey=bytes.fromhex(BORROWER_XONLY), escrow_timelock=blocks)
    assert leaf.hex() == encoded + "b27520" + BORROWER_XONLY + "ac"
    assert leaf == Script([blocks, "OP_CHECKSEQUENCEVERIFY", "OP_DROP", BORROWER_XONLY, "OP_CHECKSIG"]).to_bytes()


@pytest.mark.parametrize("blocks", [0, -1, 65536, 1 << 22, True, "100", 100.0])
def test_out_of_range_timelocks_are_refused(blocks: object) -> None:
    with pytest.raises(InvalidParameterError):
        _vector_outputs(escrow_timelock=blocks)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError):
        _vector_outputs(collateral_timelock=blocks)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad_hash", ["11" * 31, "11" * 33, "zz" * 32, b"\x11" * 20, ""])
def test_hashes_must_be_32_bytes(bad_hash: object) -> None:
    with pytest.raises(InvalidParameterError):
        escrow_hashlock_leaf(
            borrower_pubkey=bytes.fromhex(BORROWER_XONLY),
            lender_pubkey=bytes.fromhex(LENDER_XONLY),
            borrower_hash=bad_hash,  # type: ignore[arg-type]
        )


def test_invalid_keys_are_refused_when_deriving_outputs() -> None:
    with pytest.raises(InvalidKeyError):
        loan_outputs(
            borrower_pubkey="00" * 32,
            lender_pubkey=LENDER_XONLY,
            borrower_hash=BORROWER_HASH,
            lender_hash=LENDER_HASH,
            escrow_timelock=100,
            collateral_timelock=27150,
        )


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
        _vector_outputs().escrow.control_block(2)


def test_platform_outputs_use_bip341_h_not_the_key_protocol_md_prints() -> None:
    """PROTOCOL.md's printed internal key is not BIP-341's H (they share a 12-byte prefix only).

    H = lift_x(SHA256(uncompressed G)) is provably nobody's key; the printed one is merely unlikely to be. Every
    output the platform makes uses H, so its addresses differ from PROTOCOL.md's vector (reproduced above with
    ``REFERENCE_INTERNAL_KEY``).
    """
    generator_uncompressed = bytes.fromhex(
        "0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"
    )
    assert sha256(generator_uncompressed) == BIP341_NUMS_H == NUMS_INTERNAL_KEY
    assert REFERENCE_INTERNAL_KEY != BIP341_NUMS_H
    assert REFERENCE_INTERNAL_KEY[:12] == BIP341_NUMS_H[:12]
    parse_xonly_pubkey(REFERENCE_INTERNAL_KEY)  # a valid curve point
    platform = loan_outputs(
        borrower_pubkey=BORROWER_XONLY,
        lender_pubkey=LENDER_XONLY,
        borrower_hash=BORROWER_HASH,
        lender_hash=LENDER_HASH,
        escrow_timelock=100,
        collateral_timelock=27150,
    )
    assert platform.escrow.internal_key == BIP341_NUMS_H
    assert platform.escrow.leaves == _vector_outputs().escrow.leaves  # same scripts, different internal key
    assert platform.escrow.address("regtest") != ESCROW_ADDRESS_REGTEST
    assert platform.escrow.control_block(1)[1:33] == BIP341_NUMS_H
