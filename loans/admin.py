"""Django admin for operators: everything visible, chain facts and the audit trail read-only.

Loans change state only through `loans.services` (driven by the chains), never by editing a row here.
"""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import (
    BitcoinTransaction,
    BorrowerSignature,
    ChainBlock,
    ChainCursor,
    ContractDeployment,
    EvmEvent,
    EvmNonce,
    LenderKey,
    LenderPreimage,
    Loan,
    LoanStatusChange,
    ProtocolParameters,
    User,
)
from .permissions import is_operator


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


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "role", "evm_address", "is_active", "date_joined"]
    list_filter = ["role", "is_active", "is_superuser"]
    search_fields = ["username", "email", "evm_address"]
    fieldsets = [*DjangoUserAdmin.fieldsets, ("Loan desk", {"fields": ["role", "evm_address"]})]

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
class ContractDeploymentAdmin(OperatorReadOnlyAdmin):
    list_display = ["chain_id", "loan_contract_address", "ether_swap_address", "block_number", "created_at"]
    list_filter = ["chain_id"]


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
