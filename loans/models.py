"""The loan desk's data: users and roles, protocol parameters, loans and the chain facts they rest on.

Rules that hold here (see ARCHITECTURE.md):
- Money is an integer: satoshis in `BigIntegerField`, wei in `WeiField` (NUMERIC(78, 0), read back as `int`).
- Every external fact has a unique natural key: `(chain_id, tx_hash, log_index)` for EVM logs, `txid` for Bitcoin
  transactions, `(escrow_txid, escrow_vout)` for an escrow outpoint.
- Models hold no business logic. Every write goes through `loans.services`; a loan's status on either chain
  changes only in `loans.services.transitions.loan_status_transition`, which appends a `LoanStatusChange` row in
  the same transaction.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Cast, Lower
from django.db.models.lookups import GreaterThan

from .fields import EVM_ADDRESS_PATTERN, HEX32_PATTERN, Hex32Field, WeiField, validate_evm_address

HEX_TXID = HEX32_PATTERN
MAX_RELATIVE_TIMELOCK = 65535  # BIP-68 block units: 16 bits
BPS = 10_000  # 100 % in basis points
MAX_DRIFT_MARGIN_BPS = 10_000  # the contract's cap (evm.parameters.MAX_DRIFT_MARGIN_BPS)
MAX_AMOUNT_WEI = 2**128 - 1  # the contract's cap on max_amount_wei


def _exact(name: str) -> Cast:
    """A column as NUMERIC, so the products of the ordering rules cannot overflow an integer column type."""
    return Cast(name, output_field=models.DecimalField(max_digits=78, decimal_places=0))


# m = 10000 + drift margin (bps): the ordering rules of PROTOCOL.md in exact integer form, as the contract checks them.
_DRIFT_FACTOR = Value(BPS) + _exact("drift_margin_bps")
_RATIO_BPS = _exact("evm_blocks_per_btc_block") * Value(BPS)
LOAN_STATUSES = [
    "draft", "requested", "offered", "active", "repayment_in_progress",
    "repaid", "cancelled", "offer_expired", "defaulted", "repayment_refunded",
]  # fmt: skip
SPEND_KINDS = ["tx_1", "tx_exit", "tx_release", "tx_capture"]  # bitcoin.transactions.SpendKind
BTC_TX_ROLES = ["escrow_funding", "collateral_lock", "escrow_exit", "collateral_release", "collateral_capture"]
BITCOIN_STATUSES = ["none", "escrow_confirmed", "collateral_locked", "released", "exited", "captured"]
STATUS_SIDES = ["contract", "bitcoin"]
CHAINS = ["evm", "bitcoin"]


class User(AbstractUser):
    """A person or wallet using the desk. The role decides what they may do; operators alone reach the admin."""

    class Role(models.TextChoices):
        BORROWER = "borrower", "Borrower"
        LENDER = "lender", "Lender"
        OPERATOR = "operator", "Operator"

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.BORROWER)
    evm_address = models.CharField(  # noqa: DJ001 - NULL, not "", so the unique index ignores users without one
        max_length=42,
        null=True,
        blank=True,
        validators=[validate_evm_address],
        help_text="EIP-55 checksummed EVM account of this user.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(role__in=["borrower", "lender", "operator"]), name="user_role_valid"),
            models.CheckConstraint(
                condition=Q(evm_address__isnull=True) | Q(evm_address__regex=EVM_ADDRESS_PATTERN),
                name="user_evm_address_format",
            ),
            models.UniqueConstraint(Lower("evm_address"), name="user_evm_address_unique_ci"),
        ]


class ParameterSet(models.Model):
    """Every parameter of PROTOCOL.md. A `ProtocolParameters` version holds one set; each `Loan` holds a copy."""

    offer_window_blocks = models.PositiveBigIntegerField(help_text="t_B: EVM blocks B has to accept an offer.")
    request_to_offer_allowance_blocks = models.PositiveBigIntegerField(
        help_text="EVM blocks allowed between the request and the offer in the t_0 ordering rule."
    )
    escrow_timelock_btc_blocks = models.PositiveIntegerField(help_text="t_0: CSV of B's escape from the escrow.")
    loan_duration_blocks = models.PositiveBigIntegerField(help_text="t_D: EVM blocks from activation to default.")
    repayment_window_blocks = models.PositiveBigIntegerField(help_text="t_L: EVM blocks L has to accept a repayment.")
    collateral_timelock_btc_blocks = models.PositiveIntegerField(help_text="t_1: CSV of L's claim on default.")
    evm_blocks_per_btc_block = models.PositiveIntegerField(help_text="ratio (Rootstock: about 20).")
    safety_btc_blocks = models.PositiveIntegerField(help_text="Safety margin in BTC blocks.")
    processing_fee_wei = WeiField(help_text="Anti-spam fee paid with the request.")
    bond_percent = models.PositiveSmallIntegerField(help_text="L's bond, % of the amount.")
    origination_fee_bps = models.PositiveIntegerField(help_text="L's fee on Bitcoin in TX_1, basis points.")
    interest_bps = models.PositiveIntegerField(help_text="Fixed yearly rate, basis points.")
    blocks_per_year = models.PositiveBigIntegerField(help_text="EVM blocks per year for the interest.")
    min_amount_wei = WeiField()
    max_amount_wei = WeiField()
    min_collateral_ratio_bps = models.PositiveIntegerField(
        help_text="Least collateral sats / loan sats in TX_1, basis points (10000 = 100 %); at most 10000 + bond·100."
    )
    drift_margin_bps = models.PositiveIntegerField(
        help_text="Share of an EVM window a Bitcoin timelock must cover on top of it (chain drift), basis points."
    )
    accept_cutoff_blocks = models.PositiveBigIntegerField(
        help_text="B starts no accept with fewer than this many EVM blocks left in the offer window."
    )

    class Meta:
        abstract = True
        # The contract's `_validate` rules (evm.parameters.ProtocolParameters.problems), one constraint per rule.
        constraints = [
            models.CheckConstraint(
                condition=Q(escrow_timelock_btc_blocks__gte=1, escrow_timelock_btc_blocks__lte=MAX_RELATIVE_TIMELOCK)
                & Q(collateral_timelock_btc_blocks__gte=1, collateral_timelock_btc_blocks__lte=MAX_RELATIVE_TIMELOCK),
                name="%(app_label)s_%(class)s_timelocks_fit_bip68",
            ),
            models.CheckConstraint(
                condition=Q(drift_margin_bps__lte=MAX_DRIFT_MARGIN_BPS),
                name="%(app_label)s_%(class)s_drift_margin_in_range",
            ),
            models.CheckConstraint(
                # t_0 · ratio · 10000 > (t_B + allowance) · m: B cannot take the loan and reclaim the escrow, even
                # when Bitcoin blocks come faster than the ratio assumes.
                condition=GreaterThan(
                    _exact("escrow_timelock_btc_blocks") * _RATIO_BPS,
                    (_exact("offer_window_blocks") + _exact("request_to_offer_allowance_blocks")) * _DRIFT_FACTOR,
                ),
                name="%(app_label)s_%(class)s_escrow_outlasts_offer",
            ),
            models.CheckConstraint(
                # t_1 · ratio · 10000 > (t_D + t_L) · m + safety · ratio · 10000: L cannot take the collateral before
                # B can use pL.
                condition=GreaterThan(
                    _exact("collateral_timelock_btc_blocks") * _RATIO_BPS,
                    (_exact("loan_duration_blocks") + _exact("repayment_window_blocks")) * _DRIFT_FACTOR
                    + _exact("safety_btc_blocks") * _RATIO_BPS,
                ),
                name="%(app_label)s_%(class)s_collateral_outlasts_loan",
            ),
            models.CheckConstraint(
                condition=Q(accept_cutoff_blocks__gte=1, accept_cutoff_blocks__lt=F("offer_window_blocks")),
                name="%(app_label)s_%(class)s_accept_cutoff_in_offer_window",
            ),
            models.CheckConstraint(
                condition=Q(min_amount_wei__gt=0, max_amount_wei__gte=F("min_amount_wei"))
                & Q(max_amount_wei__lte=MAX_AMOUNT_WEI, processing_fee_wei__gte=0),
                name="%(app_label)s_%(class)s_amount_bounds",
            ),
            models.CheckConstraint(
                # Refusing a repayment must cost the lender.
                condition=Q(bond_percent__gte=1, bond_percent__lte=100),
                name="%(app_label)s_%(class)s_bond_in_range",
            ),
            models.CheckConstraint(
                # The collateral never exceeds amount + bond: above it L would gain by refusing a repayment.
                condition=Q(
                    min_collateral_ratio_bps__gte=BPS,
                    min_collateral_ratio_bps__lte=Value(BPS) + F("bond_percent") * Value(100),
                ),
                name="%(app_label)s_%(class)s_collateral_ratio_capped",
            ),
            models.CheckConstraint(
                condition=Q(origination_fee_bps__lte=10000, interest_bps__lte=10000, blocks_per_year__gt=0)
                & Q(evm_blocks_per_btc_block__gt=0)
                & Q(offer_window_blocks__gt=0, loan_duration_blocks__gt=0, repayment_window_blocks__gt=0),
                name="%(app_label)s_%(class)s_rates_in_range",
            ),
        ]


# The names of every protocol parameter: the same in the contract's struct (evm.parameters) and in each snapshot.
PARAMETER_FIELDS: tuple[str, ...] = tuple(field.name for field in ParameterSet._meta.fields)


class ProtocolParameters(ParameterSet):
    """One version of the protocol parameters. Versions are append-only; the newest is in force for new loans."""

    version = models.PositiveIntegerField(unique=True)
    lender_btc_pubkey = Hex32Field(help_text="xL, the lender's x-only key new loans commit to.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    note = models.CharField(max_length=200, blank=True)

    class Meta(ParameterSet.Meta):
        verbose_name = "protocol parameters"
        verbose_name_plural = "protocol parameters"
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"parameters v{self.version}"


class ContractDeployment(models.Model):
    """Where the contracts live on one EVM chain, and the block the event scanner starts from."""

    chain_id = models.PositiveBigIntegerField()
    loan_contract_address = models.CharField(max_length=42, validators=[validate_evm_address])
    ether_swap_address = models.CharField(max_length=42, validators=[validate_evm_address])
    block_number = models.PositiveBigIntegerField(
        help_text="First block of the deployment: events are scanned from it."
    )
    block_hash = Hex32Field()
    parameters = models.ForeignKey(
        ProtocolParameters, on_delete=models.PROTECT, related_name="deployments", help_text="In force at deployment."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chain_id", "loan_contract_address"], name="deployment_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.loan_contract_address} on chain {self.chain_id}"


class Loan(ParameterSet):
    """One loan, from the borrower's draft to a terminal state, with its snapshot of every parameter."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"  # the app knows it; nothing is on the EVM chain yet
        REQUESTED = "requested", "Requested"
        OFFERED = "offered", "Offered"
        ACTIVE = "active", "Active"
        REPAYMENT_IN_PROGRESS = "repayment_in_progress", "Repayment in progress"
        REPAID = "repaid", "Repaid"
        CANCELLED = "cancelled", "Cancelled"
        OFFER_EXPIRED = "offer_expired", "Offer expired"
        DEFAULTED = "defaulted", "Defaulted"
        REPAYMENT_REFUNDED = "repayment_refunded", "Repayment refunded"

    class BitcoinStatus(models.TextChoices):
        """Where the loan's bitcoin is, as final (confirmed to BITCOIN_CONFIRMATIONS) transactions show it."""

        NONE = "none", "No escrow yet"
        ESCROW_CONFIRMED = "escrow_confirmed", "Escrow confirmed"
        COLLATERAL_LOCKED = "collateral_locked", "Collateral locked (TX_1)"
        RELEASED = "released", "Collateral released (TX_release)"
        EXITED = "exited", "Escrow reclaimed (TX_exit)"
        CAPTURED = "captured", "Collateral captured (TX_capture)"

    TERMINAL_STATUSES = frozenset(
        {Status.REPAID, Status.CANCELLED, Status.OFFER_EXPIRED, Status.DEFAULTED, Status.REPAYMENT_REFUNDED}
    )
    TERMINAL_BITCOIN_STATUSES = frozenset({BitcoinStatus.RELEASED, BitcoinStatus.EXITED, BitcoinStatus.CAPTURED})
    # pB is public and the contract owes the lender the escrow in TX_1: B must not take it back with TX_exit.
    ESCROW_OWED_TO_LENDER_STATUSES = frozenset(
        {Status.ACTIVE, Status.REPAYMENT_IN_PROGRESS, Status.DEFAULTED, Status.REPAYMENT_REFUNDED}
    )
    # The lender may take the collateral after t_1 (PROTOCOL.md's failure paths).
    CAPTURE_STATUSES = frozenset({Status.DEFAULTED, Status.REPAYMENT_REFUNDED})
    # The only transitions there are, per side; loans.services.transitions enforces them, the audit table too.
    ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
        Status.DRAFT: frozenset({Status.REQUESTED}),
        Status.REQUESTED: frozenset({Status.OFFERED, Status.CANCELLED}),
        Status.OFFERED: frozenset({Status.ACTIVE, Status.OFFER_EXPIRED}),
        Status.ACTIVE: frozenset({Status.REPAYMENT_IN_PROGRESS, Status.DEFAULTED}),
        Status.REPAYMENT_IN_PROGRESS: frozenset({Status.REPAID, Status.REPAYMENT_REFUNDED}),
    }
    ALLOWED_BITCOIN_TRANSITIONS: dict[str, frozenset[str]] = {
        BitcoinStatus.NONE: frozenset({BitcoinStatus.ESCROW_CONFIRMED}),
        BitcoinStatus.ESCROW_CONFIRMED: frozenset({BitcoinStatus.COLLATERAL_LOCKED, BitcoinStatus.EXITED}),
        BitcoinStatus.COLLATERAL_LOCKED: frozenset({BitcoinStatus.RELEASED, BitcoinStatus.CAPTURED}),
    }

    borrower = models.ForeignKey(User, on_delete=models.PROTECT, related_name="borrowed_loans")
    lender = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="lent_loans")
    parameters = models.ForeignKey(
        ProtocolParameters, on_delete=models.PROTECT, related_name="loans", help_text="The version snapshotted."
    )
    status = models.CharField(
        max_length=32, choices=Status.choices, default=Status.DRAFT, help_text="The contract's state machine."
    )
    bitcoin_status = models.CharField(
        max_length=32, choices=BitcoinStatus.choices, default=BitcoinStatus.NONE, help_text="The Bitcoin side."
    )
    closed_at = models.DateTimeField(
        null=True, blank=True, help_text="Both chains settled: the contract terminal and the bitcoin paid out."
    )

    # EVM side
    deployment = models.ForeignKey(ContractDeployment, on_delete=models.PROTECT, related_name="loans")
    contract_loan_id = models.PositiveBigIntegerField(null=True, blank=True, help_text="Id in BtcCollateralLoan.")
    amount_wei = WeiField()
    bond_wei = WeiField()
    repayment_wei = WeiField(help_text="Amount plus interest, fixed at request.")

    # Keys and hashes (32 bytes, hex): x-only keys, SHA-256 hashes, preimages once public on the EVM chain.
    borrower_btc_pubkey = Hex32Field()
    lender_btc_pubkey = Hex32Field()
    borrower_hash = Hex32Field()
    lender_hash = Hex32Field(null=True, blank=True)
    borrower_preimage = Hex32Field(null=True, blank=True, help_text="Public once B accepted the offer.")
    lender_preimage = Hex32Field(null=True, blank=True, help_text="Public once L accepted the repayment.")

    # Bitcoin side
    escrow_txid = Hex32Field(null=True, blank=True)
    escrow_vout = models.PositiveIntegerField(null=True, blank=True)
    escrow_sats = models.BigIntegerField(null=True, blank=True)
    collateral_sats = models.BigIntegerField(null=True, blank=True)
    origination_fee_sats = models.BigIntegerField(null=True, blank=True)
    borrower_payout_address = models.CharField(max_length=90, blank=True)
    lender_payout_address = models.CharField(max_length=90, blank=True)

    # Heights on both chains (EVM block numbers, BTC block heights)
    requested_evm_block = models.PositiveBigIntegerField(null=True, blank=True)
    offered_evm_block = models.PositiveBigIntegerField(null=True, blank=True)
    activated_evm_block = models.PositiveBigIntegerField(null=True, blank=True)
    repayment_evm_block = models.PositiveBigIntegerField(null=True, blank=True)
    escrow_btc_height = models.PositiveIntegerField(null=True, blank=True)
    collateral_btc_height = models.PositiveIntegerField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(ParameterSet.Meta):
        ordering = ["-created_at"]
        constraints = [
            *ParameterSet.Meta.constraints,
            models.CheckConstraint(condition=Q(status__in=LOAN_STATUSES), name="loan_status_valid"),
            models.CheckConstraint(condition=Q(bitcoin_status__in=BITCOIN_STATUSES), name="loan_bitcoin_status_valid"),
            models.CheckConstraint(
                condition=Q(amount_wei__gt=0, bond_wei__gte=0, repayment_wei__gte=F("amount_wei")),
                name="loan_wei_amounts_valid",
            ),
            models.CheckConstraint(
                condition=(Q(escrow_sats__isnull=True) | Q(escrow_sats__gt=0))
                & (Q(collateral_sats__isnull=True) | Q(collateral_sats__gt=0))
                & (Q(origination_fee_sats__isnull=True) | Q(origination_fee_sats__gte=0)),
                name="loan_sats_positive",
            ),
            models.CheckConstraint(
                condition=Q(escrow_txid__isnull=True, escrow_vout__isnull=True)
                | Q(escrow_txid__isnull=False, escrow_vout__isnull=False),
                name="loan_escrow_outpoint_complete",
            ),
            models.CheckConstraint(
                condition=Q(borrower_btc_pubkey__regex=HEX32_PATTERN)
                & Q(lender_btc_pubkey__regex=HEX32_PATTERN)
                & Q(borrower_hash__regex=HEX32_PATTERN)
                & (Q(lender_hash__isnull=True) | Q(lender_hash__regex=HEX32_PATTERN))
                & (Q(escrow_txid__isnull=True) | Q(escrow_txid__regex=HEX32_PATTERN)),
                name="loan_hex_fields_format",
            ),
            # A preimage is never reused across loans, so neither is its hash, nor the escrow built on it. A
            # cancelled request never locked money under its hash: its borrower may request again with the same
            # hB and escrow (the contract reserves hB only when a loan is offered), so cancelled rows don't count.
            models.UniqueConstraint(
                fields=["borrower_hash"], condition=~Q(status="cancelled"), name="loan_borrower_hash_unique_live"
            ),
            models.UniqueConstraint(
                fields=["lender_hash"], condition=Q(lender_hash__isnull=False), name="loan_lender_hash_unique"
            ),
            models.UniqueConstraint(
                fields=["escrow_txid", "escrow_vout"],
                condition=Q(escrow_txid__isnull=False) & ~Q(status="cancelled"),
                name="loan_escrow_outpoint_unique_live",
            ),
            models.UniqueConstraint(
                fields=["deployment", "contract_loan_id"],
                condition=Q(contract_loan_id__isnull=False),
                name="loan_contract_id_unique",
            ),
        ]
        indexes = [models.Index(fields=["status"], name="loan_status_idx")]

    def __str__(self) -> str:
        onchain = f"#{self.contract_loan_id}" if self.contract_loan_id is not None else "(draft)"
        return f"loan {onchain} {self.get_status_display()}"

    @property
    def is_terminal(self) -> bool:
        """The contract's status is terminal (the Bitcoin side may still have to settle: see ``is_closed``)."""
        return self.status in self.TERMINAL_STATUSES

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None

    @property
    def offer_deadline_evm_block(self) -> int | None:
        """First block at which B can no longer accept and L may withdraw the offer."""
        return None if self.offered_evm_block is None else self.offered_evm_block + self.offer_window_blocks

    @property
    def repayment_deadline_evm_block(self) -> int | None:
        """First block at which B can no longer repay and L may mark the loan defaulted."""
        return None if self.activated_evm_block is None else self.activated_evm_block + self.loan_duration_blocks

    @property
    def acceptance_deadline_evm_block(self) -> int | None:
        """First block at which L can no longer accept the repayment and B may take it back with the bond."""
        return None if self.repayment_evm_block is None else self.repayment_evm_block + self.repayment_window_blocks


