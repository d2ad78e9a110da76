"""/api/v1/: the contract calls of both parties, prepared for a wallet or sent with the lender's server key;
wallet-reported transactions; the lender's queue.

- ``POST loans/{id}/evm-calls/{name}/`` ``{"send": false}``: the call ``name`` (``EVM_CALLS``) prepared for the
  caller's wallet (``prepared.wallet_request`` is EIP-1193 ``eth_sendTransaction``'s parameters); the lender's
  calls with ``"send": true`` are signed with the lender's stored key and sent (``transaction``). For
  ``accept-offer`` the calldata stops before pB: ``needs`` is ``"borrower_preimage"`` and the wallet appends pB.
- ``POST loans/{id}/evm-transactions/`` ``{"tx_hash"}``: a transaction the caller's wallet sent, recorded with its
  receipt as read now (it never moves the loan: the watcher does).
- ``GET lender/queue/``: the requested loans, oldest first, a page at a time (``LoanPagination``: count, next,
  previous, results), each loan of the page with its escrow check (lender and operators).
"""

from __future__ import annotations

from collections.abc import Callable

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..escrow import EscrowCheck, lender_queue_checks, lender_queue_requests
from ..models import EvmTransaction
from ..services import evm_calls
from .fields import SatsField, WeiField
from .idempotency import IDEMPOTENCY_PARAMETER, IdempotentPostMixin
from .pagination import LoanPagination
from .serializers import ErrorSerializer, LoanListSerializer
from .views import READ_ERRORS, _visible_loan

# name -> (service, the lender's call: may be sent with the server's key)
EVM_CALLS: dict[str, tuple[Callable[..., evm_calls.EvmCall], bool]] = {
    "request": (evm_calls.loan_request_prepare, False),
    "accept-offer": (evm_calls.loan_offer_accept_prepare, False),
    "repay": (evm_calls.loan_repayment_prepare, False),
    "cancel-request": (evm_calls.loan_request_cancel_prepare, False),
    "withdraw-repayment": (evm_calls.loan_repayment_withdraw_prepare, False),
    "commit-lender-hash": (evm_calls.lender_hash_commit, True),
    "offer": (evm_calls.loan_offer_extend, True),
    "accept-repayment": (evm_calls.loan_repayment_accept, True),
    "withdraw-offer": (evm_calls.loan_offer_withdraw, True),
    "mark-default": (evm_calls.loan_default_mark, True),
}
POST_ERRORS = {400: ErrorSerializer, 409: ErrorSerializer, 422: ErrorSerializer, 503: ErrorSerializer, **READ_ERRORS}


class EvmCallRequestSerializer(serializers.Serializer):
    send = serializers.BooleanField(
        default=False, help_text="The lender's calls only: sign with the lender's stored key and send now."
    )


class PreparedCallSerializer(serializers.Serializer):
    to = serializers.CharField()
    data = serializers.CharField(help_text="0x-prefixed calldata; for accept-offer without pB (see needs).")
    value_wei = WeiField()
    chain_id = serializers.IntegerField()
    gas = serializers.IntegerField(allow_null=True)
    method = serializers.CharField()
    needs = serializers.CharField(
        allow_null=True, help_text='"borrower_preimage": append pB (64 hex characters) to data before signing.'
    )
    wallet_request = serializers.DictField(
        child=serializers.CharField(), help_text="EIP-1193 eth_sendTransaction parameters (hex quantities)."
    )


class EvmTransactionSerializer(serializers.ModelSerializer):
    """``events``: [{name, log_index, args}]; a ``lender_preimage`` argument shows once the watcher has recorded
    pL on the loan (null before: the desk never hands out pL ahead of its own record of it)."""

    events = serializers.SerializerMethodField()

    class Meta:
        model = EvmTransaction
        fields = [
            "id",
            "loan",
            "chain_id",
            "tx_hash",
            "function",
            "sender",
            "nonce",
            "source",
            "status",
            "block_number",
            "events",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "array", "items": {"type": "object"}})
    def get_events(self, row: EvmTransaction) -> list:
        public = row.loan.lender_preimage
        return [
            {
                **event,
                "args": {
                    name: (None if name == "lender_preimage" and value != public else value)
                    for name, value in event.get("args", {}).items()
                },
            }
            for event in row.events
        ]


class EvmCallSerializer(serializers.Serializer):
    prepared = PreparedCallSerializer()
    transaction = EvmTransactionSerializer(allow_null=True)


class EvmTransactionReportSerializer(serializers.Serializer):
    tx_hash = serializers.CharField(help_text="0x and 64 hex characters.")


