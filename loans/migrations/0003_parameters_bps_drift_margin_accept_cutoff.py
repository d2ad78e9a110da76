"""Protocol parameters follow the contract's new `Parameters` (issue 7, PROTOCOL.md attacks 13-17).

- `min_collateral_ratio_percent` becomes `min_collateral_ratio_bps` (values × 100);
- new `drift_margin_bps` and `accept_cutoff_blocks`;
- the check constraints are the contract's `_validate` rules, one per rule: the ordering rules with the drift margin
  in exact integer form (NUMERIC, no overflow), the drift margin cap, the accept cutoff inside the offer window, the
  bond at least 1 %, the collateral ratio capped at 10000 + bond · 100 bps, amounts up to 2^128 - 1.

Existing rows (on both tables) get drift_margin_bps = 0, which is what the contract they were made under assumed,
so the old ordering rules are exactly the new ones there, and accept_cutoff_blocks = max(1, t_B // 4). A row that
breaks a rule the old contract did not have (bond 0 %, a collateral ratio above amount + bond, t_B = 1) makes this
migration fail on the constraint that names the rule: such parameters are no longer allowed; fix or delete the row
(no loan made under them can run on the new contract anyway). Going back divides the ratio by 100 (rounding down)
and drops the two new columns.
"""

from django.db import migrations, models
from django.db.models import F, Q, Value
from django.db.models.functions import Cast, Greatest
from django.db.models.lookups import GreaterThan

BPS = 10_000
MODELS = ("loan", "protocolparameters")


def exact(name):
    return Cast(name, output_field=models.DecimalField(max_digits=78, decimal_places=0))


def constraints(model_name):
    prefix = f"loans_{model_name}_"
    drift_factor = Value(BPS) + exact("drift_margin_bps")
    ratio_bps = exact("evm_blocks_per_btc_block") * Value(BPS)
    return [
        models.CheckConstraint(condition=Q(drift_margin_bps__lte=10_000), name=prefix + "drift_margin_in_range"),
        models.CheckConstraint(
            condition=GreaterThan(
                exact("escrow_timelock_btc_blocks") * ratio_bps,
                (exact("offer_window_blocks") + exact("request_to_offer_allowance_blocks")) * drift_factor,
            ),
            name=prefix + "escrow_outlasts_offer",
        ),
        models.CheckConstraint(
            condition=GreaterThan(
                exact("collateral_timelock_btc_blocks") * ratio_bps,
                (exact("loan_duration_blocks") + exact("repayment_window_blocks")) * drift_factor
                + exact("safety_btc_blocks") * ratio_bps,
            ),
            name=prefix + "collateral_outlasts_loan",
        ),
        models.CheckConstraint(
            condition=Q(accept_cutoff_blocks__gte=1, accept_cutoff_blocks__lt=F("offer_window_blocks")),
            name=prefix + "accept_cutoff_in_offer_window",
        ),
        models.CheckConstraint(
            condition=Q(min_amount_wei__gt=0, max_amount_wei__gte=F("min_amount_wei"))
            & Q(max_amount_wei__lte=2**128 - 1, processing_fee_wei__gte=0),
            name=prefix + "amount_bounds",
        ),
        models.CheckConstraint(condition=Q(bond_percent__gte=1, bond_percent__lte=100), name=prefix + "bond_in_range"),
        models.CheckConstraint(
            condition=Q(
                min_collateral_ratio_bps__gte=BPS,
                min_collateral_ratio_bps__lte=Value(BPS) + F("bond_percent") * Value(100),
            ),
            name=prefix + "collateral_ratio_capped",
        ),
        models.CheckConstraint(
            condition=Q(origination_fee_bps__lte=10000, interest_bps__lte=10000, blocks_per_year__gt=0)
            & Q(evm_blocks_per_btc_block__gt=0)
            & Q(offer_window_blocks__gt=0, loan_duration_blocks__gt=0, repayment_window_blocks__gt=0),
            name=prefix + "rates_in_range",
        ),
    ]


def percent_to_bps(apps, schema_editor):
    for model_name in MODELS:
        apps.get_model("loans", model_name).objects.update(
            min_collateral_ratio_bps=F("min_collateral_ratio_bps") * 100,
            drift_margin_bps=0,
            accept_cutoff_blocks=Greatest(F("offer_window_blocks") / 4, Value(1)),
        )


def bps_to_percent(apps, schema_editor):
    for model_name in MODELS:
        apps.get_model("loans", model_name).objects.update(min_collateral_ratio_bps=F("min_collateral_ratio_bps") / 100)


class Migration(migrations.Migration):
    dependencies = [
        ("loans", "0002_audit_trail_append_only"),
    ]

    operations = [
        *[
            migrations.RemoveConstraint(model_name=model_name, name=f"loans_{model_name}_{rule}")
            for model_name in MODELS
            for rule in ("escrow_outlasts_offer", "collateral_outlasts_loan", "amount_bounds", "rates_in_range")
        ],
        *[
            operation
            for model_name in MODELS
            for operation in (
                migrations.RenameField(
                    model_name=model_name, old_name="min_collateral_ratio_percent", new_name="min_collateral_ratio_bps"
                ),
                migrations.AlterField(
                    model_name=model_name,
                    name="min_collateral_ratio_bps",
                    field=models.PositiveIntegerField(
                        help_text="Least collateral sats / loan sats in TX_1, basis points (10000 = 100 %); "
                        "at most 10000 + bond·100."
                    ),
                ),
                migrations.AddField(
                    model_name=model_name,
                    name="drift_margin_bps",
                    field=models.PositiveIntegerField(
                        default=0,
                        help_text="Share of an EVM window a Bitcoin timelock must cover on top of it (chain drift), "
                        "basis points.",
                    ),
                    preserve_default=False,
                ),
                migrations.AddField(
                    model_name=model_name,
                    name="accept_cutoff_blocks",
                    field=models.PositiveBigIntegerField(
                        default=1,
                        help_text="B starts no accept with fewer than this many EVM blocks left in the offer window.",
                    ),
                    preserve_default=False,
                ),
            )
        ],
        migrations.RunPython(percent_to_bps, bps_to_percent),
        *[
            migrations.AddConstraint(model_name=model_name, constraint=constraint)
            for model_name in MODELS
            for constraint in constraints(model_name)
        ],
    ]
