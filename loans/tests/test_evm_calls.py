"""Every contract call of both parties (``loans.services.evm_calls``) on anvil, with the escrow on the regtest
node: each prepared call, signed by the party's anvil account as its wallet would (or sent with the lender's
stored key), succeeds on chain; each refusal has its code and changes nothing (no EvmTransaction, no
LenderPreimage, the row as it was, the contract as it was)."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from eth_utils import keccak

from evm.client import ACCEPT_PREIMAGE_HEX_CHARS, LoanStatus
from evm.testing import rpc
from loans.errors import LoanServiceError
from loans.models import PARAMETER_FIELDS, EvmTransaction, LenderKey, LenderPreimage, Loan, ProtocolParameters, User
from loans.services import evm_calls as calls

from .evm_calls_scene import ESCROW_SATS, ROOM_CONFIRMATIONS, SMALL, Scene, scene_fixture, state  # noqa: F401 - a fixture
from .factories import make_user

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def refused(code: str, service, loan: Loan, **kwargs) -> None:
    """``service`` refuses with ``code`` and leaves the loan, its secrets, its transactions and the chain as they
    were."""
    before = state(loan)
    with pytest.raises(LoanServiceError) as caught:
        service(loan=loan, **kwargs)
    assert caught.value.code == code, caught.value
    assert state(loan) == before


def denied(service, loan: Loan, **kwargs) -> None:
    before = state(loan)
    with pytest.raises(PermissionDenied):
        service(loan=loan, **kwargs)
    assert state(loan) == before


# ------------------------------------------------------------------------------------------------ the whole way


def test_every_prepared_call_succeeds_on_chain_request_to_repaid(scene: Scene):
    desk, borrower, lender = scene.desk, scene.borrower, scene.lender
    loan = scene.draft(funded=True)

    call = calls.loan_request_prepare(loan=loan, actor=borrower)
    assert call.transaction is None and call.needs is None and call.sender == desk.borrower.address
    assert call.prepared.value == scene.parameters.processing_fee_wei and call.prepared.gas
    assert call.prepared.as_wallet_request(call.sender)["from"] == desk.borrower.address
    receipt = scene.sign(call, desk.borrower.account)
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.REQUESTED and loan.contract_loan_id == desk.client.loan_id_from_receipt(receipt)

    commit = calls.lender_hash_commit(loan=loan, actor=lender, send=True)
    sent = commit.transaction
    assert sent.source == EvmTransaction.Source.SERVER_KEY and sent.status == EvmTransaction.Status.MINED
    assert sent.function == "commitLenderHash" and sent.sender == desk.lender.address and sent.loan == loan
    assert [event["name"] for event in sent.events] == ["LenderHashCommitted"]
    assert sent.block_number and sent.nonce is not None and sent.reported_by == lender
    loan.refresh_from_db()
    assert scene.chain(loan).lender_hash.hex() == loan.lender_hash == sent.events[0]["args"]["lender_hash"]
    assert LenderPreimage.objects.filter(loan=loan).count() == 1

    scene.presigned(scene.sync(loan))
    offer = calls.loan_offer_extend(loan=loan, actor=lender, send=True)
    assert offer.prepared.value == loan.amount_wei + loan.bond_wei
    assert [event["name"] for event in offer.transaction.events] == ["LoanOffered"]
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.OFFERED

    accept = calls.loan_offer_accept_prepare(loan=loan, actor=borrower)
    assert accept.needs == "borrower_preimage" and accept.prepared.gas is None
    full = desk.client.loan.encode_abi("acceptLoanOffer", args=[loan.contract_loan_id, desk.secrets[loan.pk]])
    assert full == accept.prepared.data + desk.secrets[loan.pk].hex()
    assert len(full) - len(accept.prepared.data) == ACCEPT_PREIMAGE_HEX_CHARS
    receipt = scene.sign(accept, desk.borrower.account, append=desk.secrets[loan.pk])
    reported = calls.evm_transaction_report(
        loan=loan, actor=borrower, tx_hash="0x" + bytes(receipt["transactionHash"]).hex()
    )
    assert reported.source == EvmTransaction.Source.WALLET and reported.function == "acceptLoanOffer"
    assert reported.status == EvmTransaction.Status.MINED and reported.sender == desk.borrower.address
    assert [event["name"] for event in reported.events] == ["LoanActivated"]
    loan.refresh_from_db()
    assert loan.status == Loan.Status.OFFERED  # a report never moves the loan: the watcher does
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.ACTIVE and loan.borrower_preimage == desk.secrets[loan.pk].hex()

    repay = calls.loan_repayment_prepare(loan=loan, actor=borrower)
    assert repay.prepared.value == loan.repayment_wei
    scene.sign(repay, desk.borrower.account)
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.REPAYMENT_IN_PROGRESS

    accepted = calls.loan_repayment_accept(loan=loan, actor=lender, send=True)
    assert [event["name"] for event in accepted.transaction.events] == ["RepaymentAccepted"]
    preimage = accepted.transaction.events[0]["args"]["lender_preimage"]
    assert preimage not in accepted.prepared.data and accepted.prepared.data.endswith(f"{loan.contract_loan_id:064x}")
    assert scene.chain(loan).status is LoanStatus.REPAID
    loan = scene.sync(loan)
    assert loan.status == Loan.Status.REPAID
    assert EvmTransaction.objects.filter(loan=loan).count() == 4


def test_the_lenders_calls_prepared_for_the_owners_wallet_succeed_when_signed(scene: Scene):
    loan = scene.requested(funded=True)
    commit = calls.lender_hash_commit(loan=loan, actor=scene.lender)
    assert commit.transaction is None and commit.sender == scene.desk.lender.address and commit.prepared.gas
    assert not EvmTransaction.objects.exists()
    scene.sign(commit, scene.desk.lender.account)
    loan = scene.sync(loan)
    scene.presigned(loan)
    scene.sign(calls.loan_offer_extend(loan=loan, actor=scene.lender), scene.desk.lender.account)
    assert scene.chain(loan).status is LoanStatus.OFFERED
    scene.mine_evm(SMALL["offer_window_blocks"])
    scene.sign(calls.loan_offer_withdraw(loan=loan, actor=scene.lender), scene.desk.lender.account)
    assert scene.chain(loan).status is LoanStatus.OFFER_EXPIRED


def test_an_operator_sends_the_lenders_call_with_the_servers_key(scene: Scene, operator):
    loan = scene.requested(funded=True)
    call = calls.lender_hash_commit(loan=loan, actor=operator, send=True)
    assert call.transaction.reported_by == operator and call.transaction.sender == scene.desk.lender.address
    assert scene.chain(loan).lender_hash != bytes(32)


# ------------------------------------------------------------------------------------------------ the borrower's


def test_request_refusals(scene: Scene, lender, operator):
    loan = scene.draft()
    denied(calls.loan_request_prepare, loan, actor=lender)
    denied(calls.loan_request_prepare, loan, actor=operator)
    denied(calls.loan_request_prepare, loan, actor=make_user(User.Role.BORROWER))
    Loan.objects.filter(pk=loan.pk).update(bitcoin_status=Loan.BitcoinStatus.NONE)
    refused("escrow_not_confirmed", calls.loan_request_prepare, loan, actor=scene.borrower)
    old = scene.draft(parameters=scene.desk.record.parameters)  # version 1; version 2 is in force
    refused("wrong_parameters_version", calls.loan_request_prepare, old, actor=scene.borrower)
    requested = scene.requested()
    refused("wrong_state", calls.loan_request_prepare, requested, actor=scene.borrower)
    User.objects.filter(pk=scene.borrower.pk).update(evm_address=None)
    scene.borrower.refresh_from_db()
    refused("no_evm_address", calls.loan_request_prepare, scene.draft(), actor=scene.borrower)


def test_a_request_binds_the_values_under_the_contracts_own_version_number(scene: Scene):
    """The desk numbers its parameter versions itself; the contract may number the same values otherwise. The
    request names the contract's number for the draft's values, so it goes through whatever the desk's number."""
    values = {name: getattr(scene.parameters, name) for name in PARAMETER_FIELDS}
    renumbered = ProtocolParameters.objects.create(
        version=scene.parameters.version + 40, lender_btc_pubkey=scene.parameters.lender_btc_pubkey, **values
    )
    loan = scene.draft(parameters=renumbered)
    call = calls.loan_request_prepare(loan=loan, actor=scene.borrower)
    scene.sign(call, scene.desk.borrower.account)
    assert scene.sync(loan).status == Loan.Status.REQUESTED
    assert scene.chain(loan).parameters_version == scene.client.parameters_version() != renumbered.version


