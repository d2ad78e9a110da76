"""The `evm_reorg` fixture on anvil: replaced blocks get new hashes, `first_reorged_block` finds the fork, and a
log of a replaced block disappears, or comes back in another block when its transaction is mined again."""

from __future__ import annotations

import pytest
from web3.exceptions import TransactionNotFound

from evm import events as ev
from evm.events import fetch_events, first_reorged_block, get_block_ref

pytestmark = pytest.mark.integration


def stored_refs(w3, count: int):
    head = w3.eth.block_number
    return [get_block_ref(w3, number) for number in range(head - count + 1, head + 1)]


@pytest.mark.parametrize("depth", [1, 3])
def test_depth_replaces_exactly_that_many_blocks(w3, evm_mine, evm_reorg, depth):
    evm_mine(4)
    stored = stored_refs(w3, 5)  # the fork point and the 4 blocks mined above it
    assert first_reorged_block(w3, stored) is None

    reorg = evm_reorg(depth)

    assert w3.eth.block_number == stored[-1].number
    assert reorg.orphaned == tuple(stored[-depth:])
    assert reorg.head == get_block_ref(w3) and reorg.fork_number == stored[-1].number - depth
    assert [ref.number for ref in reorg.branch] == [ref.number for ref in stored[-depth:]]
    for old, new in zip(stored[-depth:], reorg.branch, strict=True):
        assert get_block_ref(w3, old.number) == new and new.hash != old.hash
    for ref in stored[:-depth]:
        assert get_block_ref(w3, ref.number) == ref
    assert reorg.branch[0].parent_hash == stored[-depth - 1].hash
    assert all(b.parent_hash == a.hash for a, b in zip(reorg.branch, reorg.branch[1:], strict=False))
    assert first_reorged_block(w3, stored) == stored[-depth]
    # The same depth again (same fork point, empty blocks within the same second) still changes every hash.
    again = evm_reorg(depth)
    assert again.orphaned == reorg.branch
    assert first_reorged_block(w3, reorg.branch) == reorg.branch[0]


def test_a_log_of_a_replaced_block_disappears(w3, deployment, loan_flow, evm_mine, evm_reorg):
    count = loan_flow.client.loan_count()
    loan_id, _ = loan_flow.request()
    tx_hash = w3.eth.get_transaction_by_block(w3.eth.block_number, 0)["hash"]
    mined = get_block_ref(w3)
    [event] = fetch_events(w3, [deployment.loan_address], mined.number, mined.number)
    assert isinstance(event, ev.LoanRequested) and event.loan_id == loan_id and event.transaction_hash == bytes(tx_hash)
    evm_mine(1)

    reorg = evm_reorg(2)

    assert reorg.orphaned[0] == mined
    assert fetch_events(w3, [deployment.loan_address], mined.number, w3.eth.block_number) == []
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(tx_hash)
    assert loan_flow.client.loan_count() == count  # the request is gone with its block
    assert first_reorged_block(w3, [mined]) == mined


def test_a_transaction_mined_again_moves_its_log_to_the_new_block(w3, deployment, loan_flow, evm_mine, evm_reorg):
    loan_id, _ = loan_flow.request()
    tx_hash = bytes(w3.eth.get_transaction_by_block(w3.eth.block_number, 0)["hash"])
    mined = get_block_ref(w3)
    [before] = fetch_events(w3, [deployment.loan_address], mined.number, mined.number)
    evm_mine(2)

    reorg = evm_reorg(3, [(tx_hash, 1)])  # by hash, into the second new block

    receipt = w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["blockNumber"] == mined.number + 1 and receipt["blockHash"] == reorg.branch[1].hash
    [after] = fetch_events(w3, [deployment.loan_address], reorg.fork_number + 1, w3.eth.block_number)
    assert isinstance(after, ev.LoanRequested) and after.loan_id == loan_id
    assert (after.transaction_hash, after.arguments()) == (before.transaction_hash, before.arguments())
    assert (after.block_number, after.block_hash) == (mined.number + 1, reorg.branch[1].hash)
    assert after.block_hash != before.block_hash
    assert first_reorged_block(w3, [mined]) == mined


def test_a_signed_raw_transaction_is_mined_again_in_the_new_branch(w3, deployment, loan_flow, evm_mine, evm_reorg):
    """The same as by hash, from the signed raw transaction, back in the first new block (offset 0). One reorg per
    test: anvil does not always keep the state of blocks a reorg made, so a second reorg may fail to fork."""
    loan_id, _ = loan_flow.request()
    tx_hash = bytes(w3.eth.get_transaction_by_block(w3.eth.block_number, 0)["hash"])
    raw = w3.eth.get_raw_transaction(tx_hash)
    evm_mine(1)
    again = evm_reorg(2, [raw])
    assert w3.eth.get_transaction_receipt(tx_hash)["blockHash"] == again.branch[0].hash
    assert loan_flow.client.get_loan(loan_id).borrower == loan_flow.borrower.address


def test_blocks_older_than_the_test_are_never_replaced(w3, evm_mine, evm_reorg):
    evm_mine(2)
    head = get_block_ref(w3)
    with pytest.raises(ValueError, match="evm_snapshot"):
        evm_reorg(3)
    for depth in (0, -1, True):
        with pytest.raises(ValueError):
            evm_reorg(depth)
    with pytest.raises(ValueError, match="offset"):
        evm_reorg(1, [(b"\x01" * 100, 1)])
    with pytest.raises(ValueError, match="does not know"):
        evm_reorg(1, [b"\x00" * 32])
    assert get_block_ref(w3) == head
    assert evm_reorg(2).orphaned[0].number == head.number - 1
