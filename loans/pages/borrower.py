"""Pages: the borrower's steps, one page each: my loans, a new loan (the terms), and the loan page (escrow, funding
status, each next step, the exits).

Every page is one template whose content is a ``{% partialdef %}``: a normal request gets the whole page, an htmx
request the partial (the same fragment). Every POST goes through a service (``loans.services``) and a refusal shows
its code and message on the page; the contract calls go through the API from ``static/loans/wallet.js``. Rules live
in the services and ``loans.selectors``: the pages only show what they say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from bitcoin.errors import BitcoinProtocolError
from bitcoin.loan import fee_rate_text

from .. import selectors
from ..errors import LoanServiceError
from ..funding import current_fee_rate_sat_vb, loan_funding_instructions
from ..models import BitcoinBroadcast, BitcoinTransaction, BorrowerSignature, Loan, ProtocolParameters
from ..permissions import can_borrow, can_view_loan
from ..qr import qr_svg
from ..services import loan_create, presignature_upload
from ..services.bitcoin_actions import (
    bitcoin_transaction_broadcast,
    exit_psbt_prepare,
    presigned_ladder_upload,
    release_psbt_prepare,
)
from ..services.borrower_actions import on_chain_parameters
from ..services.watchtower import EXIT, RELEASE, watchtower_now

# What each step is called on a page, and which steps are ways out of the loan.
ACTION_LABELS = {
    "fund-escrow": "Fund the escrow",
    "request": "Request the loan",
    "cancel-request": "Cancel the request",
    "presignature": "Pre-sign TX_1",
    "ladders": "Pre-sign the release and exit ladders",
    "accept-offer": "Accept the offer",
    "repay": "Repay the loan",
    "withdraw-repayment": "Take back the repayment and the bond",
    "release-psbt": "Release the collateral",
    "exit-psbt": "Reclaim the escrow",
    "commit-lender-hash": "Commit the lender's hash hL",
    "offer": "Offer the loan",
    "withdraw-offer": "Withdraw the offer",
    "accept-repayment": "Accept the repayment",
    "mark-default": "Mark the loan defaulted",
    "collateral-lock": "Lock the collateral (broadcast TX_1)",
    "collateral-capture": "Capture the collateral (broadcast TX_capture)",
}
EXIT_ACTIONS = frozenset({"cancel-request", "exit-psbt", "withdraw-repayment"})
PSBT_KINDS = {"release": release_psbt_prepare, "exit": exit_psbt_prepare}
# The loan's Bitcoin spends the loan page follows to confirmation (below the escrow funding).
SPEND_ROLES = {
    BitcoinTransaction.Role.COLLATERAL_LOCK: "TX_1 (collateral locked)",
    BitcoinTransaction.Role.COLLATERAL_RELEASE: "TX_release (collateral back to you)",
    BitcoinTransaction.Role.ESCROW_EXIT: "TX_exit (escrow back to you)",
    BitcoinTransaction.Role.COLLATERAL_CAPTURE: "TX_capture (the lender captured the collateral)",
}
# The refusal codes of the page's "now" buttons (the watchtower's release and exit, one loan), besides
# permission_denied and the watchtower's own reasons.


# ------------------------------------------------------------------------------------------------ shared helpers


def page(request: HttpRequest, template: str, partial: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    """The whole page, or for htmx only its partial ``partial``: the same fragment either way."""
    return render(request, f"{template}#{partial}" if request.htmx else template, context, status=status)


def visible_loan(request: HttpRequest, pk: int) -> Loan:
    """The loan if the caller may see it (``can_view_loan``), else 404 as if it did not exist."""
    loan = get_object_or_404(selectors.loans_visible_to(user=request.user), pk=pk)
    if not can_view_loan(request.user, loan):
        raise Http404("no such loan")
    return loan


def refusal(error: Exception) -> dict[str, str]:
    """A service's refusal as the page shows it: its stable code and its message."""
    if isinstance(error, LoanServiceError):
        return {"code": error.code, "message": str(error.args[0])}
    return {"code": "permission_denied", "message": str(error) or "you may not do this"}


def refusal_status(error: Exception) -> int:
    return 403 if isinstance(error, PermissionDenied) else 422


