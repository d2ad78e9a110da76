"""The lender's escrow check (``loans.escrow.escrow_check``) on the regtest node: found, unspent, the loan's own
script, the exact value, confirmations, blocks until t_0 matures and room for an offer, each problem by its code;
it writes nothing. The lender's queue: requested loans of the newest deployment, oldest first, lenders and
operators only."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bitcoin.keys import PrivateKey
from bitcoin.rpc import BitcoinRPC
from bitcoin.testing import fund_output, mine_blocks
from bitcoin.tests.loan_vectors import REGTEST_P2TR, REGTEST_P2WPKH
from bitcoin.transactions import build_exit, finalize_exit
from loans.escrow import ESCROW_PROBLEMS, escrow_check, lender_queue_checks, lender_queue_requests
from loans.facts import loan_facts
from loans.models import Loan, User

from .factories import make_deployment, make_loan, make_parameters, make_user

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

T_0 = 10
ESCROW_SATS = 150_000
# t_0 = 10 BTC blocks; an offer needs ceil(30 * 1.1 / 20) + 1 = 3 of them left: room up to 7 confirmations.
SMALL = {
    "escrow_timelock_btc_blocks": T_0,
    "collateral_timelock_btc_blocks": 5,
    "offer_window_blocks": 30,
    "request_to_offer_allowance_blocks": 10,
    "accept_cutoff_blocks": 7,
    "loan_duration_blocks": 40,
    "repayment_window_blocks": 20,
    "safety_btc_blocks": 1,
    "min_amount_wei": 10**14,
}
ROOM_UP_TO = 7


@pytest.fixture(autouse=True)
def _network(settings, btc_rpc):
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_RPC_URL = btc_rpc.url
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB = "1"
    settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "500"


def small_parameters():
    return make_parameters(lender_btc_pubkey=PrivateKey.generate().xonly_pubkey.hex(), **SMALL)


def requested_loan(**overrides) -> tuple[Loan, PrivateKey]:
    """A requested loan with a fresh borrower key, whose escrow is not yet recorded."""
    borrower = PrivateKey.generate()
    parameters = overrides.pop("parameters", None) or small_parameters()
    overrides.setdefault("status", Loan.Status.REQUESTED)
    overrides.setdefault("contract_loan_id", secrets.randbelow(10**9) + 1)
    loan = make_loan(
        parameters=parameters,
        amount_wei=100_000 * 10**10,
        borrower_btc_pubkey=borrower.xonly_pubkey.hex(),
        borrower_hash=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
        borrower_payout_address=REGTEST_P2TR,
        lender_payout_address=REGTEST_P2WPKH,
        **overrides,
    )
    return loan, borrower


def funded(rpc: BitcoinRPC, confirmations: int = 1, **overrides) -> tuple[Loan, PrivateKey, int]:
    """A requested loan whose escrow is funded on regtest and recorded (as the watcher does): (loan, xB, height)."""
    loan, key = requested_loan(**overrides)
    output = fund_output(rpc, loan_facts(loan=loan).escrow.script_pubkey, ESCROW_SATS, confirmations)
    record(loan, output.txid, output.vout, height=output.height if confirmations else None)
    return loan, key, output.height


def record(loan: Loan, txid: str, vout: int, *, sats: int = ESCROW_SATS, height: int | None = None) -> None:
    Loan.objects.filter(pk=loan.pk).update(
        escrow_txid=txid, escrow_vout=vout, escrow_sats=sats, escrow_btc_height=height
    )
    loan.refresh_from_db()


def test_a_good_escrow(btc_rpc):
    loan, _, height = funded(btc_rpc)
    with CaptureQueriesContext(connection) as queries:
        check = escrow_check(loan=loan, rpc=btc_rpc)
    assert all(query["sql"].lstrip().upper().startswith("SELECT") for query in queries.captured_queries)
    assert check.ok and check.problems == ()
    assert (check.found, check.unspent, check.script_matches, check.value_matches) == (True, True, True, True)
    assert check.value_sats == check.expected_sats == ESCROW_SATS
    assert (check.txid, check.vout) == (loan.escrow_txid, loan.escrow_vout)
    assert check.confirmations == 1 and check.output_height == height == check.tip_height
    assert check.exit_mature_height == height + T_0 and check.blocks_until_exit == T_0 - 1
    assert check.min_btc_blocks_left_for_offer == T_0 - ROOM_UP_TO and check.has_room_for_offer


def test_room_for_an_offer_counts_confirmations_from_the_tip_given(btc_rpc):
    loan, _, height = funded(btc_rpc)
    last = escrow_check(loan=loan, rpc=btc_rpc, tip_height=height + ROOM_UP_TO - 1)
    assert last.confirmations == ROOM_UP_TO and last.has_room_for_offer and last.ok
    assert last.blocks_until_exit == T_0 - ROOM_UP_TO
    late = escrow_check(loan=loan, rpc=btc_rpc, tip_height=height + ROOM_UP_TO)
    assert late.confirmations == ROOM_UP_TO + 1 and not late.has_room_for_offer
    assert late.problems == ("escrow_no_room",) and late.found and late.unspent


def test_another_value_and_another_script(btc_rpc):
    loan, _, _ = funded(btc_rpc)
    record(loan, loan.escrow_txid, loan.escrow_vout, sats=ESCROW_SATS + 1, height=loan.escrow_btc_height)
    check = escrow_check(loan=loan, rpc=btc_rpc)
    assert check.problems == ("escrow_value_mismatch",) and not check.value_matches and check.script_matches
    other, _ = requested_loan()
    elsewhere = fund_output(btc_rpc, REGTEST_P2WPKH, ESCROW_SATS, 1)
    record(other, elsewhere.txid, elsewhere.vout, height=elsewhere.height)
    check = escrow_check(loan=other, rpc=btc_rpc)
    assert check.problems == ("escrow_script_mismatch",) and check.found and not check.script_matches


def test_not_recorded_not_found_unconfirmed(btc_rpc):
    loan, _ = requested_loan()
    assert escrow_check(loan=loan, rpc=btc_rpc).problems == ("escrow_not_recorded",)
    record(loan, secrets.token_bytes(32).hex(), 0)
    missing = escrow_check(loan=loan, rpc=btc_rpc)
    assert missing.problems == ("escrow_not_found",) and not missing.found
    pending, _, _ = funded(btc_rpc, confirmations=0)
    check = escrow_check(loan=pending, rpc=btc_rpc)
    assert check.problems == ("escrow_unconfirmed",) and not check.found and check.confirmations == 0
    mine_blocks(btc_rpc, 1)
    assert escrow_check(loan=pending, rpc=btc_rpc).ok


def test_spent_in_the_mempool_then_in_a_block(btc_rpc):
    loan, key, _ = funded(btc_rpc)
    mine_blocks(btc_rpc, T_0 - 1)  # TX_exit may go in the next block
    prepared = build_exit(loan_facts(loan=loan), fee_rate_sat_vb=2)
    exit_tx = finalize_exit(prepared, borrower_signature=prepared.sign(key))
    btc_rpc.sendrawtransaction(exit_tx.hex())
    pending = escrow_check(loan=loan, rpc=btc_rpc)
    assert "escrow_spend_pending" in pending.problems and pending.found and pending.unspent
    mine_blocks(btc_rpc, 1)
    spent = escrow_check(loan=loan, rpc=btc_rpc)
    assert spent.problems == ("escrow_spent",) and spent.found and not spent.unspent


def test_an_unreachable_node_is_a_problem_not_an_error():
    loan, _ = requested_loan()
    record(loan, secrets.token_bytes(32).hex(), 0)
    down = BitcoinRPC("http://127.0.0.1:9", timeout=1, retries=0)
    assert escrow_check(loan=loan, rpc=down).problems == ("bitcoin_node_unavailable",)


def test_the_problem_codes_are_the_listed_ones():
    assert len(set(ESCROW_PROBLEMS)) == len(ESCROW_PROBLEMS)
    assert {"escrow_no_room", "escrow_spent", "escrow_value_mismatch"} <= set(ESCROW_PROBLEMS)


# ------------------------------------------------------------------------------------------------ the queue


def test_the_lenders_queue(settings, btc_rpc):
    old_deployment = make_deployment(chain_id=settings.EVM_CHAIN_ID)
    deployment = make_deployment(chain_id=settings.EVM_CHAIN_ID)
    parameters = small_parameters()
    first, _, _ = funded(btc_rpc, deployment=deployment, parameters=parameters)
    second, _ = requested_loan(deployment=deployment, parameters=parameters)
    requested_loan(deployment=old_deployment, parameters=parameters)  # another deployment's
    requested_loan(deployment=deployment, parameters=parameters, status=Loan.Status.DRAFT, contract_loan_id=None)
    requested_loan(deployment=deployment, parameters=parameters, status=Loan.Status.OFFERED)
    lender, operator = make_user(User.Role.LENDER), make_user(User.Role.OPERATOR)
    queue = lender_queue_checks(loans=list(lender_queue_requests(actor=lender)))
    assert [loan.pk for loan, _ in queue] == [first.pk, second.pk]
    assert queue[0][1].ok and queue[1][1].problems == ("escrow_not_recorded",)
    assert queue[0][1].tip_height == btc_rpc.getblockcount()
    assert list(lender_queue_requests(actor=operator)) == [first, second]
    with pytest.raises(PermissionDenied):
        lender_queue_requests(actor=make_user(User.Role.BORROWER))
    # Only the loans handed over are checked: the second alone, without asking the node about the first.
    (only,) = lender_queue_checks(loans=[second], rpc=btc_rpc)
    assert only[0] == second and only[1].problems == ("escrow_not_recorded",)
    assert lender_queue_checks(loans=[]) == []