class LoanStatusChange(models.Model):
    """Append-only audit trail: one row per status change on either side, written by the transition that made it."""

    class Side(models.TextChoices):
        CONTRACT = "contract", "Contract"
        BITCOIN = "bitcoin", "Bitcoin"

    loan = models.ForeignKey(Loan, on_delete=models.PROTECT, related_name="status_changes")
    side = models.CharField(max_length=16, choices=Side.choices, default=Side.CONTRACT)
    from_status = models.CharField(max_length=32, choices=Loan.Status.choices + Loan.BitcoinStatus.choices)
    to_status = models.CharField(max_length=32, choices=Loan.Status.choices + Loan.BitcoinStatus.choices)
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    cause = models.CharField(max_length=200, help_text="What made it happen: a user action or a chain fact.")
    evm_event = models.ForeignKey(
        "EvmEvent", null=True, blank=True, on_delete=models.PROTECT, related_name="status_changes"
    )
    bitcoin_transaction = models.ForeignKey(
        "BitcoinTransaction", null=True, blank=True, on_delete=models.PROTECT, related_name="status_changes"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # Neither state machine has cycles: on each side a loan enters each status once and leaves it once.
            models.UniqueConstraint(fields=["loan", "side", "to_status"], name="status_change_enters_once"),
            models.UniqueConstraint(fields=["loan", "side", "from_status"], name="status_change_leaves_once"),
            models.CheckConstraint(
                condition=Q(
                    *[
                        Q(side=side, from_status=old, to_status=new)
                        for side, table in (
                            ("contract", Loan.ALLOWED_TRANSITIONS),
                            ("bitcoin", Loan.ALLOWED_BITCOIN_TRANSITIONS),
                        )
                        for old, targets in sorted(table.items())
                        for new in sorted(targets)
                    ],
                    _connector=Q.OR,
                ),
                name="status_change_allowed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.loan_id} {self.side}: {self.from_status} → {self.to_status}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ValueError("The loan audit trail is append-only: status changes cannot be edited.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("The loan audit trail is append-only: status changes cannot be deleted.")


class BorrowerSignature(models.Model):
    """One of B's pre-signatures, as uploaded (PSBT, raw signature or finalized transaction) and as verified by the
    lender side: TX_1's (the lender completes it with pB), or a rung of the TX_release or TX_exit ladder (the
    watchtower completes TX_release with pL, or broadcasts TX_exit, for a borrower who went offline)."""

    class Form(models.TextChoices):
        PSBT = "psbt", "PSBT (BIP-174/371)"
        RAW = "raw", "Raw 64-byte signature"
        TRANSACTION = "transaction", "Finalized transaction"

    class Kind(models.TextChoices):
        # The values are bitcoin.transactions.SpendKind's.
        TX_1 = "tx_1", "TX_1 collateral lock"
        TX_RELEASE = "tx_release", "TX_release collateral release"
        TX_EXIT = "tx_exit", "TX_exit escrow reclaim"

    loan = models.ForeignKey(Loan, on_delete=models.PROTECT, related_name="borrower_signatures")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TX_1)
    form = models.CharField(max_length=16, choices=Form.choices)
    psbt_base64 = models.TextField(blank=True)
    signature_hex = models.CharField(max_length=128, help_text="64-byte BIP-340 signature, SIGHASH_DEFAULT.")
    sighash_hex = Hex32Field(help_text="BIP-341 script-path sighash (of the kind's leaf) the signature commits to.")
    unsigned_tx_hex = models.TextField(help_text="The transaction as signed, without witness.")
    txid = Hex32Field()
    verified_at = models.DateTimeField(null=True, blank=True)
    uploaded_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["loan", "txid"], name="borrower_signature_unique_per_tx"),
            models.CheckConstraint(condition=Q(signature_hex__regex=r"^[0-9a-f]{128}$"), name="signature_format"),
            models.CheckConstraint(condition=Q(form__in=["psbt", "raw", "transaction"]), name="signature_form_valid"),
            models.CheckConstraint(
                condition=Q(kind__in=["tx_1", "tx_release", "tx_exit"]), name="signature_kind_valid"
            ),
        ]
        indexes = [models.Index(fields=["loan", "kind"], name="borrower_signature_kind_idx")]

    def __str__(self) -> str:
        return f"{self.kind} signature of {self.txid[:12]}… for loan {self.loan_id}"


