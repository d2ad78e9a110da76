"""Chain facts applied to loans: one service per contract event and per Bitcoin spend path, each applied once.

The watchers (loans.sync) store facts and call these services; here the facts are made by hand so every service,
every refusal and the two state machines can be walked exhaustively on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitcoin.transactions import OutPoint
from loans import services
from loans.errors import ChainFactError, DeepReorgError, TransitionError
from loans.models import BitcoinTransaction, EvmEvent, Loan, LoanStatusChange
from loans.services.transitions import is_settled

from .factories import hex32, make_loan, make_user

pytestmark = pytest.mark.django_db
_log_index = itertools.count()

# Each contract event, the status it moves a loan to, and the arguments it carries besides the loan id.
CONTRACT_EVENTS: dict[str, tuple[str, dict]] = {
    "LoanOffered": ("offered", {}),
    "LoanActivated": ("active", {"borrower_preimage": "aa" * 32}),
    "LoanRequestCancelled": ("cancelled", {}),
    "LoanOfferWithdrawn": ("offer_expired", {}),
    "RepaymentAttempted": ("repayment_in_progress", {}),
    "RepaymentAccepted": ("repaid", {"lender_preimage": "bb" * 32}),
    "RepaymentWithdrawn": ("repayment_refunded", {}),
    "LoanDefaulted": ("defaulted", {}),
}
EVENT_FOR_STATUS = {status: name for name, (status, _) in CONTRACT_EVENTS.items()}
ROLE_FOR_BITCOIN_STATUS = {
    "escrow_confirmed": "escrow_funding",
    "collateral_locked": "collateral_lock",
    "exited": "escrow_exit",
    "released": "collateral_release",
    "captured": "collateral_capture",
}


def _event(loan: Loan, name: str, block: int = 100, **args: object) -> EvmEvent:
    return EvmEvent.objects.create(
        chain_id=loan.deployment.chain_id,
        contract_address=loan.deployment.loan_contract_address,
        block_number=block,
        block_hash=hex32(),
        tx_hash=hex32(),
        log_index=next(_log_index),
        name=name,
        args={"loan_id": str(loan.contract_loan_id), **args},
    )


def _requested_loan(**overrides) -> Loan:
    loan = make_loan(contract_loan_id=overrides.pop("contract_loan_id", 7), **overrides)
    services.loan_status_transition(loan_id=loan.pk, to_status="requested", cause="set up")
    loan.refresh_from_db()
    return loan


def _apply(event: EvmEvent) -> Loan | None:
    return services.evm_event_apply(event_id=event.pk)


# -- LoanRequested: linked to the borrower's own draft only ---------------------------------------------------


def _request_event(loan: Loan, borrower_address: str, contract_loan_id: int = 3, **changes) -> EvmEvent:
    args = {
        "loan_id": str(contract_loan_id),
        "borrower": borrower_address,
        "amount": str(loan.amount_wei),
        "repayment_amount": str(loan.repayment_wei),
        "borrower_btc_pubkey": loan.borrower_btc_pubkey,
        "borrower_hash": loan.borrower_hash,
        "escrow_txid": "e1" * 32,
        "escrow_vout": "1",
        "escrow_sats": "1500000",
        "parameters_version": str(loan.parameters.version),
    }
    args.update(changes)
    return EvmEvent.objects.create(
        chain_id=loan.deployment.chain_id,
        contract_address=loan.deployment.loan_contract_address.lower(),
        block_number=42,
        block_hash=hex32(),
        tx_hash=hex32(),
        log_index=next(_log_index),
        name="LoanRequested",
        args=args,
    )


def test_request_links_the_borrowers_draft_and_takes_the_contract_id_and_escrow() -> None:
    draft = make_loan()
    event = _request_event(draft, draft.borrower.evm_address.lower())
    loan = _apply(event)
    assert loan is not None and loan.pk == draft.pk
    assert (loan.status, loan.contract_loan_id, loan.requested_evm_block) == ("requested", 3, 42)
    assert (loan.escrow_txid, loan.escrow_vout, loan.escrow_sats) == ("e1" * 32, 1, 1_500_000)
    event.refresh_from_db()
    assert event.loan == loan and event.applied_at is not None
    [change] = LoanStatusChange.objects.filter(loan=loan)
    assert (change.side, change.from_status, change.to_status, change.evm_event) == (
        "contract",
        "draft",
        "requested",
        event,
    )


def test_a_copied_request_is_stored_but_never_linked() -> None:
    """Anyone can copy a request from the mempool: same hB and xB, another sender. It is not the app's loan."""
    draft = make_loan()
    copy = _request_event(draft, make_user().evm_address)
    assert _apply(copy) is None
    draft.refresh_from_db()
    copy.refresh_from_db()
    assert draft.status == "draft" and draft.contract_loan_id is None
    assert copy.loan is None and copy.applied_at is not None  # processed: not tried again
    # The borrower's own request, later, is linked.
    assert _apply(_request_event(draft, draft.borrower.evm_address, contract_loan_id=4)).contract_loan_id == 4


