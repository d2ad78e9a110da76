from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class LoansConfig(AppConfig):
    default = True
    name = "loans"
    verbose_name = "Loans"

    def ready(self) -> None:
        from loanproject import checks  # noqa: F401 - registers the system checks


class LoansAdminConfig(admin_apps.AdminConfig):
    """Replaces django.contrib.admin so every `@admin.register` lands on the operators' site."""

    default = False
    default_site = "loans.admin_site.OperatorAdminSite"
