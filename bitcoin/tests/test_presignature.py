"""Lender-side verification of B's TX_1 pre-signature: accepted uploads and one refusal per check."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitcoin.consensus import verify_input
from bitcoin.errors import PresignatureError
from bitcoin.keys import PrivateKey
from bitcoin.presignature import verify_borrower_presignature
from bitcoin.psbt import PSBT_IN_SIGHASH_TYPE, Psbt, create_psbt, sign_psbt
from bitcoin.scripts import TIMELOCK_LEAF
from bitcoin.tests.loan_vectors import (
    BORROWER_HASH,
    BORROWER_PREIMAGE,
    BORROWER_XONLY,
    ESCROW_OUTPOINT,
    LENDER_HASH,
    LENDER_XONLY,
    ODD_Y_SECRET,
    REGTEST_P2WPKH,
    borrower_key,
    lender_key,
    vector_scripts,
)
from bitcoin.transactions import (
    SIGHASH_DEFAULT,
    OutPoint,
    PreparedSpend,
    Transaction,
    TxIn,
    TxOut,
    build_tx1,
    finalize_tx1,
    taproot_sighash,
)

ESCROW_VALUE = 1_100_000
LOAN_AMOUNT = 1_000_000
FEE_BPS = 100

LOAN_FACTS = {
    "network": "regtest",
    "borrower_pubkey": BORROWER_XONLY,
    "lender_pubkey": LENDER_XONLY,
    "borrower_hash": BORROWER_HASH,
    "lender_hash": LENDER_HASH,
    "escrow_timelock": 100,
    "collateral_timelock": 27150,
    "escrow_outpoint": ESCROW_OUTPOINT,
    "escrow_value_sats": ESCROW_VALUE,
    "loan_amount_sats": LOAN_AMOUNT,
    "origination_fee_bps": FEE_BPS,
    "lender_payout_address": REGTEST_P2WPKH,
    "min_fee_rate_sat_vb": 1,
    "max_fee_rate_sat_vb": 50,
}


def _honest_tx1(fee_rate: int = 3) -> PreparedSpend:
    return build_tx1(
        scripts=vector_scripts(),
        escrow_outpoint=ESCROW_OUTPOINT,
        escrow_value_sats=ESCROW_VALUE,
        loan_amount_sats=LOAN_AMOUNT,
        origination_fee_bps=FEE_BPS,
        lender_payout_address=REGTEST_P2WPKH,
        network="regtest",
        fee_rate_sat_vb=fee_rate,
    )


def _borrower_psbt(prepared: PreparedSpend, signer: PrivateKey | None = None) -> str:
    """What a (possibly dishonest) borrower uploads: a PSBT of ``prepared`` signed by ``signer``."""
    psbt = create_psbt(prepared)
    assert sign_psbt(psbt, signer or borrower_key()) == 1
    return psbt.to_base64()


def _with_tx(prepared: PreparedSpend, **changes) -> PreparedSpend:
    return replace(prepared, tx=replace(prepared.tx, **changes))


def _refusal(**upload) -> str:
    facts = {**LOAN_FACTS, **upload.pop("facts", {})}
    with pytest.raises(PresignatureError) as caught:
        verify_borrower_presignature(**facts, **upload)
    return caught.value.reason


def test_honest_psbt_is_accepted_and_lender_can_complete_tx1() -> None:
    prepared = _honest_tx1()
    verified = verify_borrower_presignature(**LOAN_FACTS, psbt=_borrower_psbt(prepared))
    assert verified.transaction == prepared.tx
    assert verified.origination_fee_sats == 10_000
    assert verified.collateral_sats == ESCROW_VALUE - 10_000 - prepared.fee_sats
    assert verified.miner_fee_sats == prepared.fee_sats
    assert verified.fee_rate_sat_vb == 3
    lender_signature = verified.prepared.sign(lender_key())
    tx = finalize_tx1(
        verified.prepared,
        borrower_signature=verified.borrower_signature,
        lender_signature=lender_signature,
        borrower_preimage=BORROWER_PREIMAGE,
    )
    verify_input(tx, 0, [TxOut(ESCROW_VALUE, vector_scripts().escrow.script_pubkey)])


def test_raw_signature_form_is_accepted() -> None:
    prepared = _honest_tx1()
    signature = prepared.sign(borrower_key())
    verified = verify_borrower_presignature(**LOAN_FACTS, signature=signature.hex(), transaction=prepared.tx.hex())
    assert verified.borrower_signature == signature


def test_tampered_collateral_output_is_refused() -> None:
    prepared = _honest_tx1()
    fee_output, collateral_output = prepared.tx.outputs
    steal = TxOut(
        collateral_output.value,
        bytes.fromhex("0020" + "1863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
    )
    assert _refusal(psbt=_borrower_psbt(_with_tx(prepared, outputs=(fee_output, steal)))) == "wrong_collateral_output"


def test_fee_output_to_someone_else_is_refused() -> None:
    prepared = _honest_tx1()
    fee_output, collateral_output = prepared.tx.outputs
    elsewhere = TxOut(fee_output.value, vector_scripts().escrow.script_pubkey)
    assert (
        _refusal(psbt=_borrower_psbt(_with_tx(prepared, outputs=(elsewhere, collateral_output)))) == "wrong_fee_output"
    )


def test_wrong_fee_amount_is_refused() -> None:
    prepared = _honest_tx1()
    fee_output, collateral_output = prepared.tx.outputs
    cheaper = (replace(fee_output, value=9_999), replace(collateral_output, value=collateral_output.value + 1))
    assert _refusal(psbt=_borrower_psbt(_with_tx(prepared, outputs=cheaper))) == "wrong_fee_amount"


def test_collateral_below_the_loan_amount_is_refused() -> None:
    prepared = _honest_tx1(fee_rate=3)
    fee_output, collateral_output = prepared.tx.outputs
    short = (fee_output, replace(collateral_output, value=LOAN_AMOUNT - 1))
    assert _refusal(psbt=_borrower_psbt(_with_tx(prepared, outputs=short))) == "insufficient_collateral"


def test_wrong_input_is_refused() -> None:
    prepared = _honest_tx1()
    other = (TxIn(OutPoint(ESCROW_OUTPOINT.txid, 0), prepared.tx.inputs[0].sequence),)
    assert _refusal(psbt=_borrower_psbt(_with_tx(prepared, inputs=other))) == "wrong_outpoint"


def test_extra_input_is_refused() -> None:
    prepared = _honest_tx1()
    two_inputs = replace(prepared.tx, inputs=(*prepared.tx.inputs, TxIn(OutPoint("c3" * 32, 0), 0xFFFFFFFD)))
    signature = prepared.sign(borrower_key())
    assert _refusal(signature=signature, transaction=two_inputs) == "wrong_input_count"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"version": 1}, "wrong_version"),
        ({"locktime": 500}, "wrong_locktime"),
    ],
)
def test_transaction_header_is_checked(changes: dict, reason: str) -> None:
    prepared = _with_tx(_honest_tx1(), **changes)
    assert _refusal(signature=prepared.sign(borrower_key()), transaction=prepared.tx) == reason


def test_wrong_sequence_is_refused() -> None:
    prepared = _honest_tx1()
    relative_lock = _with_tx(prepared, inputs=(replace(prepared.tx.inputs[0], sequence=1),))
    assert _refusal(psbt=_borrower_psbt(relative_lock)) == "wrong_sequence"


def test_third_output_is_refused() -> None:
    prepared = _honest_tx1()
    extra = _with_tx(prepared, outputs=(*prepared.tx.outputs, TxOut(1_000, prepared.tx.outputs[0].script_pubkey)))
    assert _refusal(signature=extra.sign(borrower_key()), transaction=extra.tx) == "wrong_output_count"


def test_signature_by_another_key_is_refused() -> None:
    prepared = _honest_tx1()
    stranger = PrivateKey.from_hex(ODD_Y_SECRET)
    forged = stranger.sign_schnorr(prepared.sighash())
    assert _refusal(signature=forged, transaction=prepared.tx) == "invalid_signature"
    assert _refusal(signature=prepared.sign(lender_key()), transaction=prepared.tx) == "wrong_signer"
    # In a PSBT, a signature recorded under the lender's key instead of the borrower's.
    assert _refusal(psbt=_borrower_psbt(prepared, lender_key())) == "wrong_signer"


def test_signature_over_the_timelock_leaf_is_refused() -> None:
    prepared = _honest_tx1()
    escrow = vector_scripts().escrow
    leaf0_hash = escrow.leaf_hash(TIMELOCK_LEAF)
    leaf0_sighash = taproot_sighash(prepared.tx, 0, [prepared.prevout], SIGHASH_DEFAULT, leaf0_hash)
    signature = borrower_key().sign_schnorr(leaf0_sighash)
    assert _refusal(signature=signature, transaction=prepared.tx) == "wrong_leaf"
    psbt = create_psbt(prepared)
    psbt.add_tap_script_sig(0, borrower_key().xonly_pubkey, leaf0_hash, signature)
    assert _refusal(psbt=psbt.to_base64()) == "wrong_leaf"


def test_other_sighash_types_are_refused() -> None:
    prepared = _honest_tx1()
    signature_all = borrower_key().sign_schnorr(
        taproot_sighash(prepared.tx, 0, [prepared.prevout], 0x01, prepared.leaf_hash)
    )
    assert _refusal(signature=signature_all + b"\x01", transaction=prepared.tx) == "wrong_sighash_type"
    psbt = Psbt.from_base64(_borrower_psbt(prepared))
    psbt.inputs[0][bytes([PSBT_IN_SIGHASH_TYPE])] = (0x81).to_bytes(4, "little")
    assert _refusal(psbt=psbt.to_base64()) == "wrong_sighash_type"


def test_prevout_claims_are_not_trusted() -> None:
    # B signs as if the escrow held more than the chain shows: the PSBT's claim contradicts the chain.
    prepared = _honest_tx1()
    inflated = replace(prepared, prevout=replace(prepared.prevout, value=ESCROW_VALUE + 50_000))
    assert _refusal(psbt=_borrower_psbt(inflated)) == "witness_utxo_mismatch"
    # Raw form: the same signature simply does not verify against the real prevout.
    assert _refusal(signature=inflated.sign(borrower_key()), transaction=inflated.tx) == "invalid_signature"
    # The chain shows less than the outputs spend.
    assert (
        _refusal(
            signature=prepared.sign(borrower_key()), transaction=prepared.tx, facts={"escrow_value_sats": 1_000_000}
        )
        == "outputs_exceed_input"
    )


def test_fee_rate_must_be_within_bounds() -> None:
    low = _honest_tx1(fee_rate=1)
    assert _refusal(psbt=_borrower_psbt(low), facts={"min_fee_rate_sat_vb": 2}) == "fee_rate_too_low"
    high = _honest_tx1(fee_rate=60)
    assert _refusal(psbt=_borrower_psbt(high)) == "fee_rate_too_high"


def test_missing_and_malformed_uploads() -> None:
    prepared = _honest_tx1()
    assert _refusal(psbt=create_psbt(prepared).to_base64()) == "missing_signature"
    assert _refusal(psbt="cHNidP8=garbage") == "malformed_psbt"
    assert _refusal(signature=b"\x00" * 64) == "missing_signature"
    assert _refusal(signature="zz", transaction=prepared.tx) == "malformed_signature"
    assert _refusal(signature=b"\x01" * 63, transaction=prepared.tx) == "malformed_signature"
    assert _refusal(signature=b"\x01" * 64, transaction="00") == "malformed_transaction"
    both = {"psbt": _borrower_psbt(prepared), "signature": prepared.sign(borrower_key()), "transaction": prepared.tx}
    assert _refusal(**both) == "ambiguous_upload"


def test_a_witness_in_the_raw_upload_is_ignored() -> None:
    prepared = _honest_tx1()
    signature = prepared.sign(borrower_key())
    with_junk_witness: Transaction = prepared.tx.with_witness(0, [b"\x01", b"\x02"])
    verified = verify_borrower_presignature(**LOAN_FACTS, signature=signature, transaction=with_junk_witness)
    assert not verified.transaction.has_witness


@pytest.mark.parametrize(
    "facts",
    [
        {"loan_amount_sats": 0},
        {"escrow_value_sats": -5},
        {"origination_fee_bps": 20_000},
        {"lender_payout_address": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"},
        {"min_fee_rate_sat_vb": 10, "max_fee_rate_sat_vb": 5},
        {"min_fee_rate_sat_vb": 1.0},
        {"borrower_pubkey": "00" * 32},
        {"escrow_timelock": 0},
    ],
)
def test_invalid_loan_facts_are_caller_errors_not_refusals(facts: dict) -> None:
    """Bad facts from our own database raise a plain protocol error, never a borrower-facing refusal."""
    from bitcoin.errors import BitcoinProtocolError

    prepared = _honest_tx1()
    with pytest.raises(BitcoinProtocolError) as caught:
        verify_borrower_presignature(**{**LOAN_FACTS, **facts}, psbt=_borrower_psbt(prepared))
    assert not isinstance(caught.value, PresignatureError)


@settings(max_examples=40, deadline=None)
@given(output_index=st.sampled_from([0, 1]), delta=st.integers(min_value=-10_000, max_value=200_000).filter(bool))
def test_changed_amounts_are_accepted_exactly_when_the_rules_hold(output_index: int, delta: int) -> None:
    """B re-signs TX_1 with one amount changed: L accepts only if every amount rule still holds."""
    prepared = _honest_tx1()
    outputs = list(prepared.tx.outputs)
    outputs[output_index] = replace(outputs[output_index], value=outputs[output_index].value + delta)
    tampered = _with_tx(prepared, outputs=tuple(outputs))
    signature = tampered.sign(borrower_key())
    miner_fee = ESCROW_VALUE - sum(output.value for output in outputs)
    rules_hold = (
        output_index == 1
        and outputs[1].value >= LOAN_AMOUNT
        and miner_fee >= LOAN_FACTS["min_fee_rate_sat_vb"] * prepared.final_vsize
        and miner_fee <= LOAN_FACTS["max_fee_rate_sat_vb"] * prepared.final_vsize
    )
    if rules_hold:
        verified = verify_borrower_presignature(**LOAN_FACTS, signature=signature, transaction=tampered.tx)
        assert verified.collateral_sats == outputs[1].value
        assert verified.miner_fee_sats == miner_fee
    else:
        reason = _refusal(signature=signature, transaction=tampered.tx)
        expected = (
            {"wrong_fee_amount"}
            if output_index == 0
            else {"insufficient_collateral", "outputs_exceed_input", "fee_rate_too_low", "fee_rate_too_high"}
        )
        assert reason in expected


def test_borrower_side_check_before_signing() -> None:
    """check_tx1_transaction runs every check but the signature, for B's wallet before it signs."""
    from bitcoin.presignature import check_tx1_transaction

    prepared = _honest_tx1()
    facts = {**LOAN_FACTS}
    checked = check_tx1_transaction(**facts, transaction=prepared.tx, claimed_prevout=prepared.prevout)
    assert checked.tx == prepared.tx
    assert checked.sighash() == prepared.sighash()
    assert checked.fee_sats == prepared.fee_sats
    fee_output, collateral_output = prepared.tx.outputs
    greedy = _with_tx(prepared, outputs=(replace(fee_output, value=20_000), collateral_output))
    with pytest.raises(PresignatureError) as caught:
        check_tx1_transaction(**facts, transaction=greedy.tx)
    assert caught.value.reason == "wrong_fee_amount"
