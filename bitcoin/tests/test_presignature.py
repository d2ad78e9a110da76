"""Checking loan transactions against the loan: the lender's verification of B's TX_1 pre-signature and the
borrower's check before signing (accepted transactions and one refusal per check)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitcoin.consensus import verify_input
from bitcoin.errors import BitcoinProtocolError, PresignatureError
from bitcoin.fees import dust_threshold
from bitcoin.keys import PrivateKey
from bitcoin.presignature import (
    check_borrower_transaction,
    check_sweep_transaction,
    check_tx1_transaction,
    verify_borrower_presignature,
)
from bitcoin.psbt import PSBT_IN_SIGHASH_TYPE, Psbt, create_psbt, sign_psbt
from bitcoin.scripts import TIMELOCK_LEAF
from bitcoin.tests.loan_vectors import (
    BORROWER_PREIMAGE,
    ESCROW_OUTPOINT,
    ODD_Y_SECRET,
    borrower_key,
    lender_key,
    vector_facts,
)
from bitcoin.transactions import (
    SIGHASH_DEFAULT,
    OutPoint,
    PreparedSpend,
    SpendKind,
    Transaction,
    TxIn,
    TxOut,
    build_exit,
    build_release,
    build_tx1,
    finalize_tx1,
    taproot_sighash,
)

ESCROW_VALUE = 1_200_000
LOAN_AMOUNT = 1_000_000
FACTS = vector_facts(max_fee_rate_sat_vb=50)
STRANGER = bytes.fromhex("0020" + "1863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262")  # P2WSH


def _honest_tx1(fee_rate: int = 3) -> PreparedSpend:
    return build_tx1(FACTS, fee_rate_sat_vb=fee_rate)


def _borrower_psbt(prepared: PreparedSpend, signer: PrivateKey | None = None) -> str:
    """What a (possibly dishonest) borrower uploads: a PSBT of ``prepared`` signed by ``signer``."""
    psbt = create_psbt(prepared)
    assert sign_psbt(psbt, signer or borrower_key()) == 1
    return psbt.to_base64()


def _with_tx(prepared: PreparedSpend, **changes) -> PreparedSpend:
    return replace(prepared, tx=replace(prepared.tx, **changes))


def _with_outputs(prepared: PreparedSpend, *outputs: TxOut) -> PreparedSpend:
    return _with_tx(prepared, outputs=outputs)


def _refusal(facts: dict | None = None, **upload) -> str:
    with pytest.raises(PresignatureError) as caught:
        verify_borrower_presignature(replace(FACTS, **(facts or {})), **upload)
    return caught.value.reason


def _signed_refusal(prepared: PreparedSpend) -> str:
    """The lender's verdict on ``prepared`` signed by the borrower; the borrower's own check agrees."""
    reason = _refusal(psbt=_borrower_psbt(prepared))
    with pytest.raises(PresignatureError) as caught:
        check_borrower_transaction(FACTS, prepared.tx, prepared.prevout)
    assert caught.value.reason == reason
    return reason


def test_honest_psbt_is_accepted_and_lender_can_complete_tx1() -> None:
    prepared = _honest_tx1()
    verified = verify_borrower_presignature(FACTS, psbt=_borrower_psbt(prepared))
    assert verified.transaction == prepared.tx
    assert verified.origination_fee_sats == 10_000
    assert verified.collateral_sats == LOAN_AMOUNT
    assert verified.change_sats == ESCROW_VALUE - 10_000 - LOAN_AMOUNT - prepared.fee_sats
    assert verified.miner_fee_sats == prepared.fee_sats
    assert verified.fee_rate_sat_vb == 3
    lender_signature = verified.prepared.sign(lender_key())
    tx = finalize_tx1(
        verified.prepared,
        borrower_signature=verified.borrower_signature,
        lender_signature=lender_signature,
        borrower_preimage=BORROWER_PREIMAGE,
    )
    verify_input(tx, 0, [TxOut(ESCROW_VALUE, FACTS.escrow.script_pubkey)])


def test_raw_signature_form_is_accepted() -> None:
    prepared = _honest_tx1()
    signature = prepared.sign(borrower_key())
    verified = verify_borrower_presignature(FACTS, signature=signature.hex(), transaction=prepared.tx.hex())
    assert verified.borrower_signature == signature


def test_tampered_collateral_output_is_refused() -> None:
    prepared = _honest_tx1()
    fee_output, collateral_output, change = prepared.tx.outputs
    steal = TxOut(collateral_output.value, STRANGER)
    assert _signed_refusal(_with_outputs(prepared, fee_output, steal, change)) == "wrong_collateral_output"


def test_fee_output_to_someone_else_is_refused() -> None:
    prepared = _honest_tx1()
    fee_output, collateral_output, change = prepared.tx.outputs
    elsewhere = TxOut(fee_output.value, FACTS.escrow.script_pubkey)
    assert _signed_refusal(_with_outputs(prepared, elsewhere, collateral_output, change)) == "wrong_fee_output"


def test_wrong_fee_amount_is_refused() -> None:
    prepared = _honest_tx1()
    fee_output, collateral_output, change = prepared.tx.outputs
    cheaper = replace(fee_output, value=9_999)
    assert _signed_refusal(_with_outputs(prepared, cheaper, collateral_output, change)) == "wrong_fee_amount"


def test_sub_dust_origination_fee_is_refused_as_the_builder_refuses_it() -> None:
    """The builder and the mempool refuse a dust fee output; so does the verifier (it once accepted one)."""
    facts = replace(FACTS, loan_amount_sats=20_000, collateral_cap_sats=22_000, escrow_sats=30_000)
    shape = build_tx1(replace(facts, origination_fee_bps=200), fee_rate_sat_vb=3)  # 400 sat: not dust
    fee_output, collateral_output, *rest = shape.tx.outputs
    dust_fee = replace(fee_output, value=200)  # 1 % of 20,000 sat, below the 294 sat P2WPKH threshold
    with pytest.raises(PresignatureError) as caught:
        check_tx1_transaction(facts, replace(shape.tx, outputs=(dust_fee, collateral_output, *rest)))
    assert caught.value.reason == "dust_fee_output"


def test_collateral_below_the_loan_amount_is_refused() -> None:
    prepared = _honest_tx1()
    fee_output, collateral_output, change = prepared.tx.outputs
    short = replace(collateral_output, value=LOAN_AMOUNT - 1)
    more_change = replace(change, value=change.value + 1)
    assert _signed_refusal(_with_outputs(prepared, fee_output, short, more_change)) == "insufficient_collateral"


def test_collateral_above_the_cap_is_refused_by_both_sides() -> None:
    """PROTOCOL.md attack 15: with collateral above repayment + bond, refusing a repayment would pay the lender."""
    prepared = _honest_tx1()
    fee_output, collateral_output, change = prepared.tx.outputs
    over = FACTS.collateral_cap_sats + 1
    moved = over - collateral_output.value
    greedy = _with_outputs(
        prepared, fee_output, replace(collateral_output, value=over), replace(change, value=change.value - moved)
    )
    assert _signed_refusal(greedy) == "collateral_above_cap"
    # Between the required amount and the cap it is refused too: the collateral is exact.
    extra = _with_outputs(
        prepared, fee_output, replace(collateral_output, value=LOAN_AMOUNT + 1), replace(change, value=change.value - 1)
    )
    assert _signed_refusal(extra) == "wrong_collateral_amount"


def test_missing_change_output_is_refused_by_both_sides() -> None:
    """B's change must come back to B, not go to the miner."""
    prepared = _honest_tx1()
    fee_output, collateral_output, _change = prepared.tx.outputs
    assert _signed_refusal(_with_outputs(prepared, fee_output, collateral_output)) == "missing_change_output"