def test_no_request_is_prepared_while_new_loans_are_paused(scene: Scene, operator):
    from loans.services.operators import new_loans_pause, new_loans_resume

    loan = scene.draft()
    new_loans_pause(deployment=loan.deployment, actor=operator, reason="maintenance")
    refused("new_loans_paused", calls.loan_request_prepare, loan, actor=scene.borrower)
    new_loans_resume(deployment=loan.deployment, actor=operator)
    assert calls.loan_request_prepare(loan=loan, actor=scene.borrower).prepared.method.startswith("requestLoan")


def test_cancel_request_succeeds_while_requested_only(scene: Scene):
    loan = scene.requested()
    denied(calls.loan_request_cancel_prepare, loan, actor=scene.lender)
    scene.sign(calls.loan_request_cancel_prepare(loan=loan, actor=scene.borrower), scene.desk.borrower.account)
    assert scene.chain(loan).status is LoanStatus.CANCELLED
    refused("wrong_state", calls.loan_request_cancel_prepare, loan, actor=scene.borrower)
    refused("not_on_chain", calls.loan_request_cancel_prepare, scene.draft(), actor=scene.borrower)


def test_accept_refusals(scene: Scene):
    loan = scene.committed(funded=True)
    refused("not_offered", calls.loan_offer_accept_prepare, loan, actor=scene.borrower)
    scene.presigned(loan)
    calls.loan_offer_extend(loan=loan, actor=scene.lender, send=True)
    denied(calls.loan_offer_accept_prepare, loan, actor=make_user(User.Role.BORROWER))
    denied(calls.loan_offer_accept_prepare, loan, actor=scene.lender)
    Loan.objects.filter(pk=loan.pk).update(escrow_sats=ESCROW_SATS + 1)  # the row no longer says what B asked
    refused("wrong_escrow_sats", calls.loan_offer_accept_prepare, loan, actor=scene.borrower)
    Loan.objects.filter(pk=loan.pk).update(escrow_sats=ESCROW_SATS)
    offer_block = scene.chain(loan).offer_block
    last_start = offer_block + SMALL["offer_window_blocks"] - SMALL["accept_cutoff_blocks"]
    scene.mine_evm(last_start - 1 - scene.desk.w3.eth.block_number)  # head + 1 = the last block to start one
    assert calls.loan_offer_accept_prepare(loan=loan, actor=scene.borrower).needs == "borrower_preimage"
    scene.mine_evm(1)
    refused("accept_cutoff", calls.loan_offer_accept_prepare, loan, actor=scene.borrower)


