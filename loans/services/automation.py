"""The lender's automation (issue 11): the desk keeps the lender's promises unattended, with the server's keys.

``automation_run`` is one worker pass: for every open loan it asks ``loans.selectors.loan_next_actions`` (deadlines
from the EVM node's head, so a pass acts in the very block a deadline opens) which of the lender's steps are open,
keeps those the deployment's ``DeploymentPolicy`` switches on (locking TX_1 once pB is public always is), and runs
one function per duty. Each duty CALLS the action's service (``evm_calls.*(send=True)``,
``bitcoin_actions.collateral_lock`` / ``collateral_capture`` / ``bitcoin_transaction_broadcast``), which checks the
role, the state, the deadline (head + 1) and the inputs itself: its "not yet" refusals (``too_early``,
``wrong_state``, an escrow still being checked, ...) leave the duty pending; any other failure counts in
``consecutive_failures`` (reset on success; the alerts helper alerts operators at 2) with ``last_error``.

At most once per (loan, action): the ``Automation`` row (unique per loan and action) is the duty's state and its
audit (who: the server; what: the action; when: its timestamps; the transaction hash or the broadcast).

Contract calls, crash-safe (the design): the service signs with the lender's vault key through the database nonce
allocator and calls ``evm.client.send(on_signed=...)`` between signing and sending. That hook records the signed
transaction (hash, nonce, raw bytes) on the row and moves it ``pending`` -> ``sent`` by a compare-and-set, and
commits it before the node sees anything. The record is the claim: of two workers racing, the second one's
compare-and-set finds the row ``sent`` and raises, so its transaction is never sent (its nonce stays free). The
nonce lease holds its own transaction open until the node has the transaction (``loans.nonces``), so the record is
written on a connection of its own (a short-lived thread) to be committed at once. A pass finding a row ``sent``
looks the hash up: a receipt makes it ``done`` (or ``failed`` if reverted); a transaction the node does not know is
given to the node again, the SAME signed bytes (``evm.client.submit_signed``); only if the node says its nonce is
taken by another transaction (it can then never be mined) does the row go back to ``pending`` to be signed anew.

Bitcoin steps: the row is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` around the service call (a racing worker
skips it). TX_1 is broadcast as soon as pB is public and the escrow confirmed, handed to the node again each pass
while unconfirmed (the broadcast service, no operator audit row), and bumped by CPFP from its output 0 (the
origination fee to the lender's payout address) once it lingers ``AUTOMATION_TX1_LINGER_BLOCKS`` blocks, if the
vault holds the key of that address (a BIP-86 key-path P2TR address of a stored Bitcoin ``LenderKey``); otherwise
the reason is kept in ``last_error``. It is ``done`` when the watcher shows the collateral locked; TX_capture when
the watcher shows it captured.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound, Web3Exception

from bitcoin.addresses import address_to_script_pubkey
from bitcoin.errors import BitcoinProtocolError
from bitcoin.keypath import bip86_output_key, build_keypath_spend
from bitcoin.rpc import BitcoinRPCError
from bitcoin.scripts import p2tr_script_pubkey
from bitcoin.transactions import OutPoint, Transaction, TxOut
from evm.client import SubmitOutcome, submit_signed, wait_for_receipt
from evm.errors import EvmError, TransactionFailed

from .. import vault
from ..chains import bitcoin_rpc, evm_web3
from ..errors import LoanServiceError
from ..escrow import ESCROW_PROBLEMS
from ..funding import current_fee_rate_sat_vb
from ..logging import loan_context
from ..models import LENDER_AUTOMATION_ACTIONS, Automation, DeploymentPolicy, LenderKey, Loan, User
from ..permissions import is_lender
from ..selectors import loan_deadlines, loan_next_actions, loan_timelocks
from . import bitcoin_actions, evm_calls
from .lender_secrets import lender_bitcoin_key

logger = logging.getLogger(__name__)

LENDER_ACTIONS = LENDER_AUTOMATION_ACTIONS
#: The policy switch of each duty (None: always on).
POLICY_SWITCH: dict[str, str | None] = {
    "collateral-lock": None,
    "commit-lender-hash": "auto_offer",
    "offer": "auto_offer",
    "accept-repayment": "auto_accept_repayment",
    "withdraw-offer": "auto_withdraw_offer",
    "mark-default": "auto_mark_default",
    "collateral-capture": "auto_capture",
}
#: Refusals that mean "not yet" (the chain or the watcher has not got there): the duty stays pending, no failure.
NOT_YET_CODES: frozenset[str] = frozenset(
    {
        "too_early",
        "wrong_state",
        "not_on_chain",
        "lender_hash_missing",
        "presignature_missing",
        "borrower_preimage_unknown",
        "escrow_not_confirmed",
        "collateral_not_locked",
        "lender_preimage_not_due",
        *(code for code in ESCROW_PROBLEMS if code not in ("escrow_script_mismatch", "escrow_value_mismatch")),
    }
)
#: Refusals after which the duty cannot succeed any more: ``failed`` (an operator looks).
FINAL_CODES: frozenset[str] = frozenset({"too_late", "lender_hash_elsewhere", "lender_secret_mismatch"})
#: How long a pass waits for the receipt of a transaction it handed to the node again.
RESEND_RECEIPT_WAIT_SECONDS = 10.0
#: CPFP child: one key-path input, one P2TR output (vbytes, upper bound).
CPFP_CHILD_VSIZE = 111


@dataclass
class AutomationReport:
    """What one pass did: (loan id, action, what happened) per duty that moved or failed."""

    sent: list[tuple[int, str, str]] = field(default_factory=list)
    done: list[tuple[int, str, str]] = field(default_factory=list)
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    waiting: list[tuple[int, str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"automation: {len(self.sent)} sent, {len(self.done)} done, {len(self.failed)} failed, "
            f"{len(self.waiting)} waiting"
        )


class _Claimed(Exception):
    """Another worker recorded a transaction for this duty first: ours is not sent."""


# ------------------------------------------------------------------------------------------------ the pass


def automation_run(*, now: datetime | None = None) -> AutomationReport:
    """One pass of the lender's automation over every open loan, and every loan with an unfinished duty (a loan
    closes when the watcher applies the last transaction: its duty is then seen done) (see the module docstring)."""
    now = now or timezone.now()
    report = AutomationReport()
    try:
        head = int(evm_web3().eth.block_number)
    except (EvmError, OSError, Web3Exception) as error:
        logger.warning("automation: the EVM node is unavailable: %s", error)
        head = None
    policies = {p.deployment_id: p for p in DeploymentPolicy.objects.all()}
    unfinished_states = [Automation.State.PENDING, Automation.State.SENT]
    loans = (
        Loan.objects.filter(
            Q(closed_at__isnull=True) | Q(automations__state__in=unfinished_states, automations__party="lender")
        )
        .exclude(status=Loan.Status.DRAFT)
        .distinct()
        .select_related("deployment", "lender")
        .order_by("pk")
    )
    for loan in loans:
        with loan_context(loan.pk):
            try:
                _visit(loan, head, policies.get(loan.deployment_id), report, now)
            except Exception as error:  # one loan's trouble never stops the pass
                logger.exception("automation of loan %s failed", loan.pk, extra={"loan_id": loan.pk})
                report.failed.append((loan.pk, "", f"{type(error).__name__}: {error}"))
    return report


def _visit(loan: Loan, head: int | None, policy: DeploymentPolicy | None, report: AutomationReport, now) -> None:
    """Every lender duty of one loan that is open now (and allowed by the policy) or unfinished."""
    open_actions = _open_lender_actions(loan, head)
    unfinished = set(
        Automation.objects.filter(loan=loan, party=Automation.Party.LENDER)
        .exclude(state__in=[Automation.State.DONE, Automation.State.FAILED])
        .values_list("action", flat=True)
    )
    for action in LENDER_ACTIONS:
        switch = POLICY_SWITCH[action]
        allowed = switch is None or bool(policy is not None and getattr(policy, switch))
        if action in unfinished or (allowed and action in open_actions):
            DUTIES[action](loan=loan, report=report, now=now)


def _open_lender_actions(loan: Loan, head: int | None) -> set[str]:
    """The lender's steps open on ``loan`` now: deadlines from the node's head (the watcher's when unknown)."""
    operator_view = User(role=User.Role.LENDER, is_active=True)  # the lender's view of the loan, for the selector
    deadlines = loan_deadlines(loan=loan, head=head)
    actions = loan_next_actions(loan=loan, user=operator_view, deadlines=deadlines, timelocks=loan_timelocks(loan=loan))
    return {action.name for action in actions if action.party == "lender" and action.open}


def _server_actor(loan: Loan) -> User | None:
    """Whom the server acts for: the loan's lender, else the lender whose EVM key the vault holds."""
    if loan.lender is not None and is_lender(loan.lender):
        return loan.lender
    for key in LenderKey.objects.filter(kind=LenderKey.Kind.EVM).select_related("lender").order_by("-created_at"):
        if is_lender(key.lender):
            return key.lender
    return None


def _row(loan: Loan, action: str) -> Automation:
    row, _ = Automation.objects.get_or_create(loan=loan, action=action, defaults={"party": Automation.Party.LENDER})
    return row


def _log(level: int, row: Automation, message: str, *args: object) -> None:
    logger.log(level, "automation %s of loan %s: " + message, row.action, row.loan_id, *args,
               extra={"loan_id": row.loan_id, "automation": row.action})  # fmt: skip


def _failure(row: Automation, error: str, report: AutomationReport, *, final: bool = False) -> None:
    """A failed run: count it (the alerts helper alerts operators at 2), keep the error; ``final``: ``failed``."""
    changes: dict[str, object] = {
        **Automation.failure_counts(),
        "last_error": error[:2000],
        "updated_at": timezone.now(),
    }
    if final:
        changes["state"] = Automation.State.FAILED
    Automation.objects.filter(pk=row.pk).update(**changes)
    report.failed.append((row.loan_id, row.action, error[:200]))
    _log(logging.WARNING, row, "%s%s", "failed for good: " if final else "failed: ", error)


def _success(row: Automation, *, now: datetime, **changes: object) -> None:
    Automation.objects.filter(pk=row.pk).update(**{"consecutive_failures": 0, "last_error": "", **changes})


def _done(row: Automation, report: AutomationReport, now: datetime, what: str) -> None:
    _success(row, now=now, state=Automation.State.DONE, done_at=now, evm_signed_tx=None)
    report.done.append((row.loan_id, row.action, what))
    _log(logging.INFO, row, "done (%s)", what)


# ------------------------------------------------------------------------------------------------ contract calls


def _in_own_connection(work: Callable[[], int]) -> int:
    """Run ``work`` in a transaction of a database connection of its own (a short-lived thread), committed when this
    returns: the caller may be inside the nonce lease's transaction, which commits only once the node has the
    transaction."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            with transaction.atomic():
                outcome["value"] = work()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error
        finally:
            connections.close_all()  # this thread's connections only

    thread = threading.Thread(target=run, name="automation-record")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return int(outcome["value"])  # type: ignore[call-overload]


def _recorder(row: Automation) -> Callable[[int, bytes, bytes], None]:
    """``on_signed`` for the services: record the signed transaction on the row, committed, before it is sent; the
    compare-and-set (pending -> sent) is the claim of this duty."""

    def record(nonce: int, tx_hash: bytes, signed_tx: bytes) -> None:
        def write() -> int:
            return Automation.objects.filter(pk=row.pk, state=Automation.State.PENDING).update(
                state=Automation.State.SENT,
                evm_tx_hash=tx_hash.hex(),
                evm_nonce=nonce,
                evm_signed_tx=vault.seal(vault.Secret(signed_tx)),
                attempts=F("attempts") + 1,
                updated_at=timezone.now(),
            )

        if _in_own_connection(write) != 1:
            raise _Claimed(f"{row.action} of loan {row.loan_id} was claimed by another worker")
        _log(logging.INFO, row, "signed 0x%s (nonce %s), recorded, sending", tx_hash.hex(), nonce)

    return record


def _evm_duty(service: Callable[..., evm_calls.EvmCall], action: str):
    def duty(*, loan: Loan, report: AutomationReport, now: datetime) -> None:
        row = _row(loan, action)
        if row.state == Automation.State.SENT:
            _follow_sent(row, report, now)
            return
        if row.state != Automation.State.PENDING:
            return
        actor = _server_actor(loan)
        if actor is None:
            _failure(row, "no active lender to act for (no EVM key of a lender in the vault)", report)
            return
        try:
            service(loan=loan, actor=actor, send=True, on_signed=_recorder(row))
        except _Claimed:
            report.waiting.append((loan.pk, action, "claimed by another worker"))
            return
        except LoanServiceError as error:
            row.refresh_from_db()
            if row.state == Automation.State.SENT:  # signed and sent, then it went wrong: the hash tells
                _follow_sent(row, report, now)
            elif error.code in NOT_YET_CODES:
                report.waiting.append((loan.pk, action, error.code))
            else:
                _failure(row, f"{error.code}: {error}", report, final=error.code in FINAL_CODES)
            return
        except PermissionDenied as error:
            _failure(row, f"permission_denied: {error}", report)
            return
        row.refresh_from_db()
        report.sent.append((loan.pk, action, row.evm_tx_hash or ""))
        _follow_sent(row, report, now)

    duty.__name__ = f"automation_{action.replace('-', '_')}"
    duty.__doc__ = f"The {action} duty of one loan: ``evm_calls.{service.__name__}(send=True)``, at most once."
    return duty


def _follow_sent(row: Automation, report: AutomationReport, now: datetime) -> None:
    """A recorded transaction: its receipt decides; unknown to the node, the same bytes are sent again."""
    tx_hash = bytes.fromhex(row.evm_tx_hash or "")
    try:
        w3 = evm_web3()
        receipt = _receipt(w3, tx_hash)
        if receipt is None and not _known(w3, tx_hash):
            outcome = submit_signed(w3, vault.unseal(row.evm_signed_tx).reveal())
            if outcome is SubmitOutcome.NONCE_USED:
                receipt = _receipt(w3, tx_hash)
                if receipt is None:
                    reset = Automation.objects.filter(
                        pk=row.pk, state=Automation.State.SENT, evm_tx_hash=row.evm_tx_hash
                    )
                    reset.update(state=Automation.State.PENDING, evm_tx_hash=None, evm_nonce=None, evm_signed_tx=None)
                    _failure(row, f"nonce {row.evm_nonce} was taken by another transaction: signing anew", report)
                    return
            else:
                Automation.objects.filter(pk=row.pk).update(attempts=F("attempts") + 1)
                _log(logging.INFO, row, "sent 0x%s again (the same signed transaction)", tx_hash.hex())
                try:
                    receipt = wait_for_receipt(w3, tx_hash, timeout=RESEND_RECEIPT_WAIT_SECONDS)
                except TransactionFailed:
                    receipt = None  # still pending: the next pass looks again
    except (EvmError, OSError, Web3Exception) as error:
        _failure(row, f"evm_node_unavailable: {error}", report)
        return
    if receipt is None:
        report.waiting.append((row.loan_id, row.action, "mining"))
        return
    if receipt["status"] == 1:
        _done(row, report, now, f"0x{tx_hash.hex()} mined in block {receipt['blockNumber']}")
    else:
        _failure(row, f"contract_reverted: 0x{tx_hash.hex()} reverted in block {receipt['blockNumber']}", report,
                 final=True)  # fmt: skip
        Automation.objects.filter(pk=row.pk).update(evm_signed_tx=None)


def _receipt(w3, tx_hash: bytes):
    try:
        return w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    except TransactionNotFound:
        return None


def _known(w3, tx_hash: bytes) -> bool:
    try:
        return w3.eth.get_transaction(HexBytes(tx_hash)) is not None
    except TransactionNotFound:
        return False


automation_commit_lender_hash = _evm_duty(evm_calls.lender_hash_commit, "commit-lender-hash")
automation_offer = _evm_duty(evm_calls.loan_offer_extend, "offer")
automation_accept_repayment = _evm_duty(evm_calls.loan_repayment_accept, "accept-repayment")
automation_withdraw_offer = _evm_duty(evm_calls.loan_offer_withdraw, "withdraw-offer")
automation_mark_default = _evm_duty(evm_calls.loan_default_mark, "mark-default")


# ------------------------------------------------------------------------------------------------ Bitcoin steps


def _claimed_row(loan: Loan, action: str) -> Automation | None:
    """The duty's row locked for this worker (inside the caller's transaction), or None if another one holds it."""
    _row(loan, action)
    return Automation.objects.select_for_update(skip_locked=True).filter(loan=loan, action=action).first()


def _bitcoin_duty(
    *,
    loan: Loan,
    action: str,
    settled: str,
    first: Callable[[Loan, User], object],
    report: AutomationReport,
    now: datetime,
    linger: Callable[[Automation, Loan], None] | None = None,
) -> None:
    """Broadcast once (``first``), hand the same transaction to the node each pass until the watcher shows
    ``settled``, then done."""
    with transaction.atomic():
        row = _claimed_row(loan, action)
        if row is None:
            report.waiting.append((loan.pk, action, "claimed by another worker"))
            return
        if row.state in (Automation.State.DONE, Automation.State.FAILED):
            return
        loan.refresh_from_db()
        if loan.bitcoin_status == settled:
            _done(row, report, now, f"the watcher shows {settled}")
            return
        actor = _server_actor(loan)
        if actor is None:
            _failure(row, "no active lender to act for", report)
            return
        try:
            if row.bitcoin_broadcast_id is None:
                broadcast = first(loan, actor)
                report.sent.append((loan.pk, action, broadcast.txid))  # type: ignore[attr-defined]
            else:  # the same transaction again, through the broadcast service (no operator audit row)
                broadcast = bitcoin_actions.bitcoin_transaction_broadcast(
                    loan=loan, actor=actor, transaction_hex=row.bitcoin_broadcast.raw_hex
                )
        except LoanServiceError as error:
            if error.code in NOT_YET_CODES and row.bitcoin_broadcast_id is None:
                report.waiting.append((loan.pk, action, error.code))
            else:
                _failure(row, f"{error.code}: {error}", report)
            return
        except PermissionDenied as error:
            _failure(row, f"permission_denied: {error}", report)
            return
        Automation.objects.filter(pk=row.pk).update(
            state=Automation.State.SENT, bitcoin_broadcast=broadcast, attempts=F("attempts") + 1
        )
        if broadcast.accepted_at is None or broadcast.last_error:  # type: ignore[attr-defined]
            _failure(row, f"broadcast not accepted: {broadcast.last_error}", report)  # type: ignore[attr-defined]
            return
        cpfp_error = linger(row, loan) if linger is not None else None
        _success(row, now=now, last_error=cpfp_error or "")
        _log(logging.INFO, row, "broadcast %s", broadcast.txid)  # type: ignore[attr-defined]


def automation_collateral_lock(*, loan: Loan, report: AutomationReport, now: datetime) -> None:
    """TX_1 as soon as pB is public (always on); again each pass until confirmed; CPFP when it lingers."""
    _bitcoin_duty(
        loan=loan,
        action="collateral-lock",
        settled=Loan.BitcoinStatus.COLLATERAL_LOCKED,
        first=lambda loan, actor: bitcoin_actions.collateral_lock(loan=loan, actor=actor),
        report=report,
        now=now,
        linger=_tx1_bump_if_lingering,
    )


def automation_collateral_capture(*, loan: Loan, report: AutomationReport, now: datetime) -> None:
    """TX_capture once t_1 has matured (``auto_capture``), at the node's fee estimate."""
    _bitcoin_duty(
        loan=loan,
        action="collateral-capture",
        settled=Loan.BitcoinStatus.CAPTURED,
        first=lambda loan, actor: bitcoin_actions.collateral_capture(loan=loan, actor=actor),
        report=report,
        now=now,
    )


