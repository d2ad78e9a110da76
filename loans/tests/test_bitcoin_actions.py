"""The Bitcoin actions of both parties (``loans.services.bitcoin_actions``): B's pre-signed ladders and PSBTs, every
broadcast, L's TX_1 and TX_capture, an operator's retry. Each refusal by its code with nothing changed; then the
whole life on the real regtest node: TX_1 locked with the vault's lender key, TX_release completed from an
uploaded rung and pL, TX_exit refused one block before t_0 and accepted at it, TX_capture after t_1."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from bitcoin.consensus import verify_input
from bitcoin.presignature import verify_borrower_sweep_signature
from bitcoin.psbt import Psbt, create_psbt, sign_psbt
from bitcoin.rpc import BitcoinRPC
from bitcoin.tests.loan_vectors import (
    BORROWER_PREIMAGE,
    BORROWER_XONLY,
    LENDER_HASH,
    LENDER_PREIMAGE,
    REGTEST_P2WPKH,
    borrower_key,
    lender_key,
)
from bitcoin.transactions import (
    SpendKind,
    Transaction,
    TxOut,
    build_capture,
    build_exit,
    build_release,
    build_tx1,
    finalize_capture,
    finalize_exit,
    finalize_release,
    finalize_tx1,
)
from loans import vault
from loans.errors import LoanServiceError
from loans.facts import loan_facts
from loans.models import (
    BitcoinBroadcast,
    BitcoinTransaction,
    BorrowerSignature,
    ChainCursor,
    Loan,
    OperatorAction,
    User,
)
from loans.services import loan_status_transition, presignature_upload
from loans.services.bitcoin_actions import (
    BROADCAST_CODES,
    COLLATERAL_CAPTURE_CODES,
    COLLATERAL_LOCK_CODES,
    EXIT_PSBT_CODES,
    LADDER_UPLOAD_CODES,
    MAX_LADDER_RUNGS,
    RELEASE_PSBT_CODES,
    bitcoin_broadcast_retry,
    bitcoin_transaction_broadcast,
    collateral_capture,
    collateral_lock,
    exit_psbt_prepare,
    presigned_ladder_upload,
    release_psbt_prepare,
)
from loans.services.lender_secrets import lender_key_store

from .factories import hex32, make_user
from .test_api_presignature import make_vector_loan
from .test_sync_bitcoin import T_0, T_1, ChainLoan, make_chain_loan

pytestmark = pytest.mark.django_db

CLOSED_PORT_URL = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _desk(settings) -> None:
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB = "1"
    settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "500"
    settings.BITCOIN_RPC_URL = CLOSED_PORT_URL  # no node unless a test gives one
    settings.LOAN_VAULT_KEYS_FILE = ""
    settings.LOAN_VAULT_KEYS = Fernet.generate_key().decode()


@pytest.fixture
def borrower() -> User:
    return make_user(User.Role.BORROWER)


@pytest.fixture
def lender() -> User:
    return make_user(User.Role.LENDER)


@pytest.fixture
def operator() -> User:
    return make_user(User.Role.OPERATOR)


def store_lender_key(user: User, key=None) -> None:
    lender_key_store(lender=user, kind="bitcoin", private_key=vault.Secret((key or lender_key()).secret), actor=None)


def vector_loan(borrower: User, *, fresh: bool = False, **overrides) -> Loan:
    """PROTOCOL.md's vector (keys, hashes, payouts) as a requested loan with hL and a confirmed escrow; ``fresh``:
    new hashes and escrow outpoint (hashes and outpoints are unique across loans), for a test's second loan."""
    if fresh:
        overrides = {"borrower_hash": hex32(), "lender_hash": hex32(), "escrow_txid": hex32(), **overrides}
    return make_vector_loan(borrower, **overrides)


def upload_tx1(loan: Loan, key=None) -> BorrowerSignature:
    psbt = create_psbt(build_tx1(loan_facts(loan=loan), fee_rate_sat_vb=2))
    sign_psbt(psbt, key or borrower_key())
    return presignature_upload(loan=loan, actor=loan.borrower, psbt=psbt.to_base64())


def release_rung(loan: Loan, tx1_txid: str, rate: int = 2, key=None, facts=None) -> str:
    psbt = create_psbt(build_release(facts or loan_facts(loan=loan), tx1_txid=tx1_txid, fee_rate_sat_vb=rate))
    sign_psbt(psbt, key or borrower_key())
    return psbt.to_base64()


