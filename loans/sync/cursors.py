"""What both watchers do with their cursor around a run: back off after failures, record a failure, reset."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import DatabaseError, transaction
from django.utils import timezone

from ..models import ChainCursor

logger = logging.getLogger(__name__)

#: Backoff after a failed run: min(2**failures, this) seconds.
MAX_BACKOFF_SECONDS = 300


def backing_off(cursor: ChainCursor | None) -> str:
    """Why a run must wait (empty when it may run): the backoff of earlier failures is not over."""
    if cursor is None or cursor.retry_after is None or cursor.retry_after <= timezone.now():
        return ""
    return f"backing off until {cursor.retry_after.isoformat()} after {cursor.failures} failures ({cursor.last_error})"


def record_failure(chain: str, error: BaseException) -> ChainCursor | None:
    """failures + 1, last_error, retry_after = now + min(2**failures, MAX_BACKOFF_SECONDS) s; logged. None when the
    chain has no cursor yet (a first run failed before it stored one: nothing to back off from)."""
    cursor = None
    try:
        with transaction.atomic():
            cursor = ChainCursor.objects.select_for_update().filter(chain=chain).first()
            if cursor is not None:
                cursor.failures += 1
                cursor.last_error = f"{type(error).__name__}: {error}"[:2000]
                cursor.retry_after = timezone.now() + timedelta(seconds=min(2**cursor.failures, MAX_BACKOFF_SECONDS))
                cursor.save(update_fields=["failures", "last_error", "retry_after", "updated_at"])
    except DatabaseError:
        logger.exception("could not record the %s watcher's failure", chain)
    logger.error(
        "%s watcher run failed (%s in a row, next try after %s): %s",
        chain,
        None if cursor is None else cursor.failures,
        None if cursor is None else cursor.retry_after,
        error,
    )
    return cursor
