"""Known-answer tests of the regtest node's serialization, address codec and block assembly (no node running)."""

from __future__ import annotations

import time

import pbk
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitcoin.regtest.address import (
    InvalidAddressError,
    address_to_script,
    decode_segwit,
    encode_segwit,
    script_to_address,
    script_type,
)
from bitcoin.regtest.mining import assemble_block, block_subsidy
from bitcoin.regtest.node import dust_threshold
from bitcoin.regtest.serialize import (
    Block,
    DeserializationError,
    OutPoint,
    Tx,
    TxIn,
    TxOut,
    bits_to_target,
    merkle_root,
    push_int,
    script_num,
)
from bitcoin.rpc import btc_to_sats, sats_to_btc

# Regtest genesis block, as stored by the kernel.
GENESIS_HEX = (
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81b"
    "c3888a51323a9fb8aa4b1e5e4adae5494dffff7f20020000000101000000010000000000000000000000000000000000000000000000"
    "000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72"
    "206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a0100000043410467"
    "8afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d"
    "578a4c702b6bf11d5fac00000000"
)
GENESIS_HASH = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
GENESIS_COINBASE_TXID = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"


def test_genesis_block_round_trip() -> None:
    raw = bytes.fromhex(GENESIS_HEX)
    block = Block.from_bytes(raw)
    assert block.serialize() == raw
    assert block.hash[::-1].hex() == GENESIS_HASH
    assert block.txs[0].txid_hex == GENESIS_COINBASE_TXID
    assert block.txs[0].is_coinbase()
    assert merkle_root([tx.txid for tx in block.txs]) == block.header.merkle_root
    assert int.from_bytes(block.hash, "little") <= bits_to_target(block.header.bits)


def test_segwit_tx_round_trip_and_ids_match_the_kernel() -> None:
    tx = Tx(
        2,
        [TxIn(OutPoint(bytes(range(32)), 1), b"", 0xFFFFFFFD, [b"\x01" * 64, b"\x51", b"\xc0" + b"\x02" * 32])],
        [TxOut(12_345, b"\x51\x20" + b"\x03" * 32), TxOut(0, b"\x6a\x04test")],
        0,
    )
    raw = tx.serialize()
    assert Tx.from_bytes(raw) == tx
    assert str(pbk.Transaction(raw).txid) == tx.txid_hex
    assert tx.weight == len(tx.serialize(with_witness=False)) * 3 + len(raw)
    with pytest.raises(DeserializationError):
        Tx.from_bytes(raw + b"\x00")
    with pytest.raises(DeserializationError):
        Tx.from_bytes(raw[:-1])
    with pytest.raises(DeserializationError):
        Tx.from_hex("zz")


@pytest.mark.parametrize(
    ("number", "encoded"),
    [(0, "00"), (1, "51"), (16, "60"), (17, "0111"), (127, "017f"), (128, "028000"), (255, "02ff00"),
     (27150, "020e6a"), (65535, "03ffff00"), (-1, "4f")],
)  # fmt: skip
def test_minimal_number_pushes(number: int, encoded: str) -> None:
    assert push_int(number).hex() == encoded


def test_script_num_negative() -> None:
    assert script_num(-5).hex() == "85"
    assert script_num(-128).hex() == "8080"


