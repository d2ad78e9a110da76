"""Address validation for payouts: every standard type, every network, and clear refusals."""

from __future__ import annotations

import pytest
from bitcoinutils import bech32

from bitcoin.addresses import (
    P2PKH,
    P2SH,
    P2TR,
    P2WPKH,
    P2WSH,
    address_to_script_pubkey,
    script_pubkey_to_address,
    script_pubkey_type,
    validate_address,
)
from bitcoin.errors import InvalidAddressError, InvalidNetworkError
from bitcoin.networks import get_network

# BIP-173 / BIP-350 / well-known mainnet examples with their scriptPubKeys.
MAINNET_EXAMPLES = [
    ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac", P2PKH),
    ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "a914b472a266d0bd89c13706a4132ccfb16f7c3b9fcb87", P2SH),
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6", P2WPKH),
    (
        "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
        P2WSH,
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        P2TR,
    ),
]


@pytest.mark.parametrize(("address", "spk_hex", "kind"), MAINNET_EXAMPLES)
def test_mainnet_examples(address: str, spk_hex: str, kind: str) -> None:
    spk = address_to_script_pubkey(address, "mainnet")
    assert spk.hex() == spk_hex
    assert script_pubkey_type(spk) == kind
    expected = address.lower() if address[0] in "bB" else address
    assert script_pubkey_to_address(spk, "mainnet") == expected


def test_bip173_testnet_p2wsh() -> None:
    spk = address_to_script_pubkey("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "testnet")
    assert spk.hex() == "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"


@pytest.mark.parametrize("network", ["mainnet", "testnet", "signet", "regtest"])
@pytest.mark.parametrize("spk_hex", [example[1] for example in MAINNET_EXAMPLES])
def test_round_trip_every_type_on_every_network(network: str, spk_hex: str) -> None:
    spk = bytes.fromhex(spk_hex)
    address = script_pubkey_to_address(spk, network)
    assert address_to_script_pubkey(address, network) == spk
    assert validate_address(address.upper() if address.startswith(("bc", "tb")) else address, network) == address


@pytest.mark.parametrize(
    ("address", "network", "message"),
    [
        ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "mainnet", "regtest, not mainnet"),
        ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "regtest", "mainnet, not regtest"),
        ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "mainnet", "not mainnet"),
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "testnet", "mainnet, not testnet"),
        ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "regtest", "mainnet, not regtest"),
    ],
)
def test_other_networks_addresses_are_refused(address: str, network: str, message: str) -> None:
    with pytest.raises(InvalidAddressError, match=message):
        address_to_script_pubkey(address, network)


def _encode(hrp: str, version: int, program: bytes, spec: bech32.Encoding) -> str:
    return bech32.bech32_encode(hrp, [version, *bech32.convertbits(list(program), 8, 5)], spec)


@pytest.mark.parametrize(
    "address",
    [
        _encode("bc", 1, bytes(32), bech32.Encoding.BECH32),  # v1 with bech32 instead of bech32m
        _encode("bc", 0, bytes(20), bech32.Encoding.BECH32M),  # v0 with bech32m
        _encode("bc", 0, bytes(25), bech32.Encoding.BECH32),  # v0 program of wrong length
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",  # checksum error
        "bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",  # mixed case
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3",  # base58 checksum error
        "",
        "not an address",
    ],
)
def test_malformed_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidAddressError):
        address_to_script_pubkey(address, "mainnet")


@pytest.mark.parametrize(
    "address",
    [
        _encode("bc", 1, bytes(20), bech32.Encoding.BECH32M),  # witness v1, not 32 bytes
        _encode("bc", 2, bytes(32), bech32.Encoding.BECH32M),  # future witness version
        _encode("bc", 16, bytes(2), bech32.Encoding.BECH32M),
    ],
)
def test_non_standard_witness_programs_are_refused_as_payouts(address: str) -> None:
    with pytest.raises(InvalidAddressError, match="only P2PKH, P2SH, P2WPKH, P2WSH and P2TR"):
        address_to_script_pubkey(address, "mainnet")


def test_unknown_network_name() -> None:
    with pytest.raises(InvalidNetworkError):
        get_network("litecoin")
    assert get_network("main").name == "mainnet"
    assert get_network("testnet4").bech32_hrp == "tb"


def test_non_standard_script_has_no_address() -> None:
    with pytest.raises(InvalidAddressError):
        script_pubkey_to_address(b"\x6a\x01\x00", "mainnet")
