"""What the API shows. Amounts are decimal strings (``loans.api.fields``); parties by their EVM address."""

from __future__ import annotations

from rest_framework import serializers

from ..models import PARAMETER_FIELDS, BitcoinTransaction, EvmEvent, Loan, LoanStatusChange
from ..selectors import bitcoin_confirmations
from .fields import SatsField, WeiField

AUDIT_STATUS_CHOICES = Loan.Status.choices + Loan.BitcoinStatus.choices  # an audit row's from/to, either side
AMOUNT_PARAMETERS = {"processing_fee_wei", "min_amount_wei", "max_amount_wei"}


class ErrorSerializer(serializers.Serializer):
    """Every error: a stable code (docs/api-errors.md), a message for a person, the fields at fault."""

    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ParameterSetSerializer(serializers.Serializer):
    """Every protocol parameter (PROTOCOL.md); durations in blocks of their chain, ratios in bps."""

    def get_fields(self):
        fields = {}
        for name in PARAMETER_FIELDS:
            if name in AMOUNT_PARAMETERS:
                fields[name] = WeiField(read_only=True)
            else:
                fields[name] = serializers.IntegerField(read_only=True)
        return fields


class LoanListSerializer(serializers.ModelSerializer):
    borrower_address = serializers.CharField(source="borrower.evm_address", read_only=True, allow_null=True)
    lender_address = serializers.CharField(source="lender.evm_address", read_only=True, allow_null=True)
    parameters_version = serializers.IntegerField(source="parameters.version", read_only=True)
    chain_id = serializers.IntegerField(source="deployment.chain_id", read_only=True)
    amount_wei = WeiField(read_only=True)
    repayment_wei = WeiField(read_only=True)
    bond_wei = WeiField(read_only=True)
    collateral_sats = SatsField(read_only=True, allow_null=True)
    is_closed = serializers.BooleanField(read_only=True)

    class Meta:
        model = Loan
        fields = [
            "id", "contract_loan_id", "chain_id", "status", "bitcoin_status", "is_closed", "closed_at",
            "borrower_address", "lender_address", "parameters_version",
            "amount_wei", "repayment_wei", "bond_wei", "collateral_sats", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class DeadlineSerializer(serializers.Serializer):
    block = serializers.IntegerField(allow_null=True, help_text="First EVM block at which the step is closed.")
    blocks_remaining = serializers.IntegerField(
        allow_null=True, help_text="EVM blocks still to be mined before it (0: closed or closing); null: unknown."
    )
    estimated_at = serializers.DateTimeField(
        allow_null=True, help_text="When that block will probably be mined, at the loan's assumed block spacing."
    )


class TimelockSerializer(serializers.Serializer):
    timelock_blocks = serializers.IntegerField()
    output_height = serializers.IntegerField(allow_null=True)
    mature_height = serializers.IntegerField(allow_null=True, help_text="First height a block may hold the spend.")
    blocks_remaining = serializers.IntegerField(allow_null=True, help_text="0: the next block may hold it.")
    estimated_mature_at = serializers.DateTimeField(
        allow_null=True, help_text="When the spend may probably be broadcast (600 s a Bitcoin block)."
    )


class BitcoinTransactionSerializer(serializers.ModelSerializer):
    value_sats = SatsField(read_only=True, allow_null=True)
    confirmations = serializers.SerializerMethodField()

    class Meta:
        model = BitcoinTransaction
        fields = [
            "txid", "role", "vout", "value_sats", "spent_txid", "spent_vout", "block_hash", "block_height",
            "confirmations", "revealed_preimage", "applied_at", "first_seen_at",
        ]  # fmt: skip

    def get_confirmations(self, obj) -> int:
        return bitcoin_confirmations(block_height=obj.block_height, tip_height=self.context.get("btc_tip"))


class EvmEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = EvmEvent
        fields = [
            "name", "chain_id", "contract_address", "block_number", "block_hash", "tx_hash", "log_index", "args",
            "applied_at", "orphaned_at", "created_at",
        ]  # fmt: skip


class StatusChangeSerializer(serializers.ModelSerializer):
    actor_address = serializers.CharField(source="actor.evm_address", read_only=True, allow_null=True, default=None)

    class Meta:
        model = LoanStatusChange
        fields = ["side", "from_status", "to_status", "cause", "actor_address", "evm_event", "bitcoin_transaction",
                  "created_at"]  # fmt: skip


class EvmSideSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Loan.Status.choices)
    chain_id = serializers.IntegerField()
    loan_contract_address = serializers.CharField()
    contract_loan_id = serializers.IntegerField(allow_null=True)
    followed_block = serializers.IntegerField(allow_null=True, help_text="The watcher's last followed EVM block.")
    requested_block = serializers.IntegerField(allow_null=True)
    offered_block = serializers.IntegerField(allow_null=True)
    activated_block = serializers.IntegerField(allow_null=True)
    repayment_block = serializers.IntegerField(allow_null=True)
    offer_deadline = DeadlineSerializer()
    repayment_deadline = DeadlineSerializer()
    acceptance_deadline = DeadlineSerializer()
    amount_wei = WeiField()
    repayment_wei = WeiField()
    bond_wei = WeiField()
    borrower_hash = serializers.CharField()
    lender_hash = serializers.CharField(allow_null=True)
    borrower_preimage = serializers.CharField(allow_null=True)
    lender_preimage = serializers.CharField(allow_null=True)


class BitcoinSideSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Loan.BitcoinStatus.choices)
    followed_height = serializers.IntegerField(allow_null=True, help_text="The watcher's last followed height.")
    borrower_btc_pubkey = serializers.CharField()
    lender_btc_pubkey = serializers.CharField()
    escrow_txid = serializers.CharField(allow_null=True)
    escrow_vout = serializers.IntegerField(allow_null=True)
    escrow_sats = SatsField(allow_null=True)
    collateral_sats = SatsField(allow_null=True)
    origination_fee_sats = SatsField(allow_null=True)
    escrow_height = serializers.IntegerField(allow_null=True)
    collateral_height = serializers.IntegerField(allow_null=True)
    exit_timelock = TimelockSerializer(help_text="t_0: TX_exit after the escrow confirmed.")
    capture_timelock = TimelockSerializer(help_text="t_1: TX_capture after TX_1 confirmed.")
    transactions = BitcoinTransactionSerializer(many=True)


class MomentSerializer(serializers.Serializer):
    """When a step opens or closes: an EVM block or the first Bitcoin height a block may hold the spend."""

    chain = serializers.ChoiceField(choices=["evm", "bitcoin"])
    block = serializers.IntegerField(allow_null=True)
    blocks_remaining = serializers.IntegerField(allow_null=True)
    estimated_at = serializers.DateTimeField(allow_null=True)


class NextActionSerializer(serializers.Serializer):
    """A step the caller may take (``loans.selectors.loan_next_actions``): POST (or GET) ``endpoint`` prepares it
    (the contract call for a wallet, a PSBT) or does it; ``open`` false: not yet (``opens`` says when)."""

    name = serializers.CharField()
    party = serializers.ChoiceField(choices=["borrower", "lender"])
    kind = serializers.ChoiceField(choices=["evm_call", "bitcoin", "upload", "payment"])
    open = serializers.BooleanField()
    opens = MomentSerializer(allow_null=True)
    closes = MomentSerializer(allow_null=True)
    method = serializers.ChoiceField(choices=["GET", "POST"], allow_null=True)
    endpoint = serializers.CharField(allow_null=True)


class LoanDetailSerializer(serializers.Serializer):
    loan = LoanListSerializer()
    evm = EvmSideSerializer()
    bitcoin = BitcoinSideSerializer()
    terms = ParameterSetSerializer(help_text="The loan's own copy of every parameter.")
    next_actions = NextActionSerializer(many=True, help_text="What the caller may do next, and where.")


class TimelineEntrySerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=["status_change", "evm_event", "bitcoin_transaction"])
    status_change = StatusChangeSerializer(required=False)
    evm_event = EvmEventSerializer(required=False)
    bitcoin_transaction = BitcoinTransactionSerializer(required=False)


class ParametersInForceSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    lender_btc_pubkey = serializers.CharField()
    created_at = serializers.DateTimeField()
    note = serializers.CharField()
    terms = ParameterSetSerializer()


class LoanCreateSerializer(serializers.Serializer):
    """A new loan: the amount (wei, decimal string), xB, hB (64 hex each), B's Bitcoin payout address and, when
    the borrower wants one, TX_1's fee rate (sat/vB, decimal string; default: the node's estimate)."""

    amount_wei = WeiField()
    borrower_btc_pubkey = serializers.CharField(max_length=64, help_text="xB, the borrower's x-only key (hex).")
    borrower_hash = serializers.CharField(max_length=64, help_text="hB = SHA256(pB) (hex).")
    borrower_payout_address = serializers.CharField(max_length=90)
    fee_rate_sat_vb = serializers.RegexField(
        r"^[0-9]+(\.[0-9]+)?$", max_length=20, required=False, help_text="TX_1's fee rate in sat/vB, as a string."
    )


class FundingSerializer(serializers.Serializer):
    """What to send to the escrow: ``total_sats`` = collateral + origination fee + TX_1's miner fee at the rate +
    margin (enough for TX_1 at twice the rate, at least the change output's dust threshold; it comes back to the
    borrower as TX_1's change)."""

    escrow_address = serializers.CharField()
    escrow_descriptor = serializers.CharField()
    collateral_sats = SatsField()
    origination_fee_sats = SatsField()
    fee_rate_sat_vb = serializers.CharField(help_text="Exact decimal, or n/d.")
    fee_rate_source = serializers.ChoiceField(choices=["requested", "estimate", "minimum"])
    tx1_vsize = serializers.IntegerField()
    miner_fee_sats = SatsField()
    margin_sats = SatsField()
    margin = serializers.CharField()
    total_sats = SatsField()
    bip21_uri = serializers.CharField()
    loan_file = serializers.CharField(help_text="The loan file (JSON text): keep it in the recovery kit.")


class LoanCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    amount_wei = WeiField()
    bond_wei = WeiField()
    repayment_wei = WeiField()
    parameters_version = serializers.IntegerField()
    funding = FundingSerializer()


class PresignatureUploadSerializer(serializers.Serializer):
    """B's TX_1 pre-signature: ``psbt`` (base64 BIP-174 with B's BIP-371 tap script signature for the hashlock
    leaf), or ``signature`` (64-byte BIP-340, hex) with the unsigned ``transaction`` (hex). Not both."""

    psbt = serializers.CharField(max_length=20_000, required=False, help_text="Base64 PSBT signed by xB.")
    signature = serializers.CharField(max_length=130, required=False, help_text="64-byte signature (hex).")
    transaction = serializers.CharField(max_length=20_000, required=False, help_text="Unsigned TX_1 (hex).")


class PresignatureSerializer(serializers.Serializer):
    """The stored, verified pre-signature and TX_1's amounts."""

    txid = serializers.CharField()
    form = serializers.ChoiceField(choices=["psbt", "raw"])
    origination_fee_sats = SatsField(help_text="Output 0, to the lender's payout address.")
    collateral_sats = SatsField(help_text="Output 1, the collateral output.")
    change_sats = SatsField(help_text="Output 2, the borrower's change (0: none, the remainder was dust).")
    miner_fee_sats = SatsField()
    fee_rate_sat_vb = serializers.CharField(help_text="Exact decimal, or n/d.")
    verified_at = serializers.DateTimeField()
