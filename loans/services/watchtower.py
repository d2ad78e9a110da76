"""The borrower's watchtower (issue 11): the platform keeps the borrower's Bitcoin promises for a borrower who has
gone offline, with the borrower's own pre-signed transactions. The server holds no borrower key: it broadcasts
only the rungs of B's TX_release and TX_exit ladders (``BorrowerSignature`` rows uploaded through
``presigned_ladder_upload``), completing TX_release with pL, through ``bitcoin_actions.presigned_sweep_broadcast``
(which re-verifies the rung and checks the loan's state and timelock itself).

``watchtower_run`` is one worker pass; one function per duty, each through the loan's ``Automation`` row (party
borrower; at most one per loan and action):

- ``watchtower_release``: pL public and TX_1 applied (``collateral_locked``): the cheapest rung of the TX_release
  ladder whose fee rate meets the node's estimate (``loans.funding.current_fee_rate_sat_vb``; the cheapest rung
  when the node has none, the dearest when none meets it), completed with pL and broadcast. ``done`` when the
  watcher shows the collateral released.
- ``watchtower_exit``: the escrow is stranded (``STRANDED_ESCROW_STATUSES``: cancelled, offer expired, or never
  offered; never Offered, never a status whose escrow the contract owes the lender) and t_0 has matured
  (``loan_timelocks``): the TX_exit rung for the estimate. ``done`` when the watcher shows the escrow exited.

Both climb their ladder when the rung lingers: once the node has held it ``WATCHTOWER_CLIMB_AFTER_BLOCKS`` blocks
(its mempool entry's ``height``, so a restarted node's count starts again), the next dearer rung is broadcast, a
replacement spending the same outpoint (full RBF, Core 28+'s default; the regtest node does the same). A rung the
node lost is handed to it again. The row is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` around the
broadcast, so two racing passes act once. A borrower who left no rung for a duty that is due gets one alert
(``presign_missing``) naming what to do instead. "Not yet" (``too_early``) leaves the duty pending; any other
failure counts in ``consecutive_failures`` (reset on success; operators are alerted at 2) with ``last_error``; a
duty the chain made impossible (the collateral captured, the escrow spent by TX_1) is ``failed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from bitcoin.errors import BitcoinProtocolError
from bitcoin.rpc import BitcoinRPCError, RPCError
from bitcoin.transactions import COLLATERAL_OUTPUT_INDEX, Transaction

from ..chains import bitcoin_rpc
from ..errors import LoanServiceError
from ..funding import current_fee_rate_sat_vb
from ..logging import loan_context
from ..models import Automation, BorrowerSignature, Loan, User
from ..permissions import is_loan_borrower, require
from ..selectors import TimelockPath, applied_tx1_txid, loan_next_actions, loan_timelocks
from .alerts import alert_create
from .bitcoin_actions import STRANDED_ESCROW_STATUSES, ladder_rung_amounts, presigned_sweep_broadcast

logger = logging.getLogger(__name__)

RELEASE = "release"
EXIT = "exit"
#: Refusals that mean "not yet": the duty stays pending, no failure counted.
NOT_YET_CODES = frozenset({"too_early"})
_RPC_NOT_FOUND = -5


def climb_after_blocks() -> int:
    return settings.WATCHTOWER_CLIMB_AFTER_BLOCKS


@dataclass
class WatchtowerReport:
    """What one pass did, per (loan id, action[, detail])."""

    sent: list[tuple[int, str, str]] = field(default_factory=list)  # a rung broadcast (txid), first or again
    climbed: list[tuple[int, str, str]] = field(default_factory=list)  # a dearer rung replaced a lingering one
    done: list[tuple[int, str]] = field(default_factory=list)
    waiting: list[tuple[int, str, str]] = field(default_factory=list)
    alerted: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # another pass holds the row

    def __str__(self) -> str:
        return (
            f"watchtower: {len(self.sent)} sent, {len(self.climbed)} climbed, {len(self.done)} done, "
            f"{len(self.waiting)} waiting, {len(self.alerted)} alerted, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped"
        )


@dataclass(frozen=True)
class _Duty:
    action: str
    kind: str  # the rungs' BorrowerSignature.Kind
    done_status: str  # the loan's bitcoin_status once the watcher saw the spend
    what: str
    endpoint: str
    cli: str


_RELEASE = _Duty(
    RELEASE,
    BorrowerSignature.Kind.TX_RELEASE,
    Loan.BitcoinStatus.RELEASED,
    "release your collateral",
    "release-psbt",
    "python -m bitcoin build-release --loan LOAN_FILE --tx1-txid {tx1} --lender-preimage {pl} --fee-rate RATE",
)
_EXIT = _Duty(
    EXIT,
    BorrowerSignature.Kind.TX_EXIT,
    Loan.BitcoinStatus.EXITED,
    "take your escrow back",
    "exit-psbt",
    "python -m bitcoin build-exit --loan LOAN_FILE --fee-rate RATE",
)


def watchtower_run(*, now: datetime | None = None) -> WatchtowerReport:
    """One pass of the watchtower over every loan with a release or exit due or under way."""
    now = now or timezone.now()
    report = WatchtowerReport()
    open_row = Q(automations__state__in=[Automation.State.PENDING, Automation.State.SENT])
    releases = Loan.objects.filter(
        Q(lender_preimage__isnull=False, bitcoin_status=Loan.BitcoinStatus.COLLATERAL_LOCKED, closed_at__isnull=True)
        | (open_row & Q(automations__action=RELEASE))
    )
    exits = Loan.objects.filter(
        Q(
            status__in=STRANDED_ESCROW_STATUSES,
            bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED,
            escrow_txid__isnull=False,
            closed_at__isnull=True,
        )
        | (open_row & Q(automations__action=EXIT))
    )
    for duty, loans in ((_RELEASE, releases), (_EXIT, exits)):
        for loan in loans.distinct().order_by("pk"):
            try:
                with loan_context(loan.pk):
                    _run(duty, loan, now, report)
            except Exception as error:  # one loan's trouble never stops the pass
                logger.exception("watchtower %s of loan %s failed", duty.action, loan.pk, extra={"loan_id": loan.pk})
                report.failed.append((loan.pk, duty.action, f"{type(error).__name__}: {error}"))
    if report.sent or report.climbed or report.done or report.failed or report.alerted:
        logger.info("%s", report)
    return report


def watchtower_release(*, loan: Loan, now: datetime | None = None) -> WatchtowerReport:
    """The release duty of one loan (one step of it): broadcast, climb, or record it done."""
    report = WatchtowerReport()
    _run(_RELEASE, loan, now or timezone.now(), report)
    return report


def watchtower_exit(*, loan: Loan, now: datetime | None = None) -> WatchtowerReport:
    """The exit duty of one loan (one step of it): broadcast, climb, or record it done."""
    report = WatchtowerReport()
    _run(_EXIT, loan, now or timezone.now(), report)
    return report


# ------------------------------------------------------------------------------------------------ one duty


def _due(duty: _Duty, loan: Loan) -> tuple[bool, str]:
    """Whether the duty is due now, and if not, why."""
    if duty is _RELEASE:
        if loan.lender_preimage is None:
            return False, "pL is not public"
        if loan.bitcoin_status != Loan.BitcoinStatus.COLLATERAL_LOCKED or applied_tx1_txid(loan=loan) is None:
            return False, f"the collateral is not locked ({loan.bitcoin_status})"
        return True, ""
    if loan.bitcoin_status != Loan.BitcoinStatus.ESCROW_CONFIRMED or loan.escrow_txid is None:
        return False, f"no confirmed escrow ({loan.bitcoin_status})"
    if loan.status not in STRANDED_ESCROW_STATUSES or loan.borrower_preimage is not None:
        return False, f"the escrow is not stranded: the loan is {loan.status}"
    timelock = loan_timelocks(loan=loan).exit
    if not timelock.is_mature:
        return False, f"t_0 matures at height {timelock.mature_height}"
    return True, ""


def _gone_elsewhere(duty: _Duty, loan: Loan) -> str | None:
    """Why the duty can no longer be done: the output went another way."""
    if duty is _RELEASE:
        if loan.bitcoin_status == Loan.BitcoinStatus.CAPTURED:
            return "the lender captured the collateral (TX_capture) before TX_release confirmed"
        return None
    if loan.bitcoin_status in (
        Loan.BitcoinStatus.COLLATERAL_LOCKED,
        Loan.BitcoinStatus.RELEASED,
        Loan.BitcoinStatus.CAPTURED,
    ):
        return f"the escrow went into TX_1 ({loan.bitcoin_status}): nothing is left to exit"
    return None


def _rungs(duty: _Duty, loan: Loan) -> list[tuple[Fraction, BorrowerSignature]]:
    """The loan's verified rungs for the duty, with their fee rates, cheapest first (a rung of TX_release only if
    it spends the applied TX_1; a rung that no longer checks out against the loan's facts is left out)."""
    tx1_txid = applied_tx1_txid(loan=loan) if duty is _RELEASE else None
    rated = []
    for rung in BorrowerSignature.objects.filter(loan=loan, kind=duty.kind, verified_at__isnull=False).order_by("pk"):
        try:
            if tx1_txid is not None:
                spent = Transaction.parse(rung.unsigned_tx_hex).inputs[0].outpoint
                if spent.txid != tx1_txid or spent.vout != COLLATERAL_OUTPUT_INDEX:
                    continue
            rated.append((ladder_rung_amounts(signature=rung).fee_rate, rung))
        except BitcoinProtocolError as error:
            logger.warning("rung %s of loan %s left out: %s", rung.pk, loan.pk, error, extra={"loan_id": loan.pk})
    rated.sort(key=lambda item: (item[0], item[1].pk))
    return rated


