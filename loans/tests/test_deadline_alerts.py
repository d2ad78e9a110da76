"""``deadline_alerts_run``: before each deadline that concerns them, each party of a loan gets exactly one alert (one
e-mail, in text and HTML, and one push), from the warning window on, however often the pass runs; nobody else, and
nobody on a closed loan. Operators get one alert per occasion when a node is unreachable, a watcher lags or an
automation fails twice.

The pass reads only the database (the watchers' cursors and the loans' heights), so these tests set the cursors
where a watcher would have followed the chains to, block by block across each window."""

from __future__ import annotations

from collections import Counter

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core import mail
from django.utils import timezone

from loans.models import Alert, Automation, ChainCursor, Loan, User
from loans.services.alerts import user_group_name
from loans.services.deadline_alerts import deadline_alerts_run
from loans.tasks import SCHEDULES, deadline_alerts_task

from .factories import hex32, make_loan, make_user

pytestmark = pytest.mark.django_db(transaction=True)

S, B = Loan.Status, Loan.BitcoinStatus
EVM_WINDOW, BTC_WINDOW = 10, 5


@pytest.fixture(autouse=True)
def _alert_settings(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.ALERT_WARNING_EVM_BLOCKS = EVM_WINDOW
    settings.ALERT_WARNING_BTC_BLOCKS = BTC_WINDOW
    settings.ALERT_NODE_FAILURES = 3
    settings.ALERT_WATCHER_LAG_EVM_BLOCKS = 120
    settings.ALERT_WATCHER_LAG_BTC_BLOCKS = 6


@pytest.fixture
def people():
    return {
        "borrower": make_user(User.Role.BORROWER, email="borrower@example.com"),
        "stranger": make_user(User.Role.BORROWER, email="stranger@example.com"),
        "lender": make_user(User.Role.LENDER, email="lender@example.com"),
        "lender2": make_user(User.Role.LENDER, email="lender2@example.com"),
        "gone_lender": make_user(User.Role.LENDER, email="gone@example.com", is_active=False),
        "operator": make_user(User.Role.OPERATOR, email="operator@example.com"),
        "root": make_user(User.Role.BORROWER, email="root@example.com", is_superuser=True, is_staff=True),
        "gone_operator": make_user(User.Role.OPERATOR, email="gone-op@example.com", is_active=False),
    }


def follow(*, evm: int | None = None, btc: int | None = None, **cursor) -> None:
    """The watchers have followed the chains to these heights (their nodes' heads as given in ``cursor``)."""
    for chain, number in (("evm", evm), ("bitcoin", btc)):
        if number is not None:
            ChainCursor.objects.update_or_create(
                chain=chain,
                defaults={"block_number": number, "block_hash": hex32(), "parent_hash": hex32(), **cursor},
            )


def mails() -> Counter:
    """E-mails sent so far, per (address, subject's first words)."""
    return Counter(message.to[0] for message in mail.outbox)


def alerts_of(user: User) -> list[tuple[str, str]]:
    return sorted(Alert.objects.filter(recipient=user).values_list("kind", "key"))


# Every deadline with the heights around its window: (kind, loan fields, chain, first height the borrower is told
# or None, first height the lender is told or None, heights the pass runs at, in order).
# Defaults (PROTOCOL.md): t_B 1000, accept cutoff 250, t_0 100, t_D 540000, t_L 1500, t_1 30000, ratio 20, safety
# 6, drift 10 %; an offer's escrow room is ceil(1000 * 1.1 / 20) + 6 = 61 BTC blocks before t_0 matures.
DEADLINES = {
    # offered at 1000: expires at 2000; B should accept before the cutoff 2000 - 250 + 1 = 1751 (told from 1740,
    # 10 blocks before; no longer after 1749, when the next block is the cutoff); L may withdraw from 2000 (told from
    # 1989)
    "offer_expiry": (
        {"status": S.OFFERED, "offered_evm_block": 1000},
        "evm",
        1740,
        1989,
        [1000, 1700, 1739, 1740, 1745, 1749, 1750, 1988, 1989, 1995, 2000, 2100],
        "offer_expiry:{loan}:2000",
    ),
    # activated at 1000: due at 541000; B repays before it (told from 540989), L may mark the default from it
    "repayment_due": (
        {"status": S.ACTIVE, "offered_evm_block": 900, "activated_evm_block": 1000},
        "evm",
        540989,
        540989,
        [1000, 540988, 540989, 540995, 540999, 541000, 541500],
        "repayment_due:{loan}:541000",
    ),
    # repaid at 1000: L accepts before 2500 (told from 2489); B may take it back from 2500
    "acceptance_deadline": (
        {"status": S.REPAYMENT_IN_PROGRESS, "activated_evm_block": 900, "repayment_evm_block": 1000},
        "evm",
        2489,
        2489,
        [1000, 2488, 2489, 2495, 2499, 2500, 2600],
        "acceptance_deadline:{loan}:2500",
    ),
    # escrow at height 200: t_0 matures at 300 (TX_exit may be in block 300, told from 294); on a requested loan L
    # may offer while the escrow has 61 blocks of room: the last height with room is 300 - 61 - 1 = 238 (told from
    # 233, not after 238)
    "exit_maturity": (
        {"status": S.REQUESTED, "bitcoin_status": B.ESCROW_CONFIRMED, "escrow_btc_height": 200},
        "btc",
        294,
        233,
        [200, 232, 233, 236, 238, 239, 293, 294, 299, 300, 350],
        "exit_maturity:{loan}:300",
    ),
    # TX_1 at height 1000 on a defaulted loan: t_1 matures at 31000 (told from 30994); the borrower is not told
    "capture_maturity": (
        {"status": S.DEFAULTED, "bitcoin_status": B.COLLATERAL_LOCKED, "collateral_btc_height": 1000},
        "btc",
        None,
        30994,
        [1000, 30993, 30994, 31000, 31500],
        "capture_maturity:{loan}:31000",
    ),
}


def _loan(people, **fields) -> Loan:
    fields.setdefault("bitcoin_status", B.ESCROW_CONFIRMED)
    return make_loan(borrower=people["borrower"], escrow_txid=hex32(), escrow_vout=0, escrow_sats=1_500_000, **fields)


@pytest.mark.parametrize("kind", sorted(DEADLINES))
def test_each_deadline_gives_each_party_exactly_one_message_from_the_window_on(people, kind):
    fields, chain, borrower_from, lender_from, heights, key = DEADLINES[kind]
    loan = _loan(people, **fields)
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(user_group_name(people["borrower"].pk), channel)
    first_told: dict[str, int] = {}
    for height in heights:
        follow(**{chain: height})
        for _ in range(2):  # the worker runs the pass again and again: nothing twice
            deadline_alerts_run()
        for party in ("borrower", "lender", "lender2"):
            if Alert.objects.filter(recipient=people[party], loan=loan).exists():
                first_told.setdefault(party, height)
    expected = {"borrower": borrower_from, "lender": lender_from, "lender2": lender_from}
    assert first_told == {party: h for party, h in expected.items() if h is not None}
    # One alert and one e-mail (text and HTML) per party told, on its occasion's key; nobody else.
    told = [party for party, h in expected.items() if h is not None]
    assert mails() == Counter(people[party].email for party in told)
    for party in told:
        assert alerts_of(people[party]) == [(kind, key.format(loan=loan.pk))]
    for message in mail.outbox:
        assert message.alternatives[0][1] == "text/html" and f"Loan {loan.pk}" in message.body
    for party in ("stranger", "gone_lender", "operator", "root"):
        assert alerts_of(people[party]) == []
    pushed = []
    while (message := async_to_sync(_receive_or_none)(layer, channel)) is not None:
        pushed.append(message)
    assert [message["kind"] for message in pushed] == ([kind] if borrower_from is not None else [])


async def _receive_or_none(layer, channel):
    import asyncio

    try:
        return await asyncio.wait_for(layer.receive(channel), timeout=0.05)
    except TimeoutError:
        return None


def test_the_borrower_is_not_told_to_act_once_it_is_too_late(people):
    """The pass first runs when the next block is the accept cutoff (then after the expiry): the borrower hears
    nothing (no accept can be mined in time); the lender hears of the expiry even after it passed (the withdrawal
    waits for them). The same for a repayment first seen when the next block is its deadline."""
    offered = _loan(people, status=S.OFFERED, offered_evm_block=1000)
    follow(evm=1750)
    deadline_alerts_run()
    assert Alert.objects.count() == 0
    follow(evm=2050)
    deadline_alerts_run()
    assert alerts_of(people["borrower"]) == []
    assert alerts_of(people["lender"]) == [("offer_expiry", f"offer_expiry:{offered.pk}:2000")]
    active = _loan(people, status=S.ACTIVE, activated_evm_block=1000)
    follow(evm=540999)
    deadline_alerts_run()
    assert alerts_of(people["borrower"]) == []
    assert Alert.objects.filter(recipient=people["lender"], loan=active).count() == 1


def test_the_loans_own_lender_alone_is_told_once_it_names_one(people):
    loan = _loan(people, status=S.ACTIVE, activated_evm_block=1000, lender=people["lender2"])
    follow(evm=540995)
    report = deadline_alerts_run()
    assert report.created == {"repayment_due": 2} and report.loans_checked == 1
    assert alerts_of(people["lender2"]) == [("repayment_due", f"repayment_due:{loan.pk}:541000")]
    assert alerts_of(people["lender"]) == [] and "repayment_due 2" in str(report)


def test_nothing_on_a_closed_loan_a_draft_or_for_an_inactive_borrower(people):
    closed = _loan(people, status=S.ACTIVE, activated_evm_block=1000, closed_at=timezone.now())
    _loan(people, status=S.DRAFT)
    gone = make_user(User.Role.BORROWER, email="gone-b@example.com", is_active=False)
    make_loan(borrower=gone, status=S.ACTIVE, activated_evm_block=1000)
    follow(evm=540999, btc=100)
    deadline_alerts_run()
    assert not Alert.objects.filter(loan=closed).exists()
    assert not Alert.objects.filter(recipient=gone).exists()
    assert sorted(Alert.objects.values_list("recipient_id", flat=True)) == sorted(
        [people["lender"].pk, people["lender2"].pk]
    )  # the inactive borrower's loan: its lenders only


def test_no_height_followed_yet_no_deadline_alert(people):
    _loan(people, status=S.OFFERED, offered_evm_block=1000)
    report = deadline_alerts_run()
    assert report.evm_head is None and report.total == 0 and Alert.objects.count() == 0


def test_a_reorg_that_moves_the_escrow_moves_the_maturity_and_its_alert(people):
    loan = _loan(people, status=S.OFFER_EXPIRED, escrow_btc_height=200)
    follow(btc=296)
    deadline_alerts_run()
    Loan.objects.filter(pk=loan.pk).update(escrow_btc_height=201)  # the escrow was mined again, one block later
    deadline_alerts_run()
    assert alerts_of(people["borrower"]) == [
        ("exit_maturity", f"exit_maturity:{loan.pk}:300"),
        ("exit_maturity", f"exit_maturity:{loan.pk}:301"),
    ]
    assert not Alert.objects.filter(recipient=people["lender"]).exists()  # no offer to make on an expired offer


def test_an_active_loans_escrow_gives_no_exit_alert(people):
    """The escrow of an active loan is owed to the lender (TX_1): its t_0 concerns nobody."""
    _loan(people, status=S.ACTIVE, activated_evm_block=1000, escrow_btc_height=200)
    follow(btc=299)
    deadline_alerts_run()
    assert Alert.objects.count() == 0


# --- the operators' alarms ----------------------------------------------------------------------------------------


def operator_alerts(people, kind: str) -> dict[str, list[str]]:
    return {
        role: sorted(Alert.objects.filter(recipient=people[role], kind=kind).values_list("key", flat=True))
        for role in ("operator", "root")
    }


def test_an_unreachable_node_alerts_each_active_operator_once_per_streak(people):
    follow(evm=500, failures=2, last_error="ConnectionError: refused")
    deadline_alerts_run()
    assert Alert.objects.count() == 0  # two failed runs: not yet
    for failures in (3, 4, 10):
        ChainCursor.objects.filter(chain="evm").update(failures=failures)
        deadline_alerts_run()
    assert operator_alerts(people, "node_unreachable") == {
        "operator": ["node_unreachable:evm:500"],
        "root": ["node_unreachable:evm:500"],
    }
    alert = Alert.objects.get(recipient=people["operator"])
    assert "ConnectionError: refused" in alert.body and alert.loan is None
    # The node came back, the watcher moved on; later it fails again: a new occasion
    follow(evm=530, failures=0, last_error="")
    deadline_alerts_run()
    follow(evm=530, failures=3, last_error="ConnectionError: refused")
    deadline_alerts_run()
    assert operator_alerts(people, "node_unreachable")["operator"] == [
        "node_unreachable:evm:500",
        "node_unreachable:evm:530",
    ]
    for role in ("borrower", "lender", "gone_operator", "stranger"):
        assert not Alert.objects.filter(recipient=people[role]).exists()
    assert mails() == Counter({"operator@example.com": 2, "root@example.com": 2})


def test_a_lagging_watcher_alerts_once_per_episode(people):
    follow(btc=100, tip_number=106)
    deadline_alerts_run()
    assert Alert.objects.count() == 0  # 6 behind: within the limit
    follow(btc=100, tip_number=107)
    deadline_alerts_run()
    # behind while the chain moves on: the same episode until the watcher comes within 6 of the tip it was told of
    for block, tip in ((100, 108), (100, 110), (100, 115)):
        follow(btc=block, tip_number=tip)
        deadline_alerts_run()
        deadline_alerts_run()
    assert operator_alerts(people, "watcher_lag")["operator"] == ["watcher_lag:bitcoin:107"]
    follow(btc=101, tip_number=116)  # it covered that distance (it may have caught up meanwhile): told again
    deadline_alerts_run()
    follow(btc=120, tip_number=121)  # caught up
    deadline_alerts_run()
    follow(btc=121, tip_number=140)  # behind again: a new episode
    deadline_alerts_run()
    keys = ["watcher_lag:bitcoin:107", "watcher_lag:bitcoin:116", "watcher_lag:bitcoin:140"]
    assert operator_alerts(people, "watcher_lag") == {"operator": keys, "root": keys}
    follow(evm=1000, tip_number=1120)  # the EVM watcher: its own limit (120)
    deadline_alerts_run()
    assert not Alert.objects.filter(key__startswith="watcher_lag:evm").exists()
    follow(evm=1000, tip_number=1121)
    deadline_alerts_run()
    assert Alert.objects.filter(key="watcher_lag:evm:1121").count() == 2


def test_an_automation_failing_twice_alerts_operators_once_per_streak(people):
    loan = _loan(people, status=S.REQUESTED)
    automation = Automation.objects.create(loan=loan, action="offer", party="lender", last_error="nonce too low")
    rows = Automation.objects.filter(pk=automation.pk)

    def fail() -> None:  # counted as the automation and the watchtower count a failed run
        rows.update(**Automation.failure_counts())
        deadline_alerts_run()

    fail()
    assert Alert.objects.count() == 0  # failed once
    for _ in range(3):
        fail()
    key = f"automation_failed:{automation.pk}:1"
    assert operator_alerts(people, "automation_failed") == {"operator": [key], "root": [key]}
    assert "nonce too low" in Alert.objects.filter(key=key).first().body
    # it went through once (a success resets the count), then failed twice again: a new streak
    rows.update(consecutive_failures=0)
    deadline_alerts_run()
    fail()
    fail()
    assert operator_alerts(people, "automation_failed")["operator"] == [key, f"automation_failed:{automation.pk}:2"]
    rows.update(state="done")
    fail()  # done: nothing to look at
    assert Alert.objects.filter(kind="automation_failed").count() == 4
    assert not Alert.objects.filter(recipient__in=[people["lender"], people["borrower"]]).exists()


def test_the_worker_runs_the_pass_every_minute(people):
    assert ("deadline and operator alerts", "loans.tasks.deadline_alerts_task", 1) in SCHEDULES
    _loan(people, status=S.OFFERED, offered_evm_block=1000)
    follow(evm=1745)
    assert "offer_expiry 1" in deadline_alerts_task()
    assert Alert.objects.filter(recipient=people["borrower"]).count() == 1
