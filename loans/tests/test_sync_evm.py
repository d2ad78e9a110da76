"""The EVM watcher on anvil and PostgreSQL: every contract event moves the app's loan, once, when final; copies are
stored and ignored; reorgs before finality rewind and replay; a deep one is refused; a node that goes down backs
off and loses nothing; runs never overlap."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
import requests
from django.db import connection, transaction
from django.utils import timezone
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from evm.anvil import free_port
from evm.errors import NodeUnavailable
from loans.errors import DeepReorgError
from loans.models import ChainBlock, ChainCursor, EvmEvent, EvmTransaction, Loan, LoanStatusChange
from loans.services import protocol_parameters_matching
from loans.sync import evm as evm_sync
from loans.sync.evm import UNSCANNED, sync_evm
from loans.sync.locks import _key

from .conftest import Desk
from .factories import hex32

pytestmark = [pytest.mark.django_db, pytest.mark.integration]


def trail(loan: Loan) -> list[tuple[str, str, str]]:
    """The contract side of the audit trail: (from, to, the event that caused it)."""
    return [
        (change.from_status, change.to_status, change.evm_event.name)
        for change in LoanStatusChange.objects.filter(loan=loan, side="contract").select_related("evm_event")
    ]


def fresh(loan: Loan) -> Loan:
    loan.refresh_from_db()
    return loan


def test_loan_flow_signs_with_the_personas_accounts(loan_flow, borrower_persona, lender_persona, borrower, lender):
    # In this suite `borrower` and `lender` are Django users; loan_flow still gets the EVM accounts, the same
    # personas' (the fixture-name collision the watcher's tests first ran into).
    assert loan_flow.borrower is borrower_persona.account and loan_flow.lender is lender_persona.account
    assert (borrower.evm_address, lender.evm_address) == (loan_flow.borrower.address, loan_flow.lender.address)
    assert lender_persona.btc_key.xonly_pubkey == loan_flow.client.parameters().lender_btc_pubkey


# -- every contract event --------------------------------------------------------------------------------------


def test_the_happy_path_moves_the_loan_step_by_step_and_captures_both_preimages(desk, evm_mine):
    loan = desk.draft()
    first = desk.sync()
    assert first.stored >= 3 and (first.applied, first.moved) == (first.stored, 0)
    assert set(EvmEvent.objects.values_list("name", flat=True)) >= {"ParametersUpdated", "LoanContractSet"}
    assert not EvmEvent.objects.filter(loan__isnull=False).exists()  # deployment events are about no loan

    contract_id = desk.request(loan)
    assert desk.sync().moved == 1
    loan = fresh(loan)
    assert (loan.status, loan.contract_loan_id) == ("requested", contract_id)
    assert loan.requested_evm_block == desk.w3.eth.block_number
    assert loan.escrow_txid == desk.flow.terms[contract_id].escrow_txid.hex()

    lender_preimage = desk.flow.commit(contract_id)
    desk.sync()
    assert (fresh(loan).status, loan.lender_hash) == ("requested", new_hash(lender_preimage))

    desk.flow.offer(contract_id)
    desk.sync()
    assert (fresh(loan).status, loan.offered_evm_block) == ("offered", desk.w3.eth.block_number)

    desk.flow.accept(contract_id, desk.secrets[loan.pk])
    desk.sync()
    assert (fresh(loan).status, loan.borrower_preimage) == ("active", desk.secrets[loan.pk].hex())  # pB captured
    assert loan.activated_evm_block == desk.w3.eth.block_number

    desk.flow.repay(contract_id)
    desk.sync()
    assert (fresh(loan).status, loan.repayment_evm_block) == ("repayment_in_progress", desk.w3.eth.block_number)

    desk.client.send(desk.client.accept_loan_repayment(contract_id, lender_preimage), desk.lender.account)
    report = desk.sync()
    assert report.moved == 1 and report.applied == report.stored  # + EtherSwap's own log of the payout
    assert (fresh(loan).status, loan.lender_preimage) == ("repaid", lender_preimage.hex())  # pL captured

    assert trail(loan) == [
        ("draft", "requested", "LoanRequested"),
        ("requested", "offered", "LoanOffered"),
        ("offered", "active", "LoanActivated"),
        ("active", "repayment_in_progress", "RepaymentAttempted"),
        ("repayment_in_progress", "repaid", "RepaymentAccepted"),
    ]
    names = list(EvmEvent.objects.filter(loan=loan).values_list("name", flat=True))
    assert names == [
        "LoanRequested", "LenderHashCommitted", "LoanOffered", "LoanActivated", "RepaymentAttempted",
        "RepaymentAccepted",
    ]  # fmt: skip
    assert not EvmEvent.objects.filter(applied_at__isnull=True).exists()


def new_hash(preimage: bytes) -> str:
    import hashlib

    return hashlib.sha256(preimage).hexdigest()


def _cancel(desk: Desk, contract_id: int) -> None:
    terms = desk.flow.terms[contract_id]
    desk.client.send(desk.client.cancel_request(contract_id, terms=terms, sender=terms.borrower), desk.borrower.account)


def _withdraw_offer(desk: Desk, loan: Loan, contract_id: int, evm_mine) -> None:
    evm_mine(loan.offer_window_blocks)
    desk.client.send(desk.client.withdraw_loan_offer(contract_id), desk.lender.account)


def _default(desk: Desk, loan: Loan, contract_id: int, evm_mine) -> None:
    evm_mine(loan.loan_duration_blocks)
    desk.client.send(desk.client.mark_as_defaulted(contract_id), desk.lender.account)


def _refund(desk: Desk, loan: Loan, contract_id: int, evm_mine) -> None:
    desk.flow.repay(contract_id)
    evm_mine(loan.repayment_window_blocks)
    terms = desk.flow.terms[contract_id]
    prepared = desk.client.withdraw_repayment_attempt(contract_id, terms=terms, sender=terms.borrower)
    desk.client.send(prepared, desk.borrower.account)


@pytest.mark.parametrize(
    ("ending", "path"),
    [
        ("cancel", [("draft", "requested", "LoanRequested"), ("requested", "cancelled", "LoanRequestCancelled")]),
        (
            "withdraw_offer",
            [
                ("draft", "requested", "LoanRequested"),
                ("requested", "offered", "LoanOffered"),
                ("offered", "offer_expired", "LoanOfferWithdrawn"),
            ],
        ),
        (
            "default",
            [
                ("draft", "requested", "LoanRequested"),
                ("requested", "offered", "LoanOffered"),
                ("offered", "active", "LoanActivated"),
                ("active", "defaulted", "LoanDefaulted"),
            ],
        ),
        (
            "refund",
            [
                ("draft", "requested", "LoanRequested"),
                ("requested", "offered", "LoanOffered"),
                ("offered", "active", "LoanActivated"),
                ("active", "repayment_in_progress", "RepaymentAttempted"),
                ("repayment_in_progress", "repayment_refunded", "RepaymentWithdrawn"),
            ],
        ),
    ],
)
def test_every_other_ending_moves_the_loan_and_its_trail_tells_the_story(desk, evm_mine, ending, path):
    parameters = desk.record.parameters
    if ending == "default":  # a loan duration short enough to mine through (t_D is 540,000 blocks by default)
        short = desk.client.parameters().replace(loan_duration_blocks=300)
        desk.client.send(desk.client.update_parameters(short), desk.lender.account)
        parameters = protocol_parameters_matching(short)
    loan = desk.draft(parameters=parameters)
    contract_id = desk.request(loan)
    if ending == "cancel":
        _cancel(desk, contract_id)
    else:
        desk.flow.commit(contract_id)
        desk.flow.offer(contract_id)
        if ending == "withdraw_offer":
            _withdraw_offer(desk, loan, contract_id, evm_mine)
        else:
            desk.flow.accept(contract_id, desk.secrets[loan.pk])
            (_default if ending == "default" else _refund)(desk, loan, contract_id, evm_mine)

    report = desk.sync()  # every event in one run

    assert report.moved == len(path) + (ending != "cancel")  # + LenderHashCommitted, which moves no status
    loan = fresh(loan)
    assert loan.status == path[-1][1] and trail(loan) == path
    # Nothing was ever locked on Bitcoin: a request cancelled or an offer lapsed closes the loan.
    assert loan.is_terminal and (loan.closed_at is not None) == (ending in ("cancel", "withdraw_offer"))
    if ending in ("default", "refund"):
        assert loan.borrower_preimage == desk.secrets[loan.pk].hex()
    assert not EvmEvent.objects.filter(applied_at__isnull=True).exists()


def test_a_copied_request_is_stored_but_not_linked(desk):
    loan = desk.draft()
    copy_id = desk.request(loan, account=desk.stranger)  # same hB, xB and amount, from another address, first
    real_id = desk.request(loan)

    report = desk.sync()

    copy, real = (EvmEvent.objects.get(name="LoanRequested", args__loan_id=str(i)) for i in (copy_id, real_id))
    assert copy.applied_at is not None and copy.loan is None
    assert real.applied_at is not None and real.loan == loan
    assert (fresh(loan).status, loan.contract_loan_id) == ("requested", real_id)
    assert report.moved == 1 and trail(loan) == [("draft", "requested", "LoanRequested")]


def test_a_refused_event_is_logged_holds_its_loan_back_and_does_not_stop_the_others(desk, caplog):
    mismatched = desk.draft(escrow_txid=hex32(), escrow_vout=0, escrow_sats=2_000_000)  # seen on Bitcoin: another one
    other = desk.draft()
    mismatched_id = desk.request(mismatched)
    other_id = desk.request(other)
    desk.flow.commit(mismatched_id)  # the refused loan's next event
    desk.flow.commit(other_id)

    report = desk.sync()

    assert [(r.loan_id, r.code) for r in report.refused] == [(mismatched.pk, "escrow_mismatch")]
    assert report.held == 1  # its LenderHashCommitted waits behind the request
    assert f"loan {mismatched.pk}: final LoanRequested" in caplog.text
    assert (fresh(mismatched).status, mismatched.lender_hash) == ("draft", None)
    assert fresh(other).status == "requested" and other.lender_hash is not None
    unapplied = EvmEvent.objects.filter(applied_at__isnull=True).order_by("block_number")
    assert list(unapplied.values_list("name", flat=True)) == ["LoanRequested", "LenderHashCommitted"]

    again = desk.sync()  # tried again next run, refused again, changes nothing
    assert (len(again.refused), again.held, again.applied) == (1, 1, 0) and fresh(mismatched).status == "draft"

    # The escrow the app had recorded was wrong (an operator corrects it): the loan catches up, in order.
    terms = desk.flow.terms[mismatched_id]
    Loan.objects.filter(pk=mismatched.pk).update(
        escrow_txid=terms.escrow_txid.hex(), escrow_vout=terms.escrow_vout, escrow_sats=terms.escrow_sats
    )
    caught_up = desk.sync()
    assert (caught_up.refused, caught_up.held, caught_up.moved) == ((), 0, 2)
    assert (fresh(mismatched).status, mismatched.contract_loan_id) == ("requested", mismatched_id)
    assert mismatched.lender_hash is not None and not unapplied.exists()


@pytest.mark.parametrize("one_statement", [True, False], ids=["postgresql", "portable"])
def test_storing_keeps_one_row_per_log_and_revives_an_orphaned_one_in_its_new_block(monkeypatch, one_statement):
    if not one_statement:
        monkeypatch.setattr(evm_sync, "ONE_STATEMENT_VENDORS", frozenset())

    def row(tx: str, block: int, block_hash: str, **args) -> dict:
        return {
            "chain_id": 31337, "contract_address": "0x" + "12" * 20, "block_number": block, "block_hash": block_hash,
            "tx_hash": tx, "log_index": 0, "name": "LoanRequestCancelled", "args": {"loan_id": "1", **args},
        }  # fmt: skip

    a, b, c = (hex32() for _ in range(3))
    old_block, new_block = hex32(), hex32()
    with transaction.atomic():
        assert evm_sync._store_events([row(a, 5, old_block), row(b, 5, old_block), row(c, 5, old_block)], 31337) == (
            3, 0,
        )  # fmt: skip
    EvmEvent.objects.filter(tx_hash=a).update(orphaned_at=timezone.now())  # its block left the chain
    EvmEvent.objects.filter(tx_hash=c).update(applied_at=timezone.now())
    before = {e.tx_hash: e for e in EvmEvent.objects.all()}

    with transaction.atomic():  # a mined again in another block; b and c seen again as they were; a new one
        stored = evm_sync._store_events(
            [row(a, 7, new_block, loan_id="2"), row(b, 5, old_block), row(c, 5, old_block), row(hex32(), 7, new_block)],
            31337,
        )
    assert stored == (1, 1)
    revived = EvmEvent.objects.get(tx_hash=a)
    assert (revived.pk, revived.block_number, revived.block_hash, revived.orphaned_at, revived.args) == (
        before[a].pk, 7, new_block, None, {"loan_id": "2"},
    )  # fmt: skip
    for tx in (b, c):
        after = EvmEvent.objects.get(tx_hash=tx)
        assert (after.block_hash, after.applied_at, after.created_at) == (
            before[tx].block_hash, before[tx].applied_at, before[tx].created_at,
        )  # fmt: skip
    assert EvmEvent.objects.count() == 4


# -- once, and only when final -----------------------------------------------------------------------------------


def test_a_second_run_and_a_full_rescan_change_nothing(desk):
    loan = desk.draft()
    contract_id = desk.request(loan)
    desk.flow.commit(contract_id)
    desk.flow.offer(contract_id)
    first = desk.sync()
    snapshot = list(EvmEvent.objects.order_by("pk").values_list("pk", "block_hash", "applied_at", "loan_id"))
    changes = LoanStatusChange.objects.count()

    again = desk.sync()
    assert (again.blocks, again.stored, again.applied, again.rewinds) == (0, 0, 0, 0)
    assert str(again).startswith(f"scanned 0 blocks to block {first.block}")

    # As if the cursor were lost: everything is scanned again, nothing is stored or applied twice.
    ChainCursor.objects.filter(chain="evm").update(block_number=desk.record.block_number - 1, block_hash=UNSCANNED)
    rescan = desk.sync()
    assert rescan.blocks == first.blocks and (rescan.stored, rescan.applied) == (0, 0)
    assert list(EvmEvent.objects.order_by("pk").values_list("pk", "block_hash", "applied_at", "loan_id")) == snapshot
    assert LoanStatusChange.objects.count() == changes and fresh(loan).status == "offered"


def test_events_are_applied_only_at_the_configured_depth(desk, evm_mine):
    loan = desk.draft()
    desk.request(loan)
    mined = desk.w3.eth.block_number

    report = desk.sync(confirmations=3)
    assert report.stored >= 1 and report.final_block == mined - 2
    assert fresh(loan).status == "draft"
    assert EvmEvent.objects.get(name="LoanRequested").applied_at is None

    evm_mine(1)
    assert desk.sync(confirmations=3).moved == 0 and fresh(loan).status == "draft"
    evm_mine(1)  # now 3 confirmations: the head is the 3rd block holding it or above
    report = desk.sync(confirmations=3)
    assert (report.moved, report.final_block) == (1, mined)
    assert fresh(loan).status == "requested"


# -- reorgs ------------------------------------------------------------------------------------------------------


def test_a_reorg_of_depth_1_rewinds_and_replays_the_new_chain(desk, evm_mine, evm_reorg):
    loan = desk.draft()
    contract_id = desk.request(loan)
    evm_mine(2)
    desk.sync(confirmations=3)
    assert fresh(loan).status == "requested"
    desk.flow.commit(contract_id)
    desk.flow.offer(contract_id)
    desk.sync(confirmations=3)  # stored, not final
    offered = EvmEvent.objects.get(name="LoanOffered")
    assert offered.applied_at is None

    # The offer's block is replaced by one in which the borrower cancelled instead.
    cancel = desk.signed(desk.borrower.account, "cancelRequest", [contract_id])
    reorg = evm_reorg(1, [cancel])
    report = desk.sync(confirmations=3)
    assert report.rewinds == 1 and report.orphaned >= 1
    offered.refresh_from_db()
    assert offered.orphaned_at is not None and offered.applied_at is None
    assert EvmEvent.objects.get(name="LoanRequestCancelled").block_hash == reorg.head.hash.hex()
    assert fresh(loan).status == "requested"  # nothing final yet

    evm_mine(2)
    report = desk.sync(confirmations=3)
    assert fresh(loan).status == "cancelled"
    assert trail(loan) == [("draft", "requested", "LoanRequested"), ("requested", "cancelled", "LoanRequestCancelled")]
    assert loan.lender_hash is not None  # the commit's block stayed on the chain: applied
    orphaned = EvmEvent.objects.filter(orphaned_at__isnull=False)
    assert sorted(orphaned.values_list("name", flat=True)) == ["LoanOffered", "Lockup"]  # the offer's, with EtherSwap's
    assert not orphaned.filter(applied_at__isnull=False).exists()
    cursor = ChainCursor.objects.get(chain="evm")
    head = desk.w3.eth.get_block("latest")
    assert (cursor.block_number, cursor.block_hash) == (head["number"], bytes(head["hash"]).hex())


def test_a_reorg_of_depth_3_drops_the_accept_and_moves_the_offer(desk, evm_mine, evm_reorg):
    loan = desk.draft()
    contract_id = desk.request(loan)
    evm_mine(4)
    desk.sync(confirmations=5)
    assert fresh(loan).status == "requested"
    desk.flow.commit(contract_id)
    commit_tx = desk.w3.eth.get_block("latest")["transactions"][0]
    desk.flow.offer(contract_id)
    offer_tx = desk.w3.eth.get_block("latest")["transactions"][0]
    desk.flow.accept(contract_id, desk.secrets[loan.pk])
    first = desk.sync(confirmations=5)
    assert first.applied == 0 and EvmEvent.objects.filter(name="LoanActivated").exists()

    # Blocks commit, offer, accept are replaced: an empty block, the commit, the offer; the accept is gone.
    reorg = evm_reorg(3, [(commit_tx, 1), (offer_tx, 2)])
    report = desk.sync(confirmations=5)
    assert report.rewinds == 1
    revived = EvmEvent.objects.filter(block_number__gt=reorg.fork_number, orphaned_at__isnull=True)
    assert sorted(revived.values_list("name", flat=True)) == ["LenderHashCommitted", "LoanOffered", "Lockup"]
    assert report.revived == 3  # the commit and the offer (with EtherSwap's Lockup), in their new blocks
    activated = EvmEvent.objects.get(name="LoanActivated")
    assert activated.orphaned_at is not None and activated.applied_at is None
    revived = EvmEvent.objects.get(name="LoanOffered")
    assert (revived.block_number, revived.block_hash, revived.orphaned_at) == (
        reorg.branch[2].number, reorg.branch[2].hash.hex(), None,
    )  # fmt: skip

    evm_mine(5)
    desk.sync(confirmations=5)
    assert (fresh(loan).status, loan.borrower_preimage, loan.offered_evm_block) == (
        "offered", None, reorg.branch[2].number,
    )  # fmt: skip

    # The new chain goes on: the borrower accepts again. The same transaction (same nonce, same fees) is mined
    # again: its orphaned log revives in the new block and is applied there.
    desk.flow.accept(contract_id, desk.secrets[loan.pk])
    accepted_in = desk.w3.eth.block_number
    evm_mine(4)
    desk.sync(confirmations=5)
    assert (fresh(loan).status, loan.borrower_preimage) == ("active", desk.secrets[loan.pk].hex())
    assert trail(loan) == [
        ("draft", "requested", "LoanRequested"),
        ("requested", "offered", "LoanOffered"),
        ("offered", "active", "LoanActivated"),
    ]
    activated.refresh_from_db()
    assert (activated.block_number, activated.orphaned_at) == (accepted_in, None) and activated.applied_at
    assert LoanStatusChange.objects.get(loan=loan, to_status="active").evm_event == activated
    assert EvmEvent.objects.filter(name="LoanActivated").count() == 1


def test_a_reorg_of_an_applied_event_is_refused_and_changes_nothing(desk, evm_reorg):
    loan = desk.draft()
    desk.request(loan)
    desk.sync(confirmations=1)  # final at once: applied
    cursor = ChainCursor.objects.get(chain="evm")
    events = list(EvmEvent.objects.order_by("pk").values_list("pk", "orphaned_at", "applied_at"))

    stranger_request = desk.signed(desk.stranger, "cancelRequest", [999])  # any other transaction will do
    evm_reorg(1, [stranger_request])
    with pytest.raises(DeepReorgError, match="final and applied"):
        desk.sync(confirmations=1)

    after = ChainCursor.objects.get(chain="evm")
    assert (after.block_number, after.block_hash) == (cursor.block_number, cursor.block_hash)
    assert after.failures == 1 and after.last_error.startswith("DeepReorgError: deep_reorg")
    assert list(EvmEvent.objects.order_by("pk").values_list("pk", "orphaned_at", "applied_at")) == events
    assert fresh(loan).status == "requested"


# -- the node and the lock ---------------------------------------------------------------------------------------


class FailingProvider(HTTPProvider):
    """A node that answers ``budget`` requests, then is gone (connection refused)."""

    def __init__(self, url: str, budget: int) -> None:
        super().__init__(url, exception_retry_configuration=None)
        self.budget = budget

    def _spend(self) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise requests.ConnectionError("the node went away")

    def make_request(self, method, params):
        self._spend()
        return super().make_request(method, params)

    def make_batch_request(self, requests_):
        self._spend()
        return super().make_batch_request(requests_)


def test_a_node_that_goes_down_backs_off_is_named_by_readyz_and_nothing_is_lost(desk, settings, client):
    loans = [desk.draft() for _ in range(3)]
    for loan in loans:
        desk.request(loan)
    dead_url = f"http://127.0.0.1:{free_port()}"
    dead = Web3(HTTPProvider(dead_url, exception_retry_configuration=None))

    with pytest.raises(NodeUnavailable):
        desk.sync(w3=dead)
    cursor = ChainCursor.objects.get(chain="evm")
    assert cursor.failures == 1 and cursor.last_error.startswith("NodeUnavailable: cannot reach")
    assert timezone.now() < cursor.retry_after <= timezone.now() + timedelta(seconds=2)
    assert desk.sync().skipped.startswith("backing off until")  # the live node is not even asked

    settings.EVM_RPC_URL = dead_url
    response = client.get("/readyz")
    assert response.status_code == 503
    evm_node, watcher = response.json()["checks"]["evm_node"], response.json()["watchers"]["evm"]
    assert not evm_node["ok"] and dead_url in evm_node["detail"]
    assert (watcher["ok"], watcher["failures"], watcher["last_error"]) == (False, 1, cursor.last_error)

    ChainCursor.objects.update(retry_after=timezone.now())  # time passes
    with pytest.raises(NodeUnavailable):
        desk.sync(w3=dead)
    cursor.refresh_from_db()
    assert cursor.failures == 2 and cursor.retry_after > timezone.now() + timedelta(seconds=3)  # 2**2 s

    # Back, but it goes away again in the middle of the scan (small chunks: some are stored, not all).
    ChainCursor.objects.update(retry_after=timezone.now())
    flaky = Web3(FailingProvider(desk.w3.provider.endpoint_uri, budget=6))
    with pytest.raises((NodeUnavailable, requests.ConnectionError)):
        desk.sync(w3=flaky, chunk_size=2)
    cursor.refresh_from_db()
    assert cursor.failures == 3 and cursor.block_number > desk.record.block_number
    assert EvmEvent.objects.count() > 0

    ChainCursor.objects.update(retry_after=timezone.now())
    report = desk.sync(chunk_size=2)
    cursor.refresh_from_db()
    assert (cursor.failures, cursor.last_error, cursor.retry_after) == (0, "", None)
    assert [fresh(loan).status for loan in loans] == ["requested"] * 3
    assert report.moved == 3
    keys = list(EvmEvent.objects.values_list("tx_hash", "log_index"))
    assert len(keys) == len(set(keys)) and not EvmEvent.objects.filter(applied_at__isnull=True).exists()
    assert LoanStatusChange.objects.count() == 3


def test_a_second_run_skips_while_another_holds_the_lock(desk):
    desk.request(desk.draft())
    params = connection.get_connection_params()
    with psycopg.connect(
        host=params.get("host"), port=params.get("port"), user=params.get("user"), dbname=params["dbname"]
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [_key("evm")])
        report = desk.sync()
        assert str(report) == "skipped: another EVM watcher run holds the lock"
        assert not EvmEvent.objects.exists() and not ChainBlock.objects.exists()
        other.execute("SELECT pg_advisory_unlock(%s)", [_key("evm")])
    assert desk.sync().moved == 1


def test_without_a_recorded_deployment_there_is_nothing_to_follow(w3):
    report = sync_evm(w3=w3)
    assert report.skipped == "no contract deployment is recorded for chain 31337"
    assert not ChainCursor.objects.exists()


@pytest.mark.django_db
def test_the_pending_events_query_can_use_the_partial_index() -> None:
    """The apply step's query matches the pending-events index, so it never walks the applied history."""
    from django.db import connection

    from loans.sync.evm import _unapplied

    if connection.vendor != "postgresql":
        pytest.skip("partial indexes and EXPLAIN are PostgreSQL's")
    query = _unapplied(31337).order_by("block_number", "log_index")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = query.query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "evm_event_pending_idx" in plan, plan


