"""The lender's check of B's pre-signed sweeps (``verify_borrower_sweep_signature``): TX_release and TX_exit rungs
as PSBTs or a finalized TX_exit, accepted when B signed exactly the loan's transaction, refused by reason
otherwise; what it accepts the consensus code accepts too."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bitcoin.consensus import verify_input
from bitcoin.errors import PresignatureError
from bitcoin.presignature import REFUSAL_REASONS, SWEEP_SIGNATURE_REFUSAL_REASONS, verify_borrower_sweep_signature
from bitcoin.psbt import PSBT_IN_SIGHASH_TYPE, Psbt, create_psbt, sign_psbt
from bitcoin.scripts import HASHLOCK_LEAF
from bitcoin.tests.loan_vectors import LENDER_PREIMAGE, borrower_key, lender_key, vector_facts
from bitcoin.transactions import (
    SpendKind,
    TxOut,
    build_exit,
    build_release,
    finalize_exit,
    finalize_release,
    taproot_sighash,
)

TX1_TXID = "b2" * 32
FACTS = vector_facts()


def release(rate: int = 2, facts=FACTS):
    return build_release(facts, tx1_txid=TX1_TXID, fee_rate_sat_vb=rate)


def exit_(rate: int = 2, facts=FACTS):
    return build_exit(facts, fee_rate_sat_vb=rate)


def signed(prepared, key=None) -> Psbt:
    psbt = create_psbt(prepared)
    sign_psbt(psbt, key or borrower_key())
    return psbt


def refused(reason: str, kind: SpendKind, **upload) -> None:
    with pytest.raises(PresignatureError) as caught:
        verify_borrower_sweep_signature(FACTS, kind, **upload)
    assert caught.value.reason == reason, caught.value


# -- accepted -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 2, 50])
def test_a_release_rung_psbt_verifies_and_completes_with_pl(rate: int) -> None:
    prepared = release(rate)
    verified = verify_borrower_sweep_signature(
        FACTS, SpendKind.TX_RELEASE, psbt=signed(prepared).to_base64(), tx1_txid=TX1_TXID
    )
    assert verified.transaction == prepared.tx and verified.form == "psbt"
    assert verified.sighash == prepared.sighash() and verified.fee_sats == prepared.fee_sats
    assert verified.payout_sats == prepared.tx.outputs[0].value
    assert verified.fee_rate_sat_vb >= rate
    tx = finalize_release(
        verified.prepared, borrower_signature=verified.borrower_signature, lender_preimage=LENDER_PREIMAGE
    )
    verify_input(tx, 0, [prepared.prevout])  # raises unless consensus accepts the witness


def test_an_exit_rung_verifies_as_a_psbt_and_as_a_finalized_transaction() -> None:
    prepared = exit_()
    psbt = signed(prepared)
    from_psbt = verify_borrower_sweep_signature(FACTS, SpendKind.TX_EXIT, psbt=psbt.to_base64())
    tx = finalize_exit(prepared, borrower_signature=from_psbt.borrower_signature)
    from_tx = verify_borrower_sweep_signature(FACTS, SpendKind.TX_EXIT, transaction=tx.hex())
    assert from_tx.form == "transaction" and from_tx.transaction == prepared.tx == from_psbt.transaction
    assert from_tx.borrower_signature == from_psbt.borrower_signature
    verify_input(tx, 0, [prepared.prevout])  # raises unless consensus accepts the witness


def test_the_sweep_reasons_are_listed() -> None:
    assert set(SWEEP_SIGNATURE_REFUSAL_REASONS) <= REFUSAL_REASONS
    assert len(SWEEP_SIGNATURE_REFUSAL_REASONS) == len(set(SWEEP_SIGNATURE_REFUSAL_REASONS))


def test_only_borrower_sweeps_are_verified_here() -> None:
    with pytest.raises(ValueError, match="not a borrower's sweep"):
        verify_borrower_sweep_signature(FACTS, SpendKind.TX_CAPTURE, psbt=signed(exit_()).to_base64())


# -- refused ------------------------------------------------------------------------------------------------------


def test_nothing_or_both_forms() -> None:
    refused("missing_signature", SpendKind.TX_EXIT)
    prepared = exit_()
    refused("ambiguous_upload", SpendKind.TX_EXIT, psbt=signed(prepared).to_base64(), transaction=prepared.tx.hex())


def test_malformed_uploads() -> None:
    refused("malformed_psbt", SpendKind.TX_EXIT, psbt="cHNidP8Bnot-a-psbt")
    refused("malformed_transaction", SpendKind.TX_EXIT, transaction="00ff")


def test_an_unsigned_psbt_or_transaction_has_no_signature() -> None:
    prepared = exit_()
    refused("missing_signature", SpendKind.TX_EXIT, psbt=create_psbt(prepared).to_base64())
    refused("missing_signature", SpendKind.TX_EXIT, transaction=prepared.tx.hex())


def test_a_psbt_signed_by_the_lender_only_is_the_wrong_signer() -> None:
    prepared = exit_()
    psbt = create_psbt(prepared)
    psbt.add_tap_script_sig(0, lender_key().xonly_pubkey, prepared.leaf_hash, prepared.sign(borrower_key()))
    refused("wrong_signer", SpendKind.TX_EXIT, psbt=psbt.to_base64())


def test_a_signature_over_the_other_leaf_is_the_wrong_leaf() -> None:
    prepared = release()
    other = FACTS.collateral.leaf_hash(1 - HASHLOCK_LEAF)
    sig = borrower_key().sign_schnorr(taproot_sighash(prepared.tx, 0, [prepared.prevout], 0, other))
    psbt = create_psbt(prepared)
    psbt.add_tap_script_sig(0, borrower_key().xonly_pubkey, other, sig)
    refused("wrong_leaf", SpendKind.TX_RELEASE, psbt=psbt.to_base64(), tx1_txid=TX1_TXID)
    # the same signature placed under the right leaf: it verifies only over the other leaf's sighash
    psbt = create_psbt(prepared)
    psbt.add_tap_script_sig(0, borrower_key().xonly_pubkey, prepared.leaf_hash, sig)
    refused("wrong_leaf", SpendKind.TX_RELEASE, psbt=psbt.to_base64(), tx1_txid=TX1_TXID)


def test_a_lender_signature_under_the_borrowers_key_is_the_wrong_signer() -> None:
    prepared = exit_()
    psbt = create_psbt(prepared)
    lender_sig = lender_key().sign_schnorr(prepared.sighash())
    psbt.add_tap_script_sig(0, borrower_key().xonly_pubkey, prepared.leaf_hash, lender_sig)
    refused("wrong_signer", SpendKind.TX_EXIT, psbt=psbt.to_base64())


def test_a_signature_over_another_transaction_is_invalid() -> None:
    prepared, other = exit_(2), exit_(3)
    psbt = create_psbt(prepared)
    psbt.add_tap_script_sig(0, borrower_key().xonly_pubkey, prepared.leaf_hash, other.sign(borrower_key()))
    refused("invalid_signature", SpendKind.TX_EXIT, psbt=psbt.to_base64())


def test_sighash_types_other_than_default_are_refused() -> None:
    prepared = exit_()
    psbt = signed(prepared)
    ((key, leaf), sig) = next(iter(psbt.tap_script_sigs(0).items()))
    psbt.add_tap_script_sig(0, key, leaf, sig + b"\x01")
    refused("wrong_sighash_type", SpendKind.TX_EXIT, psbt=psbt.to_base64())
    psbt = signed(prepared)
    psbt.inputs[0][bytes([PSBT_IN_SIGHASH_TYPE])] = (1).to_bytes(4, "little")
    refused("wrong_sighash_type", SpendKind.TX_EXIT, psbt=psbt.to_base64())


def test_a_release_paying_someone_else_is_refused_even_when_signed() -> None:
    other_payout = replace(FACTS, borrower_payout_address=FACTS.lender_payout_address)
    prepared = release(facts=other_payout)
    refused("wrong_payout_output", SpendKind.TX_RELEASE, psbt=signed(prepared).to_base64(), tx1_txid=TX1_TXID)


def test_a_release_of_another_tx1_is_the_wrong_outpoint() -> None:
    refused("wrong_outpoint", SpendKind.TX_RELEASE, psbt=signed(release()).to_base64(), tx1_txid="c3" * 32)


def test_an_exit_with_the_wrong_sequence_is_refused() -> None:
    prepared = exit_()
    tx = replace(prepared.tx, inputs=(replace(prepared.tx.inputs[0], sequence=FACTS.escrow_timelock_btc_blocks - 1),))
    refused("wrong_sequence", SpendKind.TX_EXIT, psbt=signed(replace(prepared, tx=tx)).to_base64())


def test_a_psbt_claiming_another_prevout_is_refused() -> None:
    prepared = exit_()
    psbt = signed(replace(prepared, prevout=TxOut(prepared.prevout.value + 1, prepared.prevout.script_pubkey)))
    refused("witness_utxo_mismatch", SpendKind.TX_EXIT, psbt=psbt.to_base64())


def test_a_finalized_exit_with_a_foreign_witness_is_malformed() -> None:
    prepared = exit_()
    tx = finalize_exit(prepared, borrower_signature=prepared.sign(borrower_key()))
    witness = tx.inputs[0].witness
    refused("malformed_witness", SpendKind.TX_EXIT, transaction=tx.with_witness(0, witness[:1] + witness[2:]).hex())
    wrong_leaf = tx.with_witness(0, (witness[0], FACTS.escrow.leaf_script(HASHLOCK_LEAF), witness[2]))
    refused("malformed_witness", SpendKind.TX_EXIT, transaction=wrong_leaf.hex())
    bad_signature = tx.with_witness(0, (bytes(64), *witness[1:]))
    refused("invalid_signature", SpendKind.TX_EXIT, transaction=bad_signature.hex())
