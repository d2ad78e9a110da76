"""Decoded events against anvil: order, arguments (preimages included), chain facts, chunking, reorg helpers."""

from __future__ import annotations

import itertools

import pytest
from web3 import HTTPProvider, Web3

from evm import events as ev
from evm.errors import InvalidArgument, NodeUnavailable
from evm.events import (
    BlockRef,
    EventDecoder,
    EventDecodingError,
    confirmed_block_number,
    fetch_events,
    first_reorged_block,
    get_block_ref,
    iter_event_chunks,
)
from evm.testing import rpc

AMOUNT = 3 * 10**16


def _repaid_and_cancelled(loan_client, loan_flow, lender, borrower):
    """Loan 1 runs to Repaid, loan 2 is requested and cancelled."""
    loan_id, p_b, p_l = loan_flow.active(AMOUNT)
    loan_flow.repay(loan_id)
    loan_client.send(loan_client.accept_loan_repayment(loan_id, p_l), lender)
    cancelled, _ = loan_flow.request(AMOUNT)
    loan_client.send(loan_client.cancel_request(cancelled), borrower)
    return loan_id, p_b, p_l, cancelled


@pytest.mark.integration
def test_lifecycle_events_are_decoded_in_order_with_their_arguments(
    w3, deployment, loan_client, loan_flow, lender, borrower
):
    loan_id, p_b, p_l, cancelled = _repaid_and_cancelled(loan_client, loan_flow, lender, borrower)
    loan = loan_client.get_loan(loan_id)
    head = w3.eth.block_number
    events = fetch_events(w3, deployment.addresses, deployment.block_number, head)

    assert [type(e).__name__ for e in events] == [
        # deployment: Ownable's constructor, the parameters, the link
        "OwnershipTransferred",
        "ParametersUpdated",
        "LoanContractSet",
        # loan 1
        "LoanRequested",
        "LenderHashCommitted",
        "LoanOffered",
        "Lockup",
        "LoanActivated",
        "Claim",
        "RepaymentAttempted",
        "Lockup",
        "RepaymentAccepted",
        "Claim",
        # loan 2
        "LoanRequested",
        "LoanRequestCancelled",
    ]
    assert [e.position for e in events] == sorted(e.position for e in events)
    assert len({e.key for e in events}) == len(events)

    by_name: dict[str, list] = {}
    for event in events:
        by_name.setdefault(type(event).__name__, []).append(event)
    requested = by_name["LoanRequested"][0]
    assert isinstance(requested, ev.LoanRequested)
    assert (requested.loan_id, requested.borrower, requested.amount, requested.repayment_amount) == (
        loan_id,
        borrower.address,
        AMOUNT,
        loan.repayment_amount,
    )
    assert requested.borrower_hash == loan.borrower_hash and requested.escrow_txid == loan.escrow_txid
    assert (requested.escrow_vout, requested.escrow_sats, requested.parameters_version) == (1, 1_500_000, 1)
    assert requested.address == deployment.loan_address

    assert by_name["LenderHashCommitted"][0].lender_hash == loan.lender_hash
    offered = by_name["LoanOffered"][0]
    assert (offered.amount, offered.bond, offered.offer_deadline_block) == (
        AMOUNT,
        loan.bond,
        loan.offer_deadline_block,
    )
    offer_lock, repayment_lock = by_name["Lockup"]
    assert offer_lock.address == deployment.ether_swap_address
    assert (offer_lock.preimage_hash, offer_lock.amount, offer_lock.claim_address, offer_lock.refund_address) == (
        loan.borrower_hash,
        AMOUNT,
        borrower.address,
        lender.address,
    )
    assert offer_lock.timelock == loan.offer_deadline_block
    assert (repayment_lock.preimage_hash, repayment_lock.amount, repayment_lock.claim_address) == (
        loan.lender_hash,
        loan.repayment_amount,
        lender.address,
    )
    assert repayment_lock.refund_address == borrower.address
    assert repayment_lock.timelock == loan.acceptance_deadline_block

    # The preimages are public in the events that reveal them: pB for the lender's TX_1, pL for TX_release.
    activated = by_name["LoanActivated"][0]
    assert activated.borrower_preimage == p_b and activated.repayment_deadline_block == loan.repayment_deadline_block
    assert by_name["RepaymentAccepted"][0].lender_preimage == p_l
    claim_b, claim_l = by_name["Claim"]
    assert (claim_b.preimage, claim_b.preimage_hash) == (p_b, loan.borrower_hash)
    assert (claim_l.preimage, claim_l.preimage_hash) == (p_l, loan.lender_hash)
    attempted = by_name["RepaymentAttempted"][0]
    assert (attempted.payer, attempted.amount) == (borrower.address, loan.repayment_amount)
    assert attempted.acceptance_deadline_block == loan.acceptance_deadline_block
    assert by_name["LoanRequestCancelled"][0].loan_id == cancelled

    # Chain facts match the chain.
    for event in events:
        block = w3.eth.get_block(event.block_number)
        assert event.block_hash == bytes(block["hash"])
        receipt = w3.eth.get_transaction_receipt(event.transaction_hash)
        assert receipt["blockNumber"] == event.block_number
        assert receipt["transactionIndex"] == event.transaction_index
        assert any(log["logIndex"] == event.log_index for log in receipt["logs"])

    # The same events, whatever the chunking; a receipt decodes to the same objects.
    assert fetch_events(w3, deployment.addresses, deployment.block_number, head, chunk_size=1) == events
    assert fetch_events(w3, deployment.addresses, deployment.block_number, head, chunk_size=4) == events
    accept_receipt = w3.eth.get_transaction_receipt(activated.transaction_hash)
    decoded = ev.default_decoder().decode_receipt(accept_receipt)
    assert decoded == [e for e in events if e.transaction_hash == activated.transaction_hash]
    assert activated.arguments() == {
        "loan_id": loan_id,
        "borrower_preimage": p_b.hex(),
        "repayment_deadline_block": loan.repayment_deadline_block,
    }
    assert requested.record(31337) == {
        "chain_id": 31337,
        "contract_address": deployment.loan_address,
        "block_number": requested.block_number,
        "block_hash": requested.block_hash.hex(),
        "tx_hash": requested.transaction_hash.hex(),
        "log_index": requested.log_index,
        "name": "LoanRequested",
        "args": {
            "loan_id": str(loan_id),
            "borrower": borrower.address,
            "amount": str(AMOUNT),
            "repayment_amount": str(loan.repayment_amount),
            "borrower_btc_pubkey": loan.borrower_btc_pubkey.hex(),
            "borrower_hash": loan.borrower_hash.hex(),
            "escrow_txid": loan.escrow_txid.hex(),
            "escrow_vout": "1",
            "escrow_sats": "1500000",
            "parameters_version": "1",
        },
        "contract_loan_id": loan_id,
    }
    assert by_name["LoanContractSet"][0].record(31337)["contract_loan_id"] is None


