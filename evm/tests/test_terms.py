"""The borrower's terms (PROTOCOL.md "A request binds the terms B saw"): the request carries the version B was shown,
and before every later borrower step the client checks the loan's on-chain snapshot against what B asked for,
refusing with a stable reason code before anything is signed or sent."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from evm.client import Loan, LoanStatus
from evm.errors import BorrowerStepRefused, ContractRevert, InvalidArgument
from evm.parameters import FIELDS, ProtocolParameters
from evm.terms import REFUSAL_REASONS, BorrowerTerms, check_loan_terms
from evm.testing import new_secret

AMOUNT = 2 * 10**16
X_L = bytes.fromhex("64b4b84f42da9bdb84f7eda2de12524516686e73849645627fb7a034c79c81c8")
BORROWER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def terms_for(**changes) -> BorrowerTerms:
    values = {
        "borrower": BORROWER,
        "amount_wei": AMOUNT,
        "borrower_btc_pubkey": b"\x02" * 32,
        "borrower_hash": b"\x03" * 32,
        "escrow_txid": b"\x04" * 32,
        "escrow_vout": 1,
        "escrow_sats": 1_500_000,
        "parameters_version": 1,
        "parameters": ProtocolParameters(lender_btc_pubkey=X_L),
    }
    return BorrowerTerms(**(values | changes))


def loan_for(terms: BorrowerTerms, **changes) -> Loan:
    """The snapshot the contract would hold for `terms`, offered (bond set)."""
    p = terms.parameters
    values = {
        "loan_id": 7,
        "borrower": terms.borrower,
        "lender": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "status": LoanStatus.OFFERED,
        "amount": terms.amount_wei,
        "bond": p.bond(terms.amount_wei),
        "processing_fee": p.processing_fee_wei,
        "repayment_amount": p.repayment_amount(terms.amount_wei),
        "borrower_btc_pubkey": terms.borrower_btc_pubkey,
        "lender_btc_pubkey": p.lender_btc_pubkey,
        "borrower_hash": terms.borrower_hash,
        "lender_hash": b"\x05" * 32,
        "escrow_txid": terms.escrow_txid,
        "escrow_vout": terms.escrow_vout,
        "escrow_sats": terms.escrow_sats,
        "request_block": 10,
        "offer_block": 12,
        "activation_block": 0,
        "repayment_block": 0,
        "parameters_version": terms.parameters_version,
        "params": p,
    }
    return Loan(**(values | changes))


def different(value):
    """A value of the same kind that differs from `value`."""
    if isinstance(value, bytes):
        return bytes([value[0] ^ 1]) + value[1:]
    if isinstance(value, str):
        return "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
    return value + 1


TERM_FIELDS = [
    f.name for f in dataclasses.fields(BorrowerTerms) if f.name != "parameters"
]  # each has its reason "wrong_<name>"
PARAMETER_NAMES = [name for name, _, _, _ in FIELDS]


# -- pure checks ---------------------------------------------------------------------------------------------------


def test_a_matching_snapshot_passes():
    terms = terms_for()
    check_loan_terms(loan_for(terms), terms)
    check_loan_terms(loan_for(terms, status=LoanStatus.REQUESTED, offer_block=0, bond=0), terms)


@pytest.mark.parametrize("name", TERM_FIELDS)
def test_each_requested_field_that_differs_is_refused_with_its_reason(name):
    terms = terms_for()
    mismatched = dataclasses.replace(terms, **{name: different(getattr(terms, name))})
    with pytest.raises(BorrowerStepRefused) as refused:
        check_loan_terms(loan_for(terms), mismatched)
    assert refused.value.reason == f"wrong_{name}" if name != "amount_wei" else "wrong_amount"
    assert refused.value.reason in REFUSAL_REASONS
    assert str(refused.value).startswith(f"{refused.value.reason}: loan 7: ")


@pytest.mark.parametrize("name", PARAMETER_NAMES)
def test_each_parameter_that_differs_is_refused_and_named(name):
    terms = terms_for()
    shown = terms.parameters.replace(**{name: different(getattr(terms.parameters, name))})
    with pytest.raises(BorrowerStepRefused) as refused:
        check_loan_terms(loan_for(terms), dataclasses.replace(terms, parameters=shown))
    assert refused.value.reason == "wrong_parameters"
    assert refused.value.fields == (name,)
    assert f"{name} " in str(refused.value)


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("lender_btc_pubkey", "wrong_lender_btc_pubkey"),
        ("processing_fee", "wrong_processing_fee"),
        ("repayment_amount", "wrong_repayment_amount"),
        ("bond", "wrong_bond"),
    ],
)
def test_what_the_contract_derives_must_follow_from_the_terms(field, reason):
    """A contract that is not ours (or a bug) could store other amounts than the parameters give."""
    terms = terms_for()
    loan = loan_for(terms)
    with pytest.raises(BorrowerStepRefused) as refused:
        check_loan_terms(dataclasses.replace(loan, **{field: different(getattr(loan, field))}), terms)
    assert refused.value.reason == reason


def test_the_bond_is_checked_only_once_offered():
    terms = terms_for()
    check_loan_terms(loan_for(terms, status=LoanStatus.REQUESTED, offer_block=0, bond=0), terms)
    with pytest.raises(BorrowerStepRefused, match="wrong_bond"):
        check_loan_terms(loan_for(terms, bond=0), terms)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"borrower": "0x1234"}, "20-byte hex address"),
        ({"amount_wei": -1}, "between 0"),
        ({"borrower_hash": bytes(32)}, "borrower_hash must not be zero"),
        ({"escrow_txid": b"\x01" * 31}, "exactly 32 bytes"),
        ({"escrow_vout": 2**32}, "escrow_vout must be between"),
        ({"escrow_sats": 0}, "escrow_sats must be positive"),
        ({"parameters_version": 0}, "parameters_version must be positive"),
        ({"parameters": {"bond_percent": 10}}, "parameters must be a ProtocolParameters"),
    ],
)
def test_malformed_terms_are_refused(changes, message):
    with pytest.raises(InvalidArgument, match=message):
        terms_for(**changes)


def test_terms_normalise_hex_and_addresses_and_derive_the_amounts():
    terms = terms_for(borrower=BORROWER.lower(), borrower_hash="0x" + "03" * 32)
    assert terms.borrower == BORROWER and terms.borrower_hash == b"\x03" * 32
    p = terms.parameters
    assert (terms.processing_fee_wei, terms.repayment_wei, terms.bond_wei) == (
        p.processing_fee_wei,
        p.repayment_amount(AMOUNT),
        p.bond(AMOUNT),
    )


def test_the_refusal_pickles_with_its_reason_and_fields():
    error = BorrowerStepRefused("wrong_parameters", "loan 1: differ", fields=("bond_percent",))
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.reason, copy.fields, str(copy)) == ("wrong_parameters", ("bond_percent",), str(error))


# -- on anvil: nothing is sent ---------------------------------------------------------------------------------------


def state(w3, loan_client, borrower, loan_id):
    return (
        w3.eth.get_transaction_count(borrower.address),
        loan_client.get_loan(loan_id).status,
        loan_client.locked_balance(),
    )


def mismatches(terms: BorrowerTerms):
    """(expected reason, terms differing from `terms` in one field), for every field and every parameter."""
    for name in TERM_FIELDS:
        reason = "wrong_amount" if name == "amount_wei" else f"wrong_{name}"
        yield reason, dataclasses.replace(terms, **{name: different(getattr(terms, name))})
    for name in PARAMETER_NAMES:
        shown = terms.parameters.replace(**{name: different(getattr(terms.parameters, name))})
        yield "wrong_parameters", dataclasses.replace(terms, parameters=shown)


@pytest.mark.integration
def test_an_accept_against_another_snapshot_is_refused_and_nothing_is_sent(w3, loan_client, borrower, loan_flow):
    loan_id, p_b, _ = loan_flow.offered(AMOUNT)
    terms = loan_flow.terms[loan_id]
    before = state(w3, loan_client, borrower, loan_id)
    count = 0
    for reason, wrong in mismatches(terms):
        with pytest.raises(BorrowerStepRefused) as refused:
            loan_client.accept_loan_offer(loan_id, p_b, terms=wrong, sender=borrower.address)
        assert refused.value.reason == reason
        count += 1
    assert count == len(TERM_FIELDS) + len(PARAMETER_NAMES) == 8 + 19
    assert state(w3, loan_client, borrower, loan_id) == before == (before[0], LoanStatus.OFFERED, before[2])
    loan_flow.accept(loan_id, p_b)  # the right terms pass
    assert loan_client.get_loan(loan_id).status is LoanStatus.ACTIVE


@pytest.mark.integration
def test_later_borrower_steps_check_the_terms_too(w3, deployment, loan_client, borrower, loan_flow, evm_mine):
    requested, _ = loan_flow.request(AMOUNT)
    active, _, _ = loan_flow.active(AMOUNT)
    wrong_hash = dataclasses.replace(loan_flow.terms[active], borrower_hash=new_secret()[1])
    wrong_amount = dataclasses.replace(loan_flow.terms[requested], amount_wei=AMOUNT + 1)
    nonce = w3.eth.get_transaction_count(borrower.address)

    with pytest.raises(BorrowerStepRefused, match=r"^wrong_amount: "):
        loan_client.cancel_request(requested, terms=wrong_amount, sender=borrower.address)
    # Loan ids mixed up: the terms of one loan do not pay another.
    with pytest.raises(BorrowerStepRefused, match=r"^wrong_borrower_hash: "):
        loan_client.attempt_repayment(active, terms=wrong_hash, sender=borrower.address)
    with pytest.raises(BorrowerStepRefused, match=r"^wrong_borrower_btc_pubkey: "):
        loan_client.attempt_repayment(active, terms=loan_flow.terms[requested])  # (xB differs first)
    assert w3.eth.get_transaction_count(borrower.address) == nonce
    assert loan_client.get_loan(active).status is LoanStatus.ACTIVE

    loan_flow.repay(active)
    loan = loan_client.get_loan(active)
    evm_mine(loan.acceptance_deadline_block - 1 - w3.eth.block_number)
    with pytest.raises(BorrowerStepRefused, match=r"^wrong_borrower_hash: "):
        loan_client.withdraw_repayment_attempt(active, terms=wrong_hash, sender=borrower.address)
    receipt = loan_client.send(loan_client.withdraw_repayment_attempt(active, terms=loan_flow.terms[active]), borrower)
    assert receipt["blockNumber"] == loan.acceptance_deadline_block
    loan_client.send(loan_client.cancel_request(requested, terms=loan_flow.terms[requested]), borrower)
    assert loan_client.get_loan(requested).status is LoanStatus.CANCELLED


@pytest.mark.integration
def test_an_accept_for_a_loan_that_is_not_offered_is_refused_locally(w3, loan_client, borrower, loan_flow):
    """A reverted accept publishes pB; with pB the lender could lock the escrow into TX_1 without paying."""
    loan_id, p_b = loan_flow.request(AMOUNT)
    nonce = w3.eth.get_transaction_count(borrower.address)
    with pytest.raises(BorrowerStepRefused, match=r"^not_offered: loan 1 is Requested, not Offered"):
        loan_client.accept_loan_offer(loan_id, p_b, terms=loan_flow.terms[loan_id])
    assert w3.eth.get_transaction_count(borrower.address) == nonce


@pytest.mark.integration
def test_a_request_names_the_version_shown_and_refuses_another(
    w3, deployment, loan_client, lender, borrower, loan_flow
):
    shown = loan_client.borrower_terms(
        borrower=borrower.address,
        amount=AMOUNT,
        borrower_btc_pubkey=b"\x02" * 32,
        borrower_hash=new_secret()[1],
        escrow_txid=b"\x04" * 32,
        escrow_vout=0,
        escrow_sats=1_000_000,
    )
    assert shown.parameters_version == 1 and shown.parameters == loan_client.parameters()
    with pytest.raises(InvalidArgument, match="the terms are for borrower"):
        loan_client.request_loan_with_terms(shown, sender=lender.address)
    # Values shown under version 1 that are not version 1's.
    fake = dataclasses.replace(shown, parameters=shown.parameters.replace(bond_percent=50))
    with pytest.raises(BorrowerStepRefused) as refused:
        loan_client.request_loan_with_terms(fake, sender=borrower.address)
    assert (refused.value.reason, refused.value.fields) == ("wrong_parameters", ("bond_percent",))

    prepared = loan_client.request_loan_with_terms(shown, sender=borrower.address)
    # The lender changes the terms before the request is sent: the client refuses to send it ...
    loan_client.send(loan_client.update_parameters(shown.parameters.replace(bond_percent=1)), lender)
    with pytest.raises(BorrowerStepRefused, match=r"^wrong_parameters_version: the borrower was shown parameters "):
        loan_client.request_loan_with_terms(shown, sender=borrower.address)
    # ... and the contract refuses the request prepared before the change (mined after it).
    nonce = w3.eth.get_transaction_count(borrower.address)
    stale = dataclasses.replace(prepared, gas=400_000)  # sent without a dry run or an estimate, as a wallet might
    with pytest.raises(ContractRevert) as reverted:
        loan_client.send(stale, borrower, check=False)
    assert reverted.value.error_name == "ParametersVersionMismatch"
    assert reverted.value.error_args == {"shown": 1, "inForce": 2}
    assert str(reverted.value) == (
        "ParametersVersionMismatch: the request was made for parameters version 1, but version 2 is in force"
    )
    assert w3.eth.get_transaction_count(borrower.address) == nonce + 1  # mined, reverted: only gas spent
    assert loan_client.loan_count() == 0 and loan_client.locked_balance() == 0
