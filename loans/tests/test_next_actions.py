"""What each party may do next (``loans.selectors.loan_next_actions``), from the watchers' view of both chains: each
step appears for its party only, in the states that allow it, and opens or closes at its exact block."""

from __future__ import annotations

import pytest

from loans.models import BitcoinTransaction, BorrowerSignature, ChainCursor, Loan, User
from loans.selectors import loan_next_actions

from .factories import hex32, make_loan, make_user

pytestmark = pytest.mark.django_db

S, B = Loan.Status, Loan.BitcoinStatus


@pytest.fixture
def people():
    return {
        "owner": make_user(User.Role.BORROWER),
        "other": make_user(User.Role.BORROWER),
        "lender": make_user(User.Role.LENDER),
        "operator": make_user(User.Role.OPERATOR),
    }


def heads(*, evm: int | None = None, btc: int | None = None) -> None:
    for chain, number in (("evm", evm), ("bitcoin", btc)):
        if number is not None:
            ChainCursor.objects.update_or_create(
                chain=chain, defaults={"block_number": number, "block_hash": hex32(), "parent_hash": hex32()}
            )


def names(loan: Loan, user: User) -> list[str]:
    return [action.name for action in loan_next_actions(loan=loan, user=user)]


def action(loan: Loan, user: User, name: str):
    (found,) = [a for a in loan_next_actions(loan=loan, user=user) if a.name == name]
    return found


def escrowed(owner: User, **fields) -> Loan:
    fields.setdefault("bitcoin_status", B.ESCROW_CONFIRMED)
    return make_loan(
        borrower=owner, escrow_txid=hex32(), escrow_vout=0, escrow_sats=1_500_000, escrow_btc_height=100, **fields
    )


def test_a_draft_is_funded_then_requested_by_its_borrower_only(people):
    draft = make_loan(borrower=people["owner"])
    assert names(draft, people["owner"]) == ["fund-escrow"]
    funded = escrowed(people["owner"])
    assert names(funded, people["owner"]) == ["request"]
    for someone in ("other", "lender", "operator"):
        assert names(funded, people[someone]) == []


def test_a_request_needs_hl_then_the_presignature_then_the_offer(people):
    heads(btc=101)
    loan = escrowed(people["owner"], status=S.REQUESTED, contract_loan_id=1)
    assert names(loan, people["owner"]) == ["cancel-request", "exit-psbt"]
    assert names(loan, people["lender"]) == ["commit-lender-hash"] == names(loan, people["operator"])

    loan.lender_hash = hex32()
    loan.save()
    assert names(loan, people["owner"]) == ["cancel-request", "presignature", "exit-psbt"]
    assert names(loan, people["lender"]) == []  # no offer before TX_1 is pre-signed

    BorrowerSignature.objects.create(
        loan=loan, kind="tx_1", form="raw", signature_hex="ab" * 64, sighash_hex=hex32(), unsigned_tx_hex="00",
        txid=hex32(), uploaded_by=people["owner"],
    )  # fmt: skip
    assert names(loan, people["owner"]) == ["cancel-request", "ladders", "exit-psbt"]
    assert names(loan, people["lender"]) == ["offer"]


def test_the_escrow_exit_opens_at_t0_and_never_while_the_escrow_is_owed_to_the_lender(people):
    loan = escrowed(people["owner"], status=S.CANCELLED, contract_loan_id=1, escrow_timelock_btc_blocks=144)
    mature = 100 + 144
    heads(btc=mature - 2)
    exit_ = action(loan, people["owner"], "exit-psbt")
    assert not exit_.open and exit_.opens.mature_height == mature and exit_.opens.blocks_remaining == 1
    heads(btc=mature - 1)  # the next block may hold the spend
    assert action(loan, people["owner"], "exit-psbt").open
    for status in (S.ACTIVE, S.REPAYMENT_IN_PROGRESS, S.DEFAULTED, S.REPAYMENT_REFUNDED):
        loan.status = status
        assert "exit-psbt" not in names(loan, people["owner"])


def test_the_accept_closes_at_the_loans_own_cutoff(people):
    loan = escrowed(people["owner"], status=S.OFFERED, contract_loan_id=1, offered_evm_block=1000, lender_hash=hex32())
    last_start = loan.offer_deadline_evm_block - loan.accept_cutoff_blocks  # the last block an accept may start in
    heads(evm=last_start - 1)  # the accept would be mined in last_start
    accept = action(loan, people["owner"], "accept-offer")
    assert accept.open and accept.closes.block == last_start + 1 and accept.closes.blocks_remaining == 1
    heads(evm=last_start)
    closed = action(loan, people["owner"], "accept-offer")
    assert not closed.open and closed.closes.blocks_remaining == 0
    # The lender's withdrawal opens at the offer deadline itself.
    heads(evm=loan.offer_deadline_evm_block - 2)
    assert not action(loan, people["lender"], "withdraw-offer").open
    heads(evm=loan.offer_deadline_evm_block - 1)
    assert action(loan, people["lender"], "withdraw-offer").open