def _pick(
    rated: list[tuple[Fraction, BorrowerSignature]], estimate: Fraction | None, above: Fraction | None = None
) -> tuple[Fraction, BorrowerSignature] | None:
    """The cheapest rung (dearer than ``above``) whose fee rate meets the estimate; the cheapest without an
    estimate; the dearest when none meets it."""
    candidates = [item for item in rated if above is None or item[0] > above]
    if not candidates:
        return None
    if estimate is None:
        return candidates[0]
    return next((item for item in candidates if item[0] >= estimate), candidates[-1])


def _estimate() -> Fraction | None:
    rate, source = current_fee_rate_sat_vb()
    return rate if source == "estimate" else None


def _run(duty: _Duty, loan: Loan, now: datetime, report: WatchtowerReport) -> None:
    loan.refresh_from_db()
    row = Automation.objects.filter(loan=loan, action=duty.action).first()
    if row is not None and row.state in (Automation.State.DONE, Automation.State.FAILED):
        return
    if loan.bitcoin_status == duty.done_status:
        if row is not None:
            _finish(row, report, now=now, state=Automation.State.DONE)
        return
    gone = _gone_elsewhere(duty, loan)
    if gone is not None:
        if row is not None:
            _finish(row, report, now=now, state=Automation.State.FAILED, error=gone)
        return
    due, why = _due(duty, loan)
    if not due:
        if row is not None:
            report.waiting.append((loan.pk, duty.action, why))
        return
    rated = _rungs(duty, loan)
    if not rated:
        _presign_missing(duty, loan, report)
        return
    Automation.objects.get_or_create(loan=loan, action=duty.action, defaults={"party": Automation.Party.BORROWER})
    with transaction.atomic():
        row = Automation.objects.select_for_update(skip_locked=True).filter(loan=loan, action=duty.action).first()
        if row is None:
            report.skipped.append((loan.pk, duty.action))
            return
        if row.state not in (Automation.State.PENDING, Automation.State.SENT):
            return
        _step(duty, loan, row, rated, report)