def exit_rung_psbt(loan: Loan, rate: int = 2, key=None, facts=None) -> str:
    psbt = create_psbt(build_exit(facts or loan_facts(loan=loan), fee_rate_sat_vb=rate))
    sign_psbt(psbt, key or borrower_key())
    return psbt.to_base64()


def exit_tx(loan: Loan, rate: int = 2, key=None):
    prepared = build_exit(loan_facts(loan=loan), fee_rate_sat_vb=rate)
    return finalize_exit(prepared, borrower_signature=prepared.sign(key or borrower_key()))


def lender_signed_exit_psbt(loan: Loan) -> str:
    """A TX_exit PSBT carrying the lender's signature (under the lender's key) instead of the borrower's."""
    prepared = build_exit(loan_facts(loan=loan), fee_rate_sat_vb=3)
    psbt = create_psbt(prepared)
    signature = lender_key().sign_schnorr(prepared.sighash())
    psbt.add_tap_script_sig(0, lender_key().xonly_pubkey, prepared.leaf_hash, signature)
    return psbt.to_base64()


def forged_exit_tx(loan: Loan):
    """A finalized TX_exit whose signature is the borrower's over another transaction."""
    facts = loan_facts(loan=loan)
    prepared = build_exit(facts, fee_rate_sat_vb=4)
    other = build_exit(facts, fee_rate_sat_vb=6)
    return prepared.tx.with_witness(0, (other.sign(borrower_key()), prepared.leaf_script, prepared.control_block))


def set_loan(loan: Loan, **fields) -> Loan:
    Loan.objects.filter(pk=loan.pk).update(**fields)
    loan.refresh_from_db()
    return loan


def lock_applied(loan: Loan, tx1_txid: str, height: int | None = None) -> BitcoinTransaction:
    """What the watcher records when TX_1 is final: the collateral lock, applied."""
    set_loan(loan, bitcoin_status=Loan.BitcoinStatus.COLLATERAL_LOCKED, collateral_btc_height=height)
    return BitcoinTransaction.objects.create(
        loan=loan,
        role=BitcoinTransaction.Role.COLLATERAL_LOCK,
        txid=tx1_txid,
        spent_txid=loan.escrow_txid,
        spent_vout=loan.escrow_vout,
        block_hash=hex32() if height is not None else None,
        block_height=height,
        applied_at=timezone.now(),
    )


def follow(height: int) -> None:
    """The Bitcoin watcher's cursor at ``height``."""
    ChainCursor.objects.update_or_create(
        chain=ChainCursor.Chain.BITCOIN,
        defaults={"block_number": height, "block_hash": hex32(), "parent_hash": hex32()},
    )


def escrow_at(loan: Loan, height: int) -> None:
    """The escrow funding as the watcher applied it, at ``height``."""
    set_loan(loan, escrow_btc_height=height)
    BitcoinTransaction.objects.create(
        loan=loan,
        role=BitcoinTransaction.Role.ESCROW_FUNDING,
        txid=loan.escrow_txid,
        vout=loan.escrow_vout,
        value_sats=loan.escrow_sats,
        block_hash=hex32(),
        block_height=height,
        applied_at=timezone.now(),
    )


def state(loan: Loan) -> tuple:
    loan.refresh_from_db()
    return (
        loan.status,
        loan.bitcoin_status,
        sorted(BorrowerSignature.objects.filter(loan=loan).values_list("pk", "kind")),
        sorted(BitcoinBroadcast.objects.filter(loan=loan).values_list("pk", "attempts", "accepted_at", "last_error")),
        OperatorAction.objects.count(),
    )


def refused(code: str, service: Callable, loan: Loan, **kwargs) -> LoanServiceError:
    before = state(loan)
    with pytest.raises(LoanServiceError) as caught:
        service(loan=loan, **kwargs)
    assert caught.value.code == code, caught.value
    assert state(loan) == before
    return caught.value


def denied(service: Callable, loan: Loan, **kwargs) -> None:
    before = state(loan)
    with pytest.raises(PermissionDenied):
        service(loan=loan, **kwargs)
    assert state(loan) == before


# ------------------------------------------------------------------------------------------------ ladders


