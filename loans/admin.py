"""Django admin for operators: everything visible, chain facts and the audit trail read-only.

Loans change state only through `loans.services` (driven by the chains), never by editing a row here. The
operators' own actions (the lender role, pausing new loans, revoking a token, retrying a broadcast) are admin
actions that call the same services as the API, each behind a confirmation page (with the reason to keep in the
audit trail where the service takes one). Nothing secret is shown: no sealed column, no token hash, no raw
transaction.
"""

from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.template.response import TemplateResponse

from .errors import LoanServiceError
from .models import (
    Alert,
    ApiToken,
    BitcoinBroadcast,
    BitcoinTransaction,
    BorrowerSignature,
    ChainBlock,
    ChainCursor,
    ContractDeployment,
    DeploymentPolicy,
    EvmEvent,
    EvmNonce,
    EvmTransaction,
    LenderKey,
    LenderPreimage,
    Loan,
    LoanStatusChange,
    OperatorAction,
    ProtocolParameters,
    User,
)
from .permissions import is_operator
from .services.accounts import api_token_revoke
from .services.operators import (
    PAUSE_REASON_MAX_LENGTH,
    ROLE_REASON_MAX_LENGTH,
    lender_role_grant,
    lender_role_revoke,
    new_loans_pause,
    new_loans_resume,
)


class OperatorViewOnly:
    """Operators see; nobody adds, edits or deletes chain facts, loans or the audit trail by hand."""

    def has_module_permission(self, request) -> bool:
        return is_operator(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_operator(request.user)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class OperatorReadOnlyAdmin(OperatorViewOnly, admin.ModelAdmin):
    pass


class OperatorActions:
    """Admin actions an operator may run (``@admin.action(permissions=["operate"])``), on a view-only admin."""

    def has_operate_permission(self, request) -> bool:
        return is_operator(request.user)


def _reason_form(*, required: bool | None, max_length: int) -> type[forms.Form]:
    class ReasonForm(forms.Form):
        reason = forms.CharField(
            required=bool(required),
            max_length=max_length,
            widget=forms.TextInput(attrs={"size": 80}),
            help_text="Kept in the operators' audit trail." + ("" if required else " Optional."),
        )

    return ReasonForm


def _confirmed_action(
    modeladmin: admin.ModelAdmin,
    request,
    queryset: QuerySet,
    *,
    title: str,
    run: Callable[[object, str], object],
    reason: tuple[bool, int] | None = None,
    note: str = "",
) -> TemplateResponse | None:
    """First show what will be done to which rows (and ask the reason, ``reason=(required, max_length)``); on
    the confirmed POST run ``run(obj, reason)`` on each row through its service and report each refusal."""
    form_class = _reason_form(required=reason[0], max_length=reason[1]) if reason else forms.Form
    if request.POST.get("confirmed") == "yes":
        form = form_class(request.POST)
        if form.is_valid():
            done = 0
            for obj in queryset:
                try:
                    run(obj, form.cleaned_data.get("reason", ""))
                except (LoanServiceError, PermissionDenied) as error:
                    modeladmin.message_user(request, f"{obj}: refused: {error}", messages.ERROR)
                else:
                    done += 1
            if done:
                modeladmin.message_user(request, f"{title}: done for {done} of {len(queryset)}.", messages.SUCCESS)
            return None
    else:
        form = form_class()
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "note": note,
        "queryset": queryset,
        "opts": modeladmin.model._meta,
        "action": request.POST.get("action", ""),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "form": form,
    }
    return TemplateResponse(request, "admin/loans/operator_action_confirm.html", context)


