"""Full replace-by-fee in the regtest node, as Bitcoin Core 28 does it by default (no BIP-125 signalling): a
conflicting transaction replaces its conflicts and their descendants when it pays more, and is refused with Core's
reasons when it does not. The watchtower climbs its TX_release ladder this way."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from bitcoin.regtest.node import NodeRPCError, RegtestNode
from bitcoin.regtest.serialize import OutPoint, Tx, TxIn, TxOut

pytestmark = pytest.mark.integration

OP_TRUE_SCRIPT = b"\x51"
OP_TRUE_P2WSH = b"\x00\x20" + hashlib.sha256(OP_TRUE_SCRIPT).digest()
FINAL = 0xFFFFFFFF  # no BIP-125 signal: full RBF replaces it all the same


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegtestNode]:
    regtest = RegtestNode(tmp_path_factory.mktemp("rbf") / "node")
    regtest.generate_to_script(101, regtest.faucet.script_pubkey)
    yield regtest
    regtest.close()


def fund(node: RegtestNode, sats: int) -> OutPoint:
    txid = node.send_to_script(OP_TRUE_P2WSH, sats)
    node.generate_to_script(1, node.faucet.script_pubkey)
    tx = Tx.from_hex(node.get_raw_transaction(bytes.fromhex(txid)[::-1], False))
    vout = next(i for i, o in enumerate(tx.vout) if o.script_pubkey == OP_TRUE_P2WSH and o.value == sats)
    return OutPoint.from_hex(txid, vout)


def spend(*outpoints: OutPoint, out_value: int, outputs: int = 1) -> Tx:
    vin = [TxIn(outpoint, b"", FINAL, [OP_TRUE_SCRIPT]) for outpoint in outpoints]
    return Tx(2, vin, [TxOut(out_value, OP_TRUE_P2WSH) for _ in range(outputs)], 0)


def mempool(node: RegtestNode) -> set[str]:
    return set(node.get_raw_mempool())


def refused(node: RegtestNode, tx: Tx, reason: str) -> str:
    before = mempool(node)
    [result] = node.test_mempool_accept([tx.serialize()])
    assert result["allowed"] is False and result["reject-reason"] == reason, result
    with pytest.raises(NodeRPCError) as info:
        node.send_raw_transaction(tx.serialize())
    assert info.value.code == -26 and info.value.message.startswith(reason), info.value.message
    assert mempool(node) == before
    return info.value.message


def test_a_higher_fee_conflict_replaces_the_original_and_its_descendants(node: RegtestNode) -> None:
    coin = fund(node, 100_000)
    original = spend(coin, out_value=99_000)  # 1000 sat
    assert node.send_raw_transaction(original.serialize()) == original.txid_hex
    child = spend(OutPoint(original.txid, 0), out_value=98_000)  # 1000 sat more
    node.send_raw_transaction(child.serialize())
    # Rule 3: the replacement must pay at least the 2000 sat it evicts, plus 1 sat/vB of its own size (rule 4).
    cheap = spend(coin, out_value=98_500)  # 1500 sat: a higher fee rate than the original, less than both
    message = refused(node, cheap, "insufficient fee")
    assert "less fees than conflicting txs" in message
    barely = spend(coin, out_value=98_000)  # 2000 sat: not enough more to pay for its own relay
    assert "not enough additional fees to relay" in refused(node, barely, "insufficient fee")
    [dry_run] = node.test_mempool_accept([spend(coin, out_value=97_000).serialize()])
    assert dry_run["allowed"] is True and mempool(node) == {original.txid_hex, child.txid_hex}  # nothing kept

    replacement = spend(coin, out_value=97_000)  # 3000 sat
    assert node.send_raw_transaction(replacement.serialize()) == replacement.txid_hex
    assert mempool(node) == {replacement.txid_hex}  # the original and its child are gone
    assert node.get_tx_out(original.txid, 0) is None
    entry = node.get_mempool_entry(replacement.txid)
    assert entry["height"] == node.get_block_count() and entry["fees"]["base"] * 100_000_000 == 3000
    node.generate_to_script(1, node.faucet.script_pubkey)
    assert node.get_raw_transaction(replacement.txid, True)["confirmations"] == 1
    with pytest.raises(NodeRPCError):
        node.get_raw_transaction(original.txid, True)


def test_a_conflict_paying_no_higher_fee_rate_is_refused(node: RegtestNode) -> None:
    coin = fund(node, 100_000)
    original = spend(coin, out_value=98_000)
    node.send_raw_transaction(original.serialize())
    same = spend(coin, out_value=98_000, outputs=1)
    same = Tx(2, same.vin, same.vout, 1)  # another txid, the same fee and size
    assert "new feerate" in refused(node, same, "insufficient fee")  # rule 6: not a higher fee rate
    # More fee in total but a lower rate: a bigger transaction (two outputs) does not replace it either.
    bigger = spend(coin, out_value=48_990, outputs=2)
    assert bigger.vsize > original.vsize
    assert "new feerate" in refused(node, bigger, "insufficient fee")
    assert mempool(node) == {original.txid_hex}
    node.generate_to_script(1, node.faucet.script_pubkey)


def test_a_replacement_may_not_add_unconfirmed_inputs_nor_spend_what_it_replaces(node: RegtestNode) -> None:
    coin, other = fund(node, 100_000), fund(node, 50_000)
    original = spend(coin, out_value=99_000)
    node.send_raw_transaction(original.serialize())
    unrelated = spend(other, out_value=49_000)
    node.send_raw_transaction(unrelated.serialize())
    adds = spend(coin, OutPoint(unrelated.txid, 0), out_value=140_000)  # rule 2
    refused(node, adds, "replacement-adds-unconfirmed")
    child = spend(OutPoint(original.txid, 0), out_value=98_000)
    node.send_raw_transaction(child.serialize())
    # Spends the original's child and conflicts with that very original: it cannot replace its own ancestor.
    own_ancestor = spend(coin, OutPoint(child.txid, 0), out_value=100_000)
    refused(node, own_ancestor, "bad-txns-spends-conflicting-tx")
    assert mempool(node) == {original.txid_hex, unrelated.txid_hex, child.txid_hex}
    node.generate_to_script(1, node.faucet.script_pubkey)


def test_a_waiting_transaction_keeps_its_entry_height_while_blocks_pass_it_by(node: RegtestNode) -> None:
    """getmempoolentry's ``height`` is the tip when the transaction entered (Core's), however many blocks are mined
    without it: how a watcher sees that a transaction lingers."""
    coin = fund(node, 100_000)
    tx = spend(coin, out_value=99_000)
    node.send_raw_transaction(tx.serialize())
    entered = node.get_block_count()
    for _ in range(2):
        node.generate_block(node.faucet.script_pubkey, [])  # a block without it
    assert node.get_block_count() == entered + 2
    assert node.get_mempool_entry(tx.txid)["height"] == entered
    bumped = spend(coin, out_value=98_000)
    node.send_raw_transaction(bumped.serialize())
    assert node.get_mempool_entry(bumped.txid)["height"] == entered + 2  # a replacement enters anew
    node.generate_to_script(1, node.faucet.script_pubkey)
    assert node.get_raw_transaction(bumped.txid, True)["confirmations"] == 1
