"""Idempotency-Key on every POST: ``IdempotentPostMixin``, which every API view that accepts POST inherits.

A signed-in caller's POST with ``Idempotency-Key: <key>``: the first response (anything but a 5xx or a 429) is
stored with a hash of method, path and body; the same key and body get that response again (header
``Idempotent-Replayed: true``), whatever happened since; the same key with another request is refused with 422
``idempotency_key_reused``. Anonymous POSTs (the nonce and the sign-in) ignore the key: their answers carry a
session or a token, which must never be handed to whoever repeats the request, and a sign-in message is
single-use anyway.
"""

from __future__ import annotations

import json

from drf_spectacular.utils import OpenApiParameter
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from ..services.idempotency import (
    idempotency_key_check,
    idempotency_record_find,
    idempotency_record_store,
    idempotency_request_hash,
)

HEADER = "Idempotency-Key"
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    name=HEADER,
    location=OpenApiParameter.HEADER,
    required=False,
    type=str,
    description="Same key and body: the first response again. Same key, another body: 422 idempotency_key_reused.",
)


class _Replay(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class IdempotentPostMixin:
    """Mix into an APIView before it: stores and replays POST responses per (user, Idempotency-Key)."""

    def initial(self, request, *args, **kwargs):
        self._idempotency = None
        super().initial(request, *args, **kwargs)  # authentication, permissions, throttles first
        key = request.headers.get(HEADER)
        if request.method != "POST" or key is None or not request.user.is_authenticated:
            return
        idempotency_key_check(key)
        request_hash = idempotency_request_hash(
            method=request.method, path=request.get_full_path(), body=request._request.body
        )
        record = idempotency_record_find(user=request.user, key=key, request_hash=request_hash)
        if record is not None:
            response = Response(record.response_body, status=record.status_code)
            response["Idempotent-Replayed"] = "true"
            raise _Replay(response)
        self._idempotency = (key, request_hash)

    def handle_exception(self, exc):
        if isinstance(exc, _Replay):
            return exc.response
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        pending = getattr(self, "_idempotency", None)
        if pending is not None and response.status_code < 500 and response.status_code != 429:
            key, request_hash = pending
            self._idempotency = None
            data = getattr(response, "data", None)
            record, stored = idempotency_record_store(
                user=request.user,
                key=key,
                request_hash=request_hash,
                status_code=response.status_code,
                body=None if data is None else json.loads(JSONRenderer().render(data)),
            )
            if not stored:
                response = Response(record.response_body, status=record.status_code)  # a racing twin stored first
                response["Idempotent-Replayed"] = "true"
        return super().finalize_response(request, response, *args, **kwargs)
