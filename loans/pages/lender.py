"""Pages: the lender's desk: the queue of requests with their escrow check, each loan's lender actions (sent with
the lender's stored key through the services), and the dashboard. The lender and operators only (403 otherwise).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import InvalidPage, Paginator
from django.db.models import Count, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from .. import selectors
from ..escrow import lender_queue_checks, lender_queue_requests
from ..models import Loan
from ..permissions import is_lender, is_operator, require
from ..services import evm_calls
from ..services.bitcoin_actions import collateral_capture, collateral_lock
from .borrower import Moment, acted, action_view, broadcast_done, page, party_loan_context, visible_loan

# The lender's steps a page form may take, each through its service, sent with the lender's stored key.
LENDER_EVM_CALLS = {
    "commit-lender-hash": evm_calls.lender_hash_commit,
    "offer": evm_calls.loan_offer_extend,
    "accept-repayment": evm_calls.loan_repayment_accept,
    "withdraw-offer": evm_calls.loan_offer_withdraw,
    "mark-default": evm_calls.loan_default_mark,
}
LENT_STATUSES = (Loan.Status.ACTIVE, Loan.Status.REPAYMENT_IN_PROGRESS)
# The dashboard's "deadlines coming up": the lender's steps on the loans whose deadline is nearest, at most this
# many (a line says how many more); the queue's page.
DESK_COUNTDOWNS_SHOWN = 20
QUEUE_PAGE_SIZE = 50


def _require_desk(request: HttpRequest) -> None:
    require(is_lender(request.user) or is_operator(request.user), "the lender's desk is for the lender and operators")


def _action(loan: Loan, actor: Any, name: str, fee_rate: str | None) -> str:
    if name in LENDER_EVM_CALLS:
        call = LENDER_EVM_CALLS[name](loan=loan, actor=actor, send=True)
        sent = call.transaction
        return f"{call.prepared.method} sent: {sent.tx_hash} ({sent.get_status_display()})." if sent else "Prepared."
    if name == "collateral-lock":
        row = collateral_lock(loan=loan, actor=actor)
    elif name == "collateral-capture":
        row = collateral_capture(loan=loan, actor=actor, fee_rate_sat_vb=fee_rate or None)
    else:
        raise Http404("no such action")
    return broadcast_done(row)


# ------------------------------------------------------------------------------------------------ dashboard


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """Capital lent and locked, loans by state, the deadlines coming up: the lender's steps that count down on
    open loans, the nearest ``DESK_COUNTDOWNS_SHOWN`` (queries and node calls do not grow with the loans)."""
    _require_desk(request)
    loans = selectors.loans_visible_to(user=request.user)
    lent = loans.filter(status__in=LENT_STATUSES).aggregate(amount=Sum("amount_wei"), bond=Sum("bond_wei"))
    offered = loans.filter(status=Loan.Status.OFFERED).aggregate(amount=Sum("amount_wei"), bond=Sum("bond_wei"))
    by_state = loans.values("status", "bitcoin_status").annotate(count=Count("id")).order_by("status", "bitcoin_status")
    labels, bitcoin_labels = dict(Loan.Status.choices), dict(Loan.BitcoinStatus.choices)
    open_loans = loans.exclude(status__in=Loan.TERMINAL_STATUSES).exclude(status=Loan.Status.DRAFT)
    # Both followed heads read once; the nearest countdowns chosen in SQL, the steps worked out for those only.
    head, tip = selectors.evm_followed_block(), selectors.bitcoin_followed_height()
    countdowns = selectors.lender_countdown_loans(loans=open_loans, head=head, limit=DESK_COUNTDOWNS_SHOWN)
    timelocks = selectors.loans_timelocks(loans=countdowns.loans, tip_height=tip)
    coming: list[dict[str, Any]] = []
    for loan in countdowns.loans:
        deadlines = selectors.loan_deadlines(loan=loan, head=head)
        for action in selectors.loan_next_actions(
            loan=loan, user=request.user, deadlines=deadlines, timelocks=timelocks[loan.pk]
        ):
            moment = Moment.of(action.closes if action.open else action.opens)
            if action.party == "lender" and moment is not None and moment.blocks_remaining is not None:
                coming.append({"loan": loan, "action": action_view(loan, action), "moment": moment})
    coming.sort(key=lambda row: (row["moment"].blocks_remaining, row["loan"].pk))
    context = {
        "lent_wei": lent["amount"] or 0,
        "lent_bond_wei": lent["bond"] or 0,
        "offered_wei": offered["amount"] or 0,
        "offered_bond_wei": offered["bond"] or 0,
        "by_state": [
            {"status": labels[row["status"]], "bitcoin": bitcoin_labels[row["bitcoin_status"]], "count": row["count"]}
            for row in by_state
        ],
        "coming": coming,
        "coming_more": countdowns.total - len(coming),
    }
    return page(request, "loans/lender/dashboard.html", "dashboard", context)


# ------------------------------------------------------------------------------------------------ the queue


@login_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    """The requested loans, oldest first, ``QUEUE_PAGE_SIZE`` a page (``?page=N``; a page that does not exist is
    404), each loan of the page with its escrow check on the Bitcoin node."""
    _require_desk(request)
    paginator = Paginator(lender_queue_requests(actor=request.user), QUEUE_PAGE_SIZE)
    try:
        queue_page = paginator.page(request.GET.get("page", 1))
    except InvalidPage as error:
        raise Http404(f"no such page of the queue: {error}") from error
    head = selectors.evm_followed_block()  # once for the whole page, not a query per loan
    entries = [
        {"loan": loan, "check": check, "deadlines": selectors.loan_deadlines(loan=loan, head=head)}
        for loan, check in lender_queue_checks(loans=list(queue_page))
    ]
    return page(request, "loans/lender/queue.html", "queue", {"entries": entries, "queue_page": queue_page})


# ------------------------------------------------------------------------------------------------ one loan


def _loan_page(request: HttpRequest, loan: Loan, *, status: int = 200, **extra: Any) -> HttpResponse:
    context, _ = party_loan_context(request, loan, "lender")
    return page(request, "loans/lender/loan.html", "lender-loan", {**context, **extra}, status=status)


@login_required
@require_GET
def loan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    _require_desk(request)
    return _loan_page(request, visible_loan(request, pk))


@login_required
@require_POST
def loan_action(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    """One lender step through its service (evm-calls sent with the lender's key, TX_1, TX_capture); a refusal
    shows its code and message."""
    _require_desk(request)
    loan = visible_loan(request, pk)
    if name not in LENDER_EVM_CALLS and name not in ("collateral-lock", "collateral-capture"):
        raise Http404("no such action")
    fee_rate = request.POST.get("fee_rate_sat_vb", "").strip()
    return acted(request, loan, lambda: _action(loan, request.user, name, fee_rate), _loan_page)


urlpatterns = [
    path("lender/", dashboard, name="lender-dashboard"),
    path("lender/queue/", queue, name="lender-queue"),
    path("lender/loans/<int:pk>/", loan_detail, name="lender-loan"),
    path("lender/loans/<int:pk>/actions/<str:name>/", loan_action, name="lender-loan-action"),
]
