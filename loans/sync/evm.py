"""The evm watcher (being written: see loans/sync/__init__.py)."""

from __future__ import annotations


def sync_evm(**options: object) -> object:
    raise NotImplementedError("the evm watcher is not written yet")