@pytest.mark.integration
def test_chunks_cover_the_range_exactly_and_filter_by_address(w3, deployment, loan_flow, evm_mine):
    loan_flow.request(AMOUNT)
    evm_mine(5)
    head = w3.eth.block_number
    chunks = list(iter_event_chunks(w3, deployment.addresses, 0, head, chunk_size=3))
    assert [(c.from_block, c.to_block) for c in chunks] == [
        (start, min(start + 2, head)) for start in range(0, head + 1, 3)
    ]
    assert [c.last_block for c in chunks] == [get_block_ref(w3, c.to_block) for c in chunks]
    only_swap = fetch_events(w3, [deployment.ether_swap_address], 0, head)
    assert [type(e).__name__ for e in only_swap] == ["LoanContractSet"]
    assert fetch_events(w3, deployment.addresses, head - 4, head) == []


@pytest.mark.integration
def test_exit_events_of_offer_withdrawal_repayment_refund_and_default(
    w3, deployment, loan_client, loan_flow, lender, borrower, evm_mine
):
    start = w3.eth.block_number + 1
    withdrawn, _, _ = loan_flow.offered(AMOUNT)
    evm_mine(loan_client.get_loan(withdrawn).params.offer_window_blocks)
    loan_client.send(loan_client.withdraw_loan_offer(withdrawn), lender)

    refunded, _, _ = loan_flow.active(AMOUNT)
    loan_flow.repay(refunded)
    evm_mine(loan_client.get_loan(refunded).params.repayment_window_blocks)
    loan_client.send(loan_client.withdraw_repayment_attempt(refunded), borrower)

    events = fetch_events(w3, deployment.addresses, start, w3.eth.block_number, chunk_size=500)
    exits = [(type(e).__name__, getattr(e, "loan_id", None)) for e in events if type(e).__name__ in {
        "LoanOfferWithdrawn", "Refund", "RepaymentWithdrawn"}]  # fmt: skip
    assert exits == [
        ("LoanOfferWithdrawn", withdrawn),
        ("Refund", None),
        ("RepaymentWithdrawn", refunded),
        ("Refund", None),
    ]
    refunds = [e for e in events if isinstance(e, ev.Refund)]
    assert refunds[0].preimage_hash == loan_client.get_loan(withdrawn).borrower_hash
    assert refunds[1].preimage_hash == loan_client.get_loan(refunded).lender_hash


@pytest.mark.integration
def test_default_event(w3, deployment, loan_client, loan_flow, lender, evm_mine):
    loan_client.send(loan_client.update_parameters(loan_client.parameters().replace(loan_duration_blocks=50)), lender)
    loan_id, _, _ = loan_flow.active(AMOUNT)
    evm_mine(50)
    receipt = loan_client.send(loan_client.mark_as_defaulted(loan_id), lender)
    (event,) = fetch_events(w3, [deployment.loan_address], receipt["blockNumber"], receipt["blockNumber"])
    assert isinstance(event, ev.LoanDefaulted) and event.loan_id == loan_id
    updated = fetch_events(w3, [deployment.loan_address], deployment.block_number + 3, w3.eth.block_number)[0]
    assert isinstance(updated, ev.ParametersUpdated) and updated.version == 2


