"""/api/v1/: the operators' actions: the lender role, pausing new loans, the operators' audit trail.

Operators only (``loans.permissions.is_operator``): anyone else signed in gets 403, an anonymous caller 401. Each
write is one service of ``loans.services.operators`` (audited there); refusals keep their codes.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import ContractDeployment, DeploymentPolicy, OperatorAction, User
from ..permissions import is_operator
from ..services.operators import (
    PAUSE_REASON_MAX_LENGTH,
    ROLE_REASON_MAX_LENGTH,
    lender_role_grant,
    lender_role_revoke,
    new_loans_pause,
    new_loans_resume,
)
from .idempotency import IDEMPOTENCY_PARAMETER, IdempotentPostMixin
from .serializers import ErrorSerializer

ERRORS = {code: ErrorSerializer for code in (400, 401, 403, 404, 409, 422, 429)}


class IsOperator(BasePermission):
    message = "only an operator may do this"

    def has_permission(self, request, view) -> bool:
        return is_operator(request.user)


class OperatorView:
    permission_classes = [IsAuthenticated, IsOperator]


class RoleReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=ROLE_REASON_MAX_LENGTH, help_text="Kept in the audit trail."
    )


class PauseReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=PAUSE_REASON_MAX_LENGTH, help_text="Shown to borrowers refused.")


class UserRoleSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "evm_address", "role", "is_active"]
        read_only_fields = fields


class DeploymentPolicySerializer(serializers.ModelSerializer):
    deployment = serializers.IntegerField(source="deployment_id", read_only=True)
    chain_id = serializers.IntegerField(source="deployment.chain_id", read_only=True)
    loan_contract_address = serializers.CharField(source="deployment.loan_contract_address", read_only=True)
    updated_by = serializers.IntegerField(source="updated_by_id", read_only=True, allow_null=True)

    class Meta:
        model = DeploymentPolicy
        fields = [
            "deployment", "chain_id", "loan_contract_address", "new_loans_paused", "paused_reason", "updated_by",
            "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class OperatorActionSerializer(serializers.ModelSerializer):
    actor = serializers.IntegerField(source="actor_id", read_only=True)
    actor_username = serializers.CharField(source="actor.username", read_only=True)
    target_user = serializers.IntegerField(source="target_user_id", read_only=True, allow_null=True)
    deployment = serializers.IntegerField(source="deployment_id", read_only=True, allow_null=True)
    broadcast = serializers.IntegerField(source="broadcast_id", read_only=True, allow_null=True)

    class Meta:
        model = OperatorAction
        fields = [
            "id", "action", "actor", "actor_username", "target_user", "deployment", "broadcast", "detail", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


@extend_schema_view(
    post=extend_schema(
        request=RoleReasonSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: UserRoleSerializer, **ERRORS},
        description="Grant the lender role (from borrower): audited with the reason.",
    ),
    delete=extend_schema(
        request=RoleReasonSerializer,
        responses={200: UserRoleSerializer, **ERRORS},
        description="Revoke the lender role (back to borrower); nothing on chain changes.",
    ),
)
class LenderRole(OperatorView, IdempotentPostMixin, APIView):
    """POST: make the user a lender; DELETE: return them to borrower. Refusals: ``user_inactive``,
    ``user_is_operator``, ``already_lender``; ``not_a_lender``; ``invalid_reason``."""

    serializer_class = RoleReasonSerializer

    def _reason(self, request: Request) -> str:
        serializer = RoleReasonSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data.get("reason", "")

    def post(self, request: Request, pk: int) -> Response:
        user = get_object_or_404(User, pk=pk)
        reason = self._reason(request)
        return Response(UserRoleSerializer(lender_role_grant(user=user, actor=request.user, reason=reason)).data)

    def delete(self, request: Request, pk: int) -> Response:
        user = get_object_or_404(User, pk=pk)
        reason = self._reason(request)
        return Response(UserRoleSerializer(lender_role_revoke(user=user, actor=request.user, reason=reason)).data)


@extend_schema(
    request=PauseReasonSerializer,
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={200: DeploymentPolicySerializer, **ERRORS},
)
class DeploymentPause(OperatorView, IdempotentPostMixin, APIView):
    """POST {"reason"}: stop drafting new loans on the deployment (``loan_create`` refuses with
    ``new_loans_paused``). Refusals: ``new_loans_already_paused``, ``invalid_reason``."""

    serializer_class = PauseReasonSerializer

    def post(self, request: Request, pk: int) -> Response:
        deployment = get_object_or_404(ContractDeployment, pk=pk)
        serializer = PauseReasonSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy = new_loans_pause(deployment=deployment, actor=request.user, reason=serializer.validated_data["reason"])
        return Response(DeploymentPolicySerializer(policy).data)


@extend_schema(request=None, parameters=[IDEMPOTENCY_PARAMETER], responses={200: DeploymentPolicySerializer, **ERRORS})
class DeploymentResume(OperatorView, IdempotentPostMixin, APIView):
    """POST: take new loans on the deployment again. Refusal: ``new_loans_not_paused``."""

    def post(self, request: Request, pk: int) -> Response:
        deployment = get_object_or_404(ContractDeployment, pk=pk)
        return Response(DeploymentPolicySerializer(new_loans_resume(deployment=deployment, actor=request.user)).data)


@extend_schema(
    parameters=[OpenApiParameter("action", enum=OperatorAction.Action.values, description="Only this action.")],
    responses={200: OperatorActionSerializer(many=True), **{c: ErrorSerializer for c in (400, 401, 403, 429)}},
)
class OperatorActionList(OperatorView, generics.ListAPIView):
    """The operators' audit trail, newest first (paginated): who granted or revoked the lender role, paused or
    resumed new loans, retried a broadcast, with the reason given."""

    serializer_class = OperatorActionSerializer

    def get_queryset(self):
        actions = OperatorAction.objects.select_related("actor").order_by("-created_at", "-id")
        action = self.request.query_params.get("action")
        if action is not None:
            if action not in OperatorAction.Action.values:
                raise ValidationError({"action": [f"not an operator action: {action!r}"]})
            actions = actions.filter(action=action)
        return actions


urlpatterns = [
    path("operator/users/<int:pk>/lender-role/", LenderRole.as_view(), name="operator-lender-role"),
    path("operator/deployments/<int:pk>/pause/", DeploymentPause.as_view(), name="operator-deployment-pause"),
    path("operator/deployments/<int:pk>/resume/", DeploymentResume.as_view(), name="operator-deployment-resume"),
    path("operator/actions/", OperatorActionList.as_view(), name="operator-action-list"),
]