@dataclass(frozen=True)
class Moment:
    """When something opens or closes, for people: the chain, the block (or height), the blocks left and when."""

    chain: str
    block: int | None
    blocks_remaining: int | None
    estimated_at: Any

    @classmethod
    def of(cls, moment: selectors.Deadline | selectors.TimelockPath | None) -> Moment | None:
        if moment is None:
            return None
        if isinstance(moment, selectors.TimelockPath):
            return cls("Bitcoin", moment.mature_height, moment.blocks_remaining, moment.estimated_mature_at)
        return cls("EVM", moment.block, moment.blocks_remaining, moment.estimated_at)


def action_view(loan: Loan, action: selectors.NextAction) -> dict[str, Any]:
    """A next step as a page section: its label, whether it is open, when it opens or closes, and where it goes."""
    view: dict[str, Any] = {
        "name": action.name,
        "label": ACTION_LABELS.get(action.name, action.name),
        "party": action.party,
        "kind": action.kind,
        "open": action.open,
        "opens": Moment.of(action.opens),
        "closes": Moment.of(action.closes),
        "is_exit": action.name in EXIT_ACTIONS,
    }
    if action.kind == "evm_call":
        view["endpoint"] = reverse("api:loan-evm-call", args=[loan.pk, action.name])
        view["report"] = reverse("api:loan-evm-transactions", args=[loan.pk])
    return view


def loan_deadline_rows(loan: Loan, deadlines: selectors.LoanDeadlines, timelocks: selectors.LoanTimelocks) -> list:
    """Every deadline and timelock of the loan that is known, as (label, Moment)."""
    rows = [
        ("Offer deadline (t_B)", Moment.of(deadlines.offer)),
        ("Repayment deadline (t_D)", Moment.of(deadlines.repayment)),
        ("Repayment acceptance deadline (t_L)", Moment.of(deadlines.acceptance)),
        ("Escrow exit (t_0) matures", Moment.of(timelocks.exit)),
        ("Collateral capture (t_1) matures", Moment.of(timelocks.capture)),
    ]
    return [(label, moment) for label, moment in rows if moment is not None and moment.block is not None]


# ------------------------------------------------------------------------------------------------ my loans


@login_required
@require_GET
def my_loans(request: HttpRequest) -> HttpResponse:
    loans = selectors.loans_visible_to(user=request.user).filter(borrower_id=request.user.pk)
    context = {"loans": loans.order_by("-created_at", "-id"), "can_borrow": can_borrow(request.user)}
    return page(request, "loans/borrower/loans.html", "loan-list", context)


# ------------------------------------------------------------------------------------------------ new loan


def _terms(parameters: ProtocolParameters | None, amount_wei: int | None) -> dict[str, Any] | None:
    """What ``amount_wei`` costs under ``parameters``: bond, repayment, interest, fee rate, every duration."""
    if parameters is None:
        return None
    terms: dict[str, Any] = {"parameters": parameters, "amount_wei": amount_wei, "in_bounds": False}
    spacing = selectors.BITCOIN_TARGET_BLOCK_SECONDS / parameters.evm_blocks_per_btc_block
    terms["durations"] = [
        ("Offer window (t_B)", parameters.offer_window_blocks, "EVM", parameters.offer_window_blocks * spacing),
        ("Loan duration (t_D)", parameters.loan_duration_blocks, "EVM", parameters.loan_duration_blocks * spacing),
        (
            "Repayment acceptance window (t_L)",
            parameters.repayment_window_blocks,
            "EVM",
            parameters.repayment_window_blocks * spacing,
        ),
        (
            "Escrow exit timelock (t_0)",
            parameters.escrow_timelock_btc_blocks,
            "Bitcoin",
            parameters.escrow_timelock_btc_blocks * selectors.BITCOIN_TARGET_BLOCK_SECONDS,
        ),
        (
            "Collateral capture timelock (t_1)",
            parameters.collateral_timelock_btc_blocks,
            "Bitcoin",
            parameters.collateral_timelock_btc_blocks * selectors.BITCOIN_TARGET_BLOCK_SECONDS,
        ),
    ]
    if amount_wei is not None and parameters.min_amount_wei <= amount_wei <= parameters.max_amount_wei:
        chain_terms = on_chain_parameters(parameters)
        repayment = chain_terms.repayment_amount(amount_wei)
        terms.update(
            in_bounds=True,
            bond_wei=chain_terms.bond(amount_wei),
            repayment_wei=repayment,
            interest_wei=repayment - amount_wei,
        )
    return terms