class EscrowCheckSerializer(serializers.Serializer):
    txid = serializers.CharField(allow_null=True)
    vout = serializers.IntegerField(allow_null=True)
    expected_sats = SatsField(allow_null=True)
    tip_height = serializers.IntegerField(allow_null=True)
    found = serializers.BooleanField()
    unspent = serializers.BooleanField()
    script_matches = serializers.BooleanField()
    value_sats = SatsField(allow_null=True)
    value_matches = serializers.BooleanField()
    confirmations = serializers.IntegerField()
    output_height = serializers.IntegerField(allow_null=True)
    exit_mature_height = serializers.IntegerField(allow_null=True)
    blocks_until_exit = serializers.IntegerField(allow_null=True)
    min_btc_blocks_left_for_offer = serializers.IntegerField(allow_null=True)
    has_room_for_offer = serializers.BooleanField()
    problems = serializers.ListField(child=serializers.CharField())
    ok = serializers.BooleanField()


class LenderQueueEntrySerializer(serializers.Serializer):
    loan = LoanListSerializer()
    escrow = EscrowCheckSerializer()


def _call_body(call: evm_calls.EvmCall) -> dict:
    prepared = call.prepared
    return {
        "prepared": {
            "to": prepared.to,
            "data": prepared.data,
            "value_wei": prepared.value,
            "chain_id": prepared.chain_id,
            "gas": prepared.gas,
            "method": prepared.method,
            "needs": call.needs,
            "wallet_request": prepared.as_wallet_request(call.sender),
        },
        "transaction": call.transaction,
    }


@extend_schema(
    request=EvmCallRequestSerializer,
    parameters=[
        IDEMPOTENCY_PARAMETER,
        OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(EVM_CALLS)),
    ],
    responses={200: EvmCallSerializer, **POST_ERRORS},
)
class LoanEvmCall(IdempotentPostMixin, APIView):
    """POST: one contract call of the loan, checked (role, the contract's state, the deadline for head + 1) and
    prepared for the caller's wallet. The borrower's: request, accept-offer (data without pB: ``needs``),
    repay, cancel-request, withdraw-repayment. The lender's (the owner's wallet, or ``"send": true`` for the
    server's key): commit-lender-hash, offer, accept-repayment (the server's key only: pL never leaves the server
    before it is on chain), withdraw-offer, mark-default."""

    serializer_class = EvmCallRequestSerializer

    def post(self, request: Request, pk: int, name: str) -> Response:
        if name not in EVM_CALLS:
            raise NotFound(f"no contract call named {name!r}")
        loan = _visible_loan(request, pk)
        serializer = EvmCallRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        send = serializer.validated_data["send"]
        service, lenders = EVM_CALLS[name]
        if send and not lenders:
            raise ValidationError({"send": ["only the lender's calls are sent by the server; sign this one"]})
        call = service(loan=loan, actor=request.user, send=send) if lenders else service(loan=loan, actor=request.user)
        return Response(EvmCallSerializer(_call_body(call)).data)


@extend_schema(
    request=EvmTransactionReportSerializer,
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={201: EvmTransactionSerializer, **POST_ERRORS},
)
class LoanEvmTransactions(IdempotentPostMixin, APIView):
    """POST (the loan's borrower, the lender or an operator): a transaction your wallet sent to the loan contract
    for this loan, by hash; recorded with its receipt as read now (pending without one). The same hash again
    updates it. It never moves the loan: the watcher does, once the event is final."""

    serializer_class = EvmTransactionReportSerializer

    def post(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        serializer = EvmTransactionReportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = evm_calls.evm_transaction_report(
            loan=loan, actor=request.user, tx_hash=serializer.validated_data["tx_hash"]
        )
        return Response(EvmTransactionSerializer(row).data, status=status.HTTP_201_CREATED)


def _escrow_body(check: EscrowCheck) -> dict:
    body = {name: getattr(check, name) for name in EscrowCheckSerializer().fields if name != "ok"}
    body["problems"] = list(check.problems)
    body["ok"] = check.ok
    return body


@extend_schema(responses={200: LenderQueueEntrySerializer(many=True), **READ_ERRORS})
class LenderQueue(GenericAPIView):
    """GET (the lender and operators): the requested loans of the newest deployment, oldest first, a page at a time
    (``?page=N``, ``?page_size=``: count, next, previous, results), each loan of the page with its escrow check on
    the Bitcoin node (found, unspent, script, value, confirmations, t_0, room for an offer; the ``problems`` are
    stable codes, none when it may be offered)."""

    pagination_class = LoanPagination
    serializer_class = LenderQueueEntrySerializer

    def get(self, request: Request) -> Response:
        loans = self.paginate_queryset(lender_queue_requests(actor=request.user))
        entries = lender_queue_checks(loans=loans)
        return self.get_paginated_response(
            LenderQueueEntrySerializer(
                [{"loan": loan, "escrow": _escrow_body(check)} for loan, check in entries], many=True
            ).data
        )


urlpatterns = [
    path("loans/<int:pk>/evm-calls/<str:name>/", LoanEvmCall.as_view(), name="loan-evm-call"),
    path("loans/<int:pk>/evm-transactions/", LoanEvmTransactions.as_view(), name="loan-evm-transactions"),
    path("lender/queue/", LenderQueue.as_view(), name="lender-queue"),
]