def test_ladders_are_verified_and_stored_and_the_same_rungs_return_their_rows(borrower):
    loan = vector_loan(borrower)
    tx1 = upload_tx1(loan)
    release = [release_rung(loan, tx1.txid, rate) for rate in (2, 5)]
    exits = [exit_rung_psbt(loan, 2), exit_tx(loan, 5).hex()]
    rows = presigned_ladder_upload(loan=loan, actor=borrower, release=release, exit=exits)
    assert [(row.kind, row.form) for row in rows] == [
        ("tx_release", "psbt"),
        ("tx_release", "psbt"),
        ("tx_exit", "psbt"),
        ("tx_exit", "transaction"),
    ]
    facts = loan_facts(loan=loan)
    for row in rows:
        row.refresh_from_db()
        assert row.verified_at is not None and row.uploaded_by == borrower and row.loan == loan
        tx1_txid = tx1.txid if row.kind == "tx_release" else None
        upload = {"psbt": row.psbt_base64} if row.form == "psbt" else {"transaction": exits[1]}
        verified = verify_borrower_sweep_signature(facts, SpendKind(row.kind), tx1_txid=tx1_txid, **upload)
        assert (row.txid, row.signature_hex, row.sighash_hex) == (
            verified.transaction.txid,
            verified.borrower_signature.hex(),
            verified.sighash.hex(),
        )
    assert rows[3].psbt_base64 == "" and rows[3].unsigned_tx_hex == exit_tx(loan, 5).serialize(False).hex()
    again = presigned_ladder_upload(loan=loan, actor=borrower, release=release[:1], exit=exits[1:])
    assert [row.pk for row in again] == [rows[0].pk, rows[3].pk]
    assert BorrowerSignature.objects.filter(loan=loan).count() == 5  # TX_1 and four rungs


def test_only_the_loans_borrower_uploads_ladders(borrower, lender, operator):
    loan = vector_loan(borrower)
    for actor in (make_user(User.Role.BORROWER), lender, operator):
        denied(presigned_ladder_upload, loan, actor=actor, exit=[exit_tx(loan).hex()])


def test_an_empty_or_too_long_ladder_is_refused(borrower):
    loan = vector_loan(borrower)
    refused("ladder_empty", presigned_ladder_upload, loan, actor=borrower)
    rung = exit_tx(loan).hex()
    refused("ladder_too_long", presigned_ladder_upload, loan, actor=borrower, exit=[rung] * (MAX_LADDER_RUNGS + 1))


def test_a_release_ladder_before_tx1_is_presigned_is_refused(borrower):
    loan = vector_loan(borrower)
    refused("tx1_not_presigned", presigned_ladder_upload, loan, actor=borrower, release=[release_rung(loan, "b2" * 32)])


def test_ladders_need_a_confirmed_escrow_and_an_open_loan(borrower):
    closed = vector_loan(borrower, status=Loan.Status.CANCELLED, closed_at=timezone.now())
    rung = exit_tx(closed).hex()
    refused("wrong_state", presigned_ladder_upload, closed, actor=borrower, exit=[rung])
    unfunded = vector_loan(
        borrower,
        fresh=True,
        escrow_txid=None,
        escrow_vout=None,
        escrow_sats=None,
        bitcoin_status=Loan.BitcoinStatus.NONE,
    )
    refused("escrow_not_confirmed", presigned_ladder_upload, unfunded, actor=borrower, exit=[rung])


def test_an_exit_ladder_after_the_escrow_is_spent_is_refused(borrower):
    loan = vector_loan(borrower)
    rung = exit_tx(loan).hex()
    set_loan(loan, bitcoin_status=Loan.BitcoinStatus.COLLATERAL_LOCKED)
    refused("escrow_spent", presigned_ladder_upload, loan, actor=borrower, exit=[rung])


def test_one_bad_rung_stores_nothing(borrower):
    loan = vector_loan(borrower)
    tx1 = upload_tx1(loan)
    good_release = release_rung(loan, tx1.txid)
    good_exit = exit_tx(loan).hex()
    to_lender = replace(loan_facts(loan=loan), borrower_payout_address=REGTEST_P2WPKH)
    generous = replace(loan_facts(loan=loan), max_fee_rate_sat_vb=Fraction(1000))  # a signer with other bounds
    error = refused(
        "wrong_payout_output",
        presigned_ladder_upload,
        loan,
        actor=borrower,
        release=[good_release],
        exit=[good_exit, exit_rung_psbt(loan, facts=to_lender)],
    )
    assert str(error.args[0]).startswith("exit[1]: ")
    cases = {
        "wrong_outpoint": {"release": [release_rung(loan, "c3" * 32)]},
        "malformed_psbt": {"release": [good_exit]},  # a TX_release rung is a PSBT
        "wrong_signer": {"exit": [good_exit, lender_signed_exit_psbt(loan)]},
        "invalid_signature": {"exit": [forged_exit_tx(loan).hex()]},
        "fee_rate_too_high": {"release": [release_rung(loan, tx1.txid, rate=600, facts=generous)]},
    }
    for code, upload in cases.items():
        refused(code, presigned_ladder_upload, loan, actor=borrower, **upload)


