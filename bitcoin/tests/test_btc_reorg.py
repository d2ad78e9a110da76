"""The `btc_reorg` fixture on the regtest node: the last `depth` blocks are replaced by a longer branch, and the
node's indexes, mempool and `bitcoin.chain`'s cursor helpers follow."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from bitcoin.chain import BlockRef, first_reorged_block, get_block, get_block_ref
from bitcoin.regtest.serialize import OutPoint, Tx, TxIn, TxOut
from bitcoin.rpc import BitcoinRPC, RPCError
from bitcoin.testing import BtcReorg, FundedOutput, reorg_chain
from bitcoin.transactions import OutPoint as LoanOutPoint

pytestmark = pytest.mark.integration

OP_TRUE_SCRIPT = b"\x51"
OP_TRUE_P2WSH = b"\x00\x20" + hashlib.sha256(OP_TRUE_SCRIPT).digest()


def spend_op_true(coin: FundedOutput, out_sats: int) -> Tx:
    """A transaction spending an OP_TRUE P2WSH coin to an OP_TRUE P2WSH output."""
    txin = TxIn(OutPoint.from_hex(coin.txid, coin.vout), b"", 0xFFFFFFFD, [OP_TRUE_SCRIPT])
    return Tx(2, [txin], [TxOut(out_sats, OP_TRUE_P2WSH)], 0)


def assert_replaced(rpc: BitcoinRPC, reorg: BtcReorg, old_tip_height: int, depth: int) -> None:
    """The orphaned hashes were the old chain's; every height above the fork now has the branch's block."""
    assert reorg.fork_height == old_tip_height - depth
    assert len(reorg.orphaned) == depth and len(reorg.branch) == depth + 1
    assert rpc.getblockcount() == old_tip_height + 1
    assert rpc.getbestblockhash() == reorg.tip_hash == reorg.branch[-1]
    assert rpc.getblockhash(reorg.fork_height) == reorg.fork_hash
    for offset, new_hash in enumerate(reorg.branch):
        assert rpc.getblockhash(reorg.fork_height + 1 + offset) == new_hash
    assert not set(reorg.orphaned) & set(reorg.branch)
    for orphan in reorg.orphaned:
        assert rpc.getblockheader(orphan)["confirmations"] == -1  # still known, on a stale branch
    assert get_block(rpc, reorg.branch[0]).previous_hash == reorg.fork_hash


def test_depth_1_sends_the_confirmed_transaction_back_to_the_mempool(
    btc_rpc: BitcoinRPC,
    btc_fund: Callable[..., FundedOutput],
    btc_mine: Callable[..., list[str]],
    btc_reorg: Callable[..., BtcReorg],
) -> None:
    coin = btc_fund(OP_TRUE_P2WSH, 60_000)
    spend = spend_op_true(coin, 59_000)
    txid = btc_rpc.sendrawtransaction(spend.serialize().hex())
    [confirming] = btc_mine(1)
    height = btc_rpc.getblockcount()
    stored = get_block_ref(btc_rpc)
    assert btc_rpc.confirmations(txid) == 1

    reorg = btc_reorg(1)

    assert reorg.orphaned == (confirming,)
    assert_replaced(btc_rpc, reorg, height, 1)
    assert txid in btc_rpc.getrawmempool()
    assert btc_rpc.confirmations(txid) == 0
    assert btc_rpc.gettxout(txid, 0, include_mempool=False) is None
    assert btc_rpc.gettxout(coin.txid, coin.vout, include_mempool=False)["confirmations"] == 3
    assert first_reorged_block(btc_rpc, [get_block_ref(btc_rpc, height - 1), stored]) == stored
    assert get_block_ref(btc_rpc, height) == BlockRef(height, reorg.branch[0], reorg.fork_hash)
    beyond = BlockRef(height + 50, "00" * 32, "00" * 32)  # a stored block above the tip: the chain got shorter
    assert first_reorged_block(btc_rpc, [beyond]) == beyond
    # The next block mined confirms it again.
    btc_mine(1)
    assert btc_rpc.confirmations(txid) == 1


def test_depth_3_with_a_double_spend_drops_the_transaction(
    btc_rpc: BitcoinRPC,
    btc_fund: Callable[..., FundedOutput],
    btc_mine: Callable[..., list[str]],
    btc_reorg: Callable[..., BtcReorg],
) -> None:
    coin = btc_fund(OP_TRUE_P2WSH, 60_000)
    spend = spend_op_true(coin, 59_000)
    txid = btc_rpc.sendrawtransaction(spend.serialize().hex())
    mined = btc_mine(3)
    height = btc_rpc.getblockcount()
    stored = [get_block_ref(btc_rpc, h) for h in range(height - 4, height + 1)]
    assert first_reorged_block(btc_rpc, stored) is None

    conflict = spend_op_true(coin, 58_000)
    reorg = btc_reorg(3, [conflict.serialize().hex()])

    assert reorg.orphaned == tuple(mined)
    assert_replaced(btc_rpc, reorg, height, 3)
    assert first_reorged_block(btc_rpc, stored) == stored[2]  # the lowest replaced block; the fork is intact
    assert txid not in btc_rpc.getrawmempool()
    with pytest.raises(RPCError) as info:
        btc_rpc.getrawtransaction(txid, True)
    assert info.value.code == -5
    assert btc_rpc.confirmations(conflict.txid_hex) == 4  # in the branch's first block, 4 blocks deep
    [(tx, _)] = get_block(btc_rpc, reorg.branch[0]).spends([LoanOutPoint(coin.txid, coin.vout)])
    assert tx.txid == conflict.txid_hex
    assert btc_rpc.gettxout(coin.txid, coin.vout) is None


def test_the_same_transaction_is_confirmed_again_in_another_block(
    btc_rpc: BitcoinRPC,
    btc_fund: Callable[..., FundedOutput],
    btc_mine: Callable[..., list[str]],
    btc_reorg: Callable[..., BtcReorg],
) -> None:
    coin = btc_fund(OP_TRUE_P2WSH, 60_000)
    spend = spend_op_true(coin, 59_000)
    txid = btc_rpc.sendrawtransaction(spend.serialize().hex())
    [old_block] = btc_mine(1)
    btc_mine(1)

    reorg = btc_reorg(2, [spend.serialize()])

    tx = btc_rpc.getrawtransaction(txid, True)
    assert tx["blockhash"] == reorg.branch[0] != old_block
    assert tx["confirmations"] == 3
    assert txid not in btc_rpc.getrawmempool()
    stale = btc_rpc.getrawtransaction(txid, True, blockhash=old_block)
    assert stale["in_active_chain"] is False


def test_reorgs_can_follow_each_other_from_the_same_fork(
    btc_rpc: BitcoinRPC, btc_mine: Callable[..., list[str]], btc_reorg: Callable[..., BtcReorg]
) -> None:
    """Branches are never identical, even built from the same block within one second."""
    btc_mine(2)
    first = btc_reorg(1)
    second = btc_reorg(2)  # forks where the first did
    assert second.fork_hash == first.fork_hash
    assert second.orphaned == first.branch
    assert not set(second.branch) & set(first.branch)


def test_refused_depths(btc_rpc: BitcoinRPC) -> None:
    height = btc_rpc.getblockcount()
    for depth in (0, -1, True, 1.0):
        with pytest.raises(ValueError):
            reorg_chain(btc_rpc, depth)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chain of height"):
        reorg_chain(btc_rpc, height + 1)
    assert btc_rpc.getblockcount() == height