def test_repay_refusals(scene: Scene):
    loan = scene.active()
    denied(calls.loan_repayment_prepare, loan, actor=scene.lender)
    denied(calls.loan_repayment_prepare, loan, actor=make_user(User.Role.BORROWER))
    deadline = scene.chain(loan).repayment_deadline_block
    scene.mine_evm(deadline - 2 - scene.desk.w3.eth.block_number)  # a repayment sent now is mined in deadline - 1
    assert calls.loan_repayment_prepare(loan=loan, actor=scene.borrower).prepared.gas
    scene.mine_evm(1)
    refused("too_late", calls.loan_repayment_prepare, loan, actor=scene.borrower)
    refused("wrong_state", calls.loan_repayment_prepare, scene.requested(), actor=scene.borrower)


def test_withdraw_repayment_from_the_acceptance_deadline_on(scene: Scene):
    loan = scene.repaying()
    refused("too_early", calls.loan_repayment_withdraw_prepare, loan, actor=scene.borrower)
    deadline = scene.chain(loan).acceptance_deadline_block
    scene.mine_evm(deadline - 1 - scene.desk.w3.eth.block_number)  # mined in the deadline block
    denied(calls.loan_repayment_withdraw_prepare, loan, actor=scene.lender)
    refused("too_late", calls.loan_repayment_accept, loan, actor=scene.lender, send=True)
    scene.sign(calls.loan_repayment_withdraw_prepare(loan=loan, actor=scene.borrower), scene.desk.borrower.account)
    assert scene.chain(loan).status is LoanStatus.REPAYMENT_REFUNDED
    refused("wrong_state", calls.loan_repayment_withdraw_prepare, loan, actor=scene.borrower)