def test_ladder_codes_are_listed():
    for code in ("wrong_state", "escrow_not_confirmed", "tx1_not_presigned", "ladder_empty", "malformed_witness"):
        assert code in LADDER_UPLOAD_CODES


# ------------------------------------------------------------------------------------------------ B's PSBTs


def released_loan(borrower) -> tuple[Loan, str]:
    loan = vector_loan(borrower)
    tx1 = upload_tx1(loan)
    set_loan(loan, status=Loan.Status.REPAID, lender_preimage=LENDER_PREIMAGE.hex())
    lock_applied(loan, tx1.txid, height=200)
    return loan, tx1.txid


def test_release_psbt_carries_pl_and_the_borrowers_derivation_and_signs_into_a_valid_spend(borrower):
    loan, tx1_txid = released_loan(borrower)
    result = release_psbt_prepare(loan=loan, actor=borrower, fee_rate_sat_vb="3")
    facts = loan_facts(loan=loan)
    expected = build_release(facts, tx1_txid=tx1_txid, fee_rate_sat_vb=3)
    assert result.txid == expected.tx.txid and result.fee_sats == expected.fee_sats
    assert result.payout_sats == expected.tx.outputs[0].value and result.fee_rate_sat_vb >= 3
    psbt = Psbt.load(result.psbt.to_base64())
    assert psbt.sha256_preimages(0) == {bytes.fromhex(LENDER_HASH): LENDER_PREIMAGE}
    assert psbt.tap_key_leaf_hashes(0) == {bytes.fromhex(BORROWER_XONLY): [expected.leaf_hash]}
    assert sign_psbt(psbt, borrower_key()) == 1  # B's signer finds its key and leaf from the PSBT alone
    ((_, signature),) = psbt.tap_script_sigs(0).items()
    tx = finalize_release(expected, borrower_signature=signature, lender_preimage=LENDER_PREIMAGE)
    verify_input(tx, 0, [expected.prevout])


def test_release_psbt_refusals(borrower, lender):
    loan, _ = released_loan(borrower)
    denied(release_psbt_prepare, loan, actor=lender, fee_rate_sat_vb="2")
    for rate in ("0", "600", "x"):
        refused("invalid_fee_rate", release_psbt_prepare, loan, actor=borrower, fee_rate_sat_vb=rate)
    refused(
        "chain_fact_mismatch",
        release_psbt_prepare,
        set_loan(loan, lender_preimage=hex32()),
        actor=borrower,
        fee_rate_sat_vb="2",
    )
    set_loan(loan, lender_preimage=None)
    refused("lender_preimage_unknown", release_psbt_prepare, loan, actor=borrower, fee_rate_sat_vb="2")
    unlocked = vector_loan(borrower, fresh=True, status=Loan.Status.REPAID, lender_preimage=hex32())
    refused("collateral_not_locked", release_psbt_prepare, unlocked, actor=borrower, fee_rate_sat_vb="2")
    assert set(RELEASE_PSBT_CODES) >= {"lender_preimage_unknown", "collateral_not_locked", "invalid_fee_rate"}


def cancelled_loan_with_escrow_at(borrower, height: int) -> Loan:
    loan = vector_loan(borrower, status=Loan.Status.CANCELLED)
    escrow_at(loan, height)
    return loan


def test_exit_psbt_once_t0_matured(borrower):
    loan = cancelled_loan_with_escrow_at(borrower, 500)  # t_0 = 100: a block at 600 may hold TX_exit
    follow(599)
    result = exit_psbt_prepare(loan=loan, actor=borrower, fee_rate_sat_vb="2")
    expected = build_exit(loan_facts(loan=loan), fee_rate_sat_vb=2)
    assert result.txid == expected.tx.txid and result.payout_sats == expected.tx.outputs[0].value
    assert result.psbt.unsigned_tx.inputs[0].sequence == 100
    assert result.psbt.tap_key_leaf_hashes(0) == {bytes.fromhex(BORROWER_XONLY): [expected.leaf_hash]}