def _linger_blocks() -> int:
    return settings.AUTOMATION_TX1_LINGER_BLOCKS


def _tx1_bump_if_lingering(row: Automation, loan: Loan) -> str | None:
    """CPFP of TX_1 once it has waited ``AUTOMATION_TX1_LINGER_BLOCKS`` blocks in the node's mempool; the reason
    when it cannot be bumped (kept in ``last_error``), None otherwise."""
    broadcast = Automation.objects.select_related("bitcoin_broadcast").get(pk=row.pk).bitcoin_broadcast
    if broadcast is None:
        return None
    rpc = bitcoin_rpc()
    try:
        entry = rpc.call("getmempoolentry", broadcast.txid)
        tip = rpc.getblockcount()
    except (BitcoinRPCError, OSError):
        return None  # confirmed meanwhile, or the node cannot say: nothing to bump now
    waited = tip - int(entry["height"])
    if waited < _linger_blocks():
        return None
    try:
        if rpc.get_utxo(broadcast.txid, 0) is None:
            return None  # output 0 is spent in the mempool already: bumped
    except (BitcoinRPCError, OSError):
        return None
    try:
        child = tx1_cpfp_child(loan=loan, tx1_hex=broadcast.raw_hex)
    except LoanServiceError as error:
        return f"TX_1 {broadcast.txid} lingers {waited} blocks; no CPFP: {error}"
    try:
        rpc.broadcast(child.hex(), child.txid)
    except (BitcoinRPCError, OSError) as error:
        return f"TX_1 {broadcast.txid} lingers {waited} blocks; its CPFP child {child.txid} was refused: {error}"
    _log(logging.INFO, row, "TX_1 %s lingered %s blocks: CPFP child %s", broadcast.txid, waited, child.txid)
    return None


