"""Pages. A normal request gets the whole page; an htmx request gets the named partial it asked to swap."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from loanproject.health import dependency_checks


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    checks = dependency_checks()
    context = {
        "checks": checks,
        "bitcoin_network": settings.BITCOIN_NETWORK,
        "evm_chain_id": settings.EVM_CHAIN_ID,
    }
    template = "loans/home.html#chain-status" if request.htmx else "loans/home.html"
    return render(request, template, context)