class BitcoinTransaction(models.Model):
    """A Bitcoin transaction of a loan as the watcher found it in a block (also ones the platform did not send).

    Confirmations are derived from heights (the watcher's tip height - ``block_height`` + 1), never stored.
    ``block_height`` is None while the transaction is unconfirmed (after a reorg, until a block holds it again).
    A fact is applied to the loan once, when final (``applied_at``).
    """

    class Role(models.TextChoices):
        ESCROW_FUNDING = "escrow_funding", "TX_0 escrow funding"
        COLLATERAL_LOCK = "collateral_lock", "TX_1 collateral lock"
        ESCROW_EXIT = "escrow_exit", "TX_exit escrow reclaim"
        COLLATERAL_RELEASE = "collateral_release", "TX_release collateral release"
        COLLATERAL_CAPTURE = "collateral_capture", "TX_capture collateral capture"

    loan = models.ForeignKey(Loan, on_delete=models.PROTECT, related_name="bitcoin_transactions")
    role = models.CharField(max_length=32, choices=Role.choices)
    txid = Hex32Field()
    vout = models.PositiveIntegerField(null=True, blank=True, help_text="Escrow funding: the escrow output's index.")
    value_sats = models.BigIntegerField(null=True, blank=True, help_text="Escrow funding: the escrow output's value.")
    spent_txid = Hex32Field(null=True, blank=True, help_text="A spend: the outpoint it spends (escrow or collateral).")
    spent_vout = models.PositiveIntegerField(null=True, blank=True)
    raw_hex = models.TextField(blank=True)
    revealed_preimage = Hex32Field(
        null=True, blank=True, help_text="The preimage its witness reveals: pB (TX_1) or pL (TX_release)."
    )
    block_hash = Hex32Field(null=True, blank=True)
    block_height = models.PositiveIntegerField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True, help_text="When the final fact moved the loan.")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-first_seen_at"]
        constraints = [
            models.CheckConstraint(condition=Q(txid__regex=HEX_TXID), name="btc_tx_txid_format"),
            models.CheckConstraint(condition=Q(role__in=BTC_TX_ROLES), name="btc_tx_role_valid"),
            models.CheckConstraint(
                # In a block means both its hash and its height.
                condition=Q(block_hash__isnull=True, block_height__isnull=True)
                | Q(block_hash__isnull=False, block_height__isnull=False),
                name="btc_tx_block_consistent",
            ),
            models.CheckConstraint(
                condition=(Q(role="escrow_funding") & Q(vout__isnull=False, value_sats__gt=0))
                | (~Q(role="escrow_funding") & Q(vout__isnull=True, value_sats__isnull=True)),
                name="btc_tx_funding_has_output",
            ),
            models.CheckConstraint(
                condition=(Q(role="escrow_funding") & Q(spent_txid__isnull=True, spent_vout__isnull=True))
                | (~Q(role="escrow_funding") & Q(spent_txid__isnull=False, spent_vout__isnull=False)),
                name="btc_tx_spend_has_outpoint",
            ),
            # Natural key: a transaction plays one role for a loan (a funding transaction may fund two loans).
            models.UniqueConstraint(fields=["loan", "txid"], name="btc_tx_natural_key"),
        ]
        indexes = [models.Index(fields=["block_height"], name="btc_tx_height_idx")]

    def __str__(self) -> str:
        return f"{self.get_role_display()} {self.txid[:12]}…"


