"""The admin is the operators' room: they see every record and the chain facts read-only; nobody else gets in."""

import pytest
from django.urls import reverse

from loans.models import (
    BitcoinTransaction,
    BorrowerSignature,
    ContractDeployment,
    EvmEvent,
    Loan,
    LoanStatusChange,
    ProtocolParameters,
    User,
)
from loans.services import loan_status_transition

from .factories import hex32, make_loan

pytestmark = pytest.mark.django_db

MODELS = [Loan, LoanStatusChange, ProtocolParameters, BorrowerSignature, BitcoinTransaction, EvmEvent,
          ContractDeployment, User]  # fmt: skip


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


@pytest.fixture
def loan_with_facts(operator):
    loan = make_loan(escrow_txid=hex32(), escrow_vout=0, escrow_sats=250_000)
    loan_status_transition(loan_id=loan.pk, to_status="requested", cause="LoanRequested", actor=operator)
    BitcoinTransaction.objects.create(
        loan=loan, role="escrow_funding", txid=loan.escrow_txid, vout=0, value_sats=250_000, raw_hex="02",
        block_hash=hex32(), block_height=101,
    )  # fmt: skip
    EvmEvent.objects.create(
        chain_id=31337, contract_address=loan.deployment.loan_contract_address, block_number=9,
        block_hash=hex32(), tx_hash=hex32(), log_index=0, name="LoanRequested", args={"loanId": "1"}, loan=loan,
    )  # fmt: skip
    return loan


def test_operator_sees_every_list_and_the_loan_page(client, operator, loan_with_facts):
    client.force_login(operator)
    assert client.get(reverse("admin:index")).status_code == 200
    for model in MODELS:
        response = client.get(changelist(model))
        assert response.status_code == 200, model
    page = client.get(reverse("admin:loans_loan_change", args=[loan_with_facts.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert loan_with_facts.escrow_txid in body  # the Bitcoin transaction inline
    assert "LoanRequested" in body  # the audit trail inline


@pytest.mark.parametrize("model", [Loan, LoanStatusChange, BitcoinTransaction, EvmEvent, ProtocolParameters])
def test_chain_facts_and_loans_are_read_only_for_operators(client, operator, loan_with_facts, model):
    client.force_login(operator)
    assert client.get(reverse(f"admin:loans_{model._meta.model_name}_add")).status_code == 403
    obj = model.objects.first()
    response = client.post(reverse(f"admin:loans_{model._meta.model_name}_change", args=[obj.pk]), {})
    assert response.status_code == 403
    assert client.post(reverse(f"admin:loans_{model._meta.model_name}_delete", args=[obj.pk])).status_code == 403


@pytest.mark.parametrize("role", [User.Role.BORROWER, User.Role.LENDER])
def test_borrowers_and_lenders_are_refused(client, role, loan_with_facts, django_user_model):
    user = django_user_model.objects.create_user(username=f"not-an-operator-{role}", role=role, is_staff=True)
    client.force_login(user)
    for url in [
        reverse("admin:index"),
        changelist(Loan),
        reverse("admin:loans_loan_change", args=[loan_with_facts.pk]),
    ]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login"))


def test_anonymous_is_sent_to_login(client):
    response = client.get(changelist(Loan))
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]


def test_loan_list_query_count_does_not_grow_with_loans(client, operator, django_assert_max_num_queries):
    client.force_login(operator)
    for _ in range(3):
        make_loan()
    with django_assert_max_num_queries(12) as few:
        client.get(changelist(Loan))
    for _ in range(10):
        make_loan()
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(changelist(Loan)).status_code == 200
