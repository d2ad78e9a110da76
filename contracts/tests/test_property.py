"""Property-based test: random calls by the right and the wrong parties, block advances and parameter updates over
several loans, checked against a Python model of the protocol after every step.

After every step: the outcome (success, or the exact custom error) matches the model; every loan's on-chain status
equals the model's (so a terminal state never changes); the loan contract holds exactly the fees and bonds of open
loans (== lockedBalance) and EtherSwap exactly their locked amounts and repayments; every party's balance changed by
exactly the model's net amount once gas (gasUsed * effectiveGasPrice of each receipt) is added back.

Coverage does not depend on luck: short scripted walks (`WALKS`, one plain test each) drive the same model through
every transition, both sides of every deadline and every kind of refusal, deterministically; the random walk only
checks the model's invariants on whatever paths Hypothesis chooses. (Hypothesis draws some integers from the number
literals of loaded project modules, so a "derandomized" walk still changes paths when other modules are imported:
/work/shared/FINDINGS.md.)"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from contracts.tests.helpers import (
    BORROWER_XONLY,
    ESCROW_TXID,
    FAST_PARAMS,
    TERMINAL,
    Params,
    Status,
)

pytestmark = pytest.mark.integration

# Reproducible by default; set CONTRACTS_PROPERTY_RANDOM=1 to explore fresh random sequences on every run.
DERANDOMIZE = os.environ.get("CONTRACTS_PROPERTY_RANDOM", "") != "1"
# Shrinking a failing walk replays dozens of walks against anvil (about 5 minutes): off by default, the unshrunk
# failing sequence is printed step by step; CONTRACTS_PROPERTY_SHRINK=1 turns it on for debugging.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.shrink] if os.environ.get("CONTRACTS_PROPERTY_SHRINK", "") == "1" else []
)

TX_GAS = 1_500_000

# Valid parameter sets the owner may switch to mid-run (new loans only).
PARAMETER_SETS = [
    FAST_PARAMS,
    FAST_PARAMS.with_(offer_window_blocks=4, loan_duration_blocks=15, repayment_window_blocks=5),
    FAST_PARAMS.with_(bond_percent=50, processing_fee_wei=2 * 10**15, interest_bps=10000),
    FAST_PARAMS.with_(bond_percent=1, processing_fee_wei=0, min_amount_wei=10**16),
]
AMOUNTS = [FAST_PARAMS.min_amount_wei - 1, FAST_PARAMS.min_amount_wei, 10**16, 3 * 10**17 + 1, 10**18]

SENDER_IS_RIGHT = st.sampled_from([True, True, True, False])
# A pick selects an existing loan (most of the time) or an unknown id (0 or loanCount + 1).
LOAN_IDS = st.integers(min_value=0, max_value=10**6)
PREIMAGE_KINDS = st.sampled_from(["right", "right", "other", "random"])
BLOCKS = st.sampled_from([1, 2, 4, 9, 20, 45])
TIMINGS = st.sampled_from(["now", "now", "now", "now", "before", "at"])
OTHER_SIDE = st.sampled_from([False, False, False, True])
# The parameters version a request names: the one in force (what the app shows), an older or a newer one.
VERSION_KINDS = st.sampled_from(["current"] * 6 + ["stale", "future"])


@dataclass
class ModelLoan:
    borrower: str
    amount: int
    fee: int
    repayment: int
    params: Params
    p_b: bytes
    h_b: bytes
    status: Status = Status.REQUESTED
    lender: str = ""
    bond: int = 0
    p_l: bytes = b""
    h_l: bytes = b""
    offer_block: int = 0
    activation_block: int = 0
    repayment_block: int = 0

    def holdings(self) -> tuple[int, int]:
        """(loan contract, EtherSwap) for this loan, per the balance table."""
        return {
            Status.REQUESTED: (self.fee, 0),
            Status.OFFERED: (self.fee + self.bond, self.amount),
            Status.ACTIVE: (self.bond, 0),
            Status.REPAYMENT_IN_PROGRESS: (self.bond, self.repayment),
        }.get(self.status, (0, 0))


class Refused(Exception):
    """A refusal the model predicts: the custom error name and its arguments."""

    def __init__(self, name: str, *args: object) -> None:
        super().__init__(name, *args)
        self.name, self.args_ = name, args


def make_machine(dep, people, seed_counter, outcomes):
    chain, loan, w3 = dep.chain, dep.loan, dep.w3
    parties = [people.lender, people.borrower, people.borrower2, people.stranger]

    class LoanMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.snapshot = chain.snapshot()
            self.start = chain.balances(*parties)
            self.spent_start = {a: chain.spent(a) for a in parties}
            self.expected = dict.fromkeys(parties, 0)
            self.loans: dict[int, ModelLoan] = {}
            self.params = dep.params
            self.version = 1
            # Hashes the contract has reserved (`hashUsed`): a lender hash from its commit on, a borrower hash
            # from its offer on. A request reserves nothing, so several requests may share an hB.
            self.used: set[bytes] = set()
            self.preimages: dict[bytes, bytes] = {}  # every hash handed out so far -> its preimage
            self.steps = 0
            self.terminal_seen: dict[int, Status] = {}
            self.log: list[tuple[str, str]] = []  # (function, "ok" or the error's name), in order
            self.chain = chain

        def teardown(self) -> None:
            chain.revert_to(self.snapshot)

        # ----------------------------------------------------------------- plumbing
        def preimage(self) -> tuple[bytes, bytes]:
            seed_counter[0] += 1
            p = hashlib.sha256(b"property-test-preimage" + seed_counter[0].to_bytes(8, "big")).digest()
            h = hashlib.sha256(p).digest()
            self.preimages[h] = p
            return p, h

        def requested_hashes(self) -> list[bytes]:
            """Borrower hashes of existing loans that no offer (nor commit) has reserved yet."""
            return sorted({m.h_b for m in self.loans.values()} - self.used)

        def execute(self, predict, call, sender: str, value: int = 0) -> bool:
            """Run `predict(next_block)` on the model; it raises Refused(...) or returns an `apply` callable.
            Then mine the call in that block and compare."""
            next_block = chain.block + 1
            try:
                apply = predict(next_block)
            except Refused as refusal:
                outcomes[(call.fn_name, refusal.name)] = outcomes.get((call.fn_name, refusal.name), 0) + 1
                self.log.append((call.fn_name, refusal.name))
                assert chain.revert_data(call, sender, value) == dep.err(refusal.name, *refusal.args_)
                receipt = self.send(call, sender, value)
                assert receipt["status"] == 0 and receipt["blockNumber"] == next_block
                return False
            receipt = self.send(call, sender, value)
            assert receipt["blockNumber"] == next_block
            assert receipt["status"] == 1, f"model expected success for {call.fn_name} by {sender}"
            apply()
            outcomes[(call.fn_name, "ok")] = outcomes.get((call.fn_name, "ok"), 0) + 1
            self.log.append((call.fn_name, "ok"))
            return True

        def send(self, call, sender: str, value: int):
            tx = {"from": sender, "to": loan.address, "data": call._encode_transaction_data(), "value": value}
            tx["gas"] = TX_GAS
            receipt = chain.wait(w3.eth.send_transaction(tx))
            chain._charge(sender, receipt)
            return receipt

        def existing(self, loan_id: int) -> ModelLoan:
            if loan_id not in self.loans:
                raise Refused("UnknownLoan", loan_id)
            return self.loans[loan_id]

        def only_owner(self, sender: str) -> None:
            if sender != people.lender:
                raise Refused("OwnableUnauthorizedAccount", sender)

        def only_borrower(self, loan_id: int, m: ModelLoan, sender: str) -> None:
            if sender != m.borrower:
                raise Refused("NotBorrower", loan_id, sender)

        @staticmethod
        def status_is(loan_id: int, m: ModelLoan, status: Status) -> None:
            if m.status != status:
                raise Refused("WrongStatus", loan_id, int(m.status))

        def pick_sender(self, right: bool, right_party: str, wrong: int) -> str:
            return right_party if right else parties[wrong % len(parties)]

        def loan_id_of(self, pick: int) -> int:
            if not self.loans or pick % 10 == 9:
                return 0 if pick % 20 == 9 else len(self.loans) + 1
            return 1 + (pick // 10) % len(self.loans)

        @staticmethod
        def pick_of(loan_id: int) -> int:
            """The pick `loan_id_of` maps to `loan_id` (an existing loan); 9 is the next, unknown id."""
            return (loan_id - 1) * 10

        def deadline_of(self, loan_id: int) -> int:
            """The current deadline of an open loan (offer, repayment or acceptance)."""
            m = self.loans[loan_id]
            return {
                Status.OFFERED: m.offer_block + m.params.offer_window_blocks,
                Status.ACTIVE: m.activation_block + m.params.loan_duration_blocks,
                Status.REPAYMENT_IN_PROGRESS: m.repayment_block + m.params.repayment_window_blocks,
            }[m.status]

        def borrower_of(self, loan_id: int) -> str:
            return self.loans[loan_id].borrower if loan_id in self.loans else people.borrower

        # ----------------------------------------------------------------- rules
        @rule(
            second_borrower=st.booleans(),
            amount=st.sampled_from(AMOUNTS),
            fee_ok=st.sampled_from([True, True, True, False]),
            hash_kind=st.sampled_from(["fresh"] * 6 + ["used", "requested"]),
            version_kind=VERSION_KINDS,
        )
        def request(self, second_borrower, amount, fee_ok, hash_kind, version_kind="current", copy_of=0):
            """hash_kind: a fresh hB, a reserved hash (refused), or the hB of an existing loan not yet offered (a
            front-run copy, or a new request after a cancel: accepted, and shares hB with that loan). `copy_of`
            (from `_advance` only): the hB of that loan, whatever its state. version_kind: the request names the
            parameters version in force, an older one ("stale": the owner updated since B was shown the terms)
            or the next one ("future"); only the one in force is accepted."""
            sender = people.borrower2 if second_borrower else people.borrower
            p = self.params
            shown = {"current": self.version, "stale": max(self.version - 1, 0), "future": self.version + 1}[
                version_kind
            ]
            fee = p.processing_fee_wei if fee_ok else p.processing_fee_wei + 1
            p_b, h_b = self.preimage()
            if hash_kind == "used" and self.used:
                h_b = sorted(self.used)[0]
            elif hash_kind == "requested" and self.requested_hashes():
                h_b = self.requested_hashes()[0]
            if copy_of:
                h_b = self.loans[copy_of].h_b
            p_b = self.preimages[h_b]
            call = loan.functions.requestLoan(amount, BORROWER_XONLY, h_b, ESCROW_TXID, 0, 10_000, shown)

            def predict(block):
                if shown != self.version:
                    raise Refused("ParametersVersionMismatch", shown, self.version)
                if not p.min_amount_wei <= amount <= p.max_amount_wei:
                    raise Refused("AmountOutOfBounds", amount, p.min_amount_wei, p.max_amount_wei)
                if fee != p.processing_fee_wei:
                    raise Refused("WrongValue", p.processing_fee_wei, fee)
                if h_b in self.used:
                    raise Refused("HashAlreadyUsed", h_b)

                def apply():
                    if any(other.h_b == h_b for other in self.loans.values()):
                        outcomes[("requestLoan", "ok, hB shared")] = (
                            outcomes.get(("requestLoan", "ok, hB shared"), 0) + 1
                        )
                    loan_id = len(self.loans) + 1
                    self.loans[loan_id] = ModelLoan(
                        borrower=sender, amount=amount, fee=fee, repayment=p.repayment_for(amount), params=p,
                        p_b=p_b, h_b=h_b,
                    )  # fmt: skip
                    self.expected[sender] -= fee

                return apply

            self.execute(predict, call, sender, fee)

        @rule(loan_id=LOAN_IDS, right=SENDER_IS_RIGHT, wrong=st.integers(0, 3))
        def cancel(self, loan_id, right, wrong):
            loan_id = self.loan_id_of(loan_id)
            sender = self.pick_sender(right, self.borrower_of(loan_id), wrong)

            def predict(block):
                m = self.existing(loan_id)
                self.only_borrower(loan_id, m, sender)
                self.status_is(loan_id, m, Status.REQUESTED)

                def apply():
                    m.status = Status.CANCELLED
                    self.expected[m.borrower] += m.fee

                return apply

            self.execute(predict, loan.functions.cancelRequest(loan_id), sender)

        @rule(
            loan_id=LOAN_IDS,
            right=SENDER_IS_RIGHT,
            wrong=st.integers(0, 3),
            kind=st.sampled_from(["fresh"] * 5 + ["used", "requested", "zero"]),
        )
        def commit(self, loan_id, right, wrong, kind):  # fmt: skip
            """kind "requested": hL = a requested, unreserved hB (allowed; it then blocks that request's offer)."""
            loan_id = self.loan_id_of(loan_id)
            sender = self.pick_sender(right, people.lender, wrong)
            p_l, h_l = self.preimage()
            if kind == "used" and self.used:
                h_l = sorted(self.used)[-1]
            elif kind == "requested" and self.requested_hashes():
                h_l = self.requested_hashes()[-1]
            elif kind == "zero":
                h_l = b"\x00" * 32
            p_l = self.preimages.get(h_l, p_l)

            def predict(block):
                self.only_owner(sender)
                m = self.existing(loan_id)
                self.status_is(loan_id, m, Status.REQUESTED)
                if h_l == b"\x00" * 32:
                    raise Refused("ZeroValue", "lenderHash")
                if m.h_l:
                    raise Refused("LenderHashAlreadySet", loan_id)
                if h_l in self.used:
                    raise Refused("HashAlreadyUsed", h_l)

                def apply():
                    self.used.add(h_l)
                    m.p_l, m.h_l = p_l, h_l

                return apply

            self.execute(predict, loan.functions.commitLenderHash(loan_id, h_l), sender)

        @rule(loan_id=LOAN_IDS, right=SENDER_IS_RIGHT, wrong=st.integers(0, 3), value_ok=SENDER_IS_RIGHT)
        def offer(self, loan_id, right, wrong, value_ok):
            loan_id = self.loan_id_of(loan_id)
            sender = self.pick_sender(right, people.lender, wrong)
            m0 = self.loans.get(loan_id)
            due = (m0.amount + m0.params.bond_for(m0.amount)) if m0 else 10**16
            value = due if value_ok else due + 1

            def predict(block):
                self.only_owner(sender)
                m = self.existing(loan_id)
                self.status_is(loan_id, m, Status.REQUESTED)
                if not m.h_l:
                    raise Refused("LenderHashNotSet", loan_id)
                if value != due:
                    raise Refused("WrongValue", due, value)
                if m.h_b in self.used:
                    raise Refused("HashAlreadyUsed", m.h_b)

                def apply():
                    self.used.add(m.h_b)
                    m.status, m.lender, m.offer_block = Status.OFFERED, sender, block
                    m.bond = m.params.bond_for(m.amount)
                    self.expected[sender] -= value

                return apply

            self.execute(predict, loan.functions.extendLoanOffer(loan_id), sender, value)

        @rule(loan_id=LOAN_IDS, right=SENDER_IS_RIGHT, wrong=st.integers(0, 3), kind=PREIMAGE_KINDS)
        def accept(self, loan_id, right, wrong, kind):
            loan_id = self.loan_id_of(loan_id)
            sender = self.pick_sender(right, self.borrower_of(loan_id), wrong)
            m0 = self.loans.get(loan_id)
            preimage = {
                "right": m0.p_b if m0 else b"\x01" * 32,
                "other": (m0.p_l or b"\x02" * 32) if m0 else b"\x02" * 32,
                "random": self.preimage()[0],
            }[kind]

            def predict(block):
                m = self.existing(loan_id)
                self.only_borrower(loan_id, m, sender)
                self.status_is(loan_id, m, Status.OFFERED)
                deadline = m.offer_block + m.params.offer_window_blocks
                if block >= deadline:
                    raise Refused("TooLate", loan_id, deadline)
                if hashlib.sha256(preimage).digest() != m.h_b:
                    raise Refused("WrongPreimage")

                def apply():
                    m.status, m.activation_block = Status.ACTIVE, block
                    self.expected[m.borrower] += m.amount + m.fee

                return apply

            self.execute(predict, loan.functions.acceptLoanOffer(loan_id, preimage), sender)

        @rule(loan_id=LOAN_IDS, right=SENDER_IS_RIGHT, wrong=st.integers(0, 3))
        def withdraw_offer(self, loan_id, right, wrong):
            loan_id = self.loan_id_of(loan_id)
            sender = self.pick_sender(right, people.lender, wrong)

            def predict(block):
                self.only_owner(sender)
                m = self.existing(loan_id)
                self.status_is(loan_id, m, Status.OFFERED)
                deadline = m.offer_block + m.params.offer_window_blocks
                if block < deadline:
                    raise Refused("TooEarly", loan_id, deadline)

                def apply():
                    m.status = Status.OFFER_EXPIRED
                    self.expected[m.lender] += m.amount + m.bond + m.fee

                return apply

            self.execute(predict, loan.functions.withdrawLoanOffer(loan_id), sender)

        @rule(loan_id=LOAN_IDS, payer=st.integers(0, 3), value_ok=SENDER_IS_RIGHT)
        def repay(self, loan_id, payer, value_ok):
            loan_id = self.loan_id_of(loan_id)
            sender = parties[payer]
            m0 = self.loans.get(loan_id)
            due = m0.repayment if m0 else 10**16
            value = due if value_ok else due - 1

            def predict(block):
                m = self.existing(loan_id)
                self.status_is(loan_id, m, Status.ACTIVE)
                deadline = m.activation_block + m.params.loan_duration_blocks
                if block >= deadline:
                    raise Refused("TooLate", loan_id, deadline)
                if value != due:
                    raise Refused("WrongValue", due, value)

                def apply():
                    m.status, m.repayment_block = Status.REPAYMENT_IN_PROGRESS, block
                    self.expected[sender] -= value

                return apply

            self.execute(predict, loan.functions.attemptRepayment(loan_id), sender, value)

        @rule(loan_id=LOAN_IDS, right=SENDER_IS_RIGHT, wrong=st.integers(0, 3), kind=PREIMAGE_KINDS)
        def accept_repayment(self, loan_id, right, wrong, kind):
            loan_id = self.loan_id_of(loan_id)
            sender = self.pick_sender(right, people.lender, wrong)
            m0 = self.loans.get(loan_id)
            preimage = {
                "right": (m0.p_l or b"\x03" * 32) if m0 else b"\x03" * 32,
                "other": m0.p_b if m0 else b"\x04" * 32,
                "random": self.preimage()[0],
            }[kind]

            def predict(block):
                self.only_owner(sender)
                m = self.existing(loan_id)
                self.status_is(loan_id, m, Status.REPAYMENT_IN_PROGRESS)
                deadline = m.repayment_block + m.params.repayment_window_blocks
                if block >= deadline:
                    raise Refused("TooLate", loan_id, deadline)
                if hashlib.sha256(preimage).digest() != m.h_l:
                    raise Refused("WrongPreimage")

                def apply():
                    m.status = Status.REPAID
                    self.expected[m.lender] += m.repayment + m.bond

                return apply

            self.execute(predict, loan.functions.acceptLoanRepayment(loan_id, preimage), sender)

        @rule(loan_id=LOAN_IDS, right=SENDER_IS_RIGHT, wrong=st.integers(0, 3))
        def withdraw_repayment(self, loan_id, right, wrong):
            loan_id = self.loan_id_of(loan_id)
            sender = self.pick_sender(right, self.borrower_of(loan_id), wrong)

            def predict(block):
                m = self.existing(loan_id)
                self.only_borrower(loan_id, m, sender)
                self.status_is(loan_id, m, Status.REPAYMENT_IN_PROGRESS)
                deadline = m.repayment_block + m.params.repayment_window_blocks
                if block < deadline:
                    raise Refused("TooEarly", loan_id, deadline)

                def apply():
                    m.status = Status.REPAYMENT_REFUNDED
                    self.expected[m.borrower] += m.repayment + m.bond

                return apply

            self.execute(predict, loan.functions.withdrawRepaymentAttempt(loan_id), sender)

        @rule(loan_id=LOAN_IDS, right=SENDER_IS_RIGHT, wrong=st.integers(0, 3))
        def default(self, loan_id, right, wrong):
            loan_id = self.loan_id_of(loan_id)
            sender = self.pick_sender(right, people.lender, wrong)

            def predict(block):
                self.only_owner(sender)
                m = self.existing(loan_id)
                self.status_is(loan_id, m, Status.ACTIVE)
                deadline = m.activation_block + m.params.loan_duration_blocks
                if block < deadline:
                    raise Refused("TooEarly", loan_id, deadline)

                def apply():
                    m.status = Status.DEFAULTED
                    self.expected[m.lender] += m.bond

                return apply

            self.execute(predict, loan.functions.markAsDefaulted(loan_id), sender)

        @rule(right=SENDER_IS_RIGHT, wrong=st.integers(0, 3), choice=st.integers(0, len(PARAMETER_SETS) - 1))
        def update_parameters(self, right, wrong, choice):
            sender = self.pick_sender(right, people.lender, wrong)
            new = PARAMETER_SETS[choice]

            def predict(block):
                self.only_owner(sender)

                def apply():
                    self.params = new
                    self.version += 1

                return apply

            self.execute(predict, loan.functions.updateParameters(new.as_tuple()), sender)

        @rule(blocks=BLOCKS)
        def mine(self, blocks):
            chain.mine(blocks)

        # ----------------------------------------------------------------- progress
        @initialize()
        def first_request(self):
            self.request(second_borrower=False, amount=10**16, fee_ok=True, hash_kind="fresh")
            # A front-run copy of it (another sender, the same hB): every walk has two requests sharing an hB.
            self.request(second_borrower=True, amount=10**16, fee_ok=True, hash_kind="fresh", copy_of=1)

        def _advance(self, pick: int, other_side: bool, timing: str) -> None:
            """The next protocol step of an open loan by its right party with the right value and preimage, or,
            with `other_side`, the counterpart's move. `timing` first mines to the block just before the loan's
            current deadline, or to the deadline itself; the model alone decides which side may act then.
            Random wrong calls alone would rarely reach the later states or the boundaries."""
            open_ids = [i for i, m in self.loans.items() if m.status not in TERMINAL]
            if not open_ids:
                # Now and then with the hB of an earlier loan that no offer reserved (a request again after a cancel,
                # the escrow unchanged; a fresh hB when there is none), or with a reserved hash (refused).
                kind = {0: "requested", 1: "used"}.get(pick % 4, "fresh")
                self.request(second_borrower=bool(pick % 2), amount=AMOUNTS[1 + pick % 4], fee_ok=True, hash_kind=kind)
                return
            # Half the time push the most advanced open loan further, so that walks reach the late states.
            loan_id = max(open_ids, key=lambda i: self.loans[i].status) if pick % 2 else open_ids[pick % len(open_ids)]
            m, id_pick = self.loans[loan_id], (loan_id - 1) * 10
            deadline = {
                Status.OFFERED: m.offer_block + m.params.offer_window_blocks,
                Status.ACTIVE: m.activation_block + m.params.loan_duration_blocks,
                Status.REPAYMENT_IN_PROGRESS: m.repayment_block + m.params.repayment_window_blocks,
            }.get(m.status)
            if m.status in (Status.ACTIVE, Status.REPAYMENT_IN_PROGRESS):
                # A default or a refund needs its window open (mostly wait for it) and is otherwise rare: the
                # borrower repays, the lender accepts, in most walks before the other side gets a turn.
                other_side = other_side or pick % 3 == 2
                timing = "at" if other_side and timing == "now" else timing
            if deadline is not None and timing != "now":
                target = deadline - 1 if timing == "before" else deadline
                if target > chain.block + 1:
                    chain.mine_until_next_is(target)
            if m.status == Status.REQUESTED:
                if other_side and pick % 3 == 1 and [o.h_b for o in self.loans.values()].count(m.h_b) == 1:
                    # A front-run copy: the other borrower requests with this loan's hB (and the same amount).
                    second = m.borrower == people.borrower
                    self.request(
                        second_borrower=second, amount=m.amount, fee_ok=True, hash_kind="fresh", copy_of=loan_id
                    )
                elif other_side and pick % 3 == 0:
                    self.cancel(id_pick, right=True, wrong=0)
                elif not m.h_l:
                    self.commit(id_pick, right=True, wrong=0, kind="fresh")
                elif m.h_b in self.used:
                    # Another loan's offer (or hL) took this hB: the offer is refused (HashAlreadyUsed), and the
                    # borrower's only way out is to cancel.
                    self.offer(id_pick, right=True, wrong=0, value_ok=True)
                    self.cancel(id_pick, right=True, wrong=0)
                else:
                    self.offer(id_pick, right=True, wrong=0, value_ok=True)
            elif m.status == Status.OFFERED:
                if other_side:
                    self.withdraw_offer(id_pick, right=True, wrong=0)
                else:
                    self.accept(id_pick, right=True, wrong=0, kind="right")
            elif m.status == Status.ACTIVE:
                if other_side:
                    self.default(id_pick, right=True, wrong=0)
                else:
                    self.repay(id_pick, payer=1 if m.borrower == people.borrower else 2, value_ok=True)
            elif other_side:
                self.withdraw_repayment(id_pick, right=True, wrong=0)
            else:
                self.accept_repayment(id_pick, right=True, wrong=0, kind="right")

        @rule(pick=st.integers(0, 1000), other_side=OTHER_SIDE, timing=TIMINGS)
        def advance(self, pick, other_side, timing):
            self._advance(pick, other_side, timing)

        @rule(pick=st.integers(0, 1000), other_side=OTHER_SIDE, timing=TIMINGS)
        def advance_more(self, pick, other_side, timing):  # a second entry point doubles the weight of progress
            self._advance(pick, other_side, timing)

        # ----------------------------------------------------------------- invariants
        @invariant()
        def matches_the_model(self):
            open_loans = [m for m in self.loans.values() if m.status not in TERMINAL]
            expected_loan = sum(m.holdings()[0] for m in open_loans)
            expected_swap = sum(m.holdings()[1] for m in open_loans)
            assert dep.held() == (expected_loan, expected_swap)
            assert loan.functions.lockedBalance().call() == expected_loan
            assert loan.functions.loanCount().call() == len(self.loans)
            assert loan.functions.parametersVersion().call() == self.version
            for loan_id, m in self.loans.items():
                on_chain = dep.status(loan_id)
                assert on_chain == m.status, f"loan {loan_id}: chain {on_chain!r}, model {m.status!r}"
                if loan_id in self.terminal_seen:
                    assert on_chain == self.terminal_seen[loan_id]
                elif on_chain in TERMINAL:
                    self.terminal_seen[loan_id] = on_chain
            for party in parties:
                net = chain.balance(party) - self.start[party] + chain.spent(party) - self.spent_start[party]
                assert net == self.expected[party], f"{party}: chain {net}, model {self.expected[party]}"

    return LoanMachine


def test_random_call_sequences_match_the_model(fast, people):
    """Random walks: only the model's invariants (after every step, on whatever path Hypothesis takes). What the
    walks must reach is the scripted walks' job below."""
    outcomes: dict[tuple[str, str], int] = {}
    machine = make_machine(fast, people, seed_counter=[0], outcomes=outcomes)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=35,
            derandomize=DERANDOMIZE,
            phases=PHASES,
            stateful_step_count=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    assert sum(outcomes.values()) > 35  # it ran (every walk makes two requests first)


# ---------------------------------------------------------------------------------------------- scripted walks
#
# Each walk is a list of steps (rule, arguments, the outcomes the step must log), run in order on a fresh machine with
# the model's invariants checked after every step. `loan=n` names loan n (its pick); ("mine_until", {"loan": n,
# "offset": k}) mines so that the next transaction lands in block (loan n's current deadline + k).

RULE_DEFAULTS: dict[str, dict] = {
    "request": {"second_borrower": False, "amount": 10**16, "fee_ok": True, "hash_kind": "fresh"},
    "cancel": {"right": True, "wrong": 0},
    "commit": {"right": True, "wrong": 0, "kind": "fresh"},
    "offer": {"right": True, "wrong": 0, "value_ok": True},
    "accept": {"right": True, "wrong": 0, "kind": "right"},
    "withdraw_offer": {"right": True, "wrong": 0},
    "repay": {"payer": 1, "value_ok": True},
    "accept_repayment": {"right": True, "wrong": 0, "kind": "right"},
    "withdraw_repayment": {"right": True, "wrong": 0},
    "default": {"right": True, "wrong": 0},
    "update_parameters": {"right": True, "wrong": 0, "choice": 1},
}
OK = "ok"
NOT_OWNER = "OwnableUnauthorizedAccount"
# parties[wrong]: 0 lender, 1 borrower, 2 borrower2, 3 stranger
LENDER, STRANGER = 0, 3

WALKS: dict[str, list[tuple[str, dict, list[tuple[str, str]]]]] = {
    # The happy path; then the front-run copy of the first request (same hB, another sender) can never be offered
    # and its sender only gets the fee back.
    "repaid, and the copy of the request is cancelled": [
        ("first_request", {}, [("requestLoan", OK), ("requestLoan", OK)]),
        ("commit", {"loan": 1}, [("commitLenderHash", OK)]),
        ("offer", {"loan": 1}, [("extendLoanOffer", OK)]),
        ("accept", {"loan": 1}, [("acceptLoanOffer", OK)]),
        ("repay", {"loan": 1}, [("attemptRepayment", OK)]),
        ("accept_repayment", {"loan": 1}, [("acceptLoanRepayment", OK)]),
        ("commit", {"loan": 2}, [("commitLenderHash", OK)]),
        ("offer", {"loan": 2}, [("extendLoanOffer", "HashAlreadyUsed")]),
        ("request", {"hash_kind": "used"}, [("requestLoan", "HashAlreadyUsed")]),
        ("cancel", {"loan": 2}, [("cancelRequest", OK)]),
        ("cancel", {"loan": 2}, [("cancelRequest", "WrongStatus")]),
    ],
    # The offer window: the lender's withdrawal is refused one block before the deadline, the borrower's accept at it.
    "offer expired, both sides of the offer deadline": [
        ("first_request", {}, [("requestLoan", OK), ("requestLoan", OK)]),
        ("commit", {"loan": 1}, [("commitLenderHash", OK)]),
        ("offer", {"loan": 1}, [("extendLoanOffer", OK)]),
        ("mine_until", {"loan": 1, "offset": -1}, []),
        ("withdraw_offer", {"loan": 1}, [("withdrawLoanOffer", "TooEarly")]),
        ("accept", {"loan": 1}, [("acceptLoanOffer", "TooLate")]),
        ("withdraw_offer", {"loan": 1}, [("withdrawLoanOffer", OK)]),
        # A borrower who lets an offer lapse requests again with the same escrow and hB: reserved, refused.
        ("request", {"hash_kind": "used"}, [("requestLoan", "HashAlreadyUsed")]),
    ],
    "defaulted, both sides of the repayment deadline": [
        ("first_request", {}, [("requestLoan", OK), ("requestLoan", OK)]),
        ("commit", {"loan": 1}, [("commitLenderHash", OK)]),
        ("offer", {"loan": 1}, [("extendLoanOffer", OK)]),
        ("accept", {"loan": 1}, [("acceptLoanOffer", OK)]),
        ("mine_until", {"loan": 1, "offset": -1}, []),
        ("default", {"loan": 1}, [("markAsDefaulted", "TooEarly")]),
        ("repay", {"loan": 1}, [("attemptRepayment", "TooLate")]),
        ("default", {"loan": 1}, [("markAsDefaulted", OK)]),
    ],
    "repayment refunded, both sides of the acceptance deadline": [
        ("first_request", {}, [("requestLoan", OK), ("requestLoan", OK)]),
        ("commit", {"loan": 1}, [("commitLenderHash", OK)]),
        ("offer", {"loan": 1}, [("extendLoanOffer", OK)]),
        ("accept", {"loan": 1}, [("acceptLoanOffer", OK)]),
        ("repay", {"loan": 1, "payer": STRANGER}, [("attemptRepayment", OK)]),  # a third party repays
        ("mine_until", {"loan": 1, "offset": -1}, []),
        ("withdraw_repayment", {"loan": 1}, [("withdrawRepaymentAttempt", "TooEarly")]),
        ("accept_repayment", {"loan": 1}, [("acceptLoanRepayment", "TooLate")]),
        ("withdraw_repayment", {"loan": 1}, [("withdrawRepaymentAttempt", OK)]),
    ],
    # PROTOCOL.md attack 13: a request binds the parameters version the borrower was shown.
    "parameter updates and the version a request names": [
        ("first_request", {}, [("requestLoan", OK), ("requestLoan", OK)]),
        ("update_parameters", {"right": False, "wrong": STRANGER}, [("updateParameters", NOT_OWNER)]),
        ("update_parameters", {"choice": 1}, [("updateParameters", OK)]),
        ("request", {"version_kind": "stale"}, [("requestLoan", "ParametersVersionMismatch")]),
        ("request", {"version_kind": "future"}, [("requestLoan", "ParametersVersionMismatch")]),
        ("request", {"second_borrower": True}, [("requestLoan", OK)]),  # loan 3, on version 2's terms
        ("update_parameters", {"choice": 3}, [("updateParameters", OK)]),
        ("commit", {"loan": 3}, [("commitLenderHash", OK)]),
        ("offer", {"loan": 3}, [("extendLoanOffer", OK)]),  # the bond of version 2, not of version 3
        ("mine_until", {"loan": 3, "offset": 0}, []),  # version 2's short offer window
        ("withdraw_offer", {"loan": 3}, [("withdrawLoanOffer", OK)]),
        ("request", {"amount": 10**16 - 1}, [("requestLoan", "AmountOutOfBounds")]),  # version 3's minimum
        ("request", {"fee_ok": False}, [("requestLoan", "WrongValue")]),
    ],
    # Every other refusal: wrong party, unknown id, wrong value, wrong preimage, missing or repeated lender hash.
    "refusals": [
        ("first_request", {}, [("requestLoan", OK), ("requestLoan", OK)]),
        ("cancel", {"loan": 1, "right": False, "wrong": STRANGER}, [("cancelRequest", "NotBorrower")]),
        ("commit", {"loan": 1, "right": False, "wrong": STRANGER}, [("commitLenderHash", NOT_OWNER)]),
        ("commit", {"loan_pick": 9}, [("commitLenderHash", "UnknownLoan")]),
        ("offer", {"loan": 1}, [("extendLoanOffer", "LenderHashNotSet")]),
        ("commit", {"loan": 1, "kind": "zero"}, [("commitLenderHash", "ZeroValue")]),
        ("commit", {"loan": 1}, [("commitLenderHash", OK)]),
        ("commit", {"loan": 1}, [("commitLenderHash", "LenderHashAlreadySet")]),
        ("commit", {"loan": 2, "kind": "used"}, [("commitLenderHash", "HashAlreadyUsed")]),
        ("accept", {"loan": 1}, [("acceptLoanOffer", "WrongStatus")]),
        ("offer", {"loan": 1, "value_ok": False}, [("extendLoanOffer", "WrongValue")]),
        ("offer", {"loan": 1}, [("extendLoanOffer", OK)]),
        ("accept", {"loan": 1, "kind": "other"}, [("acceptLoanOffer", "WrongPreimage")]),
        ("accept", {"loan": 1, "right": False, "wrong": LENDER}, [("acceptLoanOffer", "NotBorrower")]),
        ("accept", {"loan": 1}, [("acceptLoanOffer", OK)]),
        ("repay", {"loan": 1, "value_ok": False}, [("attemptRepayment", "WrongValue")]),
        ("repay", {"loan": 1}, [("attemptRepayment", OK)]),
        ("accept_repayment", {"loan": 1, "kind": "other"}, [("acceptLoanRepayment", "WrongPreimage")]),
        ("accept_repayment", {"loan": 1, "right": False, "wrong": 1}, [("acceptLoanRepayment", NOT_OWNER)]),
        ("accept_repayment", {"loan": 1}, [("acceptLoanRepayment", OK)]),
    ],
}  # fmt: skip


def run_walk(machine, steps) -> None:
    for action, arguments, expected in steps:
        arguments = dict(arguments)
        before = len(machine.log)
        if action == "mine_until":
            target = machine.deadline_of(arguments["loan"]) + arguments["offset"]
            if target > machine.chain.block + 1:
                machine.chain.mine_until_next_is(target)
        else:
            if "loan" in arguments:
                arguments["loan_id"] = machine.pick_of(arguments.pop("loan"))
            elif "loan_pick" in arguments:
                arguments["loan_id"] = arguments.pop("loan_pick")
            getattr(machine, action)(**(RULE_DEFAULTS.get(action, {}) | arguments))
        assert machine.log[before:] == expected, (action, arguments, machine.log[before:])
        machine.matches_the_model()


@pytest.mark.parametrize("name", list(WALKS))
def test_scripted_walk(fast, people, name):
    machine = make_machine(fast, people, seed_counter=[0], outcomes={})()
    try:
        run_walk(machine, WALKS[name])
    finally:
        machine.teardown()


def test_the_scripted_walks_reach_every_transition_and_both_sides_of_every_deadline():
    reached = {outcome for steps in WALKS.values() for _, _, expected in steps for outcome in expected}
    transitions = {
        "requestLoan", "cancelRequest", "commitLenderHash", "extendLoanOffer", "acceptLoanOffer", "withdrawLoanOffer",
        "attemptRepayment", "acceptLoanRepayment", "withdrawRepaymentAttempt", "markAsDefaulted", "updateParameters",
    }  # fmt: skip
    assert {(name, OK) for name in transitions} <= reached
    # Each deadline: the side that acts before it is refused at it (TooLate), the other just before it (TooEarly).
    assert {
        ("acceptLoanOffer", "TooLate"), ("withdrawLoanOffer", "TooEarly"),
        ("attemptRepayment", "TooLate"), ("markAsDefaulted", "TooEarly"),
        ("acceptLoanRepayment", "TooLate"), ("withdrawRepaymentAttempt", "TooEarly"),
    } <= reached  # fmt: skip
    errors = {error for _, error in reached}
    assert {
        "ParametersVersionMismatch", "HashAlreadyUsed", "UnknownLoan", "NotBorrower", "OwnableUnauthorizedAccount",
        "WrongStatus", "WrongValue", "WrongPreimage", "ZeroValue", "LenderHashNotSet", "LenderHashAlreadySet",
        "AmountOutOfBounds",
    } <= errors  # fmt: skip
