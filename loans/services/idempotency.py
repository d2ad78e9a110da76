"""Idempotency-Key records: the first response to a signed-in caller's POST, per caller and key.

The same key with the same request (method, path, body) gets the stored response again, whatever happened since;
the same key with another request is refused (``idempotency_key_reused``). Two racing first requests with one key:
the unique constraint lets one store its response; the other gets ``idempotency_key_in_use`` if it finished its
work first, so a client that retries sees the winner's response.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import IntegrityError, transaction

from ..errors import LoanServiceError
from ..models import IdempotencyRecord, User

IDEMPOTENCY_CODES = ("idempotency_key_reused", "idempotency_key_invalid", "idempotency_key_in_use")
MAX_KEY_LENGTH = 255


class IdempotencyError(LoanServiceError):
    code = "idempotency_key_reused"


def idempotency_request_hash(*, method: str, path: str, body: bytes) -> str:
    """SHA-256 over method, path and body: a body that parses the same but differs in bytes is another body."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def idempotency_key_check(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise IdempotencyError(
            f"an Idempotency-Key is 1 to {MAX_KEY_LENGTH} printable characters", code="idempotency_key_invalid"
        )


def idempotency_record_find(*, user: User, key: str, request_hash: str) -> IdempotencyRecord | None:
    """The stored first response for ``key``, or None; refuses the key reused with another request."""
    record = IdempotencyRecord.objects.filter(user=user, key=key).first()
    if record is not None and record.request_hash != request_hash:
        raise IdempotencyError(
            "this Idempotency-Key was used with another request; use a new key", code="idempotency_key_reused"
        )
    return record


def idempotency_record_store(
    *, user: User, key: str, request_hash: str, status_code: int, body: Any
) -> tuple[IdempotencyRecord, bool]:
    """Store the first response (``body`` JSON-ready); if a racing request stored one first, return that one.
    True when this call stored it."""
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                user=user, key=key, request_hash=request_hash, status_code=status_code, response_body=body
            )
            return record, True
    except IntegrityError:
        record = idempotency_record_find(user=user, key=key, request_hash=request_hash)
        if record is None:  # pragma: no cover - the row that conflicted was deleted in between
            raise IdempotencyError("this Idempotency-Key is in use", code="idempotency_key_in_use") from None
        return record, False
