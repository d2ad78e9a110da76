"""/api/v1/alerts/: the caller's own alerts (``loans.services.alerts``): deadlines that concern them and, for
operators, the desk's alarms. Anyone signed in sees only their own; another person's alert is 404, as one that does
not exist."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import ALERT_KINDS, Alert
from ..services.alerts import alert_mark_read, alerts_for
from .idempotency import IDEMPOTENCY_PARAMETER, IdempotentPostMixin
from .serializers import ErrorSerializer

BOOLEAN_VALUES = {"true": True, "1": True, "false": False, "0": False}


class AlertSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=ALERT_KINDS, read_only=True)
    loan = serializers.IntegerField(source="loan_id", read_only=True, allow_null=True)
    read = serializers.SerializerMethodField(help_text="The recipient marked it read (read_at is set).")

    class Meta:
        model = Alert
        fields = ["id", "kind", "key", "loan", "subject", "body", "created_at", "emailed_at", "read_at", "read"]
        read_only_fields = fields

    def get_read(self, alert: Alert) -> bool:
        return alert.read_at is not None


@extend_schema(
    parameters=[
        OpenApiParameter("unread", bool, description="true: only the alerts not marked read yet.", required=False)
    ],
    responses={200: AlertSerializer(many=True), **{code: ErrorSerializer for code in (400, 401, 404, 429)}},
)
class AlertList(generics.ListAPIView):
    """The caller's alerts, newest first (paginated); ``?unread=true`` for those not marked read."""

    serializer_class = AlertSerializer

    def get_queryset(self):
        raw = self.request.query_params.get("unread")
        if raw is not None and raw.lower() not in BOOLEAN_VALUES:
            raise ValidationError({"unread": ["must be true or false"]})
        unread = raw is not None and BOOLEAN_VALUES[raw.lower()]
        return alerts_for(user=self.request.user, unread=unread)


@extend_schema(
    request=None,
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={200: AlertSerializer, **{code: ErrorSerializer for code in (401, 403, 404, 429)}},
)
class AlertRead(IdempotentPostMixin, APIView):
    """POST: mark one of the caller's alerts read (again: no change, its first read time stays). Another person's
    alert is 404."""

    def post(self, request: Request, pk: int) -> Response:
        alert = get_object_or_404(alerts_for(user=request.user), pk=pk)
        return Response(AlertSerializer(alert_mark_read(alert=alert, user=request.user)).data)


urlpatterns = [
    path("alerts/", AlertList.as_view(), name="alert-list"),
    path("alerts/<int:pk>/read/", AlertRead.as_view(), name="alert-read"),
]