def test_exit_psbt_refusals(borrower, lender):
    loan = cancelled_loan_with_escrow_at(borrower, 500)
    follow(598)
    error = refused("too_early", exit_psbt_prepare, loan, actor=borrower, fee_rate_sat_vb="2")
    assert "1 more block" in str(error)
    follow(599)
    denied(exit_psbt_prepare, loan, actor=lender, fee_rate_sat_vb="2")
    refused("invalid_fee_rate", exit_psbt_prepare, loan, actor=borrower, fee_rate_sat_vb="0.5")
    for status in (Loan.Status.ACTIVE, Loan.Status.REPAYMENT_IN_PROGRESS, Loan.Status.DEFAULTED):
        set_loan(loan, status=status)
        refused("escrow_owed_to_lender", exit_psbt_prepare, loan, actor=borrower, fee_rate_sat_vb="2")
    set_loan(loan, status=Loan.Status.ACTIVE, bitcoin_status=Loan.BitcoinStatus.COLLATERAL_LOCKED)
    refused("escrow_spent", exit_psbt_prepare, loan, actor=borrower, fee_rate_sat_vb="2")
    unfunded = vector_loan(
        borrower,
        fresh=True,
        escrow_txid=None,
        escrow_vout=None,
        escrow_sats=None,
        bitcoin_status=Loan.BitcoinStatus.NONE,
    )
    refused("escrow_not_confirmed", exit_psbt_prepare, unfunded, actor=borrower, fee_rate_sat_vb="2")
    assert "escrow_owed_to_lender" in EXIT_PSBT_CODES


# ------------------------------------------------------------------------------------------------ broadcasts


def complete_tx1(loan: Loan):
    prepared = build_tx1(loan_facts(loan=loan), fee_rate_sat_vb=2)
    return finalize_tx1(
        prepared,
        borrower_signature=prepared.sign(borrower_key()),
        lender_signature=prepared.sign(lender_key()),
        borrower_preimage=BORROWER_PREIMAGE,
    )


def test_an_unreachable_node_keeps_the_broadcast_for_a_retry(borrower, operator, lender):
    loan = vector_loan(borrower, status=Loan.Status.CANCELLED)
    tx = exit_tx(loan)
    row = bitcoin_transaction_broadcast(loan=loan, actor=borrower, transaction_hex=tx.hex())
    row.refresh_from_db()
    assert (row.kind, row.txid, row.raw_hex, row.attempts, row.accepted_at) == ("tx_exit", tx.txid, tx.hex(), 1, None)
    assert row.requested_by == borrower and "unreachable" in row.last_error and row.last_attempt_at
    again = bitcoin_transaction_broadcast(loan=loan, actor=borrower, transaction_hex=tx.hex())
    assert again.pk == row.pk and again.attempts == 2 and BitcoinBroadcast.objects.count() == 1

    with pytest.raises(PermissionDenied):
        bitcoin_broadcast_retry(broadcast=row, actor=lender)
    assert not OperatorAction.objects.exists()
    retried = bitcoin_broadcast_retry(broadcast=row, actor=operator)
    assert retried.attempts == 3 and retried.accepted_at is None
    (action,) = OperatorAction.objects.all()
    assert (action.action, action.actor, action.broadcast_id) == ("broadcast_retried", operator, row.pk)
    assert "unreachable" in action.detail


def test_who_broadcasts_what(borrower, lender, operator):
    loan = vector_loan(borrower, status=Loan.Status.ACTIVE, borrower_preimage=BORROWER_PREIMAGE.hex())
    tx1 = complete_tx1(loan)
    denied(bitcoin_transaction_broadcast, loan, actor=borrower, transaction_hex=tx1.hex())
    denied(bitcoin_transaction_broadcast, loan, actor=make_user(User.Role.BORROWER), transaction_hex=tx1.hex())
    denied(bitcoin_transaction_broadcast, loan, actor=lender, transaction_hex=exit_tx(loan).hex())
    row = bitcoin_transaction_broadcast(loan=loan, actor=lender, transaction_hex=tx1.hex())
    assert row.kind == "tx_1" and row.txid == tx1.txid
    by_operator = bitcoin_transaction_broadcast(loan=loan, actor=operator, transaction_hex=tx1.hex())
    assert by_operator.pk == row.pk
    set_loan(loan, lender=make_user(User.Role.LENDER))
    denied(bitcoin_transaction_broadcast, loan, actor=lender, transaction_hex=tx1.hex())  # not the loan's lender


def test_a_release_and_a_capture_are_recognised_as_the_loans(borrower, lender):
    loan = vector_loan(borrower)
    tx1 = upload_tx1(loan)
    set_loan(loan, status=Loan.Status.REPAID)
    facts = loan_facts(loan=loan)
    release = build_release(facts, tx1_txid=tx1.txid, fee_rate_sat_vb=2)
    release_tx = finalize_release(
        release, borrower_signature=release.sign(borrower_key()), lender_preimage=LENDER_PREIMAGE
    )
    capture = build_capture(facts, tx1_txid=tx1.txid, fee_rate_sat_vb=2)
    capture_tx = finalize_capture(capture, lender_signature=capture.sign(lender_key()))
    denied(bitcoin_transaction_broadcast, loan, actor=lender, transaction_hex=release_tx.hex())
    denied(bitcoin_transaction_broadcast, loan, actor=borrower, transaction_hex=capture_tx.hex())
    assert bitcoin_transaction_broadcast(loan=loan, actor=borrower, transaction_hex=release_tx.hex()).kind == (
        "tx_release"
    )
    assert bitcoin_transaction_broadcast(loan=loan, actor=lender, transaction_hex=capture_tx.hex()).kind == (
        "tx_capture"
    )