def _amount(text: str | None) -> int | None:
    try:
        value = int((text or "").strip())
    except ValueError:
        return None
    return value if value >= 0 else None


@login_required
@require_http_methods(["GET", "POST"])
def loan_new(request: HttpRequest) -> HttpResponse:
    """GET: the terms in force for the chosen amount (htmx re-renders them as the amount changes). POST: the draft
    loan through ``loan_create``; xB and hB come from the browser signer (or a pasted value), never pB or a key."""
    parameters = selectors.parameters_in_force()
    source = request.POST if request.method == "POST" else request.GET
    amount = _amount(source.get("amount_wei"))
    if amount is None and parameters is not None:
        amount = parameters.min_amount_wei
    context: dict[str, Any] = {
        "terms": _terms(parameters, amount),
        "values": source,
        "can_borrow": can_borrow(request.user),
    }
    if request.method == "GET":
        return page(request, "loans/borrower/new.html", "loan-terms" if request.htmx else "new-loan", context)
    given = _amount(source.get("amount_wei"))
    try:
        loan = loan_create(
            borrower=request.user,
            amount_wei=-1 if given is None else given,
            borrower_btc_pubkey=source.get("borrower_btc_pubkey", "").strip(),
            borrower_hash=source.get("borrower_hash", "").strip(),
            borrower_payout_address=source.get("borrower_payout_address", "").strip(),
        )
    except (LoanServiceError, PermissionDenied) as error:
        context["refusal"] = refusal(error)
        return page(request, "loans/borrower/new.html", "new-loan", context, status=refusal_status(error))
    return redirect("pages:borrower-loan", pk=loan.pk)


# ------------------------------------------------------------------------------------------------ the loan page


def _funding(loan: Loan) -> dict[str, Any]:
    """The escrow funding as the watcher sees it (seen, confirmations) and, before it is funded, what to send."""
    tip = selectors.bitcoin_followed_height()
    funding_txs = [
        {"tx": tx, "confirmations": selectors.bitcoin_transaction_confirmations(bitcoin_transaction=tx, tip_height=tip)}
        for tx in loan.bitcoin_transactions.filter(role=BitcoinTransaction.Role.ESCROW_FUNDING).order_by("id")
    ]
    spends = [
        {
            "tx": tx,
            "label": SPEND_ROLES[tx.role],
            "confirmations": selectors.bitcoin_transaction_confirmations(bitcoin_transaction=tx, tip_height=tip),
        }
        for tx in loan.bitcoin_transactions.filter(role__in=list(SPEND_ROLES)).order_by("id")
    ]
    seen = {item["tx"].txid for item in spends}
    # What the desk handed to its node that the watcher has not seen in a block yet (TX_release, TX_exit).
    pending = [
        row
        for row in BitcoinBroadcast.objects.filter(loan=loan, kind__in=["tx_release", "tx_exit"]).order_by("id")
        if row.txid not in seen
    ]
    context: dict[str, Any] = {
        "transactions": funding_txs,
        "spends": spends,
        "pending": pending,
        "followed_height": tip,
        "instructions": None,
        "escrow_of_record": None,
    }
    if not funding_txs and loan.bitcoin_status != Loan.BitcoinStatus.NONE and loan.escrow_txid is not None:
        # The loan row says the escrow is confirmed (or spent since) but the watcher recorded no transaction for it
        # (a loan set up without the watcher): the box shows the loan's own outpoint, never "no payment seen".
        context["escrow_of_record"] = {
            "outpoint": f"{loan.escrow_txid}:{loan.escrow_vout}",
            "sats": loan.escrow_sats,
            "height": loan.escrow_btc_height,
            "confirmations": selectors.bitcoin_confirmations(block_height=loan.escrow_btc_height, tip_height=tip),
        }
    if loan.bitcoin_status == Loan.BitcoinStatus.NONE and not loan.is_closed:
        rate, source = current_fee_rate_sat_vb()
        try:
            instructions = loan_funding_instructions(loan=loan, fee_rate_sat_vb=rate, fee_rate_source=source)
        except BitcoinProtocolError as error:
            context["problem"] = str(error)
        else:
            context["instructions"] = instructions
            context["qr"] = qr_svg(instructions.bip21_uri, title=f"Pay {instructions.total_sats} sat to the escrow")
    return context


