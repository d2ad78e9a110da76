"""The operators' admin: only active operators (and superusers) get in; borrowers and lenders never do."""

from django.contrib import admin

from .permissions import is_operator


class OperatorAdminSite(admin.AdminSite):
    site_header = "BTC-collateral loans: operations"
    site_title = "Loan operations"
    index_title = "Loans and chain facts"

    def has_permission(self, request) -> bool:
        return is_operator(request.user)
