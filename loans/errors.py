"""Refusals of the loan services: a stable code (what the API returns as ``code``) and a message.

A refused service changed nothing. The codes are part of the API contract: add new ones, never rename one.
"""

from __future__ import annotations


class LoanServiceError(Exception):
    """A service refused; ``code`` is stable and machine-readable, the message explains it to a person."""

    code = "refused"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.args[0]}"


class TransitionError(LoanServiceError):
    """A status change the state machine does not allow (``wrong_state``); nothing was written."""

    code = "wrong_state"


class ChainFactError(LoanServiceError):
    """A chain fact that contradicts what the loan says (e.g. an escrow output of another value)."""

    code = "chain_fact_mismatch"


class DeepReorgError(LoanServiceError):
    """A reorg removed a fact that was already final and applied: the confirmation depth was too small.

    Money may have moved on its strength (TX_1 broadcast after pB was seen), so nothing is rewound silently:
    the watcher stops for that chain and an operator decides.
    """

    code = "deep_reorg"
