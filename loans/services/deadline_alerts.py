"""Deadline and operator alerts: one pass (``deadline_alerts_run``) that tells each party about a deadline before it
passes, and operators about a node down, a watcher behind or an automation failing.

Every alert goes through ``loans.services.alerts.alert_create``: the key names the occasion, so a person gets one
alert per occasion however often the pass runs (the worker runs it every minute).

**Deadlines** (a loan's, as the watchers' followed heights show them: ``loans.selectors.loan_deadlines`` and
``loan_timelocks``; never the node's head, so nothing is announced from blocks the watcher has not checked). An
alert is made once the deadline is within the warning window, ``settings.ALERT_WARNING_EVM_BLOCKS`` for the EVM
deadlines and ``ALERT_WARNING_BTC_BLOCKS`` for the Bitcoin timelocks. The party who must act *before* the deadline
is told only while it still can (the next block is still before it); the party who *may* act at it is told from the
window on, also after it passed (the loan still waits for them). Key ``<kind>:<loan id>:<block or height>``: a reorg
that moves a Bitcoin output's height moves the maturity, and the parties hear of the new height.

===================  =========================================  ==========================================
deadline (kind)      borrower                                   lender
===================  =========================================  ==========================================
offer_expiry         offered: accept before the accept cutoff   offered: may withdraw the offer at the deadline
repayment_due        active: repay before activation + t_D      active: may mark the loan defaulted at it
acceptance_deadline  repayment in progress: may take the        repayment in progress: accept the repayment
                     repayment and the bond back at it          before it
exit_maturity (t_0)  escrow confirmed, not owed to the lender:  requested: offer while the escrow has room
                     TX_exit may be mined from this height      (``offer_escrow_min_btc_blocks_left``)
capture_maturity     (not told)                                 defaulted or refunded with TX_1 confirmed:
(t_1)                                                           TX_capture may be mined from this height
===================  =========================================  ==========================================

Only the parties: the loan's (active) borrower, and its lender, or every active lender user while the loan names
none (or its lender is no longer active). Nobody on a closed loan, nobody else.

**Operators** (every active operator and superuser), one alert per occasion:
- ``node_unreachable``: a watcher's cursor has failed ``ALERT_NODE_FAILURES`` runs in a row. Key
  ``node_unreachable:<chain>:<followed block>``: the block the watcher stands on while its node is down names the
  streak (a watcher that runs again moves on with the chain; a node that flaps within one block is one occasion).
- ``watcher_lag``: ``tip_number - block_number`` above ``ALERT_WATCHER_LAG_EVM_BLOCKS`` / ``_BTC_BLOCKS``. Key
  ``watcher_lag:<chain>:<tip when first seen>``; the same episode while the watcher has not come within the limit
  of that tip (until then it cannot have caught up in between, heads only grow), so a watcher that stays behind is
  reminded of at most once per the distance it had to cover, not every minute.
- ``automation_failed``: an automation with ``consecutive_failures >= 2``. Key
  ``automation_failed:<automation id>:<failure_streaks>``: the same for the whole streak (a streak starts when a
  failure follows a success or the first run; ``Automation.failure_counts``); a later streak is another.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db.models import Q

from ..logging import loan_context
from ..models import Alert, Automation, ChainCursor, Loan, User
from ..selectors import (
    BITCOIN_TARGET_BLOCK_SECONDS,
    bitcoin_followed_height,
    estimated_time,
    evm_followed_block,
    evm_seconds_per_block,
    loan_deadlines,
    loan_timelocks,
)
from .alerts import alert_create
from .borrower_actions import on_chain_parameters

logger = logging.getLogger(__name__)

# The loans a deadline may concern: any but drafts (nothing on chain yet) and closed ones.
DEADLINE_STATUSES = (
    Loan.Status.REQUESTED,
    Loan.Status.OFFERED,
    Loan.Status.ACTIVE,
    Loan.Status.REPAYMENT_IN_PROGRESS,
    Loan.Status.CANCELLED,
    Loan.Status.OFFER_EXPIRED,
    Loan.Status.DEFAULTED,
    Loan.Status.REPAYMENT_REFUNDED,
)
# The statuses in which the borrower's TX_exit is theirs to take once t_0 matures (the escrow is not owed to L).
EXIT_STATUSES = (Loan.Status.REQUESTED, Loan.Status.OFFERED, Loan.Status.CANCELLED, Loan.Status.OFFER_EXPIRED)
CHAIN_LABELS = {ChainCursor.Chain.EVM: "EVM", ChainCursor.Chain.BITCOIN: "Bitcoin"}


@dataclass
class DeadlineAlertsReport:
    """What one pass did: the loans it looked at and the alerts it made (new ones only), per kind."""

    evm_head: int | None = None
    bitcoin_tip: int | None = None
    loans_checked: int = 0
    created: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, created: bool) -> None:
        if created:
            self.created[kind] = self.created.get(kind, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.created.values())

    def __str__(self) -> str:
        made = ", ".join(f"{kind} {n}" for kind, n in sorted(self.created.items())) or "none"
        return (
            f"deadline alerts: {self.loans_checked} loans at EVM block {self.evm_head}, Bitcoin height "
            f"{self.bitcoin_tip}; new alerts: {made}"
        )


def deadline_alerts_run(*, now: datetime | None = None) -> DeadlineAlertsReport:
    """One pass: the parties' deadline alerts on every open loan, then the operators' alerts. Idempotent (each
    occasion's key gives one alert per person); each alert is its own small transaction (``alert_create``)."""
    report = DeadlineAlertsReport(evm_head=evm_followed_block(), bitcoin_tip=bitcoin_followed_height())
    lenders = list(User.objects.filter(is_active=True, role=User.Role.LENDER).order_by("pk"))
    loans = (
        Loan.objects.filter(closed_at__isnull=True, status__in=DEADLINE_STATUSES)
        .select_related("borrower", "lender")
        .order_by("pk")
    )
    for loan in loans:
        report.loans_checked += 1
        with loan_context(loan.pk):
            for notice in loan_deadline_notices(
                loan=loan, evm_head=report.evm_head, bitcoin_tip=report.bitcoin_tip, now=now
            ):
                for recipient in _recipients(loan, notice.party, lenders):
                    _, created = alert_create(
                        recipient=recipient,
                        loan=loan,
                        kind=notice.kind,
                        key=notice.key,
                        subject=notice.subject,
                        body=notice.body,
                    )
                    report.count(notice.kind, created)
    for notice in operator_notices():
        for operator in _operators():
            _, created = alert_create(
                recipient=operator, kind=notice.kind, key=notice.key, subject=notice.subject, body=notice.body
            )
            report.count(notice.kind, created)
    if report.total:
        logger.info("%s", report)
    return report


# --- The parties' deadlines ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """One alert to make: for ``party`` ("borrower", "lender" or "operator"), of ``kind``, on occasion ``key``."""

    party: str
    kind: str
    key: str
    subject: str
    body: str


def _setting(name: str) -> int:
    return int(getattr(settings, name))


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f" (about {moment:%Y-%m-%d %H:%M} UTC)"


def loan_deadline_notices(
    *, loan: Loan, evm_head: int | None, bitcoin_tip: int | None, now: datetime | None = None
) -> list[Notice]:
    """The deadline alerts ``loan`` calls for at these followed heights (none for a closed loan). A read."""
    if loan.is_closed:
        return []
    evm_window = _setting("ALERT_WARNING_EVM_BLOCKS")
    btc_window = _setting("ALERT_WARNING_BTC_BLOCKS")
    notices: list[Notice] = []
    if evm_head is not None:
        notices += _evm_notices(loan, evm_head, evm_window, now)
    if bitcoin_tip is not None:
        notices += _bitcoin_notices(loan, bitcoin_tip, btc_window, now)
    return notices


def _evm_notices(loan: Loan, head: int, window: int, now: datetime | None) -> list[Notice]:
    deadlines = loan_deadlines(loan=loan, head=head)
    spacing = evm_seconds_per_block(loan=loan)
    ref = f"loan {loan.pk}"

    def at(block: int) -> str:
        return _when(estimated_time(blocks=max(0, block - head), seconds_per_block=spacing, now=now))

    notices: list[Notice] = []
    status = loan.status
    if status == Loan.Status.OFFERED and deadlines.offer.block is not None:
        deadline = deadlines.offer.block
        key = f"offer_expiry:{loan.pk}:{deadline}"
        cutoff = deadline - loan.accept_cutoff_blocks + 1  # the first block at which B should not start an accept
        if _before(head, cutoff, window):
            notices.append(
                Notice(
                    "borrower",
                    "offer_expiry",
                    key,
                    f"Accept the offer on {ref} before EVM block {cutoff}",
                    f"The lender offered {ref}. Accept it before EVM block {cutoff}{at(cutoff)}: the offer expires "
                    f"at block {deadline}, and an accept started in its last {loan.accept_cutoff_blocks} blocks "
                    f"may not be mined in time. The watcher has followed the chain to block {head}.",
                )
            )
        if _at(head, deadline, window):
            notices.append(
                Notice(
                    "lender",
                    "offer_expiry",
                    key,
                    f"The offer on {ref} expires at EVM block {deadline}",
                    f"Unless the borrower accepts, the offer on {ref} expires at EVM block {deadline}{at(deadline)}; "
                    f"from then on the offer may be withdrawn (withdraw-offer). The watcher has followed the chain "
                    f"to block {head}.",
                )
            )
    elif status == Loan.Status.ACTIVE and deadlines.repayment.block is not None:
        deadline = deadlines.repayment.block
        key = f"repayment_due:{loan.pk}:{deadline}"
        if _before(head, deadline, window):
            notices.append(
                Notice(
                    "borrower",
                    "repayment_due",
                    key,
                    f"Repay {ref} before EVM block {deadline}",
                    f"{ref.capitalize()} is due: repay it before EVM block {deadline}{at(deadline)}. From that "
                    f"block on the lender may mark it defaulted and take the collateral after t_1. The watcher has "
                    f"followed the chain to block {head}.",
                )
            )
        if _at(head, deadline, window):
            notices.append(
                Notice(
                    "lender",
                    "repayment_due",
                    key,
                    f"{ref.capitalize()} is due at EVM block {deadline}",
                    f"Unless the borrower repays, {ref} may be marked defaulted (mark-default) from EVM block "
                    f"{deadline}{at(deadline)}. The watcher has followed the chain to block {head}.",
                )
            )
    elif status == Loan.Status.REPAYMENT_IN_PROGRESS and deadlines.acceptance.block is not None:
        deadline = deadlines.acceptance.block
        key = f"acceptance_deadline:{loan.pk}:{deadline}"
        if _before(head, deadline, window):
            notices.append(
                Notice(
                    "lender",
                    "acceptance_deadline",
                    key,
                    f"Accept the repayment of {ref} before EVM block {deadline}",
                    f"The borrower repaid {ref}. Accept the repayment (accept-repayment, revealing pL) before EVM "
                    f"block {deadline}{at(deadline)}: from that block on the borrower may take the repayment and "
                    f"the bond back. The watcher has followed the chain to block {head}.",
                )
            )
        if _at(head, deadline, window):
            notices.append(
                Notice(
                    "borrower",
                    "acceptance_deadline",
                    key,
                    f"The lender must accept your repayment of {ref} before EVM block {deadline}",
                    f"If the lender has not accepted your repayment of {ref} by EVM block {deadline}{at(deadline)}, "
                    f"you may take the repayment and the lender's bond back from that block on "
                    f"(withdraw-repayment). The watcher has followed the chain to block {head}.",
                )
            )
    return notices


def _bitcoin_notices(loan: Loan, tip: int, window: int, now: datetime | None) -> list[Notice]:
    timelocks = loan_timelocks(loan=loan, tip_height=tip)
    ref = f"loan {loan.pk}"

    def at(height: int) -> str:
        blocks = max(0, height - (tip + 1))
        return _when(estimated_time(blocks=blocks, seconds_per_block=BITCOIN_TARGET_BLOCK_SECONDS, now=now))

    notices: list[Notice] = []
    status, btc = loan.status, loan.bitcoin_status
    exit_path = timelocks.exit
    if btc == Loan.BitcoinStatus.ESCROW_CONFIRMED and exit_path.mature_height is not None:
        mature = exit_path.mature_height
        key = f"exit_maturity:{loan.pk}:{mature}"
        if status in EXIT_STATUSES and exit_path.blocks_remaining <= window:
            notices.append(
                Notice(
                    "borrower",
                    "exit_maturity",
                    key,
                    f"The escrow of {ref} may be reclaimed from Bitcoin height {mature}",
                    f"The escrow's timelock t_0 matures at Bitcoin height {mature}{at(mature)}: from then on "
                    f"TX_exit returns the escrow to your payout address if the loan does not go ahead (request "
                    f"cancelled, offer expired, or never offered); the watchtower broadcasts it if you left it "
                    f"pre-signed. The watcher has followed the chain to height {tip}.",
                )
            )
        if status == Loan.Status.REQUESTED:
            last_offer_tip = mature - on_chain_parameters(loan).offer_escrow_min_btc_blocks_left() - 1  # type: ignore[arg-type]
            if tip <= last_offer_tip and last_offer_tip - tip <= window:
                notices.append(
                    Notice(
                        "lender",
                        "exit_maturity",
                        key,
                        f"Offer {ref} by Bitcoin height {last_offer_tip} or not at all",
                        f"The escrow of {ref} matures (t_0) at Bitcoin height {mature}. An offer needs the escrow "
                        f"to have room for the offer window: the last height it has is {last_offer_tip}"
                        f"{at(last_offer_tip)}. The watcher has followed the chain to height {tip}.",
                    )
                )
    capture_path = timelocks.capture
    if (
        status in Loan.CAPTURE_STATUSES
        and btc == Loan.BitcoinStatus.COLLATERAL_LOCKED
        and capture_path.mature_height is not None
        and capture_path.blocks_remaining <= window
    ):
        mature = capture_path.mature_height
        notices.append(
            Notice(
                "lender",
                "capture_maturity",
                f"capture_maturity:{loan.pk}:{mature}",
                f"The collateral of {ref} may be captured from Bitcoin height {mature}",
                f"{ref.capitalize()} is {loan.get_status_display().lower()}; its collateral timelock t_1 matures at "
                f"Bitcoin height {mature}{at(mature)}: from then on TX_capture takes the collateral "
                f"(collateral-capture). The watcher has followed the chain to height {tip}.",
            )
        )
    return notices


def _before(head: int, deadline: int, window: int) -> bool:
    """The party must act before ``deadline``: still possible (the next block is before it) and within the window."""
    remaining = deadline - (head + 1)
    return 0 < remaining <= window


def _at(head: int, deadline: int, window: int) -> bool:
    """The party may act from ``deadline`` on: within the window, or passed (the loan still waits)."""
    return deadline - (head + 1) <= window


def _recipients(loan: Loan, party: str, lenders: list[User]) -> Iterable[User]:
    if party == "borrower":
        return [loan.borrower] if loan.borrower.is_active else []
    if loan.lender is not None and loan.lender.is_active:
        return [loan.lender]
    return lenders


# --- The operators' alarms ----------------------------------------------------------------------------------------


def _operators() -> list[User]:
    return list(User.objects.filter(Q(role=User.Role.OPERATOR) | Q(is_superuser=True), is_active=True).order_by("pk"))


def operator_notices() -> list[Notice]:
    """The operators' alarms the chains' cursors and the automations call for now. A read (of alerts too)."""
    notices: list[Notice] = []
    failures_limit = _setting("ALERT_NODE_FAILURES")
    lag_limits = {
        ChainCursor.Chain.EVM: _setting("ALERT_WATCHER_LAG_EVM_BLOCKS"),
        ChainCursor.Chain.BITCOIN: _setting("ALERT_WATCHER_LAG_BTC_BLOCKS"),
    }
    for cursor in ChainCursor.objects.order_by("chain"):
        label = CHAIN_LABELS.get(cursor.chain, cursor.chain)
        if cursor.failures >= failures_limit:
            notices.append(
                Notice(
                    "operator",
                    "node_unreachable",
                    f"node_unreachable:{cursor.chain}:{cursor.block_number}",
                    f"The {label} watcher cannot reach its node ({cursor.failures} runs failed)",
                    f"The {label} watcher has failed {cursor.failures} runs in a row at block "
                    f"{cursor.block_number}. Last error: {cursor.last_error or '(none recorded)'}. Deadlines "
                    f"and automations on this chain wait for it.",
                )
            )
        limit = lag_limits.get(cursor.chain)
        if limit is not None and cursor.tip_number is not None and cursor.tip_number - cursor.block_number > limit:
            tip = _lag_episode_tip(cursor, limit)
            notices.append(
                Notice(
                    "operator",
                    "watcher_lag",
                    f"watcher_lag:{cursor.chain}:{tip}",
                    f"The {label} watcher is {cursor.tip_number - cursor.block_number} blocks behind",
                    f"The {label} watcher has followed the chain to block {cursor.block_number}; the node's head "
                    f"is {cursor.tip_number} (more than {limit} blocks ahead). Deadlines and confirmations lag "
                    f"the chain until it catches up.",
                )
            )
    failing = Automation.objects.filter(consecutive_failures__gte=2).exclude(state=Automation.State.DONE)
    for automation in failing.order_by("pk"):
        streak = automation.failure_streaks
        notices.append(
            Notice(
                "operator",
                "automation_failed",
                f"automation_failed:{automation.pk}:{streak}",
                f"Automation {automation.action} of loan {automation.loan_id} failed "
                f"{automation.consecutive_failures} times",
                f"The {automation.get_party_display().lower()} could not {automation.action} on loan "
                f"{automation.loan_id}: {automation.consecutive_failures} runs failed in a row (state "
                f"{automation.state}). Last error: {automation.last_error or '(none recorded)'}.",
            )
        )
    return notices


def _lag_episode_tip(cursor: ChainCursor, limit: int) -> int:
    """The tip that names the current lag episode: the last alert's, while the watcher has not come within
    ``limit`` of it since (it cannot have caught up in between), else the tip now (a new episode)."""
    prefix = f"watcher_lag:{cursor.chain}:"
    last = (
        Alert.objects.filter(kind="watcher_lag", key__startswith=prefix)
        .order_by("-created_at", "-id")
        .values_list("key", flat=True)
        .first()
    )
    if last is not None:
        try:
            tip = int(last.removeprefix(prefix))
        except ValueError:
            tip = None
        if tip is not None and cursor.block_number < tip - limit:
            return tip
    return cursor.tip_number


__all__ = [
    "DeadlineAlertsReport",
    "Notice",
    "deadline_alerts_run",
    "loan_deadline_notices",
    "operator_notices",
]