def _step(
    duty: _Duty,
    loan: Loan,
    row: Automation,
    rated: list[tuple[Fraction, BorrowerSignature]],
    report: WatchtowerReport,
) -> None:
    """One step of a claimed duty: the first rung, the same rung again, or the next dearer one."""
    current = row.bitcoin_broadcast
    by_txid = {rung.txid: (rate, rung) for rate, rung in rated}
    if current is None or current.txid not in by_txid:
        choice = _pick(rated, _estimate())
        _send(duty, loan, row, choice[1], report, climbing=False)  # type: ignore[index]
        return
    current_rate, current_rung = by_txid[current.txid]
    if current.accepted_at is None:  # never reached the node (it was down): the same rung again
        _send(duty, loan, row, current_rung, report, climbing=False)
        return
    try:
        rpc = bitcoin_rpc()
        try:
            entry = rpc.call("getmempoolentry", current.txid)
        except RPCError as error:
            if error.code != _RPC_NOT_FOUND:
                raise
            entry = None
        tip = rpc.getblockcount()
    except (BitcoinRPCError, OSError) as error:
        _failure(row, f"node unreachable: {error}", report, loan)
        return
    if entry is None:  # mined (the watcher will tell), or lost by the node: hand it over again
        _send(duty, loan, row, current_rung, report, climbing=False)
        return
    waited = tip - int(entry["height"])
    if waited < climb_after_blocks():
        report.waiting.append((loan.pk, duty.action, f"{current.txid} in the mempool for {waited} block(s)"))
        return
    choice = _pick(rated, _estimate(), above=current_rate)
    if choice is None:
        report.waiting.append((loan.pk, duty.action, f"the dearest rung {current.txid} lingers {waited} block(s)"))
        return
    _send(duty, loan, row, choice[1], report, climbing=True)


