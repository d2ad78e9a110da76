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

from .factories import hex32, make_deployment, make_loan, make_user

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


# --- the operators' actions and the new read-only admins ------------------------------------------------------------


def _action(client, model, action: str, pks: list[int], **confirmed):
    """The changelist's action POST; with ``confirmed`` fields, the confirmation page's POST instead."""
    url = changelist(model)
    if not confirmed:
        return client.post(url, {"action": action, "_selected_action": pks, "index": 0, "select_across": 0})
    return client.post(url, {"action": action, "_selected_action": pks, "confirmed": "yes", **confirmed})


def _messages(response) -> list[str]:
    return [str(message) for message in response.wsgi_request._messages]


def test_an_operator_grants_and_revokes_the_lender_role_through_the_services(client, operator):
    from loans.models import OperatorAction

    user = make_user(User.Role.BORROWER)
    client.force_login(operator)
    page = _action(client, User, "grant_lender_role", [user.pk])
    assert (
        page.status_code == 200 and 'name="reason"' in page.content.decode() and user.username in page.content.decode()
    )
    user.refresh_from_db()
    assert user.role == User.Role.BORROWER and not OperatorAction.objects.exists()  # asked, not done

    done = _action(client, User, "grant_lender_role", [user.pk], reason="new officer")
    assert done.status_code == 302
    user.refresh_from_db()
    assert user.role == User.Role.LENDER
    action = OperatorAction.objects.get()
    assert (action.actor, action.action, action.target_user, action.detail) == (
        operator, "lender_granted", user, "new officer",
    )  # fmt: skip

    again = _action(client, User, "grant_lender_role", [user.pk], reason="twice")
    assert again.status_code == 302 and OperatorAction.objects.count() == 1
    assert any("already_lender" in message for message in _messages(again))

    _action(client, User, "revoke_lender_role", [user.pk], reason="left")
    user.refresh_from_db()
    assert user.role == User.Role.BORROWER
    assert list(OperatorAction.objects.order_by("id").values_list("action", flat=True)) == [
        "lender_granted", "lender_revoked",
    ]  # fmt: skip


def test_the_role_is_not_a_field_of_the_user_form_even_for_a_superuser(client):
    from loans.models import OperatorAction

    root = make_user(User.Role.BORROWER, is_superuser=True, is_staff=True)
    user = make_user(User.Role.BORROWER)
    client.force_login(root)
    url = reverse("admin:loans_user_change", args=[user.pk])
    page = client.get(url)
    assert page.status_code == 200 and 'name="role"' not in page.content.decode()
    data = {
        "username": user.username, "first_name": "", "last_name": "", "email": "", "is_active": "on",
        "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00", "evm_address": user.evm_address,
        "role": User.Role.OPERATOR,
    }  # fmt: skip
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    user.refresh_from_db()
    assert user.role == User.Role.BORROWER and user.date_joined.year == 2026  # the form saved, the role did not
    assert not OperatorAction.objects.exists()


def test_an_operator_who_is_not_a_superuser_cannot_edit_a_user(client, operator):
    user = make_user(User.Role.BORROWER)
    client.force_login(operator)
    response = client.post(reverse("admin:loans_user_change", args=[user.pk]), {"username": "renamed"})
    assert response.status_code == 403
    user.refresh_from_db()
    assert user.username != "renamed"


def test_an_operator_pauses_and_resumes_new_loans_with_a_reason(client, operator):
    from loans.models import DeploymentPolicy, OperatorAction

    deployment = make_deployment()
    client.force_login(operator)
    blank = _action(client, ContractDeployment, "pause_new_loans", [deployment.pk], reason="")
    assert blank.status_code == 200 and "This field is required" in blank.content.decode()
    assert not DeploymentPolicy.objects.exists() and not OperatorAction.objects.exists()

    _action(client, ContractDeployment, "pause_new_loans", [deployment.pk], reason="node upgrade")
    policy = DeploymentPolicy.objects.get(deployment=deployment)
    assert (policy.new_loans_paused, policy.paused_reason, policy.updated_by) == (True, "node upgrade", operator)
    assert "paused: node upgrade" in client.get(changelist(ContractDeployment)).content.decode()

    page = _action(client, ContractDeployment, "resume_new_loans", [deployment.pk])
    assert page.status_code == 200  # a confirmation first
    _action(client, ContractDeployment, "resume_new_loans", [deployment.pk], reason="")
    policy.refresh_from_db()
    assert policy.new_loans_paused is False
    assert list(OperatorAction.objects.order_by("id").values_list("action", "actor", "deployment")) == [
        ("new_loans_paused", operator.pk, deployment.pk), ("new_loans_resumed", operator.pk, deployment.pk),
    ]  # fmt: skip


