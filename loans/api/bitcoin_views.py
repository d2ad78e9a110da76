"""/api/v1/: the Bitcoin actions: pre-signed ladders, TX_release and TX_exit PSBTs, broadcasts, the lender's
TX_1 and TX_capture, an operator's retry. Thin views over ``loans.services.bitcoin_actions``; a loan the caller
may not see is 404, one it sees but may not act on 403."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bitcoin.loan import fee_rate_text

from .. import selectors
from ..funding import current_fee_rate_sat_vb
from ..models import BitcoinBroadcast, BorrowerSignature
from ..permissions import can_view_loan, require
from ..services.bitcoin_actions import (
    MAX_LADDER_RUNGS,
    PreparedPsbt,
    bitcoin_broadcast_retry,
    bitcoin_transaction_broadcast,
    collateral_capture,
    collateral_lock,
    exit_psbt_prepare,
    ladder_rung_amounts,
    presigned_ladder_upload,
    release_psbt_prepare,
)
from .fields import SatsField
from .idempotency import IDEMPOTENCY_PARAMETER, IdempotentPostMixin
from .serializers import ErrorSerializer
from .views import READ_ERRORS, _visible_loan

WRITE_ERRORS = {400: ErrorSerializer, 409: ErrorSerializer, 422: ErrorSerializer, **READ_ERRORS}


def _psbt_or_tx() -> serializers.CharField:
    return serializers.CharField(max_length=20_000)


# ------------------------------------------------------------------------------------------------ serializers


class LadderUploadSerializer(serializers.Serializer):
    """B's pre-signed rungs: ``release`` PSBTs (base64) spending output 1 of a pre-signed TX_1, ``exit`` PSBTs or
    finalized TX_exit (hex). At most 16 of each; all are verified or none is stored."""

    release = serializers.ListField(child=_psbt_or_tx(), required=False, default=list, max_length=MAX_LADDER_RUNGS)
    exit = serializers.ListField(child=_psbt_or_tx(), required=False, default=list, max_length=MAX_LADDER_RUNGS)


class LadderRungSerializer(serializers.Serializer):
    """A stored, verified rung of B's ladders."""

    kind = serializers.ChoiceField(choices=[BorrowerSignature.Kind.TX_RELEASE, BorrowerSignature.Kind.TX_EXIT])
    txid = serializers.CharField()
    form = serializers.ChoiceField(choices=[BorrowerSignature.Form.PSBT, BorrowerSignature.Form.TRANSACTION])
    fee_sats = SatsField(help_text="The miner fee.")
    fee_rate_sat_vb = serializers.CharField(help_text="Exact decimal, or n/d.")
    payout_sats = SatsField(help_text="The one output, to the borrower's payout address.")


class PreparedPsbtSerializer(serializers.Serializer):
    """An unsigned TX_release or TX_exit for the borrower's signer (base64 PSBT, BIP-371 fields)."""

    psbt = serializers.CharField()
    txid = serializers.CharField()
    fee_sats = SatsField()
    payout_sats = SatsField(help_text="The one output, to the borrower's payout address.")
    fee_rate_sat_vb = serializers.CharField(help_text="Exact decimal, or n/d.")


class BroadcastRequestSerializer(serializers.Serializer):
    transaction = serializers.CharField(max_length=200_000, help_text="The complete signed transaction (hex).")


class CaptureRequestSerializer(serializers.Serializer):
    fee_rate_sat_vb = serializers.CharField(
        max_length=32, required=False, help_text="sat/vB as a decimal string; default: the node's estimate."
    )


class EmptyRequestSerializer(serializers.Serializer):
    """No fields."""


class BitcoinBroadcastSerializer(serializers.ModelSerializer):
    """What the platform handed to its Bitcoin node; ``accepted_at`` null: not accepted yet (see ``last_error``)."""

    class Meta:
        model = BitcoinBroadcast
        fields = ["id", "kind", "txid", "attempts", "accepted_at", "last_attempt_at", "last_error"]
        read_only_fields = fields


def _rung(row: BorrowerSignature) -> dict:
    prepared = ladder_rung_amounts(signature=row)
    return {
        "kind": row.kind,
        "txid": row.txid,
        "form": row.form,
        "fee_sats": prepared.fee_sats,
        "fee_rate_sat_vb": fee_rate_text(prepared.fee_rate),
        "payout_sats": prepared.tx.outputs[0].value,
    }


def _prepared(result: PreparedPsbt) -> dict:
    return {
        "psbt": result.psbt.to_base64(),
        "txid": result.txid,
        "fee_sats": result.fee_sats,
        "payout_sats": result.payout_sats,
        "fee_rate_sat_vb": fee_rate_text(result.fee_rate_sat_vb),
    }


FEE_RATE_PARAMETER = OpenApiParameter(
    "fee_rate_sat_vb", str, description="sat/vB as a decimal string; default: the node's estimate within the bounds."
)


def _query_fee_rate(request: Request) -> object:
    given = request.query_params.get("fee_rate_sat_vb")
    return given if given else current_fee_rate_sat_vb()[0]


# ------------------------------------------------------------------------------------------------ views