def test_broadcast_refusals_before_the_node(borrower, lender):
    loan = vector_loan(borrower, status=Loan.Status.CANCELLED)
    tx = exit_tx(loan)
    refused("malformed_transaction", bitcoin_transaction_broadcast, loan, actor=borrower, transaction_hex="zz")
    unsigned = build_exit(loan_facts(loan=loan), fee_rate_sat_vb=2).tx
    refused(
        "incomplete_transaction", bitcoin_transaction_broadcast, loan, actor=borrower, transaction_hex=unsigned.hex()
    )
    witness = tx.inputs[0].witness
    bad = tx.with_witness(0, (bytes(64), *witness[1:]))
    refused("incomplete_transaction", bitcoin_transaction_broadcast, loan, actor=borrower, transaction_hex=bad.hex())
    short = tx.with_witness(0, witness[1:])
    refused("incomplete_transaction", bitcoin_transaction_broadcast, loan, actor=borrower, transaction_hex=short.hex())
    other = vector_loan(borrower, fresh=True, status=Loan.Status.CANCELLED)
    refused(
        "not_a_loan_transaction",
        bitcoin_transaction_broadcast,
        loan,
        actor=borrower,
        transaction_hex=exit_tx(other).hex(),
    )
    to_lender = replace(loan_facts(loan=loan), borrower_payout_address=REGTEST_P2WPKH)
    prepared = build_exit(to_lender, fee_rate_sat_vb=2)
    stolen = finalize_exit(prepared, borrower_signature=prepared.sign(borrower_key()))
    refused("wrong_payout_output", bitcoin_transaction_broadcast, loan, actor=borrower, transaction_hex=stolen.hex())
    set_loan(loan, closed_at=timezone.now())
    refused("wrong_state", bitcoin_transaction_broadcast, loan, actor=borrower, transaction_hex=tx.hex())
    assert {"broadcast_refused", "too_early", "incomplete_transaction"} <= set(BROADCAST_CODES)


# ------------------------------------------------------------------------------------------------ the lender's


def activated_loan(borrower, **overrides) -> Loan:
    loan = vector_loan(borrower)
    upload_tx1(loan)
    return set_loan(loan, status=Loan.Status.ACTIVE, borrower_preimage=BORROWER_PREIMAGE.hex(), **overrides)


def test_collateral_lock_refusals(borrower, lender, operator):
    loan = activated_loan(borrower)
    denied(collateral_lock, loan, actor=borrower)
    refused("no_lender_key", collateral_lock, loan, actor=lender)  # node unreachable: the UTXO check is left
    set_loan(loan, borrower_preimage=None)
    refused("borrower_preimage_unknown", collateral_lock, loan, actor=operator)
    set_loan(loan, borrower_preimage=BORROWER_PREIMAGE.hex(), bitcoin_status=Loan.BitcoinStatus.COLLATERAL_LOCKED)
    refused("escrow_spent", collateral_lock, loan, actor=operator)
    set_loan(loan, lender=make_user(User.Role.LENDER))
    denied(collateral_lock, loan, actor=lender)  # another lender's loan
    unsigned = vector_loan(borrower, fresh=True, status=Loan.Status.ACTIVE, borrower_preimage=hex32())
    refused("no_presignature", collateral_lock, unsigned, actor=operator)
    unfunded = vector_loan(
        borrower,
        fresh=True,
        status=Loan.Status.ACTIVE,
        borrower_preimage=hex32(),
        bitcoin_status=Loan.BitcoinStatus.NONE,
    )
    refused("escrow_not_confirmed", collateral_lock, unfunded, actor=operator)
    assert {"no_lender_key", "borrower_preimage_unknown", "wrong_outpoint"} <= set(COLLATERAL_LOCK_CODES)


def test_collateral_lock_with_an_unreachable_node_stores_tx1_for_a_retry(borrower, lender):
    loan = activated_loan(borrower)
    store_lender_key(lender)
    row = collateral_lock(loan=loan, actor=lender)
    assert row.kind == "tx_1" and row.accepted_at is None and "unreachable" in row.last_error
    tx = Transaction.parse(row.raw_hex)  # B's signature, the vault's lender key, pB: a valid spend of the escrow
    assert tx.txid == row.txid == complete_tx1(loan).txid
    verify_input(tx, 0, [TxOut(loan.escrow_sats, loan_facts(loan=loan).escrow.script_pubkey)])