class EvmEvent(models.Model):
    """A decoded contract log. Unique by its natural key, so a scanner may see it twice and store it once."""

    chain_id = models.PositiveBigIntegerField()
    contract_address = models.CharField(max_length=42, validators=[validate_evm_address])
    block_number = models.PositiveBigIntegerField()
    block_hash = Hex32Field()
    tx_hash = Hex32Field()
    log_index = models.PositiveIntegerField()
    name = models.CharField(max_length=64)
    args = models.JSONField(help_text="Decoded arguments; integers as decimal strings, bytes as hex.")
    loan = models.ForeignKey(Loan, null=True, blank=True, on_delete=models.PROTECT, related_name="evm_events")
    applied_at = models.DateTimeField(null=True, blank=True, help_text="When the final fact moved the loan.")
    orphaned_at = models.DateTimeField(
        null=True, blank=True, help_text="Its block left the chain (reorg); cleared if the log is mined again."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["block_number", "log_index"]
        constraints = [
            models.UniqueConstraint(fields=["chain_id", "tx_hash", "log_index"], name="evm_event_natural_key"),
        ]
        indexes = [
            models.Index(fields=["chain_id", "block_number"], name="evm_event_block_idx"),
            # The watcher's apply step reads only the pending events: without this it walks the applied history.
            models.Index(
                fields=["chain_id", "block_number", "log_index"],
                condition=Q(applied_at__isnull=True, orphaned_at__isnull=True),
                name="evm_event_pending_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} @{self.block_number}:{self.log_index}"


class ChainCursor(models.Model):
    """How far a watcher has followed its chain: the last block it processed (number, hash, parent hash)."""

    class Chain(models.TextChoices):
        EVM = "evm", "EVM"
        BITCOIN = "bitcoin", "Bitcoin"

    chain = models.CharField(max_length=16, choices=Chain.choices, unique=True)
    block_number = models.PositiveBigIntegerField()
    block_hash = Hex32Field()
    parent_hash = Hex32Field()
    tip_number = models.PositiveBigIntegerField(null=True, blank=True, help_text="The chain's head at the last run.")
    failures = models.PositiveIntegerField(default=0, help_text="Runs failed in a row (node down, ...).")
    last_error = models.TextField(blank=True)
    retry_after = models.DateTimeField(null=True, blank=True, help_text="Backoff: no run before this.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(chain__in=CHAINS), name="chain_cursor_chain_valid")]

    def __str__(self) -> str:
        return f"{self.chain} at {self.block_number}"


class ChainBlock(models.Model):
    """A recent block a watcher processed, kept to find the fork point when the chain reorganises."""

    chain = models.CharField(max_length=16, choices=ChainCursor.Chain.choices)
    number = models.PositiveBigIntegerField()
    hash = Hex32Field()
    parent_hash = Hex32Field()

    class Meta:
        ordering = ["chain", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "number"], name="chain_block_unique"),
            models.CheckConstraint(condition=Q(chain__in=CHAINS), name="chain_block_chain_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.chain} block {self.number}"


# --- The lender's secrets (loans.vault) and the EVM sender's nonces ------------------------------------------------
# Appended here on purpose: ciphertext only (``SealedField``), never a plaintext column. Written by
# ``loans.services.lender_secrets`` and ``loans.nonces`` only.

from .vault import SealedField  # noqa: E402 - the vault needs nothing above; kept beside the models that use it


class LenderKey(models.Model):
    """One private key of the lender's, sealed (``loans.vault``), found by its public part.

    One row per key, owned by the lender user (not one per deployment): the keys outlive deployments and
    parameter versions. A Bitcoin key is picked by the loan's own ``lender_btc_pubkey`` (xL, snapshotted per loan,
    so a running loan still finds its key after a new parameters version names another), the EVM key by the
    address that owns the deployment; an old key stays as long as a loan may need it.
    """

    class Kind(models.TextChoices):
        BITCOIN = "bitcoin", "Bitcoin (x-only key)"
        EVM = "evm", "EVM account"

    lender = models.ForeignKey(User, on_delete=models.PROTECT, related_name="lender_keys")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    public_id = models.CharField(
        max_length=66, help_text="Bitcoin: the x-only public key (64 hex). EVM: the checksummed address."
    )
    private_key = SealedField(help_text="Ciphertext only (Fernet); the vault key that sealed it is its key id.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "public_id"], name="lender_key_unique_public"),
            models.CheckConstraint(
                condition=Q(kind="bitcoin", public_id__regex=HEX32_PATTERN)
                | Q(kind="evm", public_id__regex=EVM_ADDRESS_PATTERN),
                name="lender_key_public_format",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} key {self.public_id}"


class LenderPreimage(models.Model):
    """pL of one loan, made on the server and sealed; hL = sha256(pL) is ``Loan.lender_hash``, in clear."""

    loan = models.OneToOneField(Loan, on_delete=models.PROTECT, related_name="lender_secret")
    preimage = SealedField(help_text="Ciphertext only (Fernet).")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"lender preimage of loan {self.loan_id}"


class EvmNonce(models.Model):
    """The next nonce of one server-held EVM account on one chain, allocated under this row's lock
    (``loans.nonces.DatabaseNonceAllocator``), so several workers sending with one key never sign a nonce twice."""

    chain_id = models.PositiveBigIntegerField()
    address = models.CharField(max_length=42, validators=[validate_evm_address])
    next_nonce = models.PositiveBigIntegerField(default=0)
    last_tx_hash = Hex32Field(null=True, blank=True, help_text="The last transaction the node accepted.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chain_id", "address"], name="evm_nonce_unique_sender"),
            models.CheckConstraint(condition=Q(address__regex=EVM_ADDRESS_PATTERN), name="evm_nonce_address_format"),
        ]

    def __str__(self) -> str:
        return f"{self.address} on chain {self.chain_id}: next nonce {self.next_nonce}"


# --- The API's doors: Sign-In with Ethereum nonces, wallets' bearer tokens, Idempotency-Key records ---------------
# Written by ``loans.services.accounts`` and ``loans.services.idempotency`` only.


class SiweNonce(models.Model):
    """A nonce the server issued for one EIP-4361 message: used at most once (``used_at``, set by a compare-and-set
    update) and only before ``expires_at``."""

    nonce = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(nonce__regex=r"^[0-9A-Za-z]{8,64}$"), name="siwe_nonce_format")
        ]
        indexes = [models.Index(fields=["expires_at"], name="siwe_nonce_expiry_idx")]

    def __str__(self) -> str:
        return f"nonce {self.nonce[:6]}…"


class ApiToken(models.Model):
    """A wallet's bearer token: only its SHA-256 is stored; revocable (``revoked_at``) and expiring."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    key_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the token, hex.")
    prefix = models.CharField(max_length=8, help_text="The token's first characters, to tell tokens apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(key_hash__regex=HEX32_PATTERN), name="api_token_hash_format")]

    def __str__(self) -> str:
        return f"token {self.prefix}… of user {self.user_id}"


class IdempotencyRecord(models.Model):
    """The first response to a signed-in caller's POST with an Idempotency-Key: the same key and body get it
    again, the same key with another body is refused (``idempotency_key_reused``)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of method, path and body.")
    status_code = models.PositiveSmallIntegerField()
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")]

    def __str__(self) -> str:
        return f"user {self.user_id} key {self.key}"


class BitcoinBroadcast(models.Model):
    """A loan transaction the platform handed to its Bitcoin node (``sendrawtransaction``), kept so a broadcast
    that did not take (node down, fee too low, not yet mature) can be retried. Whether it confirmed is the
    watcher's ``BitcoinTransaction``; this row only says what was sent, by whom, and how each attempt went."""

    loan = models.ForeignKey(Loan, on_delete=models.PROTECT, related_name="bitcoin_broadcasts")
    kind = models.CharField(max_length=16, choices=[(k, k) for k in SPEND_KINDS], help_text="tx_1, tx_exit, ...")
    txid = Hex32Field()
    raw_hex = models.TextField(help_text="The complete signed transaction.")
    requested_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.PROTECT, related_name="+", help_text="None: the server itself."
    )
    attempts = models.PositiveIntegerField(default=0)
    accepted_at = models.DateTimeField(null=True, blank=True, help_text="When a node last accepted it.")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, help_text="The node's answer to the last failed attempt.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["loan", "txid"], name="btc_broadcast_unique_per_loan"),
            models.CheckConstraint(condition=Q(txid__regex=HEX_TXID), name="btc_broadcast_txid_format"),
            models.CheckConstraint(condition=Q(kind__in=SPEND_KINDS), name="btc_broadcast_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.txid[:12]}… of loan {self.loan_id}"


class EvmTransaction(models.Model):
    """An EVM transaction of a loan that the platform sent with the lender's key or a wallet reported by hash, with
    its receipt as read at once, so the next page shows it before the watcher's confirmations. The watcher's
    ``EvmEvent`` rows stay the source of truth: nothing here moves a loan."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (no receipt yet)"
        MINED = "mined", "Mined"
        REVERTED = "reverted", "Mined, reverted"

    class Source(models.TextChoices):
        SERVER_KEY = "server_key", "Sent with the lender's server key"
        WALLET = "wallet", "Reported by a wallet"

    chain_id = models.PositiveBigIntegerField()
    tx_hash = Hex32Field()
    loan = models.ForeignKey(Loan, on_delete=models.PROTECT, related_name="evm_transactions")
    function = models.CharField(max_length=64, help_text="The contract function called, e.g. acceptLoanOffer.")
    sender = models.CharField(max_length=42, validators=[validate_evm_address])
    nonce = models.PositiveBigIntegerField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    events = models.JSONField(
        default=list, blank=True, help_text="The receipt's decoded events of the loan contract: [{name, args}]."
    )
    reported_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.PROTECT, related_name="+", help_text="None: the server itself."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["chain_id", "tx_hash"], name="evm_tx_natural_key"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "mined", "reverted"]), name="evm_tx_status_valid"
            ),
            models.CheckConstraint(condition=Q(source__in=["server_key", "wallet"]), name="evm_tx_source_valid"),
            models.CheckConstraint(
                condition=Q(status="pending", block_number__isnull=True) | ~Q(status="pending"),
                name="evm_tx_pending_has_no_block",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.function} {self.tx_hash[:12]}… ({self.status})"


class DeploymentPolicy(models.Model):
    """What the desk does on one contract deployment: whether it takes new loans (an operator pauses them)."""

    deployment = models.OneToOneField(ContractDeployment, on_delete=models.PROTECT, related_name="policy")
    new_loans_paused = models.BooleanField(default=False)
    paused_reason = models.CharField(max_length=200, blank=True)
    # The lender's automation (issue 11), with the server's keys. Locking TX_1 once pB is public is always on.
    auto_offer = models.BooleanField(default=False, help_text="Offer verified requests whose escrow has room.")
    auto_accept_repayment = models.BooleanField(default=False, help_text="Accept repayments (reveals pL).")
    auto_withdraw_offer = models.BooleanField(default=False, help_text="Withdraw offers at their deadline.")
    auto_mark_default = models.BooleanField(default=False, help_text="Mark defaults at activation + t_D.")
    auto_capture = models.BooleanField(default=False, help_text="Take the collateral once t_1 has matured.")
    updated_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deployment policies"

    def __str__(self) -> str:
        return f"policy of {self.deployment}"


class OperatorAction(models.Model):
    """The audit trail of what operators did outside a loan's own life: roles granted and revoked, new loans paused
    and resumed, broadcasts retried. Append-only, like ``LoanStatusChange``."""

    class Action(models.TextChoices):
        LENDER_GRANTED = "lender_granted", "Lender role granted"
        LENDER_REVOKED = "lender_revoked", "Lender role revoked"
        NEW_LOANS_PAUSED = "new_loans_paused", "New loans paused"
        NEW_LOANS_RESUMED = "new_loans_resumed", "New loans resumed"
        BROADCAST_RETRIED = "broadcast_retried", "Broadcast retried"

    actor = models.ForeignKey(User, on_delete=models.PROTECT, related_name="operator_actions")
    action = models.CharField(max_length=32, choices=Action.choices)
    target_user = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    deployment = models.ForeignKey(
        ContractDeployment, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    broadcast = models.ForeignKey(BitcoinBroadcast, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    detail = models.CharField(max_length=500, blank=True, help_text="The reason given, or the outcome.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    action__in=[
                        "lender_granted",
                        "lender_revoked",
                        "new_loans_paused",
                        "new_loans_resumed",
                        "broadcast_retried",
                    ]
                ),
                name="operator_action_valid",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by user {self.actor_id}"


#: The lender's duties the automation takes (loans.services.automation), in the order a pass visits them.
LENDER_AUTOMATION_ACTIONS = (
    "collateral-lock",
    "commit-lender-hash",
    "offer",
    "accept-repayment",
    "withdraw-offer",
    "mark-default",
    "collateral-capture",
)
#: Every unattended duty: the lender's, then the borrower's watchtower's (loans.services.watchtower).
AUTOMATION_ACTIONS = [*LENDER_AUTOMATION_ACTIONS, "release", "exit"]


class Automation(models.Model):
    """One step the platform takes on a loan unattended: the lender's automation (server keys) or the borrower's
    watchtower (the borrower's pre-signed transactions). At most one per loan and action: two workers racing meet
    on this row. A contract call is signed, then recorded here (hash, nonce, the signed transaction), then sent,
    so a process that dies in between sends the very same transaction again, never a second one."""

    class Party(models.TextChoices):
        LENDER = "lender", "The lender's automation"
        BORROWER = "borrower", "The borrower's watchtower"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent, waiting for the chain"
        DONE = "done", "Done"
        FAILED = "failed", "Failed (an operator looks)"

    loan = models.ForeignKey(Loan, on_delete=models.PROTECT, related_name="automations")
    action = models.CharField(max_length=32, choices=[(a, a) for a in AUTOMATION_ACTIONS])
    party = models.CharField(max_length=16, choices=Party.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0, help_text="Failed runs since the last success.")
    failure_streaks = models.PositiveIntegerField(
        default=0, help_text="Runs of failures so far (one per streak): names the operators' alert of a streak."
    )
    last_error = models.TextField(blank=True)
    evm_tx_hash = Hex32Field(null=True, blank=True)
    evm_nonce = models.PositiveBigIntegerField(null=True, blank=True)
    evm_signed_tx = SealedField(
        null=True,
        blank=True,
        help_text="The signed EVM transaction, sealed (an acceptLoanRepayment carries pL until it is mined).",
    )
    bitcoin_broadcast = models.ForeignKey(
        BitcoinBroadcast, null=True, blank=True, on_delete=models.PROTECT, related_name="automations"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["loan", "action"], name="automation_once_per_loan_action"),
            models.CheckConstraint(condition=Q(action__in=AUTOMATION_ACTIONS), name="automation_action_valid"),
            models.CheckConstraint(condition=Q(party__in=["lender", "borrower"]), name="automation_party_valid"),
            models.CheckConstraint(
                condition=Q(state__in=["pending", "sent", "done", "failed"]), name="automation_state_valid"
            ),
        ]
        indexes = [models.Index(fields=["state"], name="automation_state_idx")]

    def __str__(self) -> str:
        return f"{self.action} of loan {self.loan_id} ({self.state})"

    @classmethod
    def failure_counts(cls) -> dict[str, object]:
        """The update that counts one more failed run: ``consecutive_failures`` + 1, and a new streak when it was
        0 (one UPDATE reads the old values, so racing writers cannot split a streak)."""
        return {
            "consecutive_failures": models.F("consecutive_failures") + 1,
            "failure_streaks": models.Case(
                models.When(consecutive_failures=0, then=models.F("failure_streaks") + 1),
                default=models.F("failure_streaks"),
                output_field=models.PositiveIntegerField(),
            ),
        }


ALERT_KINDS = [
    "offer_expiry",
    "repayment_due",
    "acceptance_deadline",
    "exit_maturity",
    "capture_maturity",
    "presign_missing",
    "node_unreachable",
    "watcher_lag",
    "automation_failed",
]


class Alert(models.Model):
    """One message to one person: before a deadline that concerns them, an action a borrower must take themselves,
    or an operator's alarm. ``key`` names the occasion (e.g. the deadline and its block): the same occasion gives a
    person one alert, however often the worker looks. Shown on their pages (live) and sent by e-mail."""

    recipient = models.ForeignKey(User, on_delete=models.CASCADE, related_name="alerts")
    loan = models.ForeignKey(Loan, null=True, blank=True, on_delete=models.PROTECT, related_name="alerts")
    kind = models.CharField(max_length=32, choices=[(k, k) for k in ALERT_KINDS])
    key = models.CharField(max_length=200, help_text="The occasion: one alert per recipient and key.")
    subject = models.CharField(max_length=200)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["recipient", "key"], name="alert_once_per_occasion"),
            models.CheckConstraint(condition=Q(kind__in=ALERT_KINDS), name="alert_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for user {self.recipient_id}"
