"""BIP-174/BIP-371 PSBTs for the borrower's TX_1 pre-signature."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from bitcoinutils.psbt import PSBT as BuPsbt

from bitcoin.encoding import hash160, push_bytes, sha256
from bitcoin.errors import PsbtError
from bitcoin.keys import PrivateKey, verify_schnorr
from bitcoin.psbt import (
    PSBT_IN_SIGHASH_TYPE,
    PSBT_IN_TAP_BIP32_DERIVATION,
    PSBT_IN_TAP_INTERNAL_KEY,
    PSBT_IN_TAP_LEAF_SCRIPT,
    PSBT_IN_TAP_MERKLE_ROOT,
    PSBT_IN_WITNESS_UTXO,
    PSBT_OUT_TAP_INTERNAL_KEY,
    PSBT_OUT_TAP_TREE,
    Psbt,
    create_psbt,
    sign_psbt,
)
from bitcoin.scripts import NUMS_INTERNAL_KEY, control_block_commits, tap_leaf_hash
from bitcoin.tests.loan_vectors import (
    LENDER_PREIMAGE,
    ODD_Y_SECRET,
    borrower_key,
    lender_key,
    vector_facts,
)
from bitcoin.transactions import SIGHASH_DEFAULT, PreparedSpend, TxOut, build_tx1, taproot_sighash


def _prepared() -> PreparedSpend:
    return build_tx1(vector_facts(), fee_rate_sat_vb=3)


def test_unsigned_tx1_psbt_carries_the_bip371_fields() -> None:
    prepared = _prepared()
    psbt = create_psbt(prepared)
    assert psbt.unsigned_tx == prepared.tx
    fields = psbt.inputs[0]
    assert fields[bytes([PSBT_IN_WITNESS_UTXO])] == prepared.prevout.serialize()
    assert psbt.witness_utxo(0) == prepared.prevout
    assert fields[bytes([PSBT_IN_TAP_LEAF_SCRIPT]) + prepared.control_block] == prepared.leaf_script + b"\xc0"
    assert psbt.tap_leaf_scripts(0) == [(prepared.control_block, prepared.leaf_script, 0xC0)]
    assert fields[bytes([PSBT_IN_TAP_INTERNAL_KEY])] == NUMS_INTERNAL_KEY
    assert fields[bytes([PSBT_IN_TAP_MERKLE_ROOT])] == prepared.tree.merkle_root
    # BIP-371 key origins for both signers, naming the leaf they sign (BDK signs a script path only then).
    assert psbt.tap_key_leaf_hashes(0) == {signer: [prepared.leaf_hash] for signer in prepared.signers}
    for signer in prepared.signers:
        assert fields[bytes([PSBT_IN_TAP_BIP32_DERIVATION]) + signer] == (
            b"\x01" + prepared.leaf_hash + hash160(signer)[:4]
        )
    collateral = vector_facts().collateral
    assert psbt.outputs[0] == {}
    assert psbt.outputs[2] == {}
    assert psbt.outputs[1][bytes([PSBT_OUT_TAP_INTERNAL_KEY])] == NUMS_INTERNAL_KEY
    assert psbt.outputs[1][bytes([PSBT_OUT_TAP_TREE])] == b"".join(
        b"\x01\xc0" + push_bytes(leaf) for leaf in collateral.leaves
    )


def test_round_trips_in_every_encoding() -> None:
    psbt = create_psbt(_prepared())
    raw = psbt.serialize()
    assert raw.startswith(b"psbt\xff")
    assert Psbt.parse(raw).serialize() == raw
    assert Psbt.from_base64(psbt.to_base64()).serialize() == raw
    assert Psbt.load(raw.hex()).serialize() == raw
    assert Psbt.load(psbt.to_base64().encode() + b"\n").serialize() == raw


def test_an_independent_parser_reads_it() -> None:
    """bitcoin-utils (BIP-174 without taproot fields) parses it and keeps the taproot fields as unknowns."""
    psbt = create_psbt(_prepared())
    other = BuPsbt.from_base64(psbt.to_base64())
    assert other.inputs[0].witness_utxo.amount == 1_200_000
    assert bytes([PSBT_IN_TAP_INTERNAL_KEY]) in other.inputs[0].unknown
    assert other.tx.get_txid() == psbt.unsigned_tx.txid


def test_borrower_signature_is_keyed_by_key_and_leaf_hash() -> None:
    prepared = _prepared()
    psbt = create_psbt(prepared)
    assert sign_psbt(psbt, borrower_key()) == 1
    signatures = psbt.tap_script_sigs(0)
    key = (borrower_key().xonly_pubkey, prepared.leaf_hash)
    assert list(signatures) == [key]
    assert verify_schnorr(key[0], prepared.sighash(), signatures[key])
    reparsed = Psbt.from_base64(psbt.to_base64())
    assert reparsed.tap_script_sigs(0) == signatures
    # The lender can sign the same leaf too; an unrelated key signs nothing.
    assert sign_psbt(reparsed, lender_key()) == 1
    assert len(reparsed.tap_script_sigs(0)) == 2
    assert sign_psbt(reparsed, PrivateKey.from_hex(ODD_Y_SECRET)) == 0


def test_signer_refuses_a_leaf_the_prevout_does_not_commit_to() -> None:
    prepared = _prepared()
    psbt = create_psbt(prepared)
    fake = TxOut(prepared.prevout.value, b"\x51\x20" + b"\x11" * 32)
    psbt.inputs[0][bytes([PSBT_IN_WITNESS_UTXO])] = fake.serialize()
    with pytest.raises(PsbtError, match="not committed"):
        sign_psbt(psbt, borrower_key())
    assert psbt.tap_script_sigs(0) == {}


def test_signer_refuses_other_sighash_types() -> None:
    psbt = create_psbt(_prepared())
    psbt.inputs[0][bytes([PSBT_IN_SIGHASH_TYPE])] = (1).to_bytes(4, "little")
    with pytest.raises(PsbtError, match="only SIGHASH_DEFAULT"):
        sign_psbt(psbt, borrower_key())


def test_key_origin_field() -> None:
    prepared = _prepared()
    xonly = borrower_key().xonly_pubkey
    psbt = create_psbt(prepared, key_origins={xonly: (b"\xde\xad\xbe\xef", [86 | 1 << 31, 1 | 1 << 31, 0])})
    value = psbt.inputs[0][bytes([PSBT_IN_TAP_BIP32_DERIVATION]) + xonly]
    assert value == b"\x01" + prepared.leaf_hash + b"\xde\xad\xbe\xef" + bytes.fromhex("560000800100008000000000")


def test_sha256_preimage_field() -> None:
    """pL travels in the TX_release PSBT as PSBT_IN_SHA256 so any wallet can finalize; a wrong one is refused."""
    psbt = create_psbt(_prepared())
    psbt.add_sha256_preimage(0, LENDER_PREIMAGE)
    parsed = Psbt.from_base64(psbt.to_base64())
    assert parsed.sha256_preimages(0) == {sha256(LENDER_PREIMAGE): LENDER_PREIMAGE}
    parsed.inputs[0][b"\x0b" + sha256(LENDER_PREIMAGE)] = b"\x00" * 32
    with pytest.raises(PsbtError, match="preimage"):
        Psbt.from_base64(parsed.to_base64())


def test_unknown_fields_survive() -> None:
    psbt = create_psbt(_prepared())
    psbt.inputs[0][b"\xfc\x05hello"] = b"world"
    psbt.global_map[b"\xfc\x01x"] = b"y"
    again = Psbt.parse(psbt.serialize())
    assert again.inputs[0][b"\xfc\x05hello"] == b"world"
    assert again.global_map[b"\xfc\x01x"] == b"y"


def _with_duplicate_key(raw: bytes) -> bytes:
    """Repeat the first key-value pair of the input map."""
    psbt = Psbt.parse(raw)
    key, value = next(iter(psbt.inputs[0].items()))
    input_map_start = len(b"psbt\xff") + len(push_bytes(b"\x00")) + len(push_bytes(psbt.unsigned_tx.serialize())) + 1
    assert raw[input_map_start - 1] == 0  # the global map's separator
    entry = push_bytes(key) + push_bytes(value)
    return raw[:input_map_start] + entry + raw[input_map_start:]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: b"psbx\xff" + raw[5:],  # bad magic
        lambda raw: raw[:-3],  # truncated
        lambda raw: raw + b"\x00",  # trailing bytes
        _with_duplicate_key,
        lambda raw: b"psbt\xff\x00",  # no unsigned transaction
    ],
    ids=["magic", "truncated", "trailing", "duplicate-key", "no-tx"],
)
def test_malformed_psbts_are_refused(mutate) -> None:
    raw = create_psbt(_prepared()).serialize()
    with pytest.raises(PsbtError):
        Psbt.parse(mutate(raw))


def test_non_base64_is_refused() -> None:
    with pytest.raises(PsbtError, match="base64"):
        Psbt.from_base64("not base64 at all!")
    with pytest.raises(PsbtError):
        Psbt.load(base64.b64encode(b"hello"))


def test_bad_signature_field_is_refused() -> None:
    psbt = create_psbt(_prepared())
    psbt.inputs[0][b"\x14" + b"\x01" * 64] = b"\x02" * 63
    with pytest.raises(PsbtError, match="malformed tap script signature"):
        Psbt.parse(psbt.serialize())


BIP371 = json.loads((Path(__file__).parent / "data" / "bip371_vector.json").read_text())


def test_bip371_vector_parses_to_what_bitcoin_core_decodes() -> None:
    psbt = Psbt.from_base64(BIP371["psbt"])
    assert psbt.to_base64() == BIP371["psbt"]  # byte-for-byte round trip
    assert psbt.unsigned_tx.txid == BIP371["txid"]
    utxo = psbt.witness_utxo(0)
    assert utxo == TxOut(BIP371["witness_utxo"]["amount_sats"], bytes.fromhex(BIP371["witness_utxo"]["script_pubkey"]))
    expected_sigs = {
        (bytes.fromhex(s["pubkey"]), bytes.fromhex(s["leaf_hash"])): bytes.fromhex(s["sig"])
        for s in BIP371["taproot_script_path_sigs"]
    }
    assert psbt.tap_script_sigs(0) == expected_sigs
    expected_leaves = sorted(
        (bytes.fromhex(s["control_block"]), bytes.fromhex(s["script"]), s["leaf_ver"])
        for s in BIP371["taproot_scripts"]
    )
    assert sorted(psbt.tap_leaf_scripts(0)) == expected_leaves
    assert psbt.inputs[0][bytes([PSBT_IN_TAP_INTERNAL_KEY])].hex() == BIP371["taproot_internal_key"]
    assert psbt.inputs[0][bytes([PSBT_IN_TAP_MERKLE_ROOT])].hex() == BIP371["taproot_merkle_root"]


def test_bip371_vector_control_blocks_and_signatures_check_out() -> None:
    """Independent evidence for our merkle/control-block code and script-path sighash: real wallet data."""
    psbt = Psbt.from_base64(BIP371["psbt"])
    utxo = psbt.witness_utxo(0)
    leaf_hashes = set()
    for control, script, version in psbt.tap_leaf_scripts(0):
        assert control_block_commits(control, script, utxo.script_pubkey)
        leaf_hashes.add(tap_leaf_hash(script, version))
    for (xonly, leaf_hash), signature in psbt.tap_script_sigs(0).items():
        assert leaf_hash in leaf_hashes
        sighash = taproot_sighash(psbt.unsigned_tx, 0, [utxo], SIGHASH_DEFAULT, leaf_hash)
        assert verify_schnorr(xonly, sighash, signature)
        other_leaf = next(h for h in leaf_hashes if h != leaf_hash)
        assert not verify_schnorr(xonly, taproot_sighash(psbt.unsigned_tx, 0, [utxo], 0, other_leaf), signature)