def test_a_reorg_puts_the_dropped_transactions_back_to_pending_and_the_moved_ones_in_their_new_blocks(
    desk, evm_mine, evm_reorg
):
    """The receipts read when the desk sent or a wallet reported a transaction (``EvmTransaction``) follow a reorg:
    one dropped is pending again (no block), one mined again elsewhere gets its new block once the watcher sees it."""
    loan = desk.draft()
    contract_id = desk.request(loan)
    evm_mine(4)
    desk.sync(confirmations=5)

    def sent(function: str) -> EvmTransaction:
        tx_hash = desk.w3.eth.get_block("latest")["transactions"][0]
        receipt = desk.w3.eth.get_transaction_receipt(tx_hash)
        return EvmTransaction.objects.create(
            chain_id=desk.client.chain_id,
            tx_hash=bytes(tx_hash).hex(),
            loan=loan,
            function=function,
            sender=receipt["from"],
            source=EvmTransaction.Source.WALLET,
            status=EvmTransaction.Status.MINED,
            block_number=receipt["blockNumber"],
        )

    desk.flow.commit(contract_id)
    commit = sent("commitLenderHash")
    desk.flow.offer(contract_id)
    offer = sent("extendLoanOffer")
    desk.flow.accept(contract_id, desk.secrets[loan.pk])
    accept = sent("acceptLoanOffer")
    desk.sync(confirmations=5)

    # Blocks commit, offer, accept are replaced: an empty block, the commit, the offer; the accept is gone.
    reorg = evm_reorg(3, [(bytes.fromhex(commit.tx_hash), 1), (bytes.fromhex(offer.tx_hash), 2)])
    desk.sync(confirmations=5)
    for row in (commit, offer, accept):
        row.refresh_from_db()
    assert (commit.status, commit.block_number) == ("mined", reorg.branch[1].number)
    assert (offer.status, offer.block_number) == ("mined", reorg.branch[2].number)
    assert (accept.status, accept.block_number) == ("pending", None)

    # The borrower sends the same accept again: mined, and the watcher gives the row its block.
    desk.flow.accept(contract_id, desk.secrets[loan.pk])
    accepted_in = desk.w3.eth.block_number
    desk.sync(confirmations=5)
    accept.refresh_from_db()
    assert (accept.status, accept.block_number) == ("mined", accepted_in)
