"""Migration 0003 on PostgreSQL: the collateral ratio moves from percent to basis points, existing rows get the drift
margin their contract assumed (0) and an accept cutoff of t_B / 4, and rows the new rules forbid stop it."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("loans", "0002_audit_trail_append_only")]
AFTER = [("loans", "0003_parameters_bps_drift_margin_accept_cutoff")]

OLD_DEFAULTS = {
    "offer_window_blocks": 1000,
    "request_to_offer_allowance_blocks": 100,
    "escrow_timelock_btc_blocks": 100,
    "loan_duration_blocks": 540_000,
    "repayment_window_blocks": 1500,
    "collateral_timelock_btc_blocks": 27_150,  # valid without a drift margin, not with 10 %
    "evm_blocks_per_btc_block": 20,
    "safety_btc_blocks": 6,
    "processing_fee_wei": 10**15,
    "bond_percent": 10,
    "origination_fee_bps": 100,
    "interest_bps": 500,
    "blocks_per_year": 1_051_200,
    "min_amount_wei": 5 * 10**15,
    "max_amount_wei": 100 * 10**18,
    "min_collateral_ratio_percent": 105,
}


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def latest():
    """Every app's newest migration: the schema the rest of the suite expects."""
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


@pytest.fixture
def old_apps():
    apps = migrate(BEFORE)
    yield apps
    migrate(latest())  # leave the schema as the rest of the suite expects it (not just AFTER: later migrations)


def old_parameters(apps, version, **changes):
    model = apps.get_model("loans", "ProtocolParameters")
    return model.objects.create(version=version, lender_btc_pubkey="01" * 32, **(OLD_DEFAULTS | changes))


def test_existing_rows_are_carried_over(old_apps):
    old_parameters(old_apps, 1)
    old_parameters(old_apps, 2, offer_window_blocks=403, min_collateral_ratio_percent=110)
    apps = migrate(AFTER)
    rows = apps.get_model("loans", "ProtocolParameters").objects.order_by("version")
    assert [(p.min_collateral_ratio_bps, p.drift_margin_bps, p.accept_cutoff_blocks) for p in rows] == [
        (10_500, 0, 250),
        (11_000, 0, 100),
    ]
    # ... and back: the ratio in percent again, the new columns gone.
    apps = migrate(BEFORE)
    rows = apps.get_model("loans", "ProtocolParameters").objects.order_by("version")
    assert [p.min_collateral_ratio_percent for p in rows] == [105, 110]
    assert not hasattr(rows[0], "drift_margin_bps")


@pytest.mark.parametrize(
    ("changes", "constraint"),
    [
        ({"bond_percent": 0}, "bond_in_range"),
        ({"min_collateral_ratio_percent": 111}, "collateral_ratio_capped"),  # above amount + bond (10 %)
        ({"offer_window_blocks": 1}, "accept_cutoff_in_offer_window"),
    ],
)
def test_a_row_the_new_rules_forbid_stops_the_migration(old_apps, changes, constraint):
    row = old_parameters(old_apps, 1, **changes)
    with pytest.raises(IntegrityError, match=constraint):
        migrate(AFTER)
    row.delete()  # the migration rolled back as a whole: fix the row, then it goes through
