"""Keys and BIP-340 signatures: official vectors, odd-Y keys, WIF and invalid input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bitcoin.encoding import b58check_encode
from bitcoin.errors import InvalidKeyError
from bitcoin.keys import CURVE_ORDER, PrivateKey, parse_private_key, parse_wif, parse_xonly_pubkey, verify_schnorr
from bitcoin.tests.loan_vectors import BORROWER_WIF, BORROWER_XONLY, LENDER_WIF, LENDER_XONLY, ODD_Y_SECRET

VECTORS = list(csv.DictReader((Path(__file__).parent / "data" / "bip340_vectors.csv").open()))
SIGNING_VECTORS = [row for row in VECTORS if row["secret key"]]


@pytest.mark.parametrize("row", SIGNING_VECTORS, ids=lambda row: f"bip340-{row['index']}")
def test_bip340_signing_vectors(row: dict[str, str]) -> None:
    key = PrivateKey.from_hex(row["secret key"])
    assert key.xonly_pubkey.hex().upper() == row["public key"]
    signature = key.sign_schnorr(bytes.fromhex(row["message"]), bytes.fromhex(row["aux_rand"]))
    assert signature.hex().upper() == row["signature"]


@pytest.mark.parametrize("row", VECTORS, ids=lambda row: f"bip340-{row['index']}")
def test_bip340_verification_vectors(row: dict[str, str]) -> None:
    expected = row["verification result"] == "TRUE"
    result = verify_schnorr(
        bytes.fromhex(row["public key"]), bytes.fromhex(row["message"]), bytes.fromhex(row["signature"])
    )
    assert result is expected


@pytest.mark.parametrize("index", ["5", "14"])
def test_invalid_public_keys_from_bip340_are_refused(index: str) -> None:
    row = next(row for row in VECTORS if row["index"] == index)
    with pytest.raises(InvalidKeyError):
        parse_xonly_pubkey(row["public key"])


def test_odd_y_key_signs_with_negated_secret() -> None:
    key = PrivateKey.from_hex(ODD_Y_SECRET)
    assert key.has_odd_y is True
    message = bytes(range(32))
    signature = key.sign_schnorr(message)
    assert verify_schnorr(key.xonly_pubkey, message, signature)
    # The x-only key of d and of n - d is the same; the negated secret has even Y.
    negated = PrivateKey((CURVE_ORDER - int(ODD_Y_SECRET, 16)).to_bytes(32, "big"))
    assert negated.xonly_pubkey == key.xonly_pubkey
    assert negated.has_odd_y is False


def test_protocol_vector_wifs() -> None:
    borrower, networks = parse_wif(BORROWER_WIF)
    assert borrower.xonly_pubkey.hex() == BORROWER_XONLY
    assert {network.name for network in networks} == {"testnet", "signet", "regtest"}
    assert PrivateKey.from_wif(LENDER_WIF).xonly_pubkey.hex() == LENDER_XONLY
    assert borrower.to_wif("regtest") == BORROWER_WIF


def test_wif_of_another_network_is_refused() -> None:
    with pytest.raises(InvalidKeyError, match="not for mainnet"):
        PrivateKey.from_wif(BORROWER_WIF, "mainnet")


@pytest.mark.parametrize(
    "bad_wif",
    [
        BORROWER_WIF[:-1] + ("a" if BORROWER_WIF[-1] != "a" else "b"),  # checksum broken
        b58check_encode(b"\xef" + b"\x01" * 32),  # uncompressed WIF
        b58check_encode(b"\xef" + b"\x01" * 32 + b"\x02"),  # wrong compression flag
        b58check_encode(b"\x42" + b"\x01" * 32 + b"\x01"),  # unknown version
        "0OIl",  # not base58
        "",
    ],
)
def test_malformed_wif_is_refused(bad_wif: str) -> None:
    with pytest.raises(InvalidKeyError):
        parse_wif(bad_wif)


@pytest.mark.parametrize(
    "secret_hex",
    ["00" * 32, f"{CURVE_ORDER:064x}", f"{CURVE_ORDER + 1:064x}", "ff" * 32, "01" * 31, "zz" * 32],
)
def test_out_of_range_or_malformed_secret_is_refused(secret_hex: str) -> None:
    with pytest.raises(InvalidKeyError):
        PrivateKey.from_hex(secret_hex)


def test_parse_private_key_accepts_hex_and_wif() -> None:
    assert parse_private_key(" " + ODD_Y_SECRET.lower() + "\n").secret.hex() == ODD_Y_SECRET.lower()
    assert parse_private_key(BORROWER_WIF + "\n", "regtest").xonly_pubkey.hex() == BORROWER_XONLY


@pytest.mark.parametrize(
    "value",
    [
        "00" * 32,  # x = 0 has no curve point
        "ff" * 32,  # above the field size
        BORROWER_XONLY[:-2],  # 31 bytes
        BORROWER_XONLY + "00",  # 33 bytes
        "02" + BORROWER_XONLY,  # compressed SEC key is not x-only
        "g" * 64,
    ],
)
def test_invalid_xonly_keys_are_refused(value: str) -> None:
    with pytest.raises(InvalidKeyError):
        parse_xonly_pubkey(value)


def test_secret_is_not_in_repr() -> None:
    key = PrivateKey.from_hex(ODD_Y_SECRET)
    assert ODD_Y_SECRET.lower() not in repr(key).lower()


def test_sign_rejects_wrong_message_size() -> None:
    with pytest.raises(ValueError):
        PrivateKey.from_hex(ODD_Y_SECRET).sign_schnorr(b"\x00" * 31)
