"""Regtest block assembly: coinbase (BIP-34 height), witness commitment (BIP-141), merkle root, proof of work.

Pure functions, usable without a node (e.g. to build a competing branch and `submitblock` it).
"""

from __future__ import annotations

from bitcoin.regtest.serialize import (
    SEQUENCE_FINAL,
    Block,
    BlockHeader,
    OutPoint,
    Tx,
    TxIn,
    TxOut,
    bits_to_target,
    hash256,
    merkle_root,
    push_data,
    push_int,
)

REGTEST_BITS = 0x207FFFFF
BLOCK_VERSION = 0x20000000
COIN = 100_000_000
INITIAL_SUBSIDY = 50 * COIN
HALVING_INTERVAL = 150  # regtest
WITNESS_COMMITMENT_HEADER = b"\xaa\x21\xa9\xed"
WITNESS_RESERVED_VALUE = b"\x00" * 32


def block_subsidy(height: int) -> int:
    """Regtest block subsidy in sats (halving every 150 blocks)."""
    halvings = height // HALVING_INTERVAL
    return 0 if halvings >= 64 else INITIAL_SUBSIDY >> halvings


def build_coinbase(height: int, coinbase_script: bytes, value: int, txs: list[Tx], extranonce: int) -> Tx:
    """Coinbase paying `value` to `coinbase_script`, with the BIP-34 height and the BIP-141 commitment."""
    if height < 1:
        raise ValueError("height must be >= 1")
    if not coinbase_script:
        raise ValueError("coinbase script must not be empty")
    coinbase = Tx(
        2,
        [
            TxIn(
                OutPoint(b"\x00" * 32, 0xFFFFFFFF),
                push_int(height) + push_data((extranonce & 0xFFFFFFFF).to_bytes(4, "little")),
                SEQUENCE_FINAL,
                [WITNESS_RESERVED_VALUE],
            )
        ],
        [TxOut(value, coinbase_script)],
        0,
    )
    witness_root = merkle_root([b"\x00" * 32] + [tx.wtxid for tx in txs])
    commitment = hash256(witness_root + WITNESS_RESERVED_VALUE)
    coinbase.vout.append(TxOut(0, b"\x6a\x24" + WITNESS_COMMITMENT_HEADER + commitment))
    return coinbase


def assemble_block(
    *,
    prev_hash: bytes,
    height: int,
    block_time: int,
    coinbase_script: bytes,
    txs: list[Tx],
    fees: int = 0,
    extranonce: int = 0,
) -> Block:
    """A regtest block on `prev_hash` (internal byte order) with a ground nonce. `fees` go to the coinbase."""
    if len(prev_hash) != 32:
        raise ValueError("prev_hash must be 32 bytes")
    if fees < 0:
        raise ValueError("fees must be >= 0")
    coinbase = build_coinbase(height, coinbase_script, block_subsidy(height) + fees, txs, extranonce)
    all_txs = [coinbase, *txs]
    header = BlockHeader(
        BLOCK_VERSION, prev_hash, merkle_root([tx.txid for tx in all_txs]), block_time, REGTEST_BITS, 0
    )
    target = bits_to_target(REGTEST_BITS)
    while int.from_bytes(header.hash, "little") > target:
        header.nonce += 1
    return Block(header, all_txs)