def test_a_request_with_other_terms_is_not_linked() -> None:
    draft = make_loan()
    assert _apply(_request_event(draft, draft.borrower.evm_address, amount=str(draft.amount_wei + 1))) is None
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_a_request_for_another_escrow_than_bitcoin_shows_is_refused_and_changes_nothing() -> None:
    draft = make_loan(escrow_txid="e2" * 32, escrow_vout=0, escrow_sats=1_500_000)
    event = _request_event(draft, draft.borrower.evm_address)
    with pytest.raises(ChainFactError) as refused:
        _apply(event)
    assert refused.value.code == "escrow_mismatch"
    draft.refresh_from_db()
    event.refresh_from_db()
    assert draft.status == "draft" and event.applied_at is None
    assert not LoanStatusChange.objects.filter(loan=draft).exists()


# -- every other contract event --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        (["LoanRequestCancelled"], {}),
        (["LoanOffered", "LoanOfferWithdrawn"], {"offered_evm_block": 100}),
        (["LoanOffered", "LoanActivated", "LoanDefaulted"], {"borrower_preimage": "aa" * 32}),
        (
            ["LoanOffered", "LoanActivated", "RepaymentAttempted", "RepaymentAccepted"],
            {"lender_preimage": "bb" * 32, "repayment_evm_block": 100, "activated_evm_block": 100},
        ),
        (["LoanOffered", "LoanActivated", "RepaymentAttempted", "RepaymentWithdrawn"], {}),
    ],
)
def test_each_event_moves_the_loan_and_the_audit_trail_tells_the_story(path: list[str], fields: dict) -> None:
    loan = _requested_loan()
    events = []
    for name in path:
        status, args = CONTRACT_EVENTS[name]
        event = _event(loan, name, **args)
        events.append(event)
        assert _apply(event).status == status
    loan.refresh_from_db()
    for name, value in fields.items():
        assert getattr(loan, name) == value
    trail = list(LoanStatusChange.objects.filter(loan=loan, side="contract").order_by("id"))
    assert [change.to_status for change in trail] == ["requested", *(CONTRACT_EVENTS[name][0] for name in path)]
    assert [change.evm_event for change in trail[1:]] == events


def test_applying_twice_changes_nothing() -> None:
    loan = _requested_loan()
    event = _event(loan, "LoanOffered")
    _apply(event)
    audit = LoanStatusChange.objects.filter(loan=loan).count()
    assert _apply(event).status == "offered"
    # Another log saying the same (e.g. the same fact replayed after a reorg) is absorbed too.
    assert _apply(_event(loan, "LoanOffered")).status == "offered"
    assert LoanStatusChange.objects.filter(loan=loan).count() == audit


def test_an_event_the_state_machine_refuses_changes_nothing() -> None:
    loan = _requested_loan()
    event = _event(loan, "RepaymentAccepted", lender_preimage="bb" * 32)
    with pytest.raises(TransitionError) as refused:
        _apply(event)
    assert refused.value.code == "wrong_state"
    loan.refresh_from_db()
    event.refresh_from_db()
    assert (loan.status, loan.lender_preimage, event.applied_at) == ("requested", None, None)


def test_lender_hash_is_recorded_once_and_a_different_one_refused() -> None:
    loan = _requested_loan()
    assert _apply(_event(loan, "LenderHashCommitted", lender_hash="cc" * 32)).lender_hash == "cc" * 32
    with pytest.raises(ChainFactError):
        _apply(_event(loan, "LenderHashCommitted", lender_hash="dd" * 32))
    loan.refresh_from_db()
    assert loan.lender_hash == "cc" * 32 and loan.status == "requested"


def test_events_of_no_loan_of_ours_are_stored_and_change_nothing() -> None:
    loan = _requested_loan()
    stranger = _event(loan, "LoanOffered")
    stranger.args = {"loan_id": "999"}
    stranger.save()
    assert _apply(stranger) is None
    swap = _event(loan, "Lockup")
    assert _apply(swap) is None
    loan.refresh_from_db()
    assert loan.status == "requested"


def test_an_orphaned_event_is_never_applied() -> None:
    loan = _requested_loan()
    event = _event(loan, "LoanOffered")
    EvmEvent.objects.filter(pk=event.pk).update(orphaned_at="2026-01-01T00:00:00Z")
    assert _apply(event) is None
    loan.refresh_from_db()
    assert loan.status == "requested"


# -- Bitcoin facts ---------------------------------------------------------------------------------------------------