def party_loan_context(request: HttpRequest, loan: Loan, party: str) -> tuple[dict[str, Any], selectors.LoanTimelocks]:
    """What each party's loan page shows of where the loan stands: its deadline rows, the chain heights they are
    seen from, and ``party``'s next steps (``actions``); with the timelocks they were computed from."""
    deadlines = selectors.loan_deadlines(loan=loan)
    timelocks = selectors.loan_timelocks(loan=loan)
    actions = [
        action_view(loan, action)
        for action in selectors.loan_next_actions(
            loan=loan, user=request.user, deadlines=deadlines, timelocks=timelocks
        )
        if action.party == party
    ]
    context = {
        "loan": loan,
        "deadlines": loan_deadline_rows(loan, deadlines, timelocks),
        "evm_head": deadlines.head,
        "btc_tip": timelocks.tip_height,
        "actions": actions,
    }
    return context, timelocks


def _loan_context(request: HttpRequest, loan: Loan) -> dict[str, Any]:
    standing, timelocks = party_loan_context(request, loan, "borrower")
    actions = standing.pop("actions")
    signatures = loan.borrower_signatures.order_by("created_at", "id")
    tx1 = next((row for row in signatures if row.kind == "tx_1"), None)
    signing = any(action["name"] in {"presignature", "ladders"} for action in actions)
    rungs = loan.borrower_signatures.filter(verified_at__isnull=False)
    exit_rungs = rungs.filter(kind=BorrowerSignature.Kind.TX_EXIT).count()
    # An escrow in the exit step with no TX_exit rung (it never reached the pre-sign step: no hL, no TX_1): the
    # browser that holds the key may sign the exit ladder right there (borrower.js shows the signer only then).
    exit_signer = exit_rungs == 0 and not signing and any(action["name"] == "exit-psbt" for action in actions)
    return {
        **standing,
        "steps": [action for action in actions if not action["is_exit"]],
        "exits": [action for action in actions if action["is_exit"]],
        "funding": _funding(loan),
        "signatures": signatures,
        "tx1_txid": tx1.txid if tx1 is not None else "",
        # The fee rate the browser signer starts from (the node's estimate within the desk's bounds).
        "fee_rate": fee_rate_text(current_fee_rate_sat_vb()[0]) if signing or exit_signer else "",
        "loan_file_url": reverse("api:loan-file", args=[loan.pk]),
        "release_rungs": rungs.filter(kind=BorrowerSignature.Kind.TX_RELEASE).count(),
        "exit_rungs": exit_rungs,
        "exit_signer": exit_signer,
        "capture": Moment.of(timelocks.capture) if timelocks.capture.mature_height is not None else None,
        "exit_matures": Moment.of(timelocks.exit) if timelocks.exit.mature_height is not None else None,
    }


def _loan_page(request: HttpRequest, loan: Loan, *, status: int = 200, **extra: Any) -> HttpResponse:
    context = {**_loan_context(request, loan), **extra}
    return page(request, "loans/borrower/loan.html", "loan", context, status=status)


@login_required
@require_GET
def loan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _loan_page(request, visible_loan(request, pk))


@login_required
@require_GET
def loan_funding(request: HttpRequest, pk: int) -> HttpResponse:
    """The funding status alone (htmx polls it; without htmx it is the loan page's same fragment, whole)."""
    loan = visible_loan(request, pk)
    context = {"loan": loan, "funding": _funding(loan)}
    template = "loans/borrower/loan.html#funding-status" if request.htmx else "loans/borrower/funding.html"
    return render(request, template, context)


def acted(request: HttpRequest, loan: Loan, act: Callable[[], str], loan_page=None) -> HttpResponse:
    """Run ``act`` (a service call); on success back to the loan page (``loan_page``, the borrower's by default)
    with ``done``, on refusal the page with the service's reason."""
    loan_page = loan_page or _loan_page
    try:
        done = act()
    except (LoanServiceError, PermissionDenied) as error:
        loan.refresh_from_db()
        return loan_page(request, loan, status=refusal_status(error), refusal=refusal(error))
    loan.refresh_from_db()
    return loan_page(request, loan, done=done)


def broadcast_done(row: BitcoinBroadcast) -> str:
    """What a page says of a transaction handed to the desk's node."""
    if row.accepted_at is None:
        return f"{row.kind} {row.txid} stored; the node did not take it yet ({row.last_error})."
    return f"{row.kind} {row.txid} broadcast."


