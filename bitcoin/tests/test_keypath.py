"""BIP-86 key-path spends: the BIP's address vector, the tweaked secret against the tweaked public key, and a
signed spend checked by Bitcoin Core's own interpreter (libbitcoinkernel)."""

from __future__ import annotations

import pytest

from bitcoin.addresses import address_to_script_pubkey, encode_segwit_address
from bitcoin.consensus import verify_input
from bitcoin.errors import TransactionError
from bitcoin.keypath import bip86_output_key, bip86_script_pubkey, build_keypath_spend, tweaked_private_key
from bitcoin.keys import PrivateKey
from bitcoin.transactions import OutPoint, TxOut

# BIP-86's test vector: m/86'/0'/0'/0/0.
BIP86_INTERNAL_KEY = bytes.fromhex("cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115")
BIP86_OUTPUT_KEY = bytes.fromhex("a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c")
BIP86_ADDRESS = "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"


def test_bip86_output_key_and_address_match_the_bips_vector() -> None:
    assert bip86_output_key(BIP86_INTERNAL_KEY) == BIP86_OUTPUT_KEY
    assert encode_segwit_address("mainnet", 1, BIP86_OUTPUT_KEY) == BIP86_ADDRESS
    assert address_to_script_pubkey(BIP86_ADDRESS, "mainnet") == bip86_script_pubkey(BIP86_INTERNAL_KEY)


@pytest.mark.parametrize("odd", [False, True])
def test_the_tweaked_secret_is_the_secret_of_the_output_key(odd: bool) -> None:
    key = PrivateKey.generate()
    while key.has_odd_y != odd:
        key = PrivateKey.generate()
    assert tweaked_private_key(key).xonly_pubkey == bip86_output_key(key.xonly_pubkey)


@pytest.mark.parametrize("seed", range(4))
def test_a_keypath_spend_passes_consensus_script_verification(seed: int) -> None:
    key = PrivateKey(bytes([seed + 1]) * 32)
    spent = TxOut(50_000, bip86_script_pubkey(key.xonly_pubkey))
    tx = build_keypath_spend(
        key,
        outpoint=OutPoint("11" * 32, 0),
        spent=spent,
        outputs=[TxOut(49_000, bip86_script_pubkey(key.xonly_pubkey))],
    )
    assert len(tx.inputs[0].witness) == 1 and len(tx.inputs[0].witness[0]) == 64
    verify_input(tx, 0, [spent])
    other = TxOut(50_001, spent.script_pubkey)  # the amount is signed: another amount fails
    with pytest.raises(TransactionError):
        verify_input(tx, 0, [other])


def test_refuses_an_output_that_is_not_the_keys_and_outputs_above_the_input() -> None:
    key, stranger = PrivateKey(b"\x05" * 32), PrivateKey(b"\x06" * 32)
    spent = TxOut(10_000, bip86_script_pubkey(stranger.xonly_pubkey))
    with pytest.raises(TransactionError, match="not the BIP-86"):
        build_keypath_spend(key, outpoint=OutPoint("22" * 32, 1), spent=spent, outputs=[TxOut(9_000, b"\x51")])
    mine = TxOut(10_000, bip86_script_pubkey(key.xonly_pubkey))
    with pytest.raises(TransactionError, match="pay more"):
        build_keypath_spend(key, outpoint=OutPoint("22" * 32, 1), spent=mine, outputs=[TxOut(10_001, b"\x51")])
