"""Structured logs: every line about a loan carries its id, and production writes one JSON object a line.

A log call names its loan with ``extra={"loan_id": loan.pk}``; code that works on one loan for a while (a watcher's
per-loan step, an automation pass) may instead wrap the work in ``loan_context(loan.pk)``, and every line logged
inside it, by any module or library, carries that id. ``LoanContextFilter`` (on the console handler, see
``settings.LOGGING``) fills ``record.loan_id`` from the context when the call did not name one; ``JsonFormatter``
writes the record as one JSON line when ``LOG_FORMAT=json``.

No Django imports here: ``settings.LOGGING`` loads this module before the apps are ready.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_loan_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("loan_id", default=None)

# The attributes every LogRecord has (plus those the formatter itself adds): the rest came in through ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def current_loan_id() -> int | None:
    """The loan the code running now works on (``loan_context``), if any."""
    return _loan_id.get()


@contextmanager
def loan_context(loan_id: int | None) -> Iterator[None]:
    """Every line logged inside carries ``loan_id`` (unless the call names another). Nests; ``None`` clears it;
    the previous value comes back on exit, also when the body raises. Follows asyncio tasks and threads started
    with ``contextvars.copy_context()`` like any context variable."""
    token = _loan_id.set(loan_id)
    try:
        yield
    finally:
        _loan_id.reset(token)


class LoanContextFilter(logging.Filter):
    """Gives every record a ``loan_id`` attribute: the one its call passed in ``extra``, else the context's (or
    None). Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "loan_id", None) is None:
            record.loan_id = _loan_id.get()
        return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` (%-arguments applied),
    ``loan_id`` (null when the line is about no loan), ``exception`` / ``stack`` when there is one, and whatever
    else the call passed in ``extra`` (non-JSON values as their ``str``). The keys above win over same-named extras.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            key: _jsonable(value) for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES
        }
        line.update(
            time=datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(timespec="milliseconds"),
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
            loan_id=_jsonable(getattr(record, "loan_id", None)),
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))