@pytest.mark.integration
def test_reorg_is_detected_from_stored_block_hashes(w3, deployment, evm_mine, lender, stranger):
    snapshot = rpc(w3, "evm_snapshot")
    evm_mine(3)
    head = w3.eth.block_number
    stored = [get_block_ref(w3, n) for n in range(head - 3, head + 1)]
    assert first_reorged_block(w3, stored) is None
    assert stored[-1].parent_hash == stored[-2].hash

    # Replace the last 3 blocks by a different branch (a transaction makes the blocks differ).
    assert rpc(w3, "evm_revert", [snapshot]) is True
    w3.eth.send_transaction({"from": lender.address, "to": stranger.address, "value": 1})
    evm_mine(2)
    assert w3.eth.block_number == head
    reorged = first_reorged_block(w3, stored)
    assert reorged == stored[1]  # the common ancestor (stored[0]) is intact
    # A stored block above the new head is reorged too.
    assert first_reorged_block(w3, [BlockRef(head + 50, b"\x00" * 32, b"\x00" * 32)]).number == head + 50


@pytest.mark.integration
def test_confirmed_block_number(w3, deployment):
    head = w3.eth.block_number
    assert confirmed_block_number(w3, 1) == head
    assert confirmed_block_number(w3, 3) == head - 2
    assert confirmed_block_number(w3, head + 2) is None
    with pytest.raises(InvalidArgument):
        confirmed_block_number(w3, 0)


@pytest.mark.integration
def test_bad_ranges_are_refused(w3, deployment):
    with pytest.raises(InvalidArgument, match="after to_block"):
        fetch_events(w3, deployment.addresses, 10, 9)
    with pytest.raises(InvalidArgument, match="chunk_size"):
        fetch_events(w3, deployment.addresses, 0, 9, chunk_size=0)
    with pytest.raises(InvalidArgument, match="address"):
        fetch_events(w3, [], 0, 9)


def test_unknown_topics_and_malformed_logs_raise():
    decoder = EventDecoder.from_artifacts()
    log = {
        "address": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "topics": ["0x" + "ab" * 32],
        "data": "0x",
        "blockNumber": 1,
        "blockHash": "0x" + "00" * 32,
        "transactionHash": "0x" + "11" * 32,
        "transactionIndex": 0,
        "logIndex": 0,
    }
    with pytest.raises(EventDecodingError, match="unknown topic"):
        decoder.decode(log)
    claim_topic = next(t for t in decoder.topics if decoder._specs[t].cls is ev.Claim)
    truncated = log | {"topics": ["0x" + claim_topic.hex(), "0x" + "22" * 32], "data": "0x1234"}
    with pytest.raises(EventDecodingError, match="Claim: undecodable"):
        decoder.decode(truncated)
    good = truncated | {"data": "0x" + "33" * 32}
    event = decoder.decode(good)
    assert isinstance(event, ev.Claim)
    assert (event.preimage_hash, event.preimage) == (b"\x22" * 32, b"\x33" * 32)


def test_an_abi_whose_event_arguments_changed_is_refused():
    abi = [
        {
            "type": "event",
            "name": "Claim",
            "anonymous": False,
            "inputs": [{"name": "preimageHash", "type": "bytes32", "indexed": True}],
        }
    ]
    with pytest.raises(EventDecodingError, match="Claim in the ABI has arguments"):
        EventDecoder([abi])


class RangeLimitedProvider(HTTPProvider):
    """A real node behind a provider that, like many hosted RPCs, refuses eth_getLogs over more than N blocks."""

    def __init__(self, url: str, max_range: int):
        super().__init__(url)
        self.max_range = max_range
        self.ranges: list[tuple[int, int]] = []

    def make_request(self, method, params):
        if method == "eth_getLogs":
            start, end = int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)
            self.ranges.append((start, end))
            if end - start + 1 > self.max_range:
                return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "block range too large"}}
        return super().make_request(method, params)


@pytest.mark.integration
def test_a_node_that_refuses_large_ranges_gets_smaller_chunks(anvil, w3, deployment, loan_flow):
    loan_flow.active(AMOUNT)
    head = w3.eth.block_number
    expected = fetch_events(w3, deployment.addresses, 0, head)
    provider = RangeLimitedProvider(anvil.url, max_range=2)
    limited = Web3(provider)
    assert fetch_events(limited, deployment.addresses, 0, head, chunk_size=100) == expected
    accepted = [r for r in provider.ranges if r[1] - r[0] + 1 <= 2]
    assert accepted[0][0] == 0 and accepted[-1][1] == head  # the whole range, no gap, no overlap
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(accepted))
    with pytest.raises(NodeUnavailable, match="eth_getLogs failed for block 0"):
        fetch_events(Web3(RangeLimitedProvider(anvil.url, max_range=0)), deployment.addresses, 0, head)