def test_change_to_someone_else_or_dust_change_is_refused() -> None:
    prepared = _honest_tx1()
    fee_output, collateral_output, change = prepared.tx.outputs
    elsewhere = replace(change, script_pubkey=STRANGER)
    assert _signed_refusal(_with_outputs(prepared, fee_output, collateral_output, elsewhere)) == "wrong_change_output"
    dust = replace(change, value=dust_threshold(change.script_pubkey) - 1)
    assert _signed_refusal(_with_outputs(prepared, fee_output, collateral_output, dust)) == "dust_change_output"


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


def test_fourth_output_is_refused() -> None:
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
    escrow = FACTS.escrow
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
        _refusal(signature=prepared.sign(borrower_key()), transaction=prepared.tx, facts={"escrow_sats": 1_000_000})
        == "outputs_exceed_input"
    )


def test_fee_rate_must_be_within_bounds() -> None:
    low = _honest_tx1(fee_rate=1)
    assert _refusal(psbt=_borrower_psbt(low), facts={"min_fee_rate_sat_vb": 2}) == "fee_rate_too_low"
    high = build_tx1(replace(FACTS, max_fee_rate_sat_vb=100), fee_rate_sat_vb=60)
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
    verified = verify_borrower_presignature(FACTS, signature=signature, transaction=with_junk_witness)
    assert not verified.transaction.has_witness


