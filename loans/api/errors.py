"""Every API error has one shape, ``{"code", "message", "fields"}``; ``code`` is stable and documented.

``fields`` maps a request field to its messages (validation errors only, otherwise ``{}``). The services' codes
(``LoanServiceError.code``, ``BorrowerStepRefused.reason``) pass through unchanged. docs/api-errors.md lists every
code; ``ERROR_CODES`` below is that list, and a test keeps the two in step.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from evm.errors import BorrowerStepRefused
from evm.terms import REFUSAL_REASONS

from ..errors import LoanServiceError
from ..services.accounts import SIGN_IN_CODES, SignInRefused
from ..services.bitcoin_actions import (
    BROADCAST_CODES,
    BROADCAST_RETRY_CODES,
    COLLATERAL_CAPTURE_CODES,
    COLLATERAL_LOCK_CODES,
    EXIT_PSBT_CODES,
    LADDER_UPLOAD_CODES,
    RELEASE_PSBT_CODES,
)
from ..services.borrower_actions import LOAN_CREATE_CODES
from ..services.evm_calls import EVM_CALL_CODES
from ..services.idempotency import IDEMPOTENCY_CODES, IdempotencyError
from ..services.operators import OPERATOR_CODES
from ..services.presignatures import PRESIGNATURE_UPLOAD_CODES

# DRF's own exceptions, by class, to our codes (a subclass is found by its nearest listed base).
_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ValidationError: "invalid",
    exceptions.ParseError: "malformed_request",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}

# HTTP status of a service refusal: a conflict with the loan's current state is 409, a refused request 422.
SERVICE_STATUS: dict[str, int] = {
    "wrong_state": status.HTTP_409_CONFLICT,
    "deep_reorg": status.HTTP_409_CONFLICT,
    "lender_hash_missing": status.HTTP_409_CONFLICT,
    "escrow_not_confirmed": status.HTTP_409_CONFLICT,
    "idempotency_key_in_use": status.HTTP_409_CONFLICT,
    "idempotency_key_invalid": status.HTTP_400_BAD_REQUEST,
    "account_disabled": status.HTTP_403_FORBIDDEN,
    "not_on_chain": status.HTTP_409_CONFLICT,
    "too_early": status.HTTP_409_CONFLICT,
    "too_late": status.HTTP_409_CONFLICT,
    "lender_hash_committed": status.HTTP_409_CONFLICT,
    "presignature_missing": status.HTTP_409_CONFLICT,
    "evm_node_unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
    "bitcoin_node_unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
    "already_lender": status.HTTP_409_CONFLICT,
    "new_loans_already_paused": status.HTTP_409_CONFLICT,
    "new_loans_not_paused": status.HTTP_409_CONFLICT,
    "new_loans_paused": status.HTTP_409_CONFLICT,
    "escrow_owed_to_lender": status.HTTP_409_CONFLICT,
    "collateral_not_locked": status.HTTP_409_CONFLICT,
    "lender_preimage_unknown": status.HTTP_409_CONFLICT,
    "borrower_preimage_unknown": status.HTTP_409_CONFLICT,
    "tx1_not_presigned": status.HTTP_409_CONFLICT,
    "no_presignature": status.HTTP_409_CONFLICT,
    **{code: status.HTTP_401_UNAUTHORIZED for code in SIGN_IN_CODES if code != "account_disabled"},
}

GENERIC_CODES: tuple[str, ...] = (*_DRF_CODES.values(), "request_too_large", "server_error")
SERVICE_CODES: tuple[str, ...] = (
    "refused",
    "wrong_state",
    "chain_fact_mismatch",
    "deep_reorg",
    "escrow_value_mismatch",
    "not_confirmed",
    "escrow_mismatch",
    "lender_hash_elsewhere",
    "no_lender_preimage",
    "lender_preimage_not_due",
    "lender_secret_mismatch",
    "invalid_key",
    "not_a_lender",
    "key_exists",
    "no_lender_key",
    # each action's codes, listed once by its service (duplicates of the above are dropped below)
    *LOAN_CREATE_CODES,
    *PRESIGNATURE_UPLOAD_CODES,
    *LADDER_UPLOAD_CODES,
    *RELEASE_PSBT_CODES,
    *EXIT_PSBT_CODES,
    *BROADCAST_CODES,
    *COLLATERAL_LOCK_CODES,
    *COLLATERAL_CAPTURE_CODES,
    *BROADCAST_RETRY_CODES,
    *EVM_CALL_CODES,
    *OPERATOR_CODES,
)
SERVICE_CODES = tuple(dict.fromkeys(SERVICE_CODES))
ERROR_CODES: tuple[str, ...] = (
    *GENERIC_CODES,
    *SERVICE_CODES,
    *SIGN_IN_CODES,
    *IDEMPOTENCY_CODES,
    *REFUSAL_REASONS,
)


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "fields": fields or {}}


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested validation detail as ``{"field" or "field.sub" or "field.0": [messages]}``."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for name, value in detail.items():
            key = f"{prefix}.{name}" if prefix else str(name)
            out.update(_flatten(value, "" if key == "non_field_errors" and not prefix else key))
        return out
    if isinstance(detail, list) and detail and all(not isinstance(item, (dict, list)) for item in detail):
        return {prefix or "non_field_errors": [str(item) for item in detail]}
    if isinstance(detail, list):
        out = {}
        for index, value in enumerate(detail):
            out.update(_flatten(value, f"{prefix}.{index}" if prefix else str(index)))
        return out
    return {prefix or "non_field_errors": [str(detail)]}


def _drf_code(exc: exceptions.APIException) -> str:
    for klass in type(exc).__mro__:
        if klass in _DRF_CODES:
            return _DRF_CODES[klass]
    return "error"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error, whatever raised it, as ``{code, message, fields}``."""
    if isinstance(exc, (LoanServiceError, IdempotencyError, SignInRefused)):
        return Response(
            error_body(exc.code, str(exc.args[0])),
            status=SERVICE_STATUS.get(exc.code, status.HTTP_422_UNPROCESSABLE_ENTITY),
        )
    if isinstance(exc, BorrowerStepRefused):
        fields = {name: [str(exc.args[0])] for name in exc.fields}
        return Response(error_body(exc.reason, str(exc.args[0]), fields), status=status.HTTP_422_UNPROCESSABLE_ENTITY)
    if isinstance(exc, RequestDataTooBig):  # Django's answer would be an HTML 400 page
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            error_body("request_too_large", f"The request body is larger than {limit} bytes."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django's 500 page and the error log, never a traceback in JSON
    assert isinstance(exc, exceptions.APIException)
    code = _drf_code(exc)
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body(code, "The request is not valid; see fields.", _flatten(exc.detail))
    elif isinstance(exc, exceptions.Throttled):
        response.data = error_body(
            code, f"Too many requests; retry in {exc.wait:.0f} s." if exc.wait else str(exc.detail)
        )
    else:
        response.data = error_body(code, str(exc.detail))
    return response