def _record(loan: Loan, role: str, height: int = 110, **fields) -> BitcoinTransaction:
    loan.refresh_from_db()
    if role == "escrow_funding":
        fields.setdefault("vout", loan.escrow_vout if loan.escrow_vout is not None else 0)
        fields.setdefault("value_sats", loan.escrow_sats or 1_500_000)
    elif role in ("collateral_lock", "escrow_exit"):
        fields.setdefault("spent", OutPoint(loan.escrow_txid, loan.escrow_vout))
    else:
        lock = loan.bitcoin_transactions.filter(role="collateral_lock").first()
        fields.setdefault("spent", OutPoint(lock.txid if lock else hex32(), 1))
    return services.bitcoin_transaction_record(
        loan=loan,
        role=role,
        txid=fields.pop("txid", loan.escrow_txid if role == "escrow_funding" and loan.escrow_txid else hex32()),
        block_hash=fields.pop("block_hash", hex32()),
        block_height=height,
        **fields,
    )


def _btc_apply(row: BitcoinTransaction) -> Loan:
    return services.bitcoin_transaction_apply(transaction_id=row.pk)


def test_escrow_funding_of_a_draft_gives_it_its_outpoint() -> None:
    draft = make_loan()
    row = _record(draft, "escrow_funding", txid="f1" * 32, vout=2, value_sats=1_234_567)
    loan = _btc_apply(row)
    assert (loan.bitcoin_status, loan.escrow_txid, loan.escrow_vout, loan.escrow_sats, loan.escrow_btc_height) == (
        "escrow_confirmed",
        "f1" * 32,
        2,
        1_234_567,
        110,
    )


def test_escrow_funding_must_hold_what_the_request_claims() -> None:
    loan = _requested_loan(escrow_txid="e1" * 32, escrow_vout=1, escrow_sats=1_500_000)
    short = _record(loan, "escrow_funding", value_sats=1_499_999)
    with pytest.raises(ChainFactError) as refused:
        _btc_apply(short)
    assert refused.value.code == "escrow_value_mismatch"
    loan.refresh_from_db()
    short.refresh_from_db()
    assert loan.bitcoin_status == "none" and short.applied_at is None
    # Another payment to the same escrow address is recorded and changes nothing.
    other = _record(loan, "escrow_funding", txid="e9" * 32, vout=0, value_sats=5_000)
    assert _btc_apply(other).bitcoin_status == "none"


@pytest.mark.parametrize(
    ("contract_path", "bitcoin_path", "closed"),
    [
        (["repaid"], ["escrow_funding", "collateral_lock", "collateral_release"], True),
        (["defaulted"], ["escrow_funding", "collateral_lock", "collateral_capture"], True),
        (["repayment_refunded"], ["escrow_funding", "collateral_lock", "collateral_capture"], True),
        (["cancelled"], ["escrow_funding", "escrow_exit"], True),
        (["cancelled"], [], True),  # never funded: nothing to settle on Bitcoin
        (["offer_expired"], ["escrow_funding", "escrow_exit"], True),
        (["repaid"], ["escrow_funding", "collateral_lock"], False),  # pL public, collateral not back yet
        ([], ["escrow_funding", "collateral_lock", "collateral_release"], False),  # contract still open
    ],
)
def test_a_loan_closes_only_when_both_chains_settle(contract_path, bitcoin_path, closed) -> None:
    loan = _requested_loan(escrow_txid="e1" * 32, escrow_vout=1, escrow_sats=1_500_000)
    for role in bitcoin_path:
        _btc_apply(_record(loan, role, revealed_preimage=None))
    for status in contract_path:
        Loan.objects.filter(pk=loan.pk).update(status=_predecessor(status))
        services.loan_status_transition(loan_id=loan.pk, to_status=status, cause="test")
    loan.refresh_from_db()
    assert loan.is_closed is closed
    assert is_settled(loan) is closed


def _predecessor(status: str) -> str:
    return next(old for old, targets in Loan.ALLOWED_TRANSITIONS.items() if status in targets)


def test_preimages_come_from_witnesses_when_the_evm_side_has_not_told_yet() -> None:
    loan = _requested_loan(escrow_txid="e1" * 32, escrow_vout=1, escrow_sats=1_500_000)
    _btc_apply(_record(loan, "escrow_funding"))
    assert _btc_apply(_record(loan, "collateral_lock", revealed_preimage="aa" * 32)).borrower_preimage == "aa" * 32
    assert _btc_apply(_record(loan, "collateral_release", revealed_preimage="bb" * 32)).lender_preimage == "bb" * 32


