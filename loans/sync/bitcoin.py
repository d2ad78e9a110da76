"""The bitcoin watcher (being written: see loans/sync/__init__.py)."""

from __future__ import annotations


def sync_bitcoin(**options: object) -> object:
    raise NotImplementedError("the bitcoin watcher is not written yet")