def _operator_records(operator):
    from loans.models import ApiToken, BitcoinBroadcast, EvmTransaction
    from loans.services.accounts import api_token_issue
    from loans.services.operators import new_loans_pause

    loan = make_loan()
    new_loans_pause(deployment=loan.deployment, actor=operator, reason="audit me")
    broadcast = BitcoinBroadcast.objects.create(
        loan=loan, kind="tx_1", txid=hex32(), raw_hex="02" + "ab" * 60, attempts=1, last_error="min relay fee not met"
    )
    evm_tx = EvmTransaction.objects.create(
        chain_id=31337, tx_hash=hex32(), loan=loan, function="acceptLoanOffer", sender=loan.borrower.evm_address,
        source="wallet",
    )  # fmt: skip
    raw, token = api_token_issue(user=loan.borrower)
    return {"broadcast": broadcast, "evm_tx": evm_tx, "raw": raw, "token": ApiToken.objects.get(pk=token.pk)}


def test_the_new_admins_are_read_only_and_show_nothing_secret(client, operator):
    from loans.models import ApiToken, BitcoinBroadcast, DeploymentPolicy, EvmTransaction, OperatorAction

    records = _operator_records(operator)
    client.force_login(operator)
    for model in [OperatorAction, EvmTransaction, BitcoinBroadcast, ApiToken, DeploymentPolicy]:
        obj = model.objects.get()
        pages = [client.get(changelist(model)), client.get(reverse(f"admin:loans_{model._meta.model_name}_change",
                                                                   args=[obj.pk]))]  # fmt: skip
        for page in pages:
            assert page.status_code == 200, model
            body = page.content.decode()
            assert records["token"].key_hash not in body and records["raw"] not in body
            assert records["broadcast"].raw_hex not in body
        assert client.get(reverse(f"admin:loans_{model._meta.model_name}_add")).status_code == 403
        delete = reverse(f"admin:loans_{model._meta.model_name}_delete", args=[obj.pk])
        assert client.post(delete, {"post": "yes"}).status_code == 403
    token_page = client.get(changelist(ApiToken)).content.decode()
    assert (
        records["token"].prefix in token_page and "audit me" in client.get(changelist(OperatorAction)).content.decode()
    )


def test_an_operator_revokes_a_token_through_the_service(client, operator):
    from loans.models import ApiToken
    from loans.services.accounts import api_token_find

    records = _operator_records(operator)
    client.force_login(operator)
    assert _action(client, ApiToken, "revoke_tokens", [records["token"].pk]).status_code == 200
    assert api_token_find(raw=records["raw"]) is not None  # asked, not done
    _action(client, ApiToken, "revoke_tokens", [records["token"].pk], reason="")
    assert api_token_find(raw=records["raw"]) is None
    assert ApiToken.objects.get().revoked_at is not None


def test_retrying_a_broadcast_goes_through_its_service_to_the_node(client, operator, settings, btc_rpc):
    from loans.models import BitcoinBroadcast, OperatorAction

    settings.BITCOIN_RPC_URL = btc_rpc.url
    import importlib.util

    records = _operator_records(operator)  # its raw_hex is no transaction: the regtest node refuses it
    client.force_login(operator)
    if importlib.util.find_spec("loans.services.bitcoin_actions") is None:  # the retry service is not in yet
        response = _action(client, BitcoinBroadcast, "retry_broadcast", [records["broadcast"].pk])
        assert response.status_code == 302 and any("not available" in m for m in _messages(response))
        assert BitcoinBroadcast.objects.get().attempts == 1
        assert not OperatorAction.objects.filter(broadcast__isnull=False).exists()
        return
    assert _action(client, BitcoinBroadcast, "retry_broadcast", [records["broadcast"].pk]).status_code == 200
    assert BitcoinBroadcast.objects.get().attempts == 1  # asked, not done
    response = _action(client, BitcoinBroadcast, "retry_broadcast", [records["broadcast"].pk], reason="")
    assert response.status_code == 302
    row = BitcoinBroadcast.objects.get()
    assert row.attempts == 2 and row.accepted_at is None and row.last_error
    assert any("not accepted" in message for message in _messages(response))
    audit = OperatorAction.objects.get(action="broadcast_retried")
    assert (audit.actor, audit.broadcast, audit.detail) == (operator, row, row.last_error[:500])