def test_recording_is_idempotent_and_follows_a_transaction_into_another_block() -> None:
    loan = _requested_loan(escrow_txid="e1" * 32, escrow_vout=1, escrow_sats=1_500_000)
    first = _record(loan, "escrow_funding", block_hash="ab" * 32, height=110)
    again = _record(loan, "escrow_funding", block_hash="ab" * 32, height=110)
    assert again.pk == first.pk
    moved = _record(loan, "escrow_funding", block_hash="cd" * 32, height=111)
    assert moved.pk == first.pk and (moved.block_hash, moved.block_height) == ("cd" * 32, 111)
    assert BitcoinTransaction.objects.filter(loan=loan).count() == 1


def test_disconnecting_a_block_unconfirms_unapplied_facts_and_refuses_to_lose_final_ones() -> None:
    loan = _requested_loan(escrow_txid="e1" * 32, escrow_vout=1, escrow_sats=1_500_000)
    pending = _record(loan, "escrow_funding", block_hash="ab" * 32)
    assert services.bitcoin_block_disconnect(block_hash="ab" * 32) == 1
    pending.refresh_from_db()
    assert (pending.block_hash, pending.block_height) == (None, None)
    with pytest.raises(ChainFactError) as refused:
        _btc_apply(pending)
    assert refused.value.code == "not_confirmed"
    final = _record(loan, "escrow_funding", block_hash="cd" * 32, height=112)
    _btc_apply(final)
    with pytest.raises(DeepReorgError):
        services.bitcoin_block_disconnect(block_hash="cd" * 32)
    final.refresh_from_db()
    assert final.block_hash == "cd" * 32


# -- both state machines, walked -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choices=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=3)), max_size=12))
def test_walking_both_state_machines_the_audit_trail_is_the_path(choices) -> None:
    """Random walks over the facts each side allows next: every step is applied once (a second application
    changes nothing), and the audit trail is exactly the path taken, side by side."""
    loan = _requested_loan(
        contract_loan_id=int(hashlib.sha256(repr(choices).encode()).hexdigest()[:8], 16),
        escrow_txid=hex32(),  # the examples share one database transaction: each loan its own escrow
        escrow_vout=1,
        escrow_sats=1_500_000,
    )
    path = [("contract", "draft", "requested")]
    for bitcoin_side, pick in choices:
        loan.refresh_from_db()
        if bitcoin_side:
            options = sorted(Loan.ALLOWED_BITCOIN_TRANSITIONS.get(loan.bitcoin_status, ()))
            if not options:
                continue
            target = options[pick % len(options)]
            row = _record(loan, ROLE_FOR_BITCOIN_STATUS[target])
            assert _btc_apply(row).bitcoin_status == target
            assert _btc_apply(row).bitcoin_status == target  # applied once
            path.append(("bitcoin", loan.bitcoin_status, target))
        else:
            options = sorted(Loan.ALLOWED_TRANSITIONS.get(loan.status, ()))
            if not options:
                continue
            target = options[pick % len(options)]
            name = EVENT_FOR_STATUS[target]
            event = _event(loan, name, **CONTRACT_EVENTS[name][1])
            assert _apply(event).status == target
            assert _apply(event).status == target
            path.append(("contract", loan.status, target))
    trail = [(c.side, c.from_status, c.to_status) for c in LoanStatusChange.objects.filter(loan=loan).order_by("id")]
    assert trail == path
    loan.refresh_from_db()
    assert loan.is_closed is is_settled(loan)


def test_a_late_escrow_funding_reopens_a_cancelled_loan_until_the_escrow_is_reclaimed() -> None:
    loan = _requested_loan(escrow_txid="e1" * 32, escrow_vout=1, escrow_sats=1_500_000)
    services.loan_status_transition(loan_id=loan.pk, to_status="cancelled", cause="test")
    loan.refresh_from_db()
    assert loan.is_closed  # nothing locked on Bitcoin
    assert not _btc_apply(_record(loan, "escrow_funding")).is_closed  # funded after all: B must get it back
    assert _btc_apply(_record(loan, "escrow_exit")).is_closed


def test_a_spend_of_another_output_to_the_same_script_moves_nothing() -> None:
    """A stray second payment to the escrow address, spent by its owner: not the loan's escrow, no transition."""
    loan = _requested_loan(escrow_txid="e1" * 32, escrow_vout=1, escrow_sats=1_500_000)
    _btc_apply(_record(loan, "escrow_funding"))
    stray_exit = _record(loan, "escrow_exit", spent=OutPoint("e9" * 32, 0))
    assert _btc_apply(stray_exit).bitcoin_status == "escrow_confirmed"
    lock = _btc_apply(_record(loan, "collateral_lock"))
    assert lock.bitcoin_status == "collateral_locked"
    # A "release" of some other TX_1's output 1 moves nothing; the loan's own does.
    assert _btc_apply(_record(loan, "collateral_release", spent=OutPoint("f0" * 32, 1))).bitcoin_status == (
        "collateral_locked"
    )
    assert _btc_apply(_record(loan, "collateral_release")).bitcoin_status == "released"