# ------------------------------------------------------------------------------------------------ the lender's


def test_commit_refusals(scene: Scene, borrower_persona, operator):
    loan = scene.requested()  # a stand-in escrow the node does not know
    denied(calls.lender_hash_commit, loan, actor=scene.borrower, send=True)
    other_lender = make_user(User.Role.LENDER)
    Loan.objects.filter(pk=loan.pk).update(lender=scene.lender)
    denied(calls.lender_hash_commit, loan, actor=other_lender, send=True)
    refused("escrow_not_found", calls.lender_hash_commit, loan, actor=scene.lender, send=True)
    funded = scene.requested(funded=True)
    refused("not_contract_owner", calls.lender_hash_commit, funded, actor=operator)  # wallet mode: not the owner
    LenderKey.objects.all().delete()
    refused("no_lender_key", calls.lender_hash_commit, funded, actor=scene.lender, send=True)
    refused("not_on_chain", calls.lender_hash_commit, scene.draft(), actor=scene.lender)


def test_commit_twice_and_on_a_cancelled_loan(scene: Scene):
    loan = scene.committed(funded=True)
    refused("lender_hash_committed", calls.lender_hash_commit, loan, actor=scene.lender, send=True)
    other = scene.requested(funded=True)
    scene.sign(calls.loan_request_cancel_prepare(loan=other, actor=scene.borrower), scene.desk.borrower.account)
    refused("wrong_state", calls.lender_hash_commit, other, actor=scene.lender, send=True)


def test_offer_refusals(scene: Scene):
    loan = scene.requested(funded=True)
    refused("lender_hash_missing", calls.loan_offer_extend, loan, actor=scene.lender, send=True)
    calls.lender_hash_commit(loan=loan, actor=scene.lender, send=True)
    loan = scene.sync(loan)
    refused("presignature_missing", calls.loan_offer_extend, loan, actor=scene.lender, send=True)
    scene.presigned(loan)
    denied(calls.loan_offer_extend, loan, actor=scene.borrower, send=True)
    scene.btc.generatetoaddress(ROOM_CONFIRMATIONS, scene.btc.call("getnewaddress"))  # 3 confirmations: no room
    refused("escrow_no_room", calls.loan_offer_extend, loan, actor=scene.lender, send=True)
    assert scene.chain(loan).status is LoanStatus.REQUESTED


def test_withdraw_offer_from_the_offer_deadline_on(scene: Scene):
    loan = scene.offered()
    refused("too_early", calls.loan_offer_withdraw, loan, actor=scene.lender, send=True)
    deadline = scene.chain(loan).offer_deadline_block
    scene.mine_evm(deadline - 2 - scene.desk.w3.eth.block_number)
    refused("too_early", calls.loan_offer_withdraw, loan, actor=scene.lender, send=True)
    scene.mine_evm(1)
    denied(calls.loan_offer_withdraw, loan, actor=scene.borrower, send=True)
    call = calls.loan_offer_withdraw(loan=loan, actor=scene.lender, send=True)
    assert [event["name"] for event in call.transaction.events] == ["LoanOfferWithdrawn"]
    assert scene.chain(loan).status is LoanStatus.OFFER_EXPIRED
    refused("wrong_state", calls.loan_offer_withdraw, loan, actor=scene.lender, send=True)


def test_mark_default_from_the_repayment_deadline_on(scene: Scene):
    loan = scene.active()
    refused("too_early", calls.loan_default_mark, loan, actor=scene.lender, send=True)
    refused("wrong_state", calls.loan_repayment_accept, loan, actor=scene.lender, send=True)
    deadline = scene.chain(loan).repayment_deadline_block
    scene.mine_evm(deadline - 1 - scene.desk.w3.eth.block_number)
    denied(calls.loan_default_mark, loan, actor=scene.borrower, send=True)
    call = calls.loan_default_mark(loan=loan, actor=scene.lender, send=True)
    assert [event["name"] for event in call.transaction.events] == ["LoanDefaulted"]
    assert scene.chain(loan).status is LoanStatus.DEFAULTED


