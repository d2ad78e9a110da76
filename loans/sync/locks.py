"""One watcher run per chain at a time, across processes and machines: a PostgreSQL advisory lock.

The lock is held for the run and released when it ends, or when its connection dies (a killed worker never
leaves it behind). On SQLite (a newcomer's first run, one process) a process-wide lock stands in.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

_LOCAL_LOCKS: dict[str, threading.Lock] = {}


def _key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name``."""
    return zlib.crc32(f"loans.sync:{name}".encode()) - 2**31


@contextmanager
def exclusive_run(name: str) -> Iterator[bool]:
    """``with exclusive_run("evm") as acquired:`` — ``acquired`` is False when another run holds it (skip)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [_key(name)])
            acquired = bool(cursor.fetchone()[0])
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [_key(name)])
        return
    lock = _LOCAL_LOCKS.setdefault(name, threading.Lock())
    acquired = lock.acquire(blocking=False)
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()
