"""The OpenAPI schema's cross-cutting answers: statuses that the shared machinery gives on every operation of a
kind, added once here (a drf-spectacular postprocessing hook) instead of in every view's ``extend_schema``.

- An operation with the ``Idempotency-Key`` header: 400 ``idempotency_key_invalid``, 409
  ``idempotency_key_in_use`` and 422 ``idempotency_key_reused`` (``loans.api.idempotency``).
- An operation with a request body: 413 ``request_too_large`` (``loans.api.errors``).
- An operation with a path parameter: 404 (an id the route does not match, e.g. negative, is answered by
  ``not_found``, in the error shape).
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views import defaults

from .errors import error_body
from .idempotency import HEADER

ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
DESCRIPTIONS = {
    "400": "The request is not valid (see the error's code).",
    "404": "No such thing, or not one the caller may see.",
    "409": "In conflict with the current state (see the error's code).",
    "422": "Refused (see the error's code), e.g. an Idempotency-Key used with another request.",
    "413": "The request body is too large.",
}


def cross_cutting_responses(result: dict, generator, request, public) -> dict:
    if "Error" not in result.get("components", {}).get("schemas", {}):
        return result
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            parameters = operation.get("parameters", [])
            statuses = []
            if any(p.get("in") == "header" and p.get("name") == HEADER for p in parameters):
                statuses += ["400", "409", "422"]
            if "requestBody" in operation:
                statuses.append("413")
            if any(p.get("in") == "path" for p in parameters):
                statuses.append("404")
            responses = operation.setdefault("responses", {})
            for code in statuses:
                responses.setdefault(code, {"content": ERROR, "description": DESCRIPTIONS[code]})
    return result


def not_found(request: HttpRequest, exception: Exception | None = None):
    """handler404: under /api/ the error shape (``not_found``), elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception)