def test_collateral_capture_refusals(borrower, lender, operator):
    loan = activated_loan(borrower)
    tx1 = BorrowerSignature.objects.get(loan=loan)
    store_lender_key(lender)
    denied(collateral_capture, loan, actor=borrower)
    refused("wrong_state", collateral_capture, loan, actor=lender)  # active: not defaulted
    set_loan(loan, status=Loan.Status.DEFAULTED)
    refused("collateral_not_locked", collateral_capture, loan, actor=lender)
    lock_applied(loan, tx1.txid, height=300)  # t_1 = 30000: a block at 30300 may hold TX_capture
    follow(30298)
    error = refused("too_early", collateral_capture, loan, actor=lender, fee_rate_sat_vb="2")
    assert "1 more block" in str(error)
    follow(30299)
    for rate in ("0", "501", "1e9"):
        refused("invalid_fee_rate", collateral_capture, loan, actor=operator, fee_rate_sat_vb=rate)
    row = collateral_capture(loan=loan, actor=operator)  # the node's estimate: unreachable, the minimum
    assert row.kind == "tx_capture" and row.accepted_at is None
    assert {"too_early", "collateral_not_locked"} <= set(COLLATERAL_CAPTURE_CODES)


# ------------------------------------------------------------------------------------------------ on regtest


def funded(node: BitcoinRPC, watch) -> ChainLoan:
    """A requested loan with real keys, its escrow funded and confirmed on regtest (t_0 = 3, t_1 = 5)."""
    chain = make_chain_loan()
    chain.request(chain.fund(node))
    watch()
    assert chain.refresh().bitcoin_status == "escrow_confirmed"
    return chain


def presign(chain: ChainLoan) -> BorrowerSignature:
    return upload_tx1(chain.refresh(), key=chain.borrower)


def contract(chain: ChainLoan, status: str, **changes) -> Loan:
    loan_status_transition(loan_id=chain.pk, to_status=status, cause=f"{status} (test EVM side)", changes=changes)
    return chain.refresh()


@pytest.mark.integration
def test_tx1_locked_with_the_vault_key_then_released_from_an_uploaded_rung(node, watch, btc_mine, lender):
    chain = funded(node, watch)
    borrower = chain.loan.borrower
    tx1 = presign(chain)
    release = [release_rung(chain.loan, tx1.txid, rate, key=chain.borrower) for rate in (2, 4)]
    rungs = presigned_ladder_upload(loan=chain.loan, actor=borrower, release=release)
    # B's key is gone from here on: the rungs are all B left behind.
    contract(chain, "offered")
    contract(chain, "active", borrower_preimage=chain.p_b.hex())
    store_lender_key(lender, chain.lender)

    locked = collateral_lock(loan=chain.loan, actor=lender)
    assert (locked.kind, locked.txid, locked.attempts, locked.last_error) == ("tx_1", tx1.txid, 1, "")
    assert locked.accepted_at is not None and tx1.txid in node.getrawmempool()
    again = collateral_lock(loan=chain.loan, actor=lender)  # the same TX_1, sent again: the node knows it
    assert again.pk == locked.pk and again.attempts == 2
    btc_mine(1)
    watch()
    assert chain.refresh().bitcoin_status == "collateral_locked"
    refused("escrow_spent", collateral_lock, chain.loan, actor=lender)

    contract(chain, "repayment_in_progress")
    refused("lender_preimage_unknown", release_psbt_prepare, chain.loan, actor=borrower, fee_rate_sat_vb="2")
    contract(chain, "repaid", lender_preimage=chain.p_l.hex())
    prepared = release_psbt_prepare(loan=chain.loan, actor=borrower, fee_rate_sat_vb="2")
    assert prepared.psbt.sha256_preimages(0) == {hashlib.sha256(chain.p_l).digest(): chain.p_l}

    rung = rungs[0]
    verified = verify_borrower_sweep_signature(
        chain.facts(), SpendKind.TX_RELEASE, psbt=rung.psbt_base64, tx1_txid=tx1.txid
    )
    tx = finalize_release(
        verified.prepared,
        borrower_signature=verified.borrower_signature,
        lender_preimage=bytes.fromhex(chain.loan.lender_preimage),
    )
    sent = bitcoin_transaction_broadcast(loan=chain.loan, actor=borrower, transaction_hex=tx.hex())
    assert (sent.kind, sent.txid, sent.last_error) == ("tx_release", rung.txid, "") and sent.accepted_at
    btc_mine(1)
    watch()
    chain.refresh()
    assert chain.loan.bitcoin_status == "released" and chain.loan.is_closed