def _send(
    duty: _Duty, loan: Loan, row: Automation, rung: BorrowerSignature, report: WatchtowerReport, *, climbing: bool
) -> None:
    try:
        broadcast = presigned_sweep_broadcast(loan=loan, rung=rung)
    except LoanServiceError as error:
        if error.code in NOT_YET_CODES:
            Automation.objects.filter(pk=row.pk).update(last_error=str(error)[:2000], updated_at=timezone.now())
            report.waiting.append((loan.pk, duty.action, str(error)))
            return
        _failure(row, f"{error.code}: {error}", report, loan)
        return
    accepted = broadcast.last_error == ""
    Automation.objects.filter(pk=row.pk).update(
        attempts=F("attempts") + 1, bitcoin_broadcast=broadcast, updated_at=timezone.now()
    )
    if not accepted:
        _failure(row, broadcast.last_error, report, loan)
        return
    Automation.objects.filter(pk=row.pk).update(state=Automation.State.SENT, consecutive_failures=0, last_error="")
    (report.climbed if climbing else report.sent).append((loan.pk, duty.action, broadcast.txid))
    logger.info(
        "watchtower %s of loan %s: %s %s",
        duty.action,
        loan.pk,
        "climbed to" if climbing else "broadcast",
        broadcast.txid,
        extra={"loan_id": loan.pk},
    )


def _failure(row: Automation, error: str, report: WatchtowerReport, loan: Loan) -> None:
    Automation.objects.filter(pk=row.pk).update(
        **Automation.failure_counts(), last_error=error[:2000], updated_at=timezone.now()
    )
    report.failed.append((loan.pk, row.action, error))
    logger.warning("watchtower %s of loan %s: %s", row.action, loan.pk, error, extra={"loan_id": loan.pk})


def _finish(row: Automation, report: WatchtowerReport, *, now: datetime, state: str, error: str = "") -> None:
    changes: dict[str, object] = {"state": state, "updated_at": timezone.now()}
    if state == Automation.State.DONE:
        changes.update(done_at=now, consecutive_failures=0, last_error="")
    else:
        changes.update(**Automation.failure_counts(), last_error=error[:2000])
    finished = Automation.objects.filter(pk=row.pk, state__in=[Automation.State.PENDING, Automation.State.SENT]).update(
        **changes
    )
    if not finished:  # a racing pass finished it
        return
    if state == Automation.State.DONE:
        report.done.append((row.loan_id, row.action))
        logger.info("watchtower %s of loan %s done", row.action, row.loan_id, extra={"loan_id": row.loan_id})
    else:
        report.failed.append((row.loan_id, row.action, error))
        logger.warning(
            "watchtower %s of loan %s failed: %s", row.action, row.loan_id, error, extra={"loan_id": row.loan_id}
        )


def _presign_missing(duty: _Duty, loan: Loan, report: WatchtowerReport) -> None:
    """No rung to broadcast for a due duty: one alert to the borrower with the exact action, and the duty's row
    says why it waits (no failure counted: nothing failed, the borrower must act)."""
    tx1 = applied_tx1_txid(loan=loan) or "TX1_TXID"
    cli = duty.cli.format(tx1=tx1, pl=loan.lender_preimage or "")
    timelocks = loan_timelocks(loan=loan)
    if duty is _RELEASE:
        why = (
            f"The lender accepted your repayment of loan #{loan.pk}: the preimage pL is public and your collateral "
            f"can go back to {loan.borrower_payout_address}."
        )
        deadline = timelocks.capture.mature_height
        urgency = (
            f" Do it before block {deadline}: from then on the lender may capture the collateral (t_1)."
            if deadline is not None
            else ""
        )
    else:
        why = (
            f"The escrow of loan #{loan.pk} ({loan.status.replace('_', ' ')}) will never go into the loan, and its "
            f"timelock t_0 has matured: you may take it back to {loan.borrower_payout_address}."
        )
        urgency = ""
    body = (
        f"{why} You left no pre-signed transaction the platform could broadcast for you, so nothing happens "
        f"unless you act.{urgency}\n\n"
        f"Get the unsigned transaction with GET /api/v1/loans/{loan.pk}/{duty.endpoint}/?fee_rate_sat_vb=RATE, sign "
        f"it with your borrower key and send it with POST /api/v1/loans/{loan.pk}/bitcoin-broadcasts/ (or to any "
        f"Bitcoin node). Without the platform: {cli}, then python -m bitcoin sign and python -m bitcoin finalize "
        f"with your loan file and key, and broadcast the result."
    )
    _alert, created = alert_create(
        recipient=loan.borrower,
        kind="presign_missing",
        key=f"presign_missing:{loan.pk}:{duty.action}",
        subject=f"Loan #{loan.pk}: {duty.what} yourself",
        body=body,
        loan=loan,
    )
    row, _ = Automation.objects.get_or_create(
        loan=loan, action=duty.action, defaults={"party": Automation.Party.BORROWER}
    )
    reason = f"no pre-signed {duty.kind} rung: the borrower was alerted to act"
    if row.state == Automation.State.PENDING and row.last_error != reason:
        Automation.objects.filter(pk=row.pk).update(last_error=reason, updated_at=timezone.now())
    if created:
        report.alerted.append((loan.pk, duty.action))
        logger.info("watchtower %s of loan %s: %s", duty.action, loan.pk, reason, extra={"loan_id": loan.pk})


