"""The Bitcoin actions of both parties: B's pre-signed ladders and PSBTs, every broadcast, L's TX_1 and TX_capture.

- ``presigned_ladder_upload`` (the borrower): B's TX_release and TX_exit pre-signed at a ladder of fee rates
  (PROTOCOL.md: the borrower needs no long-lived Bitcoin key), each rung checked in full against the loan's facts
  and its signature verified (``bitcoin.presignature.verify_borrower_sweep_signature``); all rungs or none.
- ``release_psbt_prepare`` / ``exit_psbt_prepare`` (the borrower): the unsigned TX_release (with pL once public)
  or TX_exit (once t_0 matured and the escrow is B's) as a PSBT, for B to sign elsewhere.
- ``bitcoin_transaction_broadcast`` (the borrower: TX_exit, TX_release; the lender or an operator: TX_1,
  TX_capture): a complete transaction of *this* loan, checked against its facts, handed to the node.
- ``collateral_lock`` / ``collateral_capture`` (the lender or an operator): TX_1 from B's newest verified
  pre-signature, or TX_capture after t_1, signed with the lender's key from the vault and broadcast.
- ``bitcoin_broadcast_retry`` (operators): a stored broadcast sent again, with an ``OperatorAction`` row.
- ``presigned_sweep_broadcast`` (the server, no actor: the borrower's watchtower): one of B's stored ladder rungs
  re-verified, completed (TX_release with the public pL) and broadcast, under the checks B's own broadcast and
  PSBTs have, and more: a TX_exit only for an escrow the contract will never take into TX_1, after t_0.

The node's answer to a broadcast: accepted (``accepted_at``), refused as invalid (``broadcast_refused``) or not
final yet (``too_early``: BIP-68 or locktime), in which case nothing is stored; unreachable: the row is stored
with ``last_error`` and ``accepted_at`` None, to be retried. The same txid again returns its row, sent again.
Whether a transaction confirmed is the watcher's business (``BitcoinTransaction``), never these rows'.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from django.db import IntegrityError
from django.db import transaction as db_transaction
from django.utils import timezone

from bitcoin.encoding import sha256
from bitcoin.errors import BitcoinProtocolError, PresignatureError, TransactionError
from bitcoin.fees import parse_fee_rate
from bitcoin.loan import LoanFacts
from bitcoin.presignature import (
    SWEEP_SIGNATURE_REFUSAL_REASONS,
    TX1_REFUSAL_REASONS,
    VerifiedSweep,
    check_sweep_transaction,
    check_tx1_transaction,
    verify_borrower_presignature,
    verify_borrower_sweep_signature,
)
from bitcoin.psbt import Psbt, create_psbt
from bitcoin.rpc import BitcoinRPCError, RPCError
from bitcoin.transactions import (
    COLLATERAL_OUTPUT_INDEX,
    PreparedSpend,
    SpendKind,
    Transaction,
    build_capture,
    build_exit,
    build_release,
    check_fee_rate_bounds,
    finalize,
    finalize_capture,
    finalize_exit,
    finalize_release,
    finalize_tx1,
)

from ..chains import bitcoin_rpc
from ..errors import LoanServiceError
from ..facts import loan_facts
from ..funding import current_fee_rate_sat_vb
from ..models import BitcoinBroadcast, BorrowerSignature, Loan, OperatorAction, User
from ..permissions import is_lender, is_loan_borrower, is_operator, require
from ..selectors import TimelockPath, applied_tx1_txid, loan_timelocks
from .lender_secrets import lender_bitcoin_key
from .transitions import loan_fact_push

#: The most rungs a ladder may have, per kind.
MAX_LADDER_RUNGS = 16
#: Node reject reasons that mean "not yet": a relative (BIP-68) or absolute timelock not reached.
TOO_EARLY_REASONS = ("non-BIP68-final", "non-final")

_SWEEP_REASONS = SWEEP_SIGNATURE_REFUSAL_REASONS
_CHECK_REASONS = tuple(dict.fromkeys((*TX1_REFUSAL_REASONS, *_SWEEP_REASONS, "not_a_loan_transaction")))

LADDER_UPLOAD_CODES: tuple[str, ...] = (
    "wrong_state",
    "escrow_not_confirmed",
    "escrow_spent",
    "tx1_not_presigned",
    "ladder_empty",
    "ladder_too_long",
    "invalid_loan_terms",
    *_SWEEP_REASONS,
)
RELEASE_PSBT_CODES: tuple[str, ...] = (
    "lender_preimage_unknown",
    "collateral_not_locked",
    "chain_fact_mismatch",
    "invalid_fee_rate",
    "invalid_loan_terms",
)
EXIT_PSBT_CODES: tuple[str, ...] = (
    "escrow_not_confirmed",
    "escrow_spent",
    "escrow_owed_to_lender",
    "too_early",
    "invalid_fee_rate",
    "invalid_loan_terms",
)
BROADCAST_CODES: tuple[str, ...] = (
    "wrong_state",
    "invalid_loan_terms",
    "incomplete_transaction",
    *_CHECK_REASONS,
    "broadcast_refused",
    "too_early",
)
COLLATERAL_LOCK_CODES: tuple[str, ...] = (
    "wrong_state",
    "borrower_preimage_unknown",
    "escrow_not_confirmed",
    "escrow_spent",
    "chain_fact_mismatch",
    "no_presignature",
    "invalid_loan_terms",
    *TX1_REFUSAL_REASONS,
    "no_lender_key",
    "lender_secret_mismatch",
    "broadcast_refused",
    "too_early",
)
COLLATERAL_CAPTURE_CODES: tuple[str, ...] = (
    "wrong_state",
    "collateral_not_locked",
    "too_early",
    "invalid_fee_rate",
    "invalid_loan_terms",
    "no_lender_key",
    "lender_secret_mismatch",
    "broadcast_refused",
)
PRESIGNED_SWEEP_CODES: tuple[str, ...] = (
    "wrong_state",
    "not_a_ladder_rung",
    "lender_preimage_unknown",
    "collateral_not_locked",
    "chain_fact_mismatch",
    "escrow_not_confirmed",
    "escrow_spent",
    "escrow_owed_to_lender",
    "invalid_loan_terms",
    "incomplete_transaction",
    *_CHECK_REASONS,
    "broadcast_refused",
    "too_early",
)
#: A retry is never refused for what the node says (the outcome is on the row and in the audit row).
BROADCAST_RETRY_CODES: tuple[str, ...] = ()


def _refuse(code: str, message: str) -> LoanServiceError:
    return LoanServiceError(message, code=code)


def _acts_for_lender(user: object, loan: Loan) -> bool:
    """An operator, or the lender (the loan's own, once it names one)."""
    if is_operator(user):
        return True
    return is_lender(user) and (loan.lender_id is None or getattr(user, "pk", None) == loan.lender_id)


def _facts(loan: Loan) -> LoanFacts:
    try:
        return loan_facts(loan=loan)
    except BitcoinProtocolError as error:
        raise _refuse("invalid_loan_terms", f"loan {loan.pk}'s facts make no transaction: {error}") from None


def _locked(loan: Loan) -> Loan:
    return Loan.objects.select_for_update().get(pk=loan.pk)


def _require_open(loan: Loan, what: str) -> None:
    if loan.is_closed:
        raise _refuse("wrong_state", f"loan {loan.pk} is closed: {what}")


def _fee_rate(facts: LoanFacts, fee_rate_sat_vb: object) -> Fraction:
    try:
        return check_fee_rate_bounds(facts, fee_rate_sat_vb)  # type: ignore[arg-type]
    except BitcoinProtocolError as error:
        raise _refuse("invalid_fee_rate", str(error)) from None


def _presigned_tx1_txids(loan: Loan) -> set[str]:
    return set(
        BorrowerSignature.objects.filter(
            loan=loan, kind=BorrowerSignature.Kind.TX_1, verified_at__isnull=False
        ).values_list("txid", flat=True)
    )


# ------------------------------------------------------------------------------------------------ ladders


def _is_psbt(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith("cHNidP8") or stripped.lower().startswith("70736274ff")


def presigned_ladder_upload(
    *, loan: Loan, actor: User, release: list[str] | tuple[str, ...] = (), exit: list[str] | tuple[str, ...] = ()
) -> list[BorrowerSignature]:
    """Verify and store B's pre-signed TX_release and TX_exit rungs (all or none); return their rows in order.

    ``release``: PSBTs (base64 or hex) signed by xB, each spending output 1 of one of the loan's verified TX_1
    pre-signatures. ``exit``: PSBTs or finalized TX_exit (hex). A rung already stored (same txid) returns its row.
    """
    require(is_loan_borrower(actor, loan), "only the loan's borrower uploads its pre-signed ladders")
    rungs = [(SpendKind.TX_RELEASE, item) for item in release] + [(SpendKind.TX_EXIT, item) for item in exit]
    if not rungs:
        raise _refuse("ladder_empty", "send at least one TX_release or TX_exit rung")
    if len(release) > MAX_LADDER_RUNGS or len(exit) > MAX_LADDER_RUNGS:
        raise _refuse("ladder_too_long", f"a ladder has at most {MAX_LADDER_RUNGS} rungs of each kind")
    with db_transaction.atomic():
        locked = _locked(loan)
        require(is_loan_borrower(actor, locked), "only the loan's borrower uploads its pre-signed ladders")
        _require_open(locked, "nothing is left to pre-sign")
        funded = locked.escrow_txid is not None and locked.escrow_sats is not None
        if not funded or locked.bitcoin_status not in (
            Loan.BitcoinStatus.ESCROW_CONFIRMED,
            Loan.BitcoinStatus.COLLATERAL_LOCKED,
        ):
            raise _refuse(
                "escrow_not_confirmed" if locked.bitcoin_status == Loan.BitcoinStatus.NONE else "wrong_state",
                f"loan {locked.pk}'s bitcoin is {locked.bitcoin_status}: ladders are pre-signed for a confirmed "
                "escrow or locked collateral",
            )
        if exit and locked.bitcoin_status != Loan.BitcoinStatus.ESCROW_CONFIRMED:
            raise _refuse("escrow_spent", f"loan {locked.pk}'s escrow is already spent: no TX_exit can spend it")
        tx1_txids = _presigned_tx1_txids(locked)
        if release and not tx1_txids:
            raise _refuse("tx1_not_presigned", "TX_release spends TX_1's output 1: pre-sign TX_1 first")
        facts = _facts(locked)
        verified: list[tuple[SpendKind, str, VerifiedSweep]] = []
        for index, (kind, item) in enumerate(rungs):
            is_release = kind is SpendKind.TX_RELEASE
            name = f"release[{index}]" if is_release else f"exit[{index - len(release)}]"
            verified.append((kind, item, _verify_rung(facts, kind, item, tx1_txids, name)))
        rows = []
        now = timezone.now()
        for kind, item, rung in verified:
            tx = rung.transaction
            existing = BorrowerSignature.objects.filter(loan=locked, txid=tx.txid).first()
            if existing is not None:
                rows.append(existing)
                continue
            rows.append(
                BorrowerSignature.objects.create(
                    loan=locked,
                    kind=kind.value,
                    form=BorrowerSignature.Form.PSBT if rung.form == "psbt" else BorrowerSignature.Form.TRANSACTION,
                    psbt_base64=Psbt.load(item).to_base64() if rung.form == "psbt" else "",
                    signature_hex=rung.borrower_signature.hex(),
                    sighash_hex=rung.sighash.hex(),
                    unsigned_tx_hex=tx.serialize(include_witness=False).hex(),
                    txid=tx.txid,
                    verified_at=now,
                    uploaded_by=actor,
                )
            )
        return rows


def _verify_rung(facts: LoanFacts, kind: SpendKind, item: str, tx1_txids: set[str], name: str) -> VerifiedSweep:
    if not isinstance(item, str) or not item.strip():
        raise _refuse("malformed_psbt", f"{name}: send a PSBT (base64) or a transaction (hex)")
    upload: dict[str, str] = {"psbt": item} if _is_psbt(item) else {"transaction": item}
    if kind is SpendKind.TX_RELEASE and "psbt" not in upload:
        raise _refuse("malformed_psbt", f"{name}: a TX_release rung is a PSBT signed by the borrower")
    tx1_txid = None
    if kind is SpendKind.TX_RELEASE:
        try:
            spent = Psbt.load(item).unsigned_tx.inputs
        except BitcoinProtocolError as error:
            raise _refuse("malformed_psbt", f"{name}: {error}") from None
        if len(spent) != 1:
            raise _refuse("wrong_input_count", f"{name}: TX_release has exactly one input, got {len(spent)}")
        if spent[0].outpoint.txid not in tx1_txids or spent[0].outpoint.vout != COLLATERAL_OUTPUT_INDEX:
            raise _refuse(
                "wrong_outpoint", f"{name}: spends {spent[0].outpoint}, not output 1 of a pre-signed TX_1 of this loan"
            )
        tx1_txid = spent[0].outpoint.txid
    try:
        return verify_borrower_sweep_signature(facts, kind, tx1_txid=tx1_txid, **upload)  # type: ignore[arg-type]
    except PresignatureError as error:
        raise _refuse(error.reason, f"{name}: {error.args[0]}") from None
    except BitcoinProtocolError as error:
        raise _refuse("invalid_loan_terms", f"{name}: the loan's facts make no {kind.value}: {error}") from None


def ladder_rung_amounts(*, signature: BorrowerSignature) -> PreparedSpend:
    """A stored rung re-checked against its loan's facts, for its payout, fee and fee rate."""
    facts = loan_facts(loan=signature.loan)
    tx = Transaction.parse(signature.unsigned_tx_hex)
    tx1_txid = tx.inputs[0].outpoint.txid if signature.kind == BorrowerSignature.Kind.TX_RELEASE else None
    return check_sweep_transaction(facts, SpendKind(signature.kind), tx, None, tx1_txid)


# ------------------------------------------------------------------------------------------------ PSBTs for B


@dataclass(frozen=True)
class PreparedPsbt:
    """An unsigned loan transaction as a PSBT for B's signer, with what it pays."""

    psbt: Psbt
    prepared: PreparedSpend

    @property
    def txid(self) -> str:
        return self.prepared.tx.txid

    @property
    def fee_sats(self) -> int:
        return self.prepared.fee_sats

    @property
    def payout_sats(self) -> int:
        return self.prepared.tx.outputs[0].value

    @property
    def fee_rate_sat_vb(self) -> Fraction:
        return self.prepared.fee_rate


def _build(build, facts: LoanFacts, rate: Fraction, **kwargs: object) -> PreparedSpend:
    try:
        return build(facts, fee_rate_sat_vb=rate, **kwargs)
    except BitcoinProtocolError as error:
        raise _refuse("invalid_fee_rate", f"cannot build it at {rate} sat/vB: {error}") from None


def release_psbt_prepare(*, loan: Loan, actor: User, fee_rate_sat_vb: object) -> PreparedPsbt:
    """The unsigned TX_release of the locked collateral, pL recorded (PSBT_IN_SHA256) and B's tap BIP-32
    derivation for the collateral's leaf 1, as ``python -m bitcoin build-release --lender-preimage`` makes it."""
    require(is_loan_borrower(actor, loan), "only the loan's borrower releases its collateral")
    loan.refresh_from_db()
    if loan.lender_preimage is None:
        raise _refuse(
            "lender_preimage_unknown", f"loan {loan.pk}'s pL is not public yet: the repayment is not accepted"
        )
    tx1_txid = applied_tx1_txid(loan=loan)
    if loan.bitcoin_status != Loan.BitcoinStatus.COLLATERAL_LOCKED or tx1_txid is None:
        raise _refuse("collateral_not_locked", f"loan {loan.pk}'s bitcoin is {loan.bitcoin_status}, not locked")
    facts = _facts(loan)
    preimage = bytes.fromhex(loan.lender_preimage)
    if facts.lender_hash is None or sha256(preimage) != facts.lender_hash:
        raise _refuse("chain_fact_mismatch", f"loan {loan.pk}'s pL does not hash to its hL")
    prepared = _build(build_release, facts, _fee_rate(facts, fee_rate_sat_vb), tx1_txid=tx1_txid)
    psbt = create_psbt(prepared)
    psbt.add_sha256_preimage(0, preimage)
    return PreparedPsbt(psbt=psbt, prepared=prepared)


def exit_psbt_prepare(*, loan: Loan, actor: User, fee_rate_sat_vb: object) -> PreparedPsbt:
    """The unsigned TX_exit of the escrow (leaf 0, nSequence t_0) with B's tap BIP-32 derivation, once t_0 has
    matured and the contract does not owe the escrow to TX_1."""
    require(is_loan_borrower(actor, loan), "only the loan's borrower reclaims its escrow")
    loan.refresh_from_db()
    if loan.bitcoin_status in (Loan.BitcoinStatus.COLLATERAL_LOCKED, *Loan.TERMINAL_BITCOIN_STATUSES):
        raise _refuse("escrow_spent", f"loan {loan.pk}'s escrow is spent ({loan.bitcoin_status})")
    if loan.bitcoin_status != Loan.BitcoinStatus.ESCROW_CONFIRMED or loan.escrow_txid is None:
        raise _refuse("escrow_not_confirmed", f"loan {loan.pk} has no confirmed escrow")
    if loan.status in Loan.ESCROW_OWED_TO_LENDER_STATUSES:
        raise _refuse(
            "escrow_owed_to_lender", f"loan {loan.pk} is {loan.status}: its escrow belongs in TX_1, not back to B"
        )
    _require_mature(loan_timelocks(loan=loan).exit, "t_0", unknown=("escrow_not_confirmed", "escrow"))
    facts = _facts(loan)
    prepared = _build(build_exit, facts, _fee_rate(facts, fee_rate_sat_vb))
    return PreparedPsbt(psbt=create_psbt(prepared), prepared=prepared)


def _require_mature(path: TimelockPath, name: str, *, unknown: tuple[str, str]) -> None:
    """Refuse unless the next block may hold the spend of ``path`` (its timelock ``name``, e.g. t_0); ``unknown``
    is the code and the output's name when its height is not known yet."""
    code, output = unknown
    if path.blocks_remaining is None:
        raise _refuse(code, f"the {output}'s height is not known yet")
    if not path.is_mature:
        raise _refuse(
            "too_early", f"{name} matures at height {path.mature_height}: {path.blocks_remaining} more block(s) first"
        )


# ------------------------------------------------------------------------------------------------ broadcasts


def _identify(facts: LoanFacts, tx: Transaction, tx1_txids: set[str]) -> PreparedSpend:
    """Which of the loan's transactions ``tx`` is, checked in full (every output); PresignatureError otherwise."""
    if len(tx.inputs) == 1:
        txin = tx.inputs[0]
        if facts.escrow_outpoint is not None and txin.outpoint == facts.escrow_outpoint:
            if txin.sequence == facts.escrow_timelock_btc_blocks:
                return check_sweep_transaction(facts, SpendKind.TX_EXIT, tx)
            return check_tx1_transaction(facts, tx)
        if txin.outpoint.txid in tx1_txids and txin.outpoint.vout == COLLATERAL_OUTPUT_INDEX:
            kind = (
                SpendKind.TX_CAPTURE if txin.sequence == facts.collateral_timelock_btc_blocks else SpendKind.TX_RELEASE
            )
            return check_sweep_transaction(facts, kind, tx, None, txin.outpoint.txid)
    raise PresignatureError(
        "not_a_loan_transaction", "it spends neither this loan's escrow nor the collateral output of its TX_1"
    )


def _check_complete(prepared: PreparedSpend, tx: Transaction) -> None:
    """The witness completes the spend: valid signatures of every signer, the preimage, this leaf and control."""
    witness = tx.inputs[0].witness
    signers = len(prepared.signers)
    has_preimage = prepared.preimage_hash is not None
    if len(witness) != signers + has_preimage + 2:
        raise _refuse("incomplete_transaction", f"the {prepared.kind.value} is not completely signed")
    try:
        rebuilt = finalize(
            prepared, signatures=list(witness[:signers]), preimage=witness[signers] if has_preimage else None
        )
    except BitcoinProtocolError as error:
        raise _refuse(
            "incomplete_transaction", f"the {prepared.kind.value}'s witness does not spend it: {error}"
        ) from None
    if rebuilt.serialize() != tx.serialize():
        raise _refuse("incomplete_transaction", f"the {prepared.kind.value}'s witness is not its leaf's")


@dataclass(frozen=True)
class _Outcome:
    accepted: bool
    error: str = ""
    refusal: LoanServiceError | None = None


def _send(tx_hex: str, txid: str) -> _Outcome:
    """Hand a transaction to the node: accepted, refused (a refusal to raise) or unreachable (an error to keep)."""
    try:
        bitcoin_rpc().broadcast(tx_hex, txid)
    except RPCError as error:
        code = "too_early" if any(reason in error.message for reason in TOO_EARLY_REASONS) else "broadcast_refused"
        return _Outcome(False, str(error), _refuse(code, f"the node refused {txid}: {error.message}"))
    except (BitcoinRPCError, OSError) as error:
        return _Outcome(False, f"node unreachable: {error}")
    return _Outcome(True)


def _store(loan: Loan, kind: str, tx_hex: str, txid: str, actor: User | None, outcome: _Outcome) -> BitcoinBroadcast:
    now = timezone.now()
    changes = {
        "last_attempt_at": now,
        "last_error": outcome.error,
        **({"accepted_at": now} if outcome.accepted else {}),
    }
    for _ in range(2):
        try:
            with db_transaction.atomic():
                row = BitcoinBroadcast.objects.select_for_update().filter(loan=loan, txid=txid).first()
                # The loan's pages show what was handed to the node (or is waiting for it): they follow.
                loan_fact_push(loan_ids=[loan.pk], fact="bitcoin_broadcast")
                if row is None:
                    return BitcoinBroadcast.objects.create(
                        loan=loan, kind=kind, txid=txid, raw_hex=tx_hex, requested_by=actor, attempts=1, **changes
                    )
                for name, value in changes.items():
                    setattr(row, name, value)
                row.attempts += 1
                row.save(update_fields=[*changes, "attempts"])
                return row
        except IntegrityError:  # a racing twin created it first: update that one
            continue
    raise RuntimeError(f"could not store the broadcast of {txid}")


def _broadcast(loan: Loan, kind: str, tx_hex: str, txid: str, actor: User | None) -> BitcoinBroadcast:
    """Send; a refusal raises (nothing stored); accepted or unreachable: the row, created or updated."""
    outcome = _send(tx_hex, txid)
    if outcome.refusal is not None:
        raise outcome.refusal
    return _store(loan, kind, tx_hex, txid, actor, outcome)


def bitcoin_transaction_broadcast(*, loan: Loan, actor: User, transaction_hex: str) -> BitcoinBroadcast:
    """Broadcast a complete transaction of this loan: the borrower TX_exit and TX_release, the lender or an
    operator TX_1 and TX_capture. Checked against the loan's facts (kind, every output, the witness) first."""
    borrower, lender_side = is_loan_borrower(actor, loan), _acts_for_lender(actor, loan)
    require(borrower or lender_side, "only the loan's borrower, the lender or an operator broadcasts its transactions")
    with db_transaction.atomic():
        locked = _locked(loan)
        _require_open(locked, "its bitcoin is settled")
        try:
            tx = Transaction.parse(transaction_hex)
        except (TransactionError, AttributeError) as error:
            raise _refuse("malformed_transaction", str(error)) from None
        if not tx.has_witness:
            raise _refuse("incomplete_transaction", "the transaction carries no witness: sign and finalize it first")
        facts = _facts(locked)
        tx1_txids = _presigned_tx1_txids(locked)
        applied = applied_tx1_txid(loan=locked)
        if applied is not None:
            tx1_txids.add(applied)
        try:
            prepared = _identify(facts, tx, tx1_txids)
        except PresignatureError as error:
            raise _refuse(error.reason, str(error.args[0])) from None
        if prepared.kind in (SpendKind.TX_EXIT, SpendKind.TX_RELEASE):
            require(borrower, f"only the borrower broadcasts {prepared.kind.value}")
        else:
            require(lender_side, f"only the lender or an operator broadcasts {prepared.kind.value}")
        _check_complete(prepared, tx)
    return _broadcast(locked, prepared.kind.value, tx.hex(), tx.txid, actor)


# ------------------------------------------------------------------------------------------------ the watchtower's


#: Loan states whose escrow the contract will never take into TX_1: cancelled, offer expired, never offered.
STRANDED_ESCROW_STATUSES = frozenset(
    {Loan.Status.DRAFT, Loan.Status.REQUESTED, Loan.Status.CANCELLED, Loan.Status.OFFER_EXPIRED}
)


def _verified_rung(facts: LoanFacts, rung: BorrowerSignature, tx1_txid: str | None) -> VerifiedSweep:
    """A stored rung verified again in full against the loan's facts (its signature included)."""
    kind = SpendKind(rung.kind)
    try:
        if rung.form == BorrowerSignature.Form.PSBT:
            return verify_borrower_sweep_signature(facts, kind, psbt=rung.psbt_base64, tx1_txid=tx1_txid)
        if kind is not SpendKind.TX_EXIT:
            raise _refuse("not_a_ladder_rung", f"rung {rung.pk} is no PSBT: a TX_release rung is one")
        prepared = check_sweep_transaction(facts, kind, Transaction.parse(rung.unsigned_tx_hex))
        full = finalize(prepared, signatures=[bytes.fromhex(rung.signature_hex)])
        return verify_borrower_sweep_signature(facts, kind, transaction=full)
    except PresignatureError as error:
        raise _refuse(error.reason, f"rung {rung.pk} no longer verifies: {error.args[0]}") from None
    except BitcoinProtocolError as error:
        raise _refuse("invalid_loan_terms", f"loan {rung.loan_id}'s facts make no {kind.value}: {error}") from None


def presigned_sweep_broadcast(*, loan: Loan, rung: BorrowerSignature) -> BitcoinBroadcast:
    """Broadcast one of B's pre-signed ladder rungs for B, with no user acting (the borrower's watchtower; the
    server holds no borrower key: the rung is B's own signature). Re-verified against the loan's facts, completed
    (TX_release with pL) and checked like ``bitcoin_transaction_broadcast``; a TX_release only once pL is public
    and TX_1 applied, a TX_exit only for a stranded escrow (``STRANDED_ESCROW_STATUSES``, pB never public) after
    t_0: never one the contract owes to the lender. The same rung again: its row, sent again."""
    if rung.loan_id != loan.pk or rung.kind not in (BorrowerSignature.Kind.TX_RELEASE, BorrowerSignature.Kind.TX_EXIT):
        raise _refuse("not_a_ladder_rung", f"signature {rung.pk} is no TX_release or TX_exit rung of loan {loan.pk}")
    if rung.verified_at is None:
        raise _refuse("not_a_ladder_rung", f"rung {rung.pk} was never verified")
    with db_transaction.atomic():
        locked = _locked(loan)
        _require_open(locked, "its bitcoin is settled")
        facts = _facts(locked)
        if rung.kind == BorrowerSignature.Kind.TX_RELEASE:
            tx = _complete_release(locked, facts, rung)
            tx1_txids = {tx.inputs[0].outpoint.txid}
        else:
            tx = _complete_exit(locked, facts, rung)
            tx1_txids = set()
        try:
            prepared = _identify(facts, tx, tx1_txids)
        except PresignatureError as error:
            raise _refuse(error.reason, str(error.args[0])) from None
        if prepared.kind.value != rung.kind:
            raise _refuse("not_a_ladder_rung", f"rung {rung.pk} is a {prepared.kind.value}, stored as {rung.kind}")
        _check_complete(prepared, tx)
    return _broadcast(locked, prepared.kind.value, tx.hex(), tx.txid, None)


def _complete_release(loan: Loan, facts: LoanFacts, rung: BorrowerSignature) -> Transaction:
    if loan.lender_preimage is None:
        raise _refuse("lender_preimage_unknown", f"loan {loan.pk}'s pL is not public yet: nothing to release")
    tx1_txid = applied_tx1_txid(loan=loan)
    if loan.bitcoin_status != Loan.BitcoinStatus.COLLATERAL_LOCKED or tx1_txid is None:
        raise _refuse("collateral_not_locked", f"loan {loan.pk}'s bitcoin is {loan.bitcoin_status}, not locked")
    preimage = bytes.fromhex(loan.lender_preimage)
    if facts.lender_hash is None or sha256(preimage) != facts.lender_hash:
        raise _refuse("chain_fact_mismatch", f"loan {loan.pk}'s pL does not hash to its hL")
    spent = Transaction.parse(rung.unsigned_tx_hex).inputs[0].outpoint
    if spent.txid != tx1_txid or spent.vout != COLLATERAL_OUTPUT_INDEX:
        raise _refuse("wrong_outpoint", f"rung {rung.pk} spends {spent}, not output 1 of the applied TX_1 {tx1_txid}")
    verified = _verified_rung(facts, rung, tx1_txid)
    try:
        return finalize_release(
            verified.prepared, borrower_signature=verified.borrower_signature, lender_preimage=preimage
        )
    except TransactionError as error:
        raise _refuse("chain_fact_mismatch", f"TX_release cannot be completed: {error}") from None


def _complete_exit(loan: Loan, facts: LoanFacts, rung: BorrowerSignature) -> Transaction:
    if loan.bitcoin_status in (Loan.BitcoinStatus.COLLATERAL_LOCKED, *Loan.TERMINAL_BITCOIN_STATUSES):
        raise _refuse("escrow_spent", f"loan {loan.pk}'s escrow is spent ({loan.bitcoin_status})")
    if loan.bitcoin_status != Loan.BitcoinStatus.ESCROW_CONFIRMED or loan.escrow_txid is None:
        raise _refuse("escrow_not_confirmed", f"loan {loan.pk} has no confirmed escrow")
    if loan.status not in STRANDED_ESCROW_STATUSES or loan.borrower_preimage is not None:
        raise _refuse(
            "escrow_owed_to_lender",
            f"loan {loan.pk} is {loan.status}: its escrow may still go into TX_1; the server never exits it",
        )
    _require_mature(loan_timelocks(loan=loan).exit, "t_0", unknown=("escrow_not_confirmed", "escrow"))
    verified = _verified_rung(facts, rung, None)
    return finalize_exit(verified.prepared, borrower_signature=verified.borrower_signature)


# ------------------------------------------------------------------------------------------------ the lender's


def collateral_lock(*, loan: Loan, actor: User) -> BitcoinBroadcast:
    """TX_1: B's newest verified pre-signature re-verified, signed with the lender's key from the vault, completed
    with pB (public since LoanActivated) and broadcast. The same TX_1 again: its row, sent again."""
    require(_acts_for_lender(actor, loan), "only the lender or an operator locks the collateral")
    with db_transaction.atomic():
        locked = _locked(loan)
        _require_open(locked, "nothing is left to lock")
        if locked.borrower_preimage is None:
            raise _refuse("borrower_preimage_unknown", f"loan {locked.pk}'s pB is not public yet: no accepted offer")
        if locked.bitcoin_status in (Loan.BitcoinStatus.COLLATERAL_LOCKED, *Loan.TERMINAL_BITCOIN_STATUSES):
            raise _refuse("escrow_spent", f"loan {locked.pk}'s escrow is spent ({locked.bitcoin_status})")
        if locked.bitcoin_status != Loan.BitcoinStatus.ESCROW_CONFIRMED or locked.escrow_txid is None:
            raise _refuse("escrow_not_confirmed", f"loan {locked.pk} has no confirmed escrow")
        signature = (
            BorrowerSignature.objects.filter(loan=locked, kind=BorrowerSignature.Kind.TX_1, verified_at__isnull=False)
            .order_by("-created_at", "-pk")
            .first()
        )
        if signature is None:
            raise _refuse("no_presignature", f"loan {locked.pk} has no verified TX_1 pre-signature")
        facts = _facts(locked)
        try:
            if signature.form == BorrowerSignature.Form.PSBT:
                verified = verify_borrower_presignature(facts, psbt=signature.psbt_base64)
            else:
                verified = verify_borrower_presignature(
                    facts, signature=signature.signature_hex, transaction=signature.unsigned_tx_hex
                )
        except PresignatureError as error:
            raise _refuse(error.reason, f"the stored pre-signature no longer verifies: {error.args[0]}") from None
        except BitcoinProtocolError as error:
            raise _refuse("invalid_loan_terms", f"loan {locked.pk}'s facts make no TX_1: {error}") from None
        txid = verified.transaction.txid
        known = BitcoinBroadcast.objects.filter(loan=locked, txid=txid).first()
        if known is None:
            _check_escrow_unspent(locked)
        key = lender_bitcoin_key(xonly_pubkey=locked.lender_btc_pubkey)
        try:
            tx = finalize_tx1(
                verified.prepared,
                borrower_signature=verified.borrower_signature,
                lender_signature=verified.prepared.sign(key),
                borrower_preimage=bytes.fromhex(locked.borrower_preimage),
            )
        except TransactionError as error:
            raise _refuse("chain_fact_mismatch", f"TX_1 cannot be completed: {error}") from None
        tx_hex = known.raw_hex if known is not None else tx.hex()
    return _broadcast(locked, SpendKind.TX_1.value, tx_hex, txid, actor)


def _check_escrow_unspent(loan: Loan) -> None:
    """The escrow output unspent on the node (mempool included), with the loan's value; an unreachable node is
    left to the broadcast (which then stores the row for a retry)."""
    try:
        utxo = bitcoin_rpc().get_utxo(loan.escrow_txid, loan.escrow_vout)  # type: ignore[arg-type]
    except (BitcoinRPCError, OSError):
        return
    if utxo is None:
        raise _refuse("escrow_spent", f"loan {loan.pk}'s escrow {loan.escrow_txid}:{loan.escrow_vout} is spent")
    if utxo.sats != loan.escrow_sats:
        raise _refuse(
            "chain_fact_mismatch", f"the escrow holds {utxo.sats} sat on chain; loan {loan.pk} says {loan.escrow_sats}"
        )


def collateral_capture(*, loan: Loan, actor: User, fee_rate_sat_vb: object | None = None) -> BitcoinBroadcast:
    """TX_capture after t_1, for a defaulted loan or a refunded repayment: built at ``fee_rate_sat_vb`` (else the
    node's estimate within the desk's bounds), signed with the lender's key from the vault, broadcast."""
    require(_acts_for_lender(actor, loan), "only the lender or an operator captures the collateral")
    with db_transaction.atomic():
        locked = _locked(loan)
        _require_open(locked, "nothing is left to capture")
        if locked.status not in Loan.CAPTURE_STATUSES:
            raise _refuse(
                "wrong_state", f"loan {locked.pk} is {locked.status}: the collateral is taken after a default or refund"
            )
        tx1_txid = applied_tx1_txid(loan=locked)
        if locked.bitcoin_status != Loan.BitcoinStatus.COLLATERAL_LOCKED or tx1_txid is None:
            raise _refuse("collateral_not_locked", f"loan {locked.pk}'s bitcoin is {locked.bitcoin_status}")
        _require_mature(loan_timelocks(loan=locked).capture, "t_1", unknown=("collateral_not_locked", "TX_1"))
        facts = _facts(locked)
        if fee_rate_sat_vb is None:
            rate, _source = current_fee_rate_sat_vb()
        else:
            try:
                rate = parse_fee_rate(fee_rate_sat_vb)  # type: ignore[arg-type]
            except BitcoinProtocolError as error:
                raise _refuse("invalid_fee_rate", str(error)) from None
        prepared = _build(build_capture, facts, _fee_rate(facts, rate), tx1_txid=tx1_txid)
        key = lender_bitcoin_key(xonly_pubkey=locked.lender_btc_pubkey)
        tx = finalize_capture(prepared, lender_signature=prepared.sign(key))
    return _broadcast(locked, SpendKind.TX_CAPTURE.value, tx.hex(), tx.txid, actor)


def bitcoin_broadcast_retry(*, broadcast: BitcoinBroadcast, actor: User) -> BitcoinBroadcast:
    """Send a stored broadcast again (operators). Whatever the node says is recorded on the row and in an
    ``OperatorAction(broadcast_retried)`` whose detail is the outcome; nothing is refused for it."""
    require(is_operator(actor), "only an operator retries a broadcast")
    outcome = _send(broadcast.raw_hex, broadcast.txid)
    with db_transaction.atomic():
        row = BitcoinBroadcast.objects.select_for_update().get(pk=broadcast.pk)
        now = timezone.now()
        row.attempts += 1
        row.last_attempt_at = now
        row.last_error = outcome.error
        if outcome.accepted:
            row.accepted_at = now
        row.save(update_fields=["attempts", "last_attempt_at", "last_error", "accepted_at"])
        loan_fact_push(loan_ids=[row.loan_id], fact="bitcoin_broadcast")
        detail = "accepted" if outcome.accepted else outcome.error
        OperatorAction.objects.create(
            actor=actor, action=OperatorAction.Action.BROADCAST_RETRIED, broadcast=row, detail=detail[:500]
        )
    return row


__all__ = [
    "BROADCAST_CODES",
    "BROADCAST_RETRY_CODES",
    "COLLATERAL_CAPTURE_CODES",
    "COLLATERAL_LOCK_CODES",
    "EXIT_PSBT_CODES",
    "LADDER_UPLOAD_CODES",
    "MAX_LADDER_RUNGS",
    "PRESIGNED_SWEEP_CODES",
    "RELEASE_PSBT_CODES",
    "STRANDED_ESCROW_STATUSES",
    "PreparedPsbt",
    "bitcoin_broadcast_retry",
    "bitcoin_transaction_broadcast",
    "collateral_capture",
    "collateral_lock",
    "exit_psbt_prepare",
    "ladder_rung_amounts",
    "presigned_ladder_upload",
    "presigned_sweep_broadcast",
    "release_psbt_prepare",
]
