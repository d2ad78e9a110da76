"""The operators' actions outside a loan's own life: the lender role, pausing new loans, pruning expired records.

Each action is for an active operator only (``loans.permissions.is_operator``; ``PermissionDenied`` otherwise),
checks its target and inputs before it writes, and writes the change and its ``OperatorAction`` audit row (with
the actor) in one transaction. A refusal raises ``LoanServiceError`` with one of the action's codes
(``LENDER_ROLE_GRANT_CODES`` ...) and writes nothing, not even an audit row.

``expired_records_prune`` is housekeeping the worker runs daily (``loans.tasks``, ``manage.py prune_expired``):
no actor, no audit row.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from ..errors import LoanServiceError
from ..models import ApiToken, ContractDeployment, DeploymentPolicy, IdempotencyRecord, OperatorAction, SiweNonce, User
from ..permissions import is_operator, require

LENDER_ROLE_GRANT_CODES: tuple[str, ...] = ("user_inactive", "user_is_operator", "already_lender", "invalid_reason")
LENDER_ROLE_REVOKE_CODES: tuple[str, ...] = ("not_a_lender", "invalid_reason")
NEW_LOANS_PAUSE_CODES: tuple[str, ...] = ("new_loans_already_paused", "invalid_reason")
NEW_LOANS_RESUME_CODES: tuple[str, ...] = ("new_loans_not_paused",)
OPERATOR_CODES: tuple[str, ...] = tuple(
    dict.fromkeys(
        (*LENDER_ROLE_GRANT_CODES, *LENDER_ROLE_REVOKE_CODES, *NEW_LOANS_PAUSE_CODES, *NEW_LOANS_RESUME_CODES)
    )
)

#: An audit row's ``detail`` and a pause's ``paused_reason`` hold at most this many characters.
ROLE_REASON_MAX_LENGTH = OperatorAction._meta.get_field("detail").max_length
PAUSE_REASON_MAX_LENGTH = DeploymentPolicy._meta.get_field("paused_reason").max_length

#: How long records that only guard against replays are kept once they can no longer be used.
#: An Idempotency-Key is honoured for at least this long (``loans.services.idempotency`` honours a key as long as
#: its record exists; the daily pruning removes records older than this, so a key lives 24 to 48 hours).
IDEMPOTENCY_RECORD_RETENTION = timedelta(hours=24)
#: Expired or revoked API tokens are kept this long after, so an operator can still see which token was used.
API_TOKEN_RETENTION = timedelta(days=30)


def _refuse(code: str, message: str) -> LoanServiceError:
    return LoanServiceError(message, code=code)


def _reason(reason: str, *, required: bool, max_length: int) -> str:
    if not isinstance(reason, str):
        raise _refuse("invalid_reason", "the reason must be text")
    reason = reason.strip()
    if required and not reason:
        raise _refuse("invalid_reason", "give a reason")
    if len(reason) > max_length:
        raise _refuse("invalid_reason", f"the reason is longer than {max_length} characters")
    return reason


def _require_operator(actor: User) -> None:
    require(is_operator(actor), "only an active operator may do this")


def lender_role_grant(*, user: User, actor: User, reason: str = "") -> User:
    """Make ``user`` a lender (from borrower). Refused for an inactive user (``user_inactive``), an operator or
    superuser (``user_is_operator``: roles do not stack) and someone already a lender (``already_lender``).

    The role lets the user act as the lender in this desk (the lender's pages, hL, storing the lender's keys); it
    changes nothing on chain: the contract's owner key is what lends, and the role does not hand it over.
    Several users may hold the role (the lender's staff)."""
    _require_operator(actor)
    reason = _reason(reason, required=False, max_length=ROLE_REASON_MAX_LENGTH)
    with transaction.atomic():
        target = User.objects.select_for_update().get(pk=user.pk)
        if not target.is_active:
            raise _refuse("user_inactive", f"user {target.pk} is inactive: activate the account first")
        if target.is_superuser or target.role == User.Role.OPERATOR:
            raise _refuse("user_is_operator", f"user {target.pk} is an operator: an operator is not also the lender")
        if target.role == User.Role.LENDER:
            raise _refuse("already_lender", f"user {target.pk} is already a lender")
        target.role = User.Role.LENDER
        target.save(update_fields=["role"])
        OperatorAction.objects.create(
            actor=actor, action=OperatorAction.Action.LENDER_GRANTED, target_user=target, detail=reason
        )
    user.role = target.role
    return target


def lender_role_revoke(*, user: User, actor: User, reason: str = "") -> User:
    """Return a lender to borrower. Refused for someone who is not a lender (``not_a_lender``).

    Loans in flight are not touched: nothing on chain changes (the contract's owner key is what acts as the
    lender, and the watchers keep following every loan); ``Loan.lender`` still names the user, the lender's keys
    (``LenderKey``) and sealed preimages stay where they are, and the server keeps using them for the loans that
    need them. Only the user's own access as a lender (pages, API, hL, storing keys) ends."""
    _require_operator(actor)
    reason = _reason(reason, required=False, max_length=ROLE_REASON_MAX_LENGTH)
    with transaction.atomic():
        target = User.objects.select_for_update().get(pk=user.pk)
        if target.role != User.Role.LENDER:
            raise _refuse("not_a_lender", f"user {target.pk} is not a lender ({target.role})")
        target.role = User.Role.BORROWER
        target.save(update_fields=["role"])
        OperatorAction.objects.create(
            actor=actor, action=OperatorAction.Action.LENDER_REVOKED, target_user=target, detail=reason
        )
    user.role = target.role
    return target


def new_loans_paused(*, deployment: ContractDeployment) -> DeploymentPolicy | None:
    """The deployment's policy if new loans are paused on it, else None (a read, for ``loan_create``)."""
    return DeploymentPolicy.objects.filter(deployment=deployment, new_loans_paused=True).first()


def new_loans_pause(*, deployment: ContractDeployment, actor: User, reason: str) -> DeploymentPolicy:
    """Stop ``loan_create`` drafting loans on ``deployment`` (``new_loans_paused``) until resumed; ``reason`` is
    required. Pausing twice is refused (``new_loans_already_paused``).

    Loans already drafted or running are not touched, and the contract itself cannot be paused: a borrower could
    still call ``requestLoan`` with another client, and the lender simply does not offer."""
    _require_operator(actor)
    reason = _reason(reason, required=True, max_length=PAUSE_REASON_MAX_LENGTH)
    with transaction.atomic():
        ContractDeployment.objects.select_for_update().get(pk=deployment.pk)  # one policy change at a time
        policy = DeploymentPolicy.objects.filter(deployment=deployment).first()
        if policy is not None and policy.new_loans_paused:
            raise _refuse(
                "new_loans_already_paused", f"new loans on {deployment} are already paused: {policy.paused_reason}"
            )
        policy = policy or DeploymentPolicy(deployment=deployment)
        policy.new_loans_paused = True
        policy.paused_reason = reason
        policy.updated_by = actor
        policy.save()
        OperatorAction.objects.create(
            actor=actor, action=OperatorAction.Action.NEW_LOANS_PAUSED, deployment=deployment, detail=reason
        )
    return policy


def new_loans_resume(*, deployment: ContractDeployment, actor: User) -> DeploymentPolicy:
    """Let ``loan_create`` draft loans on ``deployment`` again. Refused unless paused (``new_loans_not_paused``)."""
    _require_operator(actor)
    with transaction.atomic():
        ContractDeployment.objects.select_for_update().get(pk=deployment.pk)
        policy = DeploymentPolicy.objects.filter(deployment=deployment).first()
        if policy is None or not policy.new_loans_paused:
            raise _refuse("new_loans_not_paused", f"new loans on {deployment} are not paused")
        was = policy.paused_reason
        policy.new_loans_paused = False
        policy.paused_reason = ""
        policy.updated_by = actor
        policy.save()
        OperatorAction.objects.create(
            actor=actor,
            action=OperatorAction.Action.NEW_LOANS_RESUMED,
            deployment=deployment,
            detail=f"was paused: {was}"[:ROLE_REASON_MAX_LENGTH],
        )
    return policy


def expired_records_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete what can no longer be used: SIWE nonces expired or used (a replayed message is then refused as
    ``siwe_nonce_unknown`` instead of ``siwe_nonce_used``, and by its issued-at age anyway), API tokens expired
    or revoked more than ``API_TOKEN_RETENTION`` ago, Idempotency-Key records older than
    ``IDEMPOTENCY_RECORD_RETENTION``. Returns how many rows of each were deleted."""
    now = now or timezone.now()
    nonces = SiweNonce.objects.filter(expires_at__lte=now) | SiweNonce.objects.filter(used_at__isnull=False)
    token_cutoff = now - API_TOKEN_RETENTION
    tokens = ApiToken.objects.filter(expires_at__lte=token_cutoff) | ApiToken.objects.filter(
        revoked_at__lte=token_cutoff
    )
    records = IdempotencyRecord.objects.filter(created_at__lte=now - IDEMPOTENCY_RECORD_RETENTION)
    counts = {}
    for name, queryset in (("siwe_nonces", nonces), ("api_tokens", tokens), ("idempotency_records", records)):
        _, per_model = queryset.delete()
        counts[name] = per_model.get(queryset.model._meta.label, 0)
    return counts