def test_an_active_loan_is_repaid_or_defaults_and_its_tx1_is_locked_once_pb_is_known(people):
    loan = escrowed(
        people["owner"], status=S.ACTIVE, contract_loan_id=1, offered_evm_block=900, activated_evm_block=1000,
        lender_hash=hex32(),
    )  # fmt: skip
    heads(evm=1000)
    assert names(loan, people["owner"]) == ["repay"]
    assert names(loan, people["lender"]) == ["mark-default"] and not action(loan, people["lender"], "mark-default").open
    heads(evm=loan.repayment_deadline_evm_block - 1)
    assert action(loan, people["lender"], "mark-default").open
    loan.borrower_preimage = hex32()
    assert names(loan, people["lender"]) == ["mark-default", "collateral-lock"]
    loan.bitcoin_status = B.COLLATERAL_LOCKED
    assert names(loan, people["lender"]) == ["mark-default"]


def test_a_repayment_is_accepted_or_taken_back_and_the_collateral_released_with_pl(people):
    loan = escrowed(
        people["owner"], status=S.REPAYMENT_IN_PROGRESS, bitcoin_status=B.COLLATERAL_LOCKED, contract_loan_id=1,
        activated_evm_block=1000, repayment_evm_block=1100, lender_hash=hex32(),
    )  # fmt: skip
    heads(evm=1100)
    assert names(loan, people["lender"]) == ["accept-repayment"]
    assert not action(loan, people["owner"], "withdraw-repayment").open
    heads(evm=loan.acceptance_deadline_evm_block - 1)
    assert action(loan, people["owner"], "withdraw-repayment").open
    loan.status, loan.lender_preimage = S.REPAID, hex32()
    assert names(loan, people["owner"]) == ["release-psbt"]  # the escrow is spent: no exit any more


def test_a_default_is_captured_after_t1(people):
    loan = escrowed(
        people["owner"], status=S.DEFAULTED, bitcoin_status=B.COLLATERAL_LOCKED, contract_loan_id=1,
        collateral_btc_height=200, collateral_timelock_btc_blocks=30000,
    )  # fmt: skip
    BitcoinTransaction.objects.create(
        loan=loan, role="collateral_lock", txid=hex32(), spent_txid=loan.escrow_txid, spent_vout=0,
        block_hash=hex32(), block_height=200,
    )  # fmt: skip
    heads(btc=200 + 30000 - 2)
    capture = action(loan, people["lender"], "collateral-capture")
    assert not capture.open and capture.opens.blocks_remaining == 1
    heads(btc=200 + 30000 - 1)
    assert action(loan, people["operator"], "collateral-capture").open
    assert names(loan, people["owner"]) == []


def test_nobody_acts_on_a_closed_loan(people):
    loan = escrowed(people["owner"], status=S.REQUESTED, contract_loan_id=1)
    loan.closed_at = loan.created_at
    for user in people.values():
        assert names(loan, user) == []


def test_the_detail_names_each_next_step_with_a_route_that_takes_its_method(people):
    """Every step the selector can name resolves to a route whose view answers the method the detail gives."""
    from django.urls import resolve, reverse
    from rest_framework.test import APIClient

    heads(evm=5000, btc=100_000)
    loans = [
        make_loan(borrower=people["owner"]),
        escrowed(people["owner"]),
        escrowed(people["owner"], status=S.REQUESTED, contract_loan_id=1, lender_hash=hex32()),
        escrowed(people["owner"], status=S.REQUESTED, contract_loan_id=8),
        escrowed(people["owner"], status=S.OFFERED, contract_loan_id=2, offered_evm_block=4990, lender_hash=hex32()),
        escrowed(
            people["owner"],
            status=S.ACTIVE,
            contract_loan_id=3,
            activated_evm_block=10,
            borrower_preimage=hex32(),
            lender_hash=hex32(),
        ),
        escrowed(
            people["owner"],
            status=S.REPAYMENT_IN_PROGRESS,
            contract_loan_id=4,
            activated_evm_block=4000,
            repayment_evm_block=4100,
            lender_hash=hex32(),
            bitcoin_status=B.COLLATERAL_LOCKED,
        ),
        escrowed(
            people["owner"],
            status=S.REPAID,
            contract_loan_id=5,
            lender_hash=hex32(),
            lender_preimage=hex32(),
            bitcoin_status=B.COLLATERAL_LOCKED,
        ),
        escrowed(
            people["owner"],
            status=S.DEFAULTED,
            contract_loan_id=6,
            lender_hash=hex32(),
            collateral_btc_height=10,
            bitcoin_status=B.COLLATERAL_LOCKED,
        ),
        escrowed(people["owner"], status=S.CANCELLED, contract_loan_id=7),
    ]
    seen = set()
    for user in (people["owner"], people["lender"]):
        client = APIClient()
        client.force_login(user)
        for loan in loans:
            body = client.get(reverse("api:loan-detail", args=[loan.pk])).json()
            for step in body["next_actions"]:
                seen.add(step["name"])
                if step["kind"] == "payment":
                    assert step["endpoint"] is None
                    continue
                view = resolve(step["endpoint"]).func.view_class
                assert step["method"].lower() in view.http_method_names and hasattr(view, step["method"].lower())
    assert seen >= {
        "fund-escrow", "request", "cancel-request", "presignature", "accept-offer", "repay", "withdraw-repayment",
        "release-psbt", "exit-psbt", "commit-lender-hash", "withdraw-offer", "mark-default", "accept-repayment",
        "collateral-lock", "collateral-capture",
    }  # fmt: skip