@extend_schema(
    request=LadderUploadSerializer,
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={201: LadderRungSerializer(many=True), **WRITE_ERRORS},
)
class LoanLadders(IdempotentPostMixin, APIView):
    """POST (the loan's borrower): B's pre-signed TX_release and TX_exit ladders, each rung verified in full
    against the loan's facts; the rungs stored (the same rung again: its stored row)."""

    serializer_class = LadderUploadSerializer

    def post(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        serializer = LadderUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rows = presigned_ladder_upload(
            loan=loan,
            actor=request.user,
            release=serializer.validated_data["release"],
            exit=serializer.validated_data["exit"],
        )
        return Response(LadderRungSerializer([_rung(row) for row in rows], many=True).data, status=201)


@extend_schema(parameters=[FEE_RATE_PARAMETER], responses={200: PreparedPsbtSerializer, **WRITE_ERRORS})
class LoanReleasePsbt(APIView):
    """GET (the loan's borrower, once pL is public and TX_1 confirmed): the unsigned TX_release as a PSBT with pL
    (PSBT_IN_SHA256) and the borrower's tap BIP-32 derivation, to sign elsewhere."""

    def get(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        result = release_psbt_prepare(loan=loan, actor=request.user, fee_rate_sat_vb=_query_fee_rate(request))
        return Response(PreparedPsbtSerializer(_prepared(result)).data)


@extend_schema(parameters=[FEE_RATE_PARAMETER], responses={200: PreparedPsbtSerializer, **WRITE_ERRORS})
class LoanExitPsbt(APIView):
    """GET (the loan's borrower, escrow confirmed and t_0 matured, the escrow not owed to TX_1): the unsigned
    TX_exit as a PSBT, to sign elsewhere."""

    def get(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        result = exit_psbt_prepare(loan=loan, actor=request.user, fee_rate_sat_vb=_query_fee_rate(request))
        return Response(PreparedPsbtSerializer(_prepared(result)).data)


@extend_schema(
    request=BroadcastRequestSerializer,
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={201: BitcoinBroadcastSerializer, **WRITE_ERRORS},
)
class LoanBitcoinBroadcasts(IdempotentPostMixin, APIView):
    """POST: broadcast a complete transaction of this loan (the borrower TX_exit and TX_release, the lender or an
    operator TX_1 and TX_capture). 201 with the row; ``accepted_at`` null when the node was unreachable."""

    serializer_class = BroadcastRequestSerializer

    def post(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        serializer = BroadcastRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = bitcoin_transaction_broadcast(
            loan=loan, actor=request.user, transaction_hex=serializer.validated_data["transaction"]
        )
        return Response(BitcoinBroadcastSerializer(row).data, status=status.HTTP_201_CREATED)


@extend_schema(
    request=EmptyRequestSerializer,
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={201: BitcoinBroadcastSerializer, **WRITE_ERRORS},
)
class LoanCollateralLock(IdempotentPostMixin, APIView):
    """POST (the lender or an operator, pB public): TX_1 from the borrower's newest verified pre-signature, signed
    with the lender's stored key, completed with pB and broadcast."""

    serializer_class = EmptyRequestSerializer

    def post(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        row = collateral_lock(loan=loan, actor=request.user)
        return Response(BitcoinBroadcastSerializer(row).data, status=status.HTTP_201_CREATED)


@extend_schema(
    request=CaptureRequestSerializer,
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={201: BitcoinBroadcastSerializer, **WRITE_ERRORS},
)
class LoanCollateralCapture(IdempotentPostMixin, APIView):
    """POST (the lender or an operator, the loan defaulted or its repayment refunded, t_1 matured): TX_capture,
    signed with the lender's stored key and broadcast."""

    serializer_class = CaptureRequestSerializer

    def post(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        serializer = CaptureRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = collateral_capture(
            loan=loan, actor=request.user, fee_rate_sat_vb=serializer.validated_data.get("fee_rate_sat_vb")
        )
        return Response(BitcoinBroadcastSerializer(row).data, status=status.HTTP_201_CREATED)


@extend_schema(
    request=EmptyRequestSerializer,
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={200: BitcoinBroadcastSerializer, **WRITE_ERRORS},
)
class BitcoinBroadcastRetry(IdempotentPostMixin, APIView):
    """POST (operators): send a stored broadcast again; the outcome is on the row and in the operators' audit."""

    serializer_class = EmptyRequestSerializer

    def post(self, request: Request, pk: int) -> Response:
        broadcast = get_object_or_404(
            BitcoinBroadcast.objects.filter(loan__in=selectors.loans_visible_to(user=request.user)), pk=pk
        )
        require(can_view_loan(request.user, broadcast.loan), "you may not see this loan")
        row = bitcoin_broadcast_retry(broadcast=broadcast, actor=request.user)
        return Response(BitcoinBroadcastSerializer(row).data)


urlpatterns = [
    path("loans/<int:pk>/ladders/", LoanLadders.as_view(), name="loan-ladders"),
    path("loans/<int:pk>/release-psbt/", LoanReleasePsbt.as_view(), name="loan-release-psbt"),
    path("loans/<int:pk>/exit-psbt/", LoanExitPsbt.as_view(), name="loan-exit-psbt"),
    path("loans/<int:pk>/bitcoin-broadcasts/", LoanBitcoinBroadcasts.as_view(), name="loan-bitcoin-broadcasts"),
    path("loans/<int:pk>/collateral-lock/", LoanCollateralLock.as_view(), name="loan-collateral-lock"),
    path("loans/<int:pk>/collateral-capture/", LoanCollateralCapture.as_view(), name="loan-collateral-capture"),
    path("bitcoin-broadcasts/<int:pk>/retry/", BitcoinBroadcastRetry.as_view(), name="bitcoin-broadcast-retry"),
]