def test_accept_repayment_refusals(scene: Scene):
    loan = scene.repaying()
    denied(calls.loan_repayment_accept, loan, actor=scene.borrower, send=True)
    refused("server_key_required", calls.loan_repayment_accept, loan, actor=scene.lender)  # never pL to a wallet
    refused("server_key_required", calls.loan_repayment_accept, loan, actor=scene.lender, send=False)
    LenderPreimage.objects.filter(loan=loan).delete()
    refused("no_lender_preimage", calls.loan_repayment_accept, loan, actor=scene.lender, send=True)


# ------------------------------------------------------------------------------------------------ reports


def test_report_refusals_and_a_pending_transaction(scene: Scene, operator):
    desk = scene.desk
    loan = scene.requested(funded=True)
    before = state(loan)
    for tx_hash, code in (
        ("0x1234", "invalid_tx_hash"),
        ("0x" + keccak(b"nothing").hex(), "unknown_transaction"),
    ):
        with pytest.raises(LoanServiceError) as caught:
            calls.evm_transaction_report(loan=loan, actor=scene.borrower, tx_hash=tx_hash)
        assert caught.value.code == code
    transfer = desk.w3.eth.send_transaction({"from": desk.borrower.address, "to": desk.stranger.address, "value": 1})
    desk.w3.eth.wait_for_transaction_receipt(transfer)
    with pytest.raises(LoanServiceError) as caught:
        calls.evm_transaction_report(loan=loan, actor=scene.borrower, tx_hash="0x" + bytes(transfer).hex())
    assert caught.value.code == "not_this_contract"
    other = scene.requested()
    cancel = scene.sign(calls.loan_request_cancel_prepare(loan=other, actor=scene.borrower), desk.borrower.account)
    cancel_hash = "0x" + bytes(cancel["transactionHash"]).hex()
    with pytest.raises(LoanServiceError) as caught:
        calls.evm_transaction_report(loan=loan, actor=scene.borrower, tx_hash=cancel_hash)
    assert caught.value.code == "not_this_loan"
    commit = calls.lender_hash_commit(loan=loan, actor=scene.lender)
    receipt = scene.sign(commit, desk.lender.account)
    commit_hash = "0x" + bytes(receipt["transactionHash"]).hex()
    with pytest.raises(LoanServiceError) as caught:
        calls.evm_transaction_report(loan=loan, actor=scene.borrower, tx_hash=commit_hash)
    assert caught.value.code == "not_your_transaction"
    stranger = make_user(User.Role.BORROWER)
    with pytest.raises(PermissionDenied):
        calls.evm_transaction_report(loan=loan, actor=stranger, tx_hash=commit_hash)
    assert EvmTransaction.objects.count() == before[3]

    row = calls.evm_transaction_report(loan=loan, actor=operator, tx_hash=commit_hash)
    assert row.function == "commitLenderHash" and row.sender == desk.lender.address and row.reported_by == operator

    rpc(desk.w3, "evm_setAutomine", [False])
    try:
        pending = scene.client.cancel_request(loan.contract_loan_id, sender=desk.borrower.address)
        tx_hash = desk.w3.eth.send_transaction(
            {"from": desk.borrower.address, "to": pending.to, "data": pending.data, "value": 0, "gas": 200_000}
        )
        row = calls.evm_transaction_report(loan=loan, actor=scene.borrower, tx_hash="0x" + bytes(tx_hash).hex())
        assert row.status == EvmTransaction.Status.PENDING and row.block_number is None and row.events == []
        scene.mine_evm(1)
    finally:
        rpc(desk.w3, "evm_setAutomine", [True])
    again = calls.evm_transaction_report(loan=loan, actor=scene.borrower, tx_hash="0x" + bytes(tx_hash).hex())
    assert again.pk == row.pk and again.status == EvmTransaction.Status.MINED and again.block_number
    assert [event["name"] for event in again.events] == ["LoanRequestCancelled"]
    loan.refresh_from_db()
    assert loan.status == Loan.Status.REQUESTED  # reports never move the loan