#: Why ``watchtower_now`` did nothing (``PermissionDenied`` for anyone but the loan's borrower).
WATCHTOWER_NOW_CODES: tuple[str, ...] = (
    "wrong_state",
    "too_early",
    "no_presigned_rungs",
    "not_yet",
    "broadcast_failed",
)
# action -> (the borrower's next step that must be open, the rung kind, what the borrower asked for)
_NOW = {
    RELEASE: ("release-psbt", BorrowerSignature.Kind.TX_RELEASE, "release the collateral"),
    EXIT: ("exit-psbt", BorrowerSignature.Kind.TX_EXIT, "reclaim the escrow"),
}


def watchtower_now(*, loan: Loan, actor: User, action: str) -> str:
    """The watchtower's ``action`` (release or exit) for this one loan, now, at its borrower's request: only the
    loan's borrower, only while that step is open in the loan's next steps, and only with a verified pre-signed rung
    (checked first, so the button never raises the "presign missing" alert). Returns what was done, or raises a
    ``LoanServiceError`` with one of ``WATCHTOWER_NOW_CODES``."""
    step, kind, what = _NOW[action]
    require(is_loan_borrower(actor, loan), f"only the loan's borrower may {what}")
    found = next((a for a in loan_next_actions(loan=loan, user=actor) if a.name == step), None)
    if found is None:
        raise LoanServiceError(
            f"nothing to {what} now: the loan is {loan.get_status_display()}, {loan.get_bitcoin_status_display()}",
            code="wrong_state",
        )
    if not found.open:
        opens = found.opens
        when = ""
        if isinstance(opens, TimelockPath) and opens.mature_height is not None:
            when = f" at Bitcoin height {opens.mature_height} ({opens.blocks_remaining} block(s) to go)"
        raise LoanServiceError(f"too early to {what}: it opens{when}", code="too_early")
    if not loan.borrower_signatures.filter(kind=kind, verified_at__isnull=False).exists():
        raise LoanServiceError(
            f"you left no pre-signed {kind} for the watchtower: download the unsigned PSBT, sign it and broadcast it",
            code="no_presigned_rungs",
        )
    report = (watchtower_release if action == RELEASE else watchtower_exit)(loan=loan)
    for _loan, _action, txid in report.sent + report.climbed:
        return f"{kind} {txid} handed to the Bitcoin node; this page follows it to confirmation."
    if report.done:
        return f"{kind} confirmed: done."
    if report.failed:
        raise LoanServiceError(f"the broadcast failed: {report.failed[0][2]}", code="broadcast_failed")
    if report.waiting:
        raise LoanServiceError(f"not yet: {report.waiting[0][2]}", code="not_yet")
    if report.skipped:
        raise LoanServiceError("the watchtower is broadcasting it right now", code="not_yet")
    raise LoanServiceError(f"nothing to {what} now", code="wrong_state")


__all__ = [
    "EXIT",
    "RELEASE",
    "WATCHTOWER_NOW_CODES",
    "WatchtowerReport",
    "climb_after_blocks",
    "watchtower_exit",
    "watchtower_now",
    "watchtower_release",
    "watchtower_run",
]