def tx1_cpfp_child(*, loan: Loan, tx1_hex: str, fee_rate_sat_vb: Fraction | None = None) -> Transaction:
    """A child spending TX_1's output 0 (the origination fee to the lender's payout address) back to that address,
    paying for both at ``fee_rate_sat_vb`` (the node's estimate by default). Only when the payout address is a
    BIP-86 key-path P2TR address of a Bitcoin key the vault holds (``no_payout_key`` otherwise)."""
    tx1 = Transaction.parse(tx1_hex)
    fee_output = tx1.outputs[0]
    key = None
    for candidate in LenderKey.objects.filter(kind=LenderKey.Kind.BITCOIN).values_list("public_id", flat=True):
        if p2tr_script_pubkey(bip86_output_key(bytes.fromhex(candidate))) == fee_output.script_pubkey:
            key = lender_bitcoin_key(xonly_pubkey=candidate)
            break
    if key is None:
        raise LoanServiceError(
            f"TX_1's output 0 pays {loan.lender_payout_address}, not a BIP-86 key-path address of a Bitcoin key in the "
            "vault: the lender cannot spend it to bump TX_1",
            code="no_payout_key",
        )
    rate = fee_rate_sat_vb if fee_rate_sat_vb is not None else current_fee_rate_sat_vb()[0]
    parent_fee = _tx1_fee_sats(loan, tx1)
    package_vsize = tx1.vsize + CPFP_CHILD_VSIZE
    child_fee = -(-(rate * package_vsize).numerator // (rate * package_vsize).denominator) - parent_fee
    child_fee = max(child_fee, CPFP_CHILD_VSIZE)  # at least 1 sat/vB of its own
    value = fee_output.value - child_fee
    try:
        payout = address_to_script_pubkey(loan.lender_payout_address, settings.BITCOIN_NETWORK)
        return build_keypath_spend(
            key,
            outpoint=OutPoint(tx1.txid, 0),
            spent=fee_output,
            outputs=[TxOut(value, payout)],
        )
    except BitcoinProtocolError as error:
        raise LoanServiceError(f"no CPFP child: {error}", code="no_payout_key") from None


def _tx1_fee_sats(loan: Loan, tx1: Transaction) -> int:
    spent = loan.escrow_sats or 0
    return max(0, spent - sum(output.value for output in tx1.outputs))


DUTIES: dict[str, Callable[..., None]] = {
    "collateral-lock": automation_collateral_lock,
    "commit-lender-hash": automation_commit_lender_hash,
    "offer": automation_offer,
    "accept-repayment": automation_accept_repayment,
    "withdraw-offer": automation_withdraw_offer,
    "mark-default": automation_mark_default,
    "collateral-capture": automation_collateral_capture,
}

__all__ = [
    "DUTIES",
    "LENDER_ACTIONS",
    "NOT_YET_CODES",
    "AutomationReport",
    "automation_accept_repayment",
    "automation_collateral_capture",
    "automation_collateral_lock",
    "automation_commit_lender_hash",
    "automation_mark_default",
    "automation_offer",
    "automation_run",
    "automation_withdraw_offer",
    "tx1_cpfp_child",
]