@login_required
@require_POST
def loan_presignature(request: HttpRequest, pk: int) -> HttpResponse:
    """B's TX_1 pre-signature as a pasted PSBT (the browser signer fills the same field later)."""
    loan = visible_loan(request, pk)
    psbt = request.POST.get("psbt", "").strip()

    def act() -> str:
        row = presignature_upload(loan=loan, actor=request.user, psbt=psbt)
        return f"TX_1 pre-signature verified (txid {row.txid})."

    return acted(request, loan, act)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


@login_required
@require_POST
def loan_ladders(request: HttpRequest, pk: int) -> HttpResponse:
    """B's TX_release and TX_exit rungs, one PSBT (or TX_exit hex) a line."""
    loan = visible_loan(request, pk)
    release, exit_rungs = _lines(request.POST.get("release", "")), _lines(request.POST.get("exit", ""))

    def act() -> str:
        rows = presigned_ladder_upload(loan=loan, actor=request.user, release=release, exit=exit_rungs)
        return f"{len(rows)} rung(s) verified and stored."

    return acted(request, loan, act)


@login_required
@require_POST
def loan_broadcast(request: HttpRequest, pk: int) -> HttpResponse:
    """A complete signed transaction of the loan (TX_release, TX_exit), handed to the desk's Bitcoin node."""
    loan = visible_loan(request, pk)
    transaction_hex = request.POST.get("transaction", "").strip()

    def act() -> str:
        row = bitcoin_transaction_broadcast(loan=loan, actor=request.user, transaction_hex=transaction_hex)
        return broadcast_done(row)

    return acted(request, loan, act)


@login_required
@require_GET
def loan_psbt(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    """The unsigned TX_release or TX_exit as a PSBT file (base64) to sign elsewhere; a refusal shows on the page."""
    loan = visible_loan(request, pk)
    prepare = PSBT_KINDS.get(kind)
    if prepare is None:
        raise Http404("no such PSBT")
    rate = request.GET.get("fee_rate_sat_vb") or current_fee_rate_sat_vb()[0]
    try:
        prepared = prepare(loan=loan, actor=request.user, fee_rate_sat_vb=rate)
    except (LoanServiceError, PermissionDenied) as error:
        return _loan_page(request, loan, status=refusal_status(error), refusal=refusal(error))
    response = HttpResponse(prepared.psbt.to_base64(), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="loan-{loan.pk}-tx_{kind}-{prepared.txid[:12]}.psbt"'
    return response


@login_required
@require_POST
def loan_release_now(request: HttpRequest, pk: int) -> HttpResponse:
    """The watchtower's release of this loan, now: the pre-signed TX_release rung, completed with pL."""
    loan = visible_loan(request, pk)
    return acted(
        request,
        loan,
        lambda: watchtower_now(loan=loan, actor=request.user, action=RELEASE),
    )


@login_required
@require_POST
def loan_exit_now(request: HttpRequest, pk: int) -> HttpResponse:
    """The watchtower's exit of this loan's stranded escrow, now (after t_0): the pre-signed TX_exit rung."""
    loan = visible_loan(request, pk)
    return acted(
        request,
        loan,
        lambda: watchtower_now(loan=loan, actor=request.user, action=EXIT),
    )


urlpatterns = [
    path("borrower/loans/", my_loans, name="borrower-loans"),
    path("borrower/loans/new/", loan_new, name="borrower-loan-new"),
    path("borrower/loans/<int:pk>/", loan_detail, name="borrower-loan"),
    path("borrower/loans/<int:pk>/funding/", loan_funding, name="borrower-loan-funding"),
    path("borrower/loans/<int:pk>/presignature/", loan_presignature, name="borrower-loan-presignature"),
    path("borrower/loans/<int:pk>/ladders/", loan_ladders, name="borrower-loan-ladders"),
    path("borrower/loans/<int:pk>/broadcast/", loan_broadcast, name="borrower-loan-broadcast"),
    path("borrower/loans/<int:pk>/psbt/<str:kind>/", loan_psbt, name="borrower-loan-psbt"),
    path("borrower/loans/<int:pk>/release/", loan_release_now, name="borrower-loan-release"),
    path("borrower/loans/<int:pk>/exit/", loan_exit_now, name="borrower-loan-exit"),
]