@admin.register(User)
class UserAdmin(OperatorActions, DjangoUserAdmin):
    """Accounts: superusers edit them, operators look. The role is never a form field: it changes only through
    the operators' actions below (``loans.services.operators``, audited)."""

    list_display = ["username", "role", "evm_address", "is_active", "date_joined"]
    list_filter = ["role", "is_active", "is_superuser"]
    search_fields = ["username", "email", "evm_address"]
    fieldsets = [*DjangoUserAdmin.fieldsets, ("Loan desk", {"fields": ["role", "evm_address"]})]
    readonly_fields = ["role"]
    actions = ["grant_lender_role", "revoke_lender_role"]

    def has_module_permission(self, request) -> bool:
        return is_operator(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_operator(request.user)

    # Only superusers manage accounts; operators look.
    def has_add_permission(self, request) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Grant the lender role", permissions=["operate"])
    def grant_lender_role(self, request, queryset):
        return _confirmed_action(
            self,
            request,
            queryset,
            title="Grant the lender role",
            reason=(False, ROLE_REASON_MAX_LENGTH),
            run=lambda user, reason: lender_role_grant(user=user, actor=request.user, reason=reason),
        )

    @admin.action(description="Revoke the lender role (back to borrower)", permissions=["operate"])
    def revoke_lender_role(self, request, queryset):
        return _confirmed_action(
            self,
            request,
            queryset,
            title="Revoke the lender role",
            note="Loans in flight are not touched: nothing on chain changes; only the user's access as a lender ends.",
            reason=(False, ROLE_REASON_MAX_LENGTH),
            run=lambda user, reason: lender_role_revoke(user=user, actor=request.user, reason=reason),
        )


@admin.register(ProtocolParameters)
class ProtocolParametersAdmin(OperatorReadOnlyAdmin):
    list_display = [
        "version",
        "escrow_timelock_btc_blocks",
        "collateral_timelock_btc_blocks",
        "loan_duration_blocks",
        "interest_bps",
        "bond_percent",
        "created_at",
    ]
    ordering = ["-version"]


class ReadOnlyInline(OperatorViewOnly, admin.TabularInline):
    extra = 0
    can_delete = False


class LoanStatusChangeInline(ReadOnlyInline):
    model = LoanStatusChange
    fields = ["created_at", "side", "from_status", "to_status", "actor", "cause", "evm_event", "bitcoin_transaction"]
    readonly_fields = fields


class BitcoinTransactionInline(ReadOnlyInline):
    model = BitcoinTransaction
    fields = ["role", "txid", "vout", "value_sats", "block_height", "block_hash", "applied_at"]
    readonly_fields = fields


@admin.register(Loan)
class LoanAdmin(OperatorReadOnlyAdmin):
    list_display = [
        "id",
        "contract_loan_id",
        "status",
        "bitcoin_status",
        "borrower",
        "amount_wei",
        "escrow_sats",
        "closed_at",
        "created_at",
    ]
    list_filter = ["status", "bitcoin_status", "deployment__chain_id", "parameters__version", "created_at"]
    search_fields = ["borrower__username", "borrower__evm_address", "escrow_txid", "borrower_hash", "lender_hash"]
    list_select_related = ["borrower"]
    date_hierarchy = "created_at"
    inlines = [LoanStatusChangeInline, BitcoinTransactionInline]


@admin.register(LoanStatusChange)
class LoanStatusChangeAdmin(OperatorReadOnlyAdmin):
    list_display = ["loan", "side", "from_status", "to_status", "actor", "cause", "created_at"]
    list_filter = ["side", "to_status", "from_status", "created_at"]
    list_select_related = ["loan", "actor"]


@admin.register(BorrowerSignature)
class BorrowerSignatureAdmin(OperatorReadOnlyAdmin):
    list_display = ["loan", "form", "txid", "verified_at", "created_at"]
    list_filter = ["form", "verified_at"]
    list_select_related = ["loan"]


@admin.register(BitcoinTransaction)
class BitcoinTransactionAdmin(OperatorReadOnlyAdmin):
    list_display = ["txid", "role", "loan", "block_height", "applied_at", "updated_at"]
    list_filter = ["role", "applied_at"]
    search_fields = ["txid", "block_hash"]
    list_select_related = ["loan"]


@admin.register(EvmEvent)
class EvmEventAdmin(OperatorReadOnlyAdmin):
    list_display = ["name", "chain_id", "block_number", "log_index", "loan", "tx_hash", "applied_at", "orphaned_at"]
    list_filter = ["name", "chain_id", "applied_at", "orphaned_at"]
    search_fields = ["tx_hash", "block_hash"]
    list_select_related = ["loan"]


@admin.register(ContractDeployment)
class ContractDeploymentAdmin(OperatorActions, OperatorReadOnlyAdmin):
    list_display = [
        "chain_id",
        "loan_contract_address",
        "ether_swap_address",
        "block_number",
        "new_loans",
        "created_at",
    ]
    list_filter = ["chain_id", "policy__new_loans_paused"]
    list_select_related = ["policy"]
    actions = ["pause_new_loans", "resume_new_loans"]

    @admin.display(description="new loans")
    def new_loans(self, obj: ContractDeployment) -> str:
        policy = getattr(obj, "policy", None)
        return f"paused: {policy.paused_reason}" if policy is not None and policy.new_loans_paused else "taken"

    @admin.action(description="Pause new loans", permissions=["operate"])
    def pause_new_loans(self, request, queryset):
        return _confirmed_action(
            self,
            request,
            queryset,
            title="Pause new loans",
            note="Borrowers can no longer draft loans on these deployments; loans already made are not touched.",
            reason=(True, PAUSE_REASON_MAX_LENGTH),
            run=lambda deployment, reason: new_loans_pause(deployment=deployment, actor=request.user, reason=reason),
        )

    @admin.action(description="Resume new loans", permissions=["operate"])
    def resume_new_loans(self, request, queryset):
        return _confirmed_action(
            self,
            request,
            queryset,
            title="Resume new loans",
            run=lambda deployment, reason: new_loans_resume(deployment=deployment, actor=request.user),
        )


AUTOMATION_SWITCHES = [
    "auto_offer",
    "auto_accept_repayment",
    "auto_withdraw_offer",
    "auto_mark_default",
    "auto_capture",
]


@admin.register(DeploymentPolicy)
class DeploymentPolicyAdmin(OperatorReadOnlyAdmin):
    """Operators switch the lender's automation per deployment here (the five ``auto_*`` switches; the pause has its
    own audited actions); ``updated_by`` records who changed them last."""

    list_display = ["deployment", "new_loans_paused", "paused_reason", *AUTOMATION_SWITCHES, "updated_by", "updated_at"]
    list_filter = ["new_loans_paused", *AUTOMATION_SWITCHES]
    list_select_related = ["deployment", "updated_by"]
    fields = ["deployment", "new_loans_paused", "paused_reason", *AUTOMATION_SWITCHES, "updated_by", "updated_at"]
    readonly_fields = ["deployment", "new_loans_paused", "paused_reason", "updated_by", "updated_at"]

    def has_change_permission(self, request, obj=None) -> bool:
        return is_operator(request.user)

    def save_model(self, request, obj, form, change) -> None:
        obj.updated_by = request.user
        obj.save(update_fields=[*form.changed_data, "updated_by", "updated_at"])


@admin.register(OperatorAction)
class OperatorActionAdmin(OperatorReadOnlyAdmin):
    """The operators' audit trail (append-only in the database too)."""

    list_display = ["created_at", "action", "actor", "target_user", "deployment", "broadcast", "detail"]
    list_filter = ["action", "created_at"]
    search_fields = ["actor__username", "target_user__username", "detail"]
    list_select_related = ["actor", "target_user", "deployment", "broadcast"]
    date_hierarchy = "created_at"


@admin.register(EvmTransaction)
class EvmTransactionAdmin(OperatorReadOnlyAdmin):
    list_display = ["tx_hash", "function", "loan", "chain_id", "source", "status", "block_number", "created_at"]
    list_filter = ["status", "source", "function", "chain_id"]
    search_fields = ["tx_hash", "sender"]
    list_select_related = ["loan"]


@admin.register(BitcoinBroadcast)
class BitcoinBroadcastAdmin(OperatorActions, OperatorReadOnlyAdmin):
    """What the platform handed to its Bitcoin node. The raw transaction is not shown (a signed spend may carry a
    preimage in its witness before the node took it); operators read it from the node once broadcast."""

    list_display = ["txid", "kind", "loan", "attempts", "accepted_at", "last_attempt_at", "last_error", "created_at"]
    list_filter = ["kind", "accepted_at"]
    search_fields = ["txid"]
    list_select_related = ["loan"]
    fields = [
        "loan", "kind", "txid", "requested_by", "attempts", "accepted_at", "last_attempt_at", "last_error",
        "created_at",
    ]  # fmt: skip
    readonly_fields = fields
    actions = ["retry_broadcast"]

    @admin.action(description="Retry the broadcast", permissions=["operate"])
    def retry_broadcast(self, request, queryset):
        try:
            from .services.bitcoin_actions import bitcoin_broadcast_retry
        except ImportError:
            self.message_user(request, "Retrying a broadcast is not available in this version.", messages.ERROR)
            return None

        def retry(broadcast: BitcoinBroadcast, reason: str) -> None:
            row = bitcoin_broadcast_retry(broadcast=broadcast, actor=request.user)
            if row.last_error:
                self.message_user(request, f"{row}: not accepted: {row.last_error}", messages.WARNING)
            else:
                self.message_user(request, f"{row}: accepted by the node", messages.SUCCESS)

        return _confirmed_action(self, request, queryset, title="Retry the broadcast", run=retry)


@admin.register(ApiToken)
class ApiTokenAdmin(OperatorActions, OperatorReadOnlyAdmin):
    """Wallets' bearer tokens: which exist, whose, until when. The hash is never shown (``fields`` is explicit)."""

    list_display = ["prefix", "user", "created_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["prefix", "user__username", "user__evm_address"]
    list_select_related = ["user"]
    fields = ["prefix", "user", "created_at", "expires_at", "revoked_at"]
    readonly_fields = fields
    actions = ["revoke_tokens"]

    @admin.action(description="Revoke the token", permissions=["operate"])
    def revoke_tokens(self, request, queryset):
        return _confirmed_action(
            self,
            request,
            queryset,
            title="Revoke the token",
            run=lambda token, reason: api_token_revoke(token=token),
        )


@admin.register(ChainCursor)
class ChainCursorAdmin(OperatorReadOnlyAdmin):
    list_display = ["chain", "block_number", "block_hash", "updated_at"]


@admin.register(ChainBlock)
class ChainBlockAdmin(OperatorReadOnlyAdmin):
    list_display = ["chain", "number", "hash", "parent_hash"]
    list_filter = ["chain"]


# The lender's secrets: metadata only. No sealed column is in any list, page, search or filter (``fields`` is
# explicit, so a column added later is not shown by default); operators see which key exists and which vault key
# sealed it, nothing more.


@admin.register(LenderKey)
class LenderKeyAdmin(OperatorReadOnlyAdmin):
    list_display = ["public_id", "kind", "lender", "vault_key", "created_at"]
    list_filter = ["kind"]
    list_select_related = ["lender"]
    fields = ["lender", "kind", "public_id", "vault_key", "created_at"]
    readonly_fields = fields

    @admin.display(description="vault key id")
    def vault_key(self, obj: LenderKey) -> str:
        return obj.private_key.key_id


@admin.register(LenderPreimage)
class LenderPreimageAdmin(OperatorReadOnlyAdmin):
    list_display = ["loan", "lender_hash", "vault_key", "created_by", "created_at"]
    list_select_related = ["loan", "created_by"]
    fields = ["loan", "lender_hash", "vault_key", "created_by", "created_at"]
    readonly_fields = fields

    @admin.display(description="hL (sha256 of pL)")
    def lender_hash(self, obj: LenderPreimage) -> str | None:
        return obj.loan.lender_hash

    @admin.display(description="vault key id")
    def vault_key(self, obj: LenderPreimage) -> str:
        return obj.preimage.key_id


@admin.register(EvmNonce)
class EvmNonceAdmin(OperatorReadOnlyAdmin):
    list_display = ["address", "chain_id", "next_nonce", "last_tx_hash", "updated_at"]
    list_filter = ["chain_id"]


@admin.register(Alert)
class AlertAdmin(OperatorReadOnlyAdmin):
    """Every alert made (``loans.services.alerts``): who was told what and when, whether mailed and read."""

    list_display = ["created_at", "kind", "recipient", "loan", "subject", "emailed_at", "read_at"]
    list_filter = ["kind", "created_at"]
    search_fields = ["key", "subject", "recipient__username"]
    list_select_related = ["recipient", "loan"]
    date_hierarchy = "created_at"