# BIP-173 / BIP-350 vectors (mainnet hrp) and regtest round trips.
@pytest.mark.parametrize(
    ("address", "script_hex"),
    [
        ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
        (
            "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
            "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
        ),
        ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
        (
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
            "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        ),
    ],
)
def test_bech32_vectors(address: str, script_hex: str) -> None:
    version, program = decode_segwit("bc", address)
    op = 0 if version == 0 else 0x50 + version
    assert (bytes([op, len(program)]) + program).hex() == script_hex
    assert encode_segwit("bc", version, program) == address.lower()


@pytest.mark.parametrize(
    "address",
    [
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # v0 with a bech32m checksum
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",  # v1 with a bech32 checksum
        "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3t4",  # mixed case
        "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",  # non-zero padding
    ],
)
def test_bech32_invalid(address: str) -> None:
    with pytest.raises(InvalidAddressError):
        decode_segwit("bc", address)


def test_regtest_addresses() -> None:
    for script in (
        b"\x00\x14" + b"\x11" * 20,
        b"\x00\x20" + b"\x22" * 32,
        b"\x51\x20" + b"\x33" * 32,
        b"\x76\xa9\x14" + b"\x44" * 20 + b"\x88\xac",
        b"\xa9\x14" + b"\x55" * 20 + b"\x87",
    ):
        address = script_to_address(script)
        assert address is not None
        assert address_to_script(address) == script
    assert address_to_script("bcrt1pjffezpv29u3dgm3vxv8mv3pwxmy24n5y8d030795tzuce63ugc0q6ln2hx")[:2] == b"\x51\x20"
    with pytest.raises(InvalidAddressError, match="network"):
        address_to_script("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
    with pytest.raises(InvalidAddressError):
        address_to_script("1BoatSLRHtKNngkdXEeobR76b53LETtpyT")  # mainnet P2PKH
    assert script_to_address(b"\x6a\x00") is None
    assert script_type(b"\x51\x20" + b"\x00" * 32) == "witness_v1_taproot"


def test_dust_thresholds_match_core() -> None:
    assert dust_threshold(b"\x51\x20" + b"\x00" * 32) == 330
    assert dust_threshold(b"\x00\x20" + b"\x00" * 32) == 330
    assert dust_threshold(b"\x00\x14" + b"\x00" * 20) == 294
    assert dust_threshold(b"\x76\xa9\x14" + b"\x00" * 20 + b"\x88\xac") == 546
    assert dust_threshold(b"\x6a\x04abcd") == 0


def test_subsidy_halves_every_150_blocks() -> None:
    assert block_subsidy(1) == 50 * 10**8
    assert block_subsidy(149) == 50 * 10**8
    assert block_subsidy(150) == 25 * 10**8
    assert block_subsidy(300) == 1_250_000_000
    assert block_subsidy(150 * 64) == 0


def test_assembled_block_passes_the_kernels_context_free_checks() -> None:
    tx = Tx(2, [TxIn(OutPoint(b"\x01" * 32, 0), b"", 0xFFFFFFFD, [b"\x51"])], [TxOut(1000, b"\x51\x20" + bytes(32))])
    block = assemble_block(
        prev_hash=bytes.fromhex(GENESIS_HASH)[::-1],
        height=1,
        block_time=int(time.time()),
        coinbase_script=b"\x51",
        txs=[tx],
        fees=500,
        extranonce=7,
    )
    assert block.txs[0].vin[0].script_sig[:1] == b"\x51"  # BIP-34: height 1 is OP_1
    assert block.txs[0].vout[0].value == 50 * 10**8 + 500
    assert block.txs[0].vout[1].script_pubkey[:6] == b"\x6a\x24\xaa\x21\xa9\xed"
    params = pbk.ChainParameters(pbk.ChainType.REGTEST).consensus_params
    state = pbk.Block(block.serialize()).check(params, pbk.BlockCheckFlags.ALL)
    assert state.validation_mode == pbk.ValidationMode.VALID
    block.header.merkle_root = bytes(32)  # a broken merkle root is caught by the kernel
    state = pbk.Block(block.serialize()).check(params, pbk.BlockCheckFlags.MERKLE)
    assert state.validation_mode == pbk.ValidationMode.INVALID


_scripts = st.binary(min_size=0, max_size=80)
_txins = st.builds(
    TxIn,
    st.builds(OutPoint, st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1)),
    _scripts,
    st.integers(0, 2**32 - 1),
    st.lists(st.binary(max_size=100), max_size=4),
)
_txouts = st.builds(TxOut, st.integers(0, 21_000_000 * 10**8), _scripts)


@settings(max_examples=200, deadline=None)
@given(
    version=st.integers(-(2**31), 2**31 - 1),
    vin=st.lists(_txins, min_size=1, max_size=4),
    vout=st.lists(_txouts, min_size=1, max_size=4),
    locktime=st.integers(0, 2**32 - 1),
)
def test_tx_serialization_round_trips_and_agrees_with_the_kernel(
    version: int, vin: list[TxIn], vout: list[TxOut], locktime: int
) -> None:
    tx = Tx(version, vin, vout, locktime)
    raw = tx.serialize()
    parsed = Tx.from_bytes(raw)
    assert parsed.serialize() == raw
    assert parsed.txid == tx.txid
    kernel_tx = pbk.Transaction(raw)
    assert str(kernel_tx.txid) == tx.txid_hex
    assert bytes(kernel_tx) == raw


@given(st.integers(-(21_000_000 * 10**8), 21_000_000 * 10**8))
def test_sats_btc_round_trip(sats: int) -> None:
    assert btc_to_sats(sats_to_btc(sats)) == sats