@pytest.mark.integration
def test_tx_exit_from_a_rung_is_too_early_one_block_before_t0_and_accepted_at_it(
    settings, node, watch, btc_mine, operator
):
    chain = funded(node, watch)
    borrower = chain.loan.borrower
    exit_hex = exit_tx(chain.loan, key=chain.borrower).hex()
    (rung,) = presigned_ladder_upload(loan=chain.loan, actor=borrower, exit=[exit_hex])
    contract(chain, "cancelled")

    error = refused("too_early", exit_psbt_prepare, chain.loan, actor=borrower, fee_rate_sat_vb="2")
    assert f"{T_0 - 1} more block" in str(error)
    btc_mine(1)
    watch()  # one block before t_0 matures: the next block may not hold TX_exit yet
    refused("too_early", exit_psbt_prepare, chain.loan, actor=borrower, fee_rate_sat_vb="2")
    error = refused("too_early", bitcoin_transaction_broadcast, chain.loan, actor=borrower, transaction_hex=exit_hex)
    assert "non-BIP68-final" in str(error)
    btc_mine(1)
    watch()
    assert exit_psbt_prepare(loan=chain.loan, actor=borrower, fee_rate_sat_vb="2").txid

    settings.BITCOIN_RPC_URL = CLOSED_PORT_URL  # the node is down when B broadcasts: kept for a retry
    kept = bitcoin_transaction_broadcast(loan=chain.loan, actor=borrower, transaction_hex=exit_hex)
    assert kept.txid == rung.txid and kept.accepted_at is None and kept.last_error
    settings.BITCOIN_RPC_URL = node.url
    retried = bitcoin_broadcast_retry(broadcast=kept, actor=operator)
    assert retried.accepted_at is not None and retried.last_error == "" and retried.attempts == 2
    assert OperatorAction.objects.get(broadcast=kept).detail == "accepted"
    btc_mine(1)
    watch()
    chain.refresh()
    assert chain.loan.bitcoin_status == "exited" and chain.loan.is_closed


@pytest.mark.integration
def test_tx_capture_after_t1_never_a_block_early(node, watch, btc_mine, operator, lender):
    chain = funded(node, watch)
    presign(chain)
    contract(chain, "offered")
    contract(chain, "active", borrower_preimage=chain.p_b.hex())
    store_lender_key(lender, chain.lender)
    tx1 = collateral_lock(loan=chain.loan, actor=operator)
    btc_mine(1)
    watch()
    assert chain.refresh().bitcoin_status == "collateral_locked"
    refused("wrong_state", collateral_capture, chain.loan, actor=operator)  # active, not defaulted
    contract(chain, "defaulted")

    btc_mine(T_1 - 2)
    watch()
    error = refused("too_early", collateral_capture, chain.loan, actor=operator, fee_rate_sat_vb="2")
    assert "1 more block" in str(error)
    (verdict,) = node.testmempoolaccept([chain.capture(tx1.txid).hex()])  # the node agrees: not yet
    assert not verdict["allowed"] and verdict["reject-reason"] == "non-BIP68-final"
    btc_mine(1)
    watch()
    captured = collateral_capture(loan=chain.loan, actor=operator, fee_rate_sat_vb="2")
    assert captured.kind == "tx_capture" and captured.accepted_at is not None and captured.last_error == ""
    btc_mine(1)
    watch()
    chain.refresh()
    assert chain.loan.bitcoin_status == "captured" and chain.loan.is_closed


@pytest.mark.integration
def test_the_node_refusing_a_broadcast_stores_nothing(node, watch, btc_mine, lender):
    chain = funded(node, watch)
    contract(chain, "cancelled")
    prepared = build_exit(chain.facts(), fee_rate_sat_vb=2)
    exit_hex = finalize_exit(prepared, borrower_signature=prepared.sign(chain.borrower)).hex()
    node.sendrawtransaction(chain.tx1().hex())  # the escrow is spent elsewhere first, and confirmed (a spend
    btc_mine(1)  # still in the mempool is only a conflict: the node tries a full-RBF replacement of it)
    error = refused(
        "broadcast_refused",
        bitcoin_transaction_broadcast,
        chain.loan,
        actor=chain.loan.borrower,
        transaction_hex=exit_hex,
    )
    assert "the node refused" in str(error)