@pytest.mark.parametrize(
    "facts",
    [
        {"loan_amount_sats": 0},
        {"escrow_sats": -5},
        {"origination_fee_bps": 20_000},
        {"lender_payout_address": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"},
        {"min_fee_rate_sat_vb": 10, "max_fee_rate_sat_vb": 5},
        {"min_fee_rate_sat_vb": 1.0},
        {"borrower_btc_pubkey": "00" * 32},
        {"escrow_timelock_btc_blocks": 0},
    ],
)
def test_invalid_loan_facts_are_caller_errors_not_refusals(facts: dict) -> None:
    """Bad facts from our own database raise a plain protocol error, never a borrower-facing refusal."""
    psbt = _borrower_psbt(_honest_tx1())
    with pytest.raises(BitcoinProtocolError) as caught:
        verify_borrower_presignature(replace(FACTS, **facts), psbt=psbt)
    assert not isinstance(caught.value, PresignatureError)


@settings(max_examples=40, deadline=None)
@given(output_index=st.sampled_from([0, 1, 2]), delta=st.integers(min_value=-10_000, max_value=200_000).filter(bool))
def test_changed_amounts_are_accepted_exactly_when_the_rules_hold(output_index: int, delta: int) -> None:
    """B re-signs TX_1 with one amount changed: L accepts only if every amount rule still holds."""
    prepared = _honest_tx1()
    outputs = list(prepared.tx.outputs)
    outputs[output_index] = replace(outputs[output_index], value=max(0, outputs[output_index].value + delta))
    tampered = _with_tx(prepared, outputs=tuple(outputs))
    signature = tampered.sign(borrower_key())
    miner_fee = ESCROW_VALUE - sum(output.value for output in outputs)
    vsize = prepared.final_vsize
    rules_hold = (
        output_index == 2
        and outputs[2].value >= dust_threshold(outputs[2].script_pubkey)
        and FACTS.min_fee_rate_sat_vb * vsize <= miner_fee <= FACTS.max_fee_rate_sat_vb * vsize
    )
    if rules_hold:
        verified = verify_borrower_presignature(FACTS, signature=signature, transaction=tampered.tx)
        assert verified.change_sats == outputs[2].value
        assert verified.miner_fee_sats == miner_fee
    else:
        reason = _refusal(signature=signature, transaction=tampered.tx)
        expected = {
            0: {"wrong_fee_amount"},
            1: {"insufficient_collateral", "collateral_above_cap", "wrong_collateral_amount"},
            2: {"dust_change_output", "outputs_exceed_input", "fee_rate_too_low", "fee_rate_too_high"},
        }[output_index]
        assert reason in expected


def test_borrower_side_check_before_signing() -> None:
    """check_tx1_transaction runs every check but the signature, for B's wallet before it signs."""
    prepared = _honest_tx1()
    checked = check_tx1_transaction(FACTS, prepared.tx, prepared.prevout)
    assert checked.tx == prepared.tx
    assert checked.sighash() == prepared.sighash()
    assert checked.fee_sats == prepared.fee_sats
    fee_output, collateral_output, change = prepared.tx.outputs
    greedy = _with_outputs(prepared, replace(fee_output, value=20_000), collateral_output, change)
    with pytest.raises(PresignatureError) as caught:
        check_tx1_transaction(FACTS, greedy.tx)
    assert caught.value.reason == "wrong_fee_amount"


# -- the borrower's check of the sweeps it pre-signs (PROTOCOL.md attack 16) -------------------------------------

TX1_TXID = "b2" * 32


def _sweep_refusal(prepared: PreparedSpend, **kwargs) -> str:
    with pytest.raises(PresignatureError) as caught:
        check_borrower_transaction(FACTS, prepared.tx, **kwargs)
    return caught.value.reason


def test_honest_exit_and_release_are_recognised_and_checked() -> None:
    exit_ = build_exit(FACTS, fee_rate_sat_vb=2)
    release = build_release(FACTS, tx1_txid=TX1_TXID, fee_rate_sat_vb=2)
    assert check_borrower_transaction(FACTS, exit_.tx, exit_.prevout).kind is SpendKind.TX_EXIT
    checked = check_borrower_transaction(FACTS, release.tx, release.prevout, TX1_TXID)
    assert checked.kind is SpendKind.TX_RELEASE
    assert checked.sighash() == release.sighash() and checked.fee_sats == release.fee_sats


def test_exit_paying_a_stranger_is_refused() -> None:
    exit_ = build_exit(FACTS, fee_rate_sat_vb=2)
    stolen = _with_outputs(exit_, replace(exit_.tx.outputs[0], script_pubkey=STRANGER))
    assert _sweep_refusal(stolen) == "wrong_payout_output"


def test_release_paying_the_lender_is_refused() -> None:
    release = build_release(FACTS, tx1_txid=TX1_TXID, fee_rate_sat_vb=2)
    to_lender = _with_outputs(release, replace(release.tx.outputs[0], script_pubkey=FACTS.lender_payout_script))
    assert _sweep_refusal(to_lender) == "wrong_payout_output"


def test_sweep_that_burns_the_collateral_in_fees_or_splits_it_is_refused() -> None:
    release = build_release(FACTS, tx1_txid=TX1_TXID, fee_rate_sat_vb=2)
    payout = release.tx.outputs[0]
    assert _sweep_refusal(_with_outputs(release, replace(payout, value=payout.value // 2))) == "fee_rate_too_high"
    split = _with_outputs(release, replace(payout, value=payout.value - 1000), TxOut(1000, STRANGER))
    assert _sweep_refusal(split) == "wrong_output_count"
    assert (
        _sweep_refusal(_with_outputs(release, replace(payout, value=release.prevout.value + 1)))
        == "outputs_exceed_input"
    )


def test_sweep_frames_are_checked() -> None:
    release = build_release(FACTS, tx1_txid=TX1_TXID, fee_rate_sat_vb=2)
    assert _sweep_refusal(release, tx1_txid="c3" * 32) == "wrong_outpoint"
    wrong_vout = _with_tx(release, inputs=(replace(release.tx.inputs[0], outpoint=OutPoint(TX1_TXID, 0)),))
    assert _sweep_refusal(wrong_vout) == "not_a_loan_transaction"
    with pytest.raises(PresignatureError) as caught:
        check_sweep_transaction(FACTS, SpendKind.TX_RELEASE, wrong_vout.tx)
    assert caught.value.reason == "wrong_outpoint"
    claimed = replace(release.prevout, value=release.prevout.value + 1)
    assert _sweep_refusal(release, claimed_prevout=claimed) == "witness_utxo_mismatch"
    assert _sweep_refusal(_with_tx(release, locktime=1)) == "wrong_locktime"
    # An escrow spend with neither TX_1's nor t_0's nSequence is no TX_exit: as a TX_1 its sequence is wrong.
    exit_ = build_exit(FACTS, fee_rate_sat_vb=2)
    early = _with_tx(exit_, inputs=(replace(exit_.tx.inputs[0], sequence=FACTS.escrow_timelock_btc_blocks - 1),))
    assert _sweep_refusal(early) == "wrong_sequence"


def test_a_spend_of_anything_else_is_not_a_loan_transaction() -> None:
    exit_ = build_exit(FACTS, fee_rate_sat_vb=2)
    other = _with_tx(exit_, inputs=(TxIn(OutPoint("c3" * 32, 0), FACTS.escrow_timelock_btc_blocks),))
    assert _sweep_refusal(other) == "not_a_loan_transaction"


def test_every_refusal_reason_is_listed_once() -> None:
    """The API documents REFUSAL_REASONS as error codes: the list is exactly the reasons the module can give."""
    import re
    from pathlib import Path

    from bitcoin import presignature

    source = Path(presignature.__file__).read_text()
    raised = set(re.findall(r'_refuse\(\s*"([a-z_]+)"', source))
    assert raised == presignature.REFUSAL_REASONS
    assert len(presignature.TX1_REFUSAL_REASONS) == len(set(presignature.TX1_REFUSAL_REASONS))
    with pytest.raises(ValueError, match="unlisted"):
        presignature._refuse("made_up", "x")
