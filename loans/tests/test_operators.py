"""The operators' services (``loans.services.operators``): the lender role and pausing new loans, each audited with
its actor; every refusal by its code, with nothing written (not even an audit row). ``loan_create`` refused while
new loans are paused. The audit table is append-only in PostgreSQL itself."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from django.core.exceptions import PermissionDenied
from django.db import transaction

from bitcoin.addresses import encode_segwit_address
from bitcoin.keys import PrivateKey
from loans import tasks
from loans.errors import LoanServiceError
from loans.models import ContractDeployment, DeploymentPolicy, Loan, OperatorAction, User
from loans.services import loan_create
from loans.services.borrower_actions import LOAN_CREATE_CODES
from loans.services.operators import (
    LENDER_ROLE_GRANT_CODES,
    LENDER_ROLE_REVOKE_CODES,
    NEW_LOANS_PAUSE_CODES,
    NEW_LOANS_RESUME_CODES,
    lender_role_grant,
    lender_role_revoke,
    new_loans_pause,
    new_loans_resume,
)

from .factories import evm_address, hex32, make_deployment, make_loan, make_parameters, make_user

pytestmark = pytest.mark.django_db


def snapshot_users() -> list[tuple]:
    return list(User.objects.order_by("pk").values_list("pk", "role", "is_active"))


def snapshot_policies() -> list[tuple]:
    return list(
        DeploymentPolicy.objects.order_by("pk").values_list(
            "pk", "deployment_id", "new_loans_paused", "paused_reason", "updated_by_id", "updated_at"
        )
    )


@pytest.fixture
def unchanged():
    """Call after setting up: asserts, when called again, that no user, policy or audit row changed."""

    def take():
        return snapshot_users(), snapshot_policies(), list(OperatorAction.objects.values_list("pk", flat=True))

    before = {}

    def check(first: bool = False):
        if first:
            before["state"] = take()
        else:
            assert take() == before["state"]

    return check


def refused(code: str, call, unchanged) -> LoanServiceError:
    unchanged(first=True)
    with pytest.raises(LoanServiceError) as error:
        call()
    assert error.value.code == code
    unchanged()
    return error.value


# --- the lender role ------------------------------------------------------------------------------------------------


def test_granting_the_lender_role_is_audited_with_the_actor(operator):
    user = make_user(User.Role.BORROWER)
    granted = lender_role_grant(user=user, actor=operator, reason="  the lender's new desk officer  ")
    assert granted.pk == user.pk and user.role == User.Role.LENDER
    user.refresh_from_db()
    assert user.role == User.Role.LENDER
    (action,) = OperatorAction.objects.all()
    assert (action.actor, action.action, action.target_user, action.detail) == (
        operator,
        OperatorAction.Action.LENDER_GRANTED,
        user,
        "the lender's new desk officer",
    )
    assert action.deployment is None and action.broadcast is None


def test_a_superuser_is_an_operator_for_these_actions():
    root = make_user(User.Role.BORROWER, is_superuser=True, is_staff=True)
    user = make_user(User.Role.BORROWER)
    lender_role_grant(user=user, actor=root)
    assert OperatorAction.objects.get().actor == root


def test_revoking_returns_the_user_to_borrower_and_leaves_loans_in_flight_alone(operator):
    lender = make_user(User.Role.LENDER)
    loan = make_loan(lender=lender, status=Loan.Status.DRAFT)
    revoked = lender_role_revoke(user=lender, actor=operator, reason="left the firm")
    assert revoked.role == User.Role.BORROWER
    lender.refresh_from_db()
    assert lender.role == User.Role.BORROWER
    loan.refresh_from_db()
    assert loan.lender == lender and loan.status == Loan.Status.DRAFT
    action = OperatorAction.objects.get()
    assert (action.actor, action.action, action.target_user, action.detail) == (
        operator,
        OperatorAction.Action.LENDER_REVOKED,
        lender,
        "left the firm",
    )


@pytest.mark.parametrize("role", [User.Role.BORROWER, User.Role.LENDER, "inactive_operator", "anonymous"])
def test_only_an_active_operator_may_grant_or_revoke(role, unchanged):
    from django.contrib.auth.models import AnonymousUser

    if role == "anonymous":
        actor = AnonymousUser()
    elif role == "inactive_operator":
        actor = make_user(User.Role.OPERATOR, is_active=False)
    else:
        actor = make_user(role)
    borrower, lender = make_user(User.Role.BORROWER), make_user(User.Role.LENDER)
    unchanged(first=True)
    with pytest.raises(PermissionDenied):
        lender_role_grant(user=borrower, actor=actor, reason="x")
    with pytest.raises(PermissionDenied):
        lender_role_revoke(user=lender, actor=actor, reason="x")
    unchanged()


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ({"role": User.Role.BORROWER, "is_active": False}, "user_inactive"),
        ({"role": User.Role.OPERATOR}, "user_is_operator"),
        ({"role": User.Role.BORROWER, "is_superuser": True}, "user_is_operator"),
        ({"role": User.Role.LENDER}, "already_lender"),
    ],
)
def test_grant_refusals_change_nothing(operator, target, code, unchanged):
    assert code in LENDER_ROLE_GRANT_CODES
    user = make_user(target.pop("role"), **target)
    refused(code, lambda: lender_role_grant(user=user, actor=operator, reason="why not"), unchanged)


def test_an_operator_cannot_grant_themselves_the_role(operator, unchanged):
    refused("user_is_operator", lambda: lender_role_grant(user=operator, actor=operator), unchanged)


def test_the_role_is_read_from_the_database_not_from_a_stale_object(operator, unchanged):
    user = make_user(User.Role.BORROWER)
    stale = User.objects.get(pk=user.pk)
    lender_role_grant(user=user, actor=operator)
    refused("already_lender", lambda: lender_role_grant(user=stale, actor=operator), unchanged)


@pytest.mark.parametrize("role", [User.Role.BORROWER, User.Role.OPERATOR])
def test_revoking_someone_who_is_not_a_lender_is_refused(operator, role, unchanged):
    assert "not_a_lender" in LENDER_ROLE_REVOKE_CODES
    user = make_user(role)
    refused("not_a_lender", lambda: lender_role_revoke(user=user, actor=operator), unchanged)


def test_revoking_twice_is_refused_the_second_time(operator, unchanged):
    lender = make_user(User.Role.LENDER)
    lender_role_revoke(user=lender, actor=operator)
    refused("not_a_lender", lambda: lender_role_revoke(user=lender, actor=operator), unchanged)
    assert OperatorAction.objects.count() == 1


def test_a_reason_longer_than_the_audit_column_is_refused(operator, unchanged):
    user, lender = make_user(User.Role.BORROWER), make_user(User.Role.LENDER)
    refused("invalid_reason", lambda: lender_role_grant(user=user, actor=operator, reason="x" * 501), unchanged)
    refused("invalid_reason", lambda: lender_role_revoke(user=lender, actor=operator, reason="x" * 501), unchanged)
    lender_role_grant(user=user, actor=operator, reason="x" * 500)  # exactly the column's length is kept
    assert OperatorAction.objects.get().detail == "x" * 500


# --- pausing new loans ----------------------------------------------------------------------------------------------


def test_pause_and_resume_are_audited_and_can_be_repeated_in_turn(operator):
    deployment = make_deployment()
    policy = new_loans_pause(deployment=deployment, actor=operator, reason="node upgrade")
    policy.refresh_from_db()
    assert (policy.deployment, policy.new_loans_paused, policy.paused_reason, policy.updated_by) == (
        deployment,
        True,
        "node upgrade",
        operator,
    )
    other = make_user(User.Role.OPERATOR)
    policy = new_loans_resume(deployment=deployment, actor=other)
    policy.refresh_from_db()
    assert (policy.new_loans_paused, policy.paused_reason, policy.updated_by) == (False, "", other)
    new_loans_pause(deployment=deployment, actor=operator, reason="again")
    assert DeploymentPolicy.objects.count() == 1 and DeploymentPolicy.objects.get().paused_reason == "again"
    rows = list(OperatorAction.objects.order_by("id").values_list("action", "actor", "deployment", "detail"))
    assert rows == [
        ("new_loans_paused", operator.pk, deployment.pk, "node upgrade"),
        ("new_loans_resumed", other.pk, deployment.pk, "was paused: node upgrade"),
        ("new_loans_paused", operator.pk, deployment.pk, "again"),
    ]


def test_pausing_twice_is_refused(operator, unchanged):
    assert "new_loans_already_paused" in NEW_LOANS_PAUSE_CODES
    deployment = make_deployment()
    new_loans_pause(deployment=deployment, actor=operator, reason="first")
    error = refused(
        "new_loans_already_paused",
        lambda: new_loans_pause(deployment=deployment, actor=operator, reason="second"),
        unchanged,
    )
    assert "first" in str(error)


def test_resuming_when_not_paused_is_refused_and_makes_no_policy(operator, unchanged):
    assert NEW_LOANS_RESUME_CODES == ("new_loans_not_paused",)
    deployment = make_deployment()
    refused("new_loans_not_paused", lambda: new_loans_resume(deployment=deployment, actor=operator), unchanged)
    assert not DeploymentPolicy.objects.exists()
    new_loans_pause(deployment=deployment, actor=operator, reason="x")
    new_loans_resume(deployment=deployment, actor=operator)
    refused("new_loans_not_paused", lambda: new_loans_resume(deployment=deployment, actor=operator), unchanged)


@pytest.mark.parametrize("reason", ["", "   ", "x" * 201])
def test_a_pause_needs_a_reason_that_fits(operator, reason, unchanged):
    deployment = make_deployment()
    refused("invalid_reason", lambda: new_loans_pause(deployment=deployment, actor=operator, reason=reason), unchanged)


@pytest.mark.parametrize("role", [User.Role.BORROWER, User.Role.LENDER])
def test_only_an_operator_may_pause_or_resume(operator, role, unchanged):
    deployment = make_deployment()
    paused = make_deployment()
    new_loans_pause(deployment=paused, actor=operator, reason="x")
    actor = make_user(role)
    unchanged(first=True)
    with pytest.raises(PermissionDenied):
        new_loans_pause(deployment=deployment, actor=actor, reason="x")
    with pytest.raises(PermissionDenied):
        new_loans_resume(deployment=paused, actor=actor)
    unchanged()


# --- loan_create while paused ---------------------------------------------------------------------------------------

LENDER_KEY = PrivateKey.generate()
BORROWER_KEY = PrivateKey.generate()


@pytest.fixture
def desk_deployment(settings) -> ContractDeployment:
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB = "1"
    settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "500"
    settings.LENDER_BTC_PAYOUT_ADDRESS = encode_segwit_address("regtest", 0, b"\x11" * 20)
    parameters = make_parameters(lender_btc_pubkey=LENDER_KEY.xonly_pubkey.hex())
    return ContractDeployment.objects.create(
        chain_id=settings.EVM_CHAIN_ID,
        loan_contract_address=evm_address(),
        ether_swap_address=evm_address(),
        block_number=1,
        block_hash=hex32(),
        parameters=parameters,
    )


def loan_request() -> dict:
    return {
        "amount_wei": 10**16,
        "borrower_btc_pubkey": BORROWER_KEY.xonly_pubkey.hex(),
        "borrower_hash": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        "borrower_payout_address": encode_segwit_address("regtest", 1, b"\x22" * 32),
    }


def test_loan_create_is_refused_while_paused_and_allowed_after_resume(desk_deployment, operator):
    assert "new_loans_paused" in LOAN_CREATE_CODES
    borrower = make_user(User.Role.BORROWER)
    new_loans_pause(deployment=desk_deployment, actor=operator, reason="maintenance until 14:00")
    with pytest.raises(LoanServiceError) as error:
        loan_create(borrower=borrower, **loan_request())
    assert error.value.code == "new_loans_paused" and "maintenance until 14:00" in str(error.value)
    assert not Loan.objects.exists()
    new_loans_resume(deployment=desk_deployment, actor=operator)
    loan = loan_create(borrower=borrower, **loan_request())
    assert loan.deployment == desk_deployment and Loan.objects.count() == 1


def test_the_pause_is_checked_before_any_other_input(desk_deployment, operator):
    new_loans_pause(deployment=desk_deployment, actor=operator, reason="x")
    with pytest.raises(LoanServiceError) as error:
        loan_create(borrower=make_user(User.Role.BORROWER), **{**loan_request(), "borrower_hash": "not hex"})
    assert error.value.code == "new_loans_paused"


def test_a_pause_on_another_chains_deployment_does_not_stop_this_one(desk_deployment, operator, settings):
    elsewhere = ContractDeployment.objects.create(  # not make_deployment: it would add a newer parameters version
        chain_id=settings.EVM_CHAIN_ID + 1,
        loan_contract_address=evm_address(),
        ether_swap_address=evm_address(),
        block_number=1,
        block_hash=hex32(),
        parameters=desk_deployment.parameters,
    )
    new_loans_pause(deployment=elsewhere, actor=operator, reason="x")
    loan = loan_create(borrower=make_user(User.Role.BORROWER), **loan_request())
    assert loan.deployment == desk_deployment


# --- the audit trail is append-only ---------------------------------------------------------------------------------


def test_the_operators_audit_trail_refuses_update_and_delete_in_the_database(operator):
    user = make_user(User.Role.BORROWER)
    lender_role_grant(user=user, actor=operator, reason="original")
    action = OperatorAction.objects.get()
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        OperatorAction.objects.filter(pk=action.pk).update(detail="rewritten")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        OperatorAction.objects.filter(pk=action.pk).delete()
    action.refresh_from_db()
    assert action.detail == "original"


# --- the daily pruning is scheduled with the watchers -----------------------------------------------------------------


def test_pruning_is_scheduled_daily_where_the_watchers_are(capsys):
    from django.core.management import call_command
    from django_q.models import Schedule

    assert ("prune expired records", "loans.tasks.prune_expired_task", 24 * 60) in tasks.SCHEDULES
    call_command("sync_chains", "--schedule")
    schedule = Schedule.objects.get(name="prune expired records")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == (
        "loans.tasks.prune_expired_task",
        Schedule.MINUTES,
        1440,
    )
    assert tasks.prune_expired_task() == str({"siwe_nonces": 0, "api_tokens": 0, "idempotency_records": 0})
