"""The reads of /api/v1/: loans (the caller's own unless lender or operator), one loan with both chains' state,
its timeline, the parameters in force. Who sees what is ``loans.selectors.loans_visible_to`` (the same rule as
``loans.permissions.can_view_loan``); a loan the caller may not see is 404, as one that does not exist."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bitcoin.errors import BitcoinProtocolError
from bitcoin.fees import parse_fee_rate
from bitcoin.loan import fee_rate_text

from .. import selectors
from ..errors import LoanServiceError
from ..facts import loan_facts
from ..funding import (
    MARGIN_FEE_RATE_MULTIPLIER,
    FundingInstructions,
    current_fee_rate_sat_vb,
    loan_funding_instructions,
)
from ..models import Loan
from ..permissions import can_view_loan, require
from ..services import loan_create, presignature_upload
from ..services.presignatures import presignature_amounts
from .idempotency import IDEMPOTENCY_PARAMETER, IdempotentPostMixin
from .serializers import (
    BitcoinTransactionSerializer,
    ErrorSerializer,
    EvmEventSerializer,
    LoanCreatedSerializer,
    LoanCreateSerializer,
    LoanDetailSerializer,
    LoanListSerializer,
    ParameterSetSerializer,
    ParametersInForceSerializer,
    PresignatureSerializer,
    PresignatureUploadSerializer,
    StatusChangeSerializer,
    TimelineEntrySerializer,
)

FUNDING_FIELDS = [name for name in FundingInstructions.__dataclass_fields__ if name != "fee_rate_sat_vb"]
READ_ERRORS = {401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer, 429: ErrorSerializer}


def _visible_loan(request: Request, pk: int) -> Loan:
    loan = get_object_or_404(selectors.loans_visible_to(user=request.user), pk=pk)
    require(can_view_loan(request.user, loan), "you may not see this loan")
    return loan


@extend_schema_view(
    get=extend_schema(
        parameters=[OpenApiParameter("status", enum=Loan.Status.values, description="Only loans in this status.")],
        responses={200: LoanListSerializer(many=True), **READ_ERRORS},
    ),
    post=extend_schema(
        request=LoanCreateSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: LoanCreatedSerializer, 400: ErrorSerializer, 422: ErrorSerializer, **READ_ERRORS},
    ),
)
class LoanList(IdempotentPostMixin, generics.ListAPIView):
    """GET: loans, newest first: the caller's own, or every loan for the lender and operators.

    POST (an active borrower): create a draft loan and get its funding instructions (``loans.funding``): the
    escrow address and descriptor, the exact sats to send (collateral + origination fee + TX_1's miner fee at the
    fee rate, measured with TX_1's change output, + a margin enough for twice the rate, which returns to the
    borrower as change), a BIP-21 URI and the loan file. The fee rate is the request's, else the node's estimate
    within the desk's bounds, else the bounds' minimum (``fee_rate_source`` says which)."""

    def get_serializer_class(self):
        return LoanCreateSerializer if self.request.method == "POST" else LoanListSerializer

    def post(self, request: Request) -> Response:
        serializer = LoanCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        requested = data.get("fee_rate_sat_vb")
        if requested is not None:
            rate, source = requested, "requested"
        else:
            rate, source = current_fee_rate_sat_vb()
        loan = loan_create(
            borrower=request.user,
            amount_wei=data["amount_wei"],
            borrower_btc_pubkey=data["borrower_btc_pubkey"],
            borrower_hash=data["borrower_hash"],
            borrower_payout_address=data["borrower_payout_address"],
            fee_rate_sat_vb=rate,
        )
        funding = loan_funding_instructions(loan=loan, fee_rate_sat_vb=parse_fee_rate(rate), fee_rate_source=source)
        body = {
            "id": loan.pk,
            "status": loan.status,
            "amount_wei": loan.amount_wei,
            "bond_wei": loan.bond_wei,
            "repayment_wei": loan.repayment_wei,
            "parameters_version": loan.parameters.version,
            "funding": {
                **{name: getattr(funding, name) for name in FUNDING_FIELDS},
                "fee_rate_sat_vb": fee_rate_text(funding.fee_rate_sat_vb),
                "margin": f"enough for TX_1 at {MARGIN_FEE_RATE_MULTIPLIER}x the fee rate (at least the change "
                "output's dust threshold); it returns to the borrower as TX_1's change",
            },
        }
        return Response(LoanCreatedSerializer(body).data, status=status.HTTP_201_CREATED)

    def get_queryset(self):
        loans = selectors.loans_visible_to(user=self.request.user)
        status = self.request.query_params.get("status")
        if status is not None:
            if status not in Loan.Status.values:
                raise ValidationError({"status": [f"not a loan status: {status!r}"]})
            loans = loans.filter(status=status)
        return loans.order_by("-created_at", "-id")


@extend_schema(responses={200: LoanDetailSerializer, **READ_ERRORS})
class LoanDetail(APIView):
    """One loan with both chains' state: each EVM deadline as a block and the blocks left, each Bitcoin timelock
    as the height it matures at and the blocks left, seen from the watchers' followed blocks."""

    def get(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        deadlines = selectors.loan_deadlines(loan=loan)
        timelocks = selectors.loan_timelocks(loan=loan)
        transactions = list(loan.bitcoin_transactions.order_by("first_seen_at", "id"))
        data = {
            "loan": LoanListSerializer(loan).data,
            "evm": {
                "status": loan.status,
                "chain_id": loan.deployment.chain_id,
                "loan_contract_address": loan.deployment.loan_contract_address,
                "contract_loan_id": loan.contract_loan_id,
                "followed_block": deadlines.head,
                "requested_block": loan.requested_evm_block,
                "offered_block": loan.offered_evm_block,
                "activated_block": loan.activated_evm_block,
                "repayment_block": loan.repayment_evm_block,
                "offer_deadline": vars(deadlines.offer),
                "repayment_deadline": vars(deadlines.repayment),
                "acceptance_deadline": vars(deadlines.acceptance),
                "amount_wei": str(loan.amount_wei),
                "repayment_wei": str(loan.repayment_wei),
                "bond_wei": str(loan.bond_wei),
                "borrower_hash": loan.borrower_hash,
                "lender_hash": loan.lender_hash,
                "borrower_preimage": loan.borrower_preimage,
                "lender_preimage": loan.lender_preimage,
            },
            "bitcoin": {
                "status": loan.bitcoin_status,
                "followed_height": timelocks.tip_height,
                "borrower_btc_pubkey": loan.borrower_btc_pubkey,
                "lender_btc_pubkey": loan.lender_btc_pubkey,
                "escrow_txid": loan.escrow_txid,
                "escrow_vout": loan.escrow_vout,
                "escrow_sats": _amount(loan.escrow_sats),
                "collateral_sats": _amount(loan.collateral_sats),
                "origination_fee_sats": _amount(loan.origination_fee_sats),
                "escrow_height": timelocks.exit.output_height,
                "collateral_height": timelocks.capture.output_height,
                "exit_timelock": _timelock(timelocks.exit),
                "capture_timelock": _timelock(timelocks.capture),
                "transactions": BitcoinTransactionSerializer(
                    transactions, many=True, context={"btc_tip": timelocks.tip_height}
                ).data,
            },
            "terms": ParameterSetSerializer(loan).data,
            "next_actions": [
                _next_action(loan, action)
                for action in selectors.loan_next_actions(
                    loan=loan, user=request.user, deadlines=deadlines, timelocks=timelocks
                )
            ],
        }
        return Response(data)


# Where each next step is prepared or done (a payment to the escrow has no endpoint: any wallet pays the address).
_NEXT_ACTION_METHODS = {"release-psbt": "GET", "exit-psbt": "GET"}


def _next_action(loan: Loan, action: selectors.NextAction) -> dict:
    if action.kind == "payment":
        method, endpoint = None, None
    elif action.kind == "evm_call":
        method, endpoint = "POST", reverse("api:loan-evm-call", args=[loan.pk, action.name])
    else:
        method, endpoint = (
            _NEXT_ACTION_METHODS.get(action.name, "POST"),
            reverse(f"api:loan-{action.name}", args=[loan.pk]),
        )
    return {
        "name": action.name,
        "party": action.party,
        "kind": action.kind,
        "open": action.open,
        "opens": _moment(action.opens),
        "closes": _moment(action.closes),
        "method": method,
        "endpoint": endpoint,
    }


def _moment(moment: selectors.Deadline | selectors.TimelockPath | None) -> dict | None:
    if moment is None:
        return None
    if isinstance(moment, selectors.TimelockPath):
        return {
            "chain": "bitcoin",
            "block": moment.mature_height,
            "blocks_remaining": moment.blocks_remaining,
            "estimated_at": moment.estimated_mature_at,
        }
    return {
        "chain": "evm",
        "block": moment.block,
        "blocks_remaining": moment.blocks_remaining,
        "estimated_at": moment.estimated_at,
    }


def _amount(value: int | None) -> str | None:
    return None if value is None else str(value)


def _timelock(path: selectors.TimelockPath) -> dict:
    return {
        "timelock_blocks": path.timelock_blocks,
        "output_height": path.output_height,
        "mature_height": path.mature_height,
        "blocks_remaining": path.blocks_remaining,
        "estimated_mature_at": path.estimated_mature_at,
    }


_ENTRY_SERIALIZERS = {
    "status_change": StatusChangeSerializer,
    "evm_event": EvmEventSerializer,
    "bitcoin_transaction": BitcoinTransactionSerializer,
}


@extend_schema(responses={200: TimelineEntrySerializer(many=True), **READ_ERRORS})
class LoanTimeline(APIView):
    """What happened to the loan, oldest first: status changes (the audit trail, both sides), contract events and
    Bitcoin transactions. Each entry has ``at``, ``kind`` and the item under the key named by ``kind``."""

    def get(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        btc_tip = selectors.bitcoin_followed_height()
        entries = [
            {
                "at": entry.at,
                "kind": entry.kind,
                entry.kind: _ENTRY_SERIALIZERS[entry.kind](entry.item, context={"btc_tip": btc_tip}).data,
            }
            for entry in selectors.loan_timeline(loan=loan)
        ]
        return Response(entries)


@extend_schema(
    request=PresignatureUploadSerializer,
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={
        201: PresignatureSerializer,
        400: ErrorSerializer,
        409: ErrorSerializer,
        422: ErrorSerializer,
        **READ_ERRORS,
    },
)
class LoanPresignature(IdempotentPostMixin, APIView):
    """POST (the loan's borrower): upload B's TX_1 pre-signature, ``{"psbt": base64}`` or ``{"signature": hex,
    "transaction": hex}``, verified in full against the loan's own facts (``bitcoin.presignature``); the loan must
    be requested, with hL committed and its escrow confirmed. The same TX_1 again returns the stored one."""

    serializer_class = PresignatureUploadSerializer

    def post(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        serializer = PresignatureUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        row = presignature_upload(
            loan=loan,
            actor=request.user,
            psbt=data.get("psbt"),
            signature=data.get("signature"),
            transaction=data.get("transaction"),
        )
        verified = presignature_amounts(signature=row)
        body = {
            "txid": row.txid,
            "form": row.form,
            "origination_fee_sats": verified.origination_fee_sats,
            "collateral_sats": verified.collateral_sats,
            "change_sats": verified.change_sats,
            "miner_fee_sats": verified.miner_fee_sats,
            "fee_rate_sat_vb": fee_rate_text(verified.fee_rate_sat_vb),
            "verified_at": row.verified_at,
        }
        return Response(PresignatureSerializer(body).data, status=status.HTTP_201_CREATED)


@extend_schema(
    responses={
        200: OpenApiResponse(
            OpenApiTypes.OBJECT,
            description="The loan file (bitcoin.loan.LoanFacts as JSON): every fact a signer checks against, with "
            "the derived addresses and descriptors.",
        ),
        422: ErrorSerializer,
        **READ_ERRORS,
    }
)
class LoanFile(APIView):
    """The loan's current loan file, for the borrower's own signing tool (`python -m bitcoin ... --loan FILE`, the
    browser's signer): the facts every transaction of the loan is checked against before anybody signs it. It
    grows as the loan does: hL once committed, the escrow outpoint and value once the escrow is confirmed (from the
    chain, by the watcher)."""

    def get(self, request: Request, pk: int) -> Response:
        loan = _visible_loan(request, pk)
        try:
            facts = loan_facts(loan=loan)
        except BitcoinProtocolError as error:
            raise LoanServiceError(
                f"loan {loan.pk}'s facts make no loan file: {error}", code="invalid_loan_terms"
            ) from None
        return Response(facts.to_json_dict())


@extend_schema(responses={200: ParametersInForceSerializer, **READ_ERRORS})
class ParametersInForce(APIView):
    """The protocol parameters version new loans take (amounts in wei as decimal strings, durations in blocks)."""

    def get(self, request: Request) -> Response:
        parameters = selectors.parameters_in_force()
        if parameters is None:
            raise NotFound("no protocol parameters have been set yet")
        return Response(
            {
                "version": parameters.version,
                "lender_btc_pubkey": parameters.lender_btc_pubkey,
                "created_at": parameters.created_at,
                "note": parameters.note,
                "terms": ParameterSetSerializer(parameters).data,
            }
        )
