"""`LoanContractClient.accept_loan_offer_template`: acceptLoanOffer for a wallet that holds pB (the server never sees
it before the accept is on chain): every check `accept_loan_offer` makes, the same refusals, and calldata that is
the full call's up to pB's word; with pB appended and signed, the loan is active."""

from __future__ import annotations

import dataclasses
import os

import pytest

from evm.client import ACCEPT_PREIMAGE_HEX_CHARS, LoanStatus, PreparedTransaction
from evm.errors import BorrowerStepRefused

pytestmark = pytest.mark.integration


def with_preimage(template: PreparedTransaction, preimage: bytes) -> PreparedTransaction:
    return dataclasses.replace(template, data=template.data + preimage.hex())


def test_the_template_is_the_accept_without_its_preimage(loan_client, loan_flow, borrower):
    loan_id, p_b, _ = loan_flow.offered()
    terms = loan_flow.terms[loan_id]
    template = loan_client.accept_loan_offer_template(loan_id, terms=terms)
    full = loan_client.accept_loan_offer(loan_id, p_b, terms=terms)
    assert full.data == template.data + p_b.hex() and len(p_b.hex()) == ACCEPT_PREIMAGE_HEX_CHARS
    assert (template.to, template.value, template.chain_id, template.method) == (
        full.to,
        0,
        full.chain_id,
        f"acceptLoanOffer({loan_id})",
    )
    assert template.gas is None  # no dry run without pB
    loan_client.send(with_preimage(template, p_b), borrower)
    assert loan_client.get_loan(loan_id).status is LoanStatus.ACTIVE


def test_the_template_refuses_what_the_accept_refuses(w3, loan_client, loan_flow, evm_mine):
    requested, _ = loan_flow.request()
    with pytest.raises(BorrowerStepRefused) as refused:
        loan_client.accept_loan_offer_template(requested, terms=loan_flow.terms[requested])
    assert refused.value.reason == "not_offered"

    loan_id, _, _ = loan_flow.offered()
    terms = loan_flow.terms[loan_id]
    with pytest.raises(BorrowerStepRefused) as refused:
        loan_client.accept_loan_offer_template(loan_id, terms=dataclasses.replace(terms, escrow_txid=os.urandom(32)))
    assert refused.value.reason == "wrong_escrow_txid"

    loan = loan_client.get_loan(loan_id)
    evm_mine(loan.last_accept_start_block - 1 - w3.eth.block_number)
    checked, head = loan_client.accept_offer_checked(loan_id, terms=terms)
    assert checked.loan_id == loan_id and head + 1 == loan.last_accept_start_block
    evm_mine(1)
    with pytest.raises(BorrowerStepRefused) as refused:
        loan_client.accept_loan_offer_template(loan_id, terms=terms)
    assert refused.value.reason == "accept_cutoff"
