"""Integration tests of the embedded regtest node over JSON-RPC: Bitcoin Core's consensus code must reject each
invalid spend with its reason, and the indexes must follow reorgs and restarts."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bitcoin.keys import PrivateKey
from bitcoin.loan import LoanFacts
from bitcoin.regtest.address import address_to_script, encode_segwit
from bitcoin.regtest.mining import assemble_block
from bitcoin.regtest.serialize import OutPoint, Tx, TxIn, TxOut
from bitcoin.rpc import BitcoinRPC, RPCError, btc_to_sats
from bitcoin.testing import FundedOutput, RegtestProcess, build_branch, fund_output, mine_blocks
from bitcoin.transactions import OutPoint as LoanOutPoint
from bitcoin.transactions import PreparedSpend, build_exit, build_tx1

pytestmark = pytest.mark.integration

BORROWER = PrivateKey.from_wif("cNwW6ne3j9jUDWC3qFG5Bw3jzWvSZjZ2vgyP5LsTVj4WrJkJqjuz")
LENDER = PrivateKey.from_wif("cMrC8dGmStj3pz7mbY3vjwhXYcQwkcaWwV4QFCTF25WwVW1TCDkJ")
P_B = bytes.fromhex("0e0ed04e19fa04ec6b29e6ccfd6f7384a22e1a92b81563064d8c74f354d41f05")
P_L = bytes.fromhex("38f9fa6b463f6e37f2cf7286f1f3bbf2e1fe33296f95629d9c343511f9bd35d5")
PAYOUT = encode_segwit("bcrt", 0, bytes(range(20)))
# P2WSH of the script OP_TRUE: anyone can spend it with the witness [OP_TRUE].
OP_TRUE_SCRIPT = b"\x51"
OP_TRUE_P2WSH = b"\x00\x20" + hashlib.sha256(OP_TRUE_SCRIPT).digest()
ESCROW_SATS = 200_000


def loan_facts(t_0: int = 3, t_1: int = 5) -> LoanFacts:
    """The loan's facts before its escrow is funded (``funded`` adds it)."""
    return LoanFacts(
        network="regtest",
        borrower_btc_pubkey=BORROWER.xonly_pubkey,
        lender_btc_pubkey=LENDER.xonly_pubkey,
        borrower_hash=hashlib.sha256(P_B).digest(),
        lender_hash=hashlib.sha256(P_L).digest(),
        escrow_timelock_btc_blocks=t_0,
        collateral_timelock_btc_blocks=t_1,
        escrow_outpoint=None,
        escrow_sats=None,
        loan_amount_sats=100_000,
        min_collateral_ratio_bps=10_000,
        collateral_cap_sats=110_000,
        origination_fee_bps=100,
        lender_payout_address=PAYOUT,
        borrower_payout_address=PAYOUT,
        min_fee_rate_sat_vb=1,
        max_fee_rate_sat_vb=10,
    )


def funded(facts: LoanFacts, escrow: FundedOutput) -> LoanFacts:
    return facts.with_escrow(LoanOutPoint(escrow.txid, escrow.vout), escrow.sats)


def prepared_tx1(facts: LoanFacts, escrow: FundedOutput) -> PreparedSpend:
    return build_tx1(funded(facts, escrow), fee_rate_sat_vb=2)


def tx1_with_witness(prepared: PreparedSpend, items: list[bytes]) -> str:
    """TX_1 with a hand-made witness stack (below the leaf and control block), bypassing the library's checks."""
    return prepared.tx.with_witness(0, [*items, prepared.leaf_script, prepared.control_block]).hex()


def spend_op_true(outpoint: OutPoint | tuple[str, int], value: int, out_value: int, sequence: int = 0xFFFFFFFD) -> Tx:
    """A transaction spending an OP_TRUE P2WSH output to an OP_TRUE P2WSH output."""
    if isinstance(outpoint, tuple):
        outpoint = OutPoint.from_hex(*outpoint)
    return Tx(2, [TxIn(outpoint, b"", sequence, [OP_TRUE_SCRIPT])], [TxOut(out_value, OP_TRUE_P2WSH)], 0)


def assert_rejected(rpc: BitcoinRPC, raw_hex: str, reason: str, code: int = -26) -> None:
    """sendrawtransaction fails with `code`/`reason` and testmempoolaccept agrees; the mempool is unchanged."""
    mempool_before = sorted(rpc.getrawmempool())
    with pytest.raises(RPCError) as info:
        rpc.sendrawtransaction(raw_hex)
    assert info.value.code == code
    assert info.value.message.startswith(reason), info.value.message
    [result] = rpc.testmempoolaccept([raw_hex])
    assert result["allowed"] is False
    expected = "missing-inputs" if reason == "bad-txns-inputs-missingorspent" else reason
    assert result["reject-reason"].startswith(expected)
    assert sorted(rpc.getrawmempool()) == mempool_before


# -- rejections, each with its reason ---------------------------------------------------------------------------


def test_wrong_preimage_rejected(btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput]) -> None:
    facts = loan_facts()
    escrow = btc_fund(facts.escrow.script_pubkey, ESCROW_SATS)
    prepared = prepared_tx1(facts, escrow)
    sig_b, sig_l = prepared.sign(BORROWER), prepared.sign(LENDER)
    bad = tx1_with_witness(prepared, [sig_b, sig_l, P_L])  # pL is not the preimage of hB
    assert_rejected(btc_rpc, bad, "mandatory-script-verify-flag-failed (Script evaluation failed, input 0)")
    good = tx1_with_witness(prepared, [sig_b, sig_l, P_B])
    assert btc_rpc.testmempoolaccept([good])[0]["allowed"] is True


def test_two_of_two_missing_one_signature_rejected(btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput]) -> None:
    facts = loan_facts()
    escrow = btc_fund(facts.escrow.script_pubkey, ESCROW_SATS)
    prepared = prepared_tx1(facts, escrow)
    sig_b, sig_l = prepared.sign(BORROWER), prepared.sign(LENDER)
    assert_rejected(btc_rpc, tx1_with_witness(prepared, [sig_b, b"", P_B]), "mandatory-script-verify-flag-failed")
    assert_rejected(btc_rpc, tx1_with_witness(prepared, [b"", sig_l, P_B]), "mandatory-script-verify-flag-failed")
    # Signatures swapped between the two keys: both present, neither valid for its key.
    assert_rejected(btc_rpc, tx1_with_witness(prepared, [sig_l, sig_b, P_B]), "mandatory-script-verify-flag-failed")


def test_csv_spend_one_block_early_rejected_then_accepted(
    btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput], btc_mine: Callable[..., list[str]]
) -> None:
    t_0 = 3
    facts = loan_facts(t_0=t_0)
    escrow = btc_fund(facts.escrow.script_pubkey, ESCROW_SATS)  # 1 confirmation
    prepared = build_exit(funded(facts, escrow), fee_rate_sat_vb=2)
    exit_hex = prepared.tx.with_witness(
        0, [prepared.sign(BORROWER), prepared.leaf_script, prepared.control_block]
    ).hex()
    btc_mine(t_0 - 2)
    assert btc_rpc.gettxout(escrow.txid, escrow.vout)["confirmations"] == t_0 - 1
    assert_rejected(btc_rpc, exit_hex, "non-BIP68-final")
    # A block with the transaction one block early is invalid by consensus too.
    with pytest.raises(RPCError) as info:
        btc_rpc.generateblock(PAYOUT, [exit_hex])
    assert info.value.code == -25
    assert "bad-txns-nonfinal" in info.value.message
    btc_mine(1)
    assert btc_rpc.gettxout(escrow.txid, escrow.vout)["confirmations"] == t_0
    txid = btc_rpc.sendrawtransaction(exit_hex)
    assert btc_rpc.getrawmempool() == [txid]
    btc_mine(1)
    assert btc_rpc.confirmations(txid) == 1


def test_double_spend_rejected(btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput]) -> None:
    coin = btc_fund(OP_TRUE_P2WSH, 50_000)
    first = spend_op_true((coin.txid, coin.vout), coin.sats, 40_000).serialize().hex()
    second = spend_op_true((coin.txid, coin.vout), coin.sats, 41_000).serialize().hex()
    first_txid = btc_rpc.sendrawtransaction(first)
    assert btc_rpc.sendrawtransaction(first) == first_txid  # resubmitting the same transaction is idempotent
    assert_rejected(btc_rpc, second, "insufficient fee")  # a lower fee rate replaces nothing (full RBF)
    assert btc_rpc.gettxout(coin.txid, coin.vout) is None  # spent in the mempool
    assert btc_to_sats(btc_rpc.gettxout(coin.txid, coin.vout, include_mempool=False)["value"]) == coin.sats
    mine_blocks(btc_rpc, 1)
    assert btc_rpc.gettxout(coin.txid, coin.vout, include_mempool=False) is None
    assert_rejected(btc_rpc, second, "bad-txns-inputs-missingorspent", code=-25)
    with pytest.raises(RPCError) as info:
        btc_rpc.sendrawtransaction(first)
    assert info.value.code == -27
    # A block that double-spends is rejected by the kernel.
    height = btc_rpc.getblockcount()
    with pytest.raises(RPCError, match="bad-txns-inputs-missingorspent"):
        btc_rpc.generateblock(PAYOUT, [second])
    assert btc_rpc.getblockcount() == height


def test_output_above_input_rejected(btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput]) -> None:
    coin = btc_fund(OP_TRUE_P2WSH, 50_000)
    too_much = spend_op_true((coin.txid, coin.vout), coin.sats, 50_001).serialize().hex()
    assert_rejected(btc_rpc, too_much, "bad-txns-in-belowout")
    with pytest.raises(RPCError, match="bad-txns-in-belowout"):
        btc_rpc.generateblock(PAYOUT, [too_much])


def test_immature_coinbase_spend_rejected(btc_rpc: BitcoinRPC) -> None:
    address = encode_segwit("bcrt", 0, OP_TRUE_P2WSH[2:])
    [block_hash] = btc_rpc.generatetoaddress(1, address)
    block = btc_rpc.getblock(block_hash, 2)
    coinbase = block["tx"][0]
    value = btc_to_sats(coinbase["vout"][0]["value"])
    spend = spend_op_true((coinbase["txid"], 0), value, value - 1_000).serialize().hex()
    mine_blocks(btc_rpc, 98)  # the next block would put the coinbase at depth 99
    assert_rejected(btc_rpc, spend, "bad-txns-premature-spend-of-coinbase")
    with pytest.raises(RPCError, match="bad-txns-premature-spend-of-coinbase"):
        btc_rpc.generateblock(PAYOUT, [spend])
    mine_blocks(btc_rpc, 1)
    txid = btc_rpc.sendrawtransaction(spend)
    assert txid in btc_rpc.getrawmempool()


def test_submitblock_invalid_script_rejected_by_kernel(
    btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput]
) -> None:
    """A block assembled by hand (no mempool checks on the way) is judged by Bitcoin Core's consensus code."""
    facts = loan_facts()
    escrow = btc_fund(facts.escrow.script_pubkey, ESCROW_SATS)
    prepared = prepared_tx1(facts, escrow)
    bad = Tx.from_hex(tx1_with_witness(prepared, [prepared.sign(BORROWER), prepared.sign(LENDER), P_L]))
    tip = btc_rpc.getblockheader(btc_rpc.getbestblockhash())
    block = assemble_block(
        prev_hash=bytes.fromhex(tip["hash"])[::-1],
        height=tip["height"] + 1,
        block_time=max(tip["mediantime"] + 1, int(time.time())),
        coinbase_script=OP_TRUE_P2WSH,
        txs=[bad],
    )
    reason = btc_rpc.submitblock(block.serialize().hex())
    assert reason is not None and reason.startswith("consensus")
    assert "mandatory-script-verify-flag-failed" in reason
    assert btc_rpc.getbestblockhash() == tip["hash"]
    assert btc_rpc.gettxout(escrow.txid, escrow.vout) is not None


def test_gettxout_and_getrawtransaction_follow_the_mempool(
    btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput]
) -> None:
    unconfirmed = btc_fund(OP_TRUE_P2WSH, 30_000, confirmations=0)
    assert btc_rpc.gettxout(unconfirmed.txid, unconfirmed.vout)["confirmations"] == 0
    assert btc_rpc.gettxout(unconfirmed.txid, unconfirmed.vout, include_mempool=False) is None
    tx = btc_rpc.getrawtransaction(unconfirmed.txid, True)
    assert "blockhash" not in tx and "confirmations" not in tx
    [block_hash] = mine_blocks(btc_rpc, 1)
    tx = btc_rpc.getrawtransaction(unconfirmed.txid, True)
    assert tx["blockhash"] == block_hash
    assert tx["confirmations"] == 1
    assert btc_rpc.getblock(block_hash, 1)["tx"][1:] == [unconfirmed.txid]
    scanned = [u for u in btc_rpc.scan_script_utxos(OP_TRUE_P2WSH.hex()) if u["txid"] == unconfirmed.txid]
    assert [(u["vout"], u["sats"], u["height"]) for u in scanned] == [
        (unconfirmed.vout, 30_000, btc_rpc.getblockcount())
    ]
    with pytest.raises(RPCError) as info:
        btc_rpc.getrawtransaction("00" * 32)
    assert info.value.code == -5


def test_bad_requests_get_clear_errors(btc_rpc: BitcoinRPC) -> None:
    height = btc_rpc.getblockcount()
    with pytest.raises(RPCError) as info:
        btc_rpc.sendrawtransaction("0200")
    assert info.value.code == -22
    with pytest.raises(RPCError) as info:
        btc_rpc.call("getblockhash", height + 1)
    assert info.value.code == -8
    with pytest.raises(RPCError) as info:
        btc_rpc.call("generatetoaddress", 1, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
    assert info.value.code == -5
    with pytest.raises(RPCError) as info:
        btc_rpc.call("nosuchmethod")
    assert info.value.code == -32601
    with pytest.raises(RPCError) as info:
        btc_rpc.call("sendtoaddress", PAYOUT, "0.000000001")
    assert info.value.code == -3
    assert btc_rpc.getblockcount() == height


# -- reorg ------------------------------------------------------------------------------------------------------


def test_reorg_unconfirms_and_indexes_follow(btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput]) -> None:
    coin = btc_fund(OP_TRUE_P2WSH, 60_000)
    fork_hash = btc_rpc.getbestblockhash()
    spend = spend_op_true((coin.txid, coin.vout), coin.sats, 59_000)
    txid = btc_rpc.sendrawtransaction(spend.serialize().hex())
    [confirming_block] = mine_blocks(btc_rpc, 1)
    assert btc_rpc.getrawtransaction(txid, True)["confirmations"] == 1
    assert btc_rpc.gettxout(txid, 0, include_mempool=False) is not None

    branch = build_branch(btc_rpc, fork_hash, 2)
    assert btc_rpc.submitblock(branch[0].serialize().hex()) is None  # equal work: stays on a side branch
    assert btc_rpc.getbestblockhash() == confirming_block
    assert btc_rpc.submitblock(branch[1].serialize().hex()) is None  # more work: reorg
    assert btc_rpc.getbestblockhash() == branch[1].hash[::-1].hex()

    # The transaction is back in the mempool, unconfirmed; its output exists only in the mempool view.
    assert txid in btc_rpc.getrawmempool()
    tx = btc_rpc.getrawtransaction(txid, True)
    assert "blockhash" not in tx and "confirmations" not in tx
    assert btc_rpc.gettxout(txid, 0, include_mempool=False) is None
    assert btc_rpc.gettxout(txid, 0)["confirmations"] == 0
    assert btc_rpc.gettxout(coin.txid, coin.vout, include_mempool=False)["confirmations"] == 3
    assert btc_rpc.getblock(confirming_block)["confirmations"] == -1
    stale = btc_rpc.getrawtransaction(txid, True, blockhash=confirming_block)
    assert stale["in_active_chain"] is False
    assert stale["blockhash"] == confirming_block
    assert "confirmations" not in stale

    # A longer branch that double-spends the coin drops the transaction for good.
    conflict = spend_op_true((coin.txid, coin.vout), coin.sats, 58_000)
    branch2 = build_branch(btc_rpc, fork_hash, 3, [conflict])
    for block in branch2:
        assert btc_rpc.submitblock(block.serialize().hex()) is None
    assert btc_rpc.getbestblockhash() == branch2[-1].hash[::-1].hex()
    assert txid not in btc_rpc.getrawmempool()
    with pytest.raises(RPCError):
        btc_rpc.getrawtransaction(txid, True)
    assert btc_rpc.getrawtransaction(conflict.txid_hex, True)["confirmations"] == 3
    assert btc_rpc.gettxout(coin.txid, coin.vout) is None
    assert btc_rpc.gettxout(conflict.txid_hex, 0)["confirmations"] == 3


# -- restart ----------------------------------------------------------------------------------------------------


def test_restart_keeps_chain_indexes_and_mempool(tmp_path: Path) -> None:
    node = RegtestProcess(tmp_path / "node")
    node.start()
    try:
        rpc = node.rpc()
        mine_blocks(rpc, 101)
        funded = fund_output(rpc, OP_TRUE_P2WSH, 70_000)
        pending = fund_output(rpc, OP_TRUE_P2WSH, 20_000, confirmations=0)
        before = (rpc.getblockcount(), rpc.getbestblockhash(), rpc.gettxout(funded.txid, funded.vout))
        node.restart()
        assert not node.rebuilt_indexes
        rpc = node.rpc()
        assert (rpc.getblockcount(), rpc.getbestblockhash(), rpc.gettxout(funded.txid, funded.vout)) == before
        assert rpc.getrawtransaction(funded.txid, True)["confirmations"] == 1
        assert pending.txid in rpc.getrawmempool()

        # An unclean exit (SIGKILL: no kernel flush, no snapshot): the kernel reindexes from its block files and
        # the indexes are rebuilt; the chain, the confirmed outputs and the tx index are all back.
        mine_blocks(rpc, 5)
        later = fund_output(rpc, OP_TRUE_P2WSH, 15_000)
        height, best = rpc.getblockcount(), rpc.getbestblockhash()
        node.kill()
        node.start()
        assert node.rebuilt_indexes
        rpc = node.rpc()
        assert (rpc.getblockcount(), rpc.getbestblockhash()) == (height, best)
        assert rpc.getrawtransaction(funded.txid, True)["confirmations"] == height - funded.height + 1
        assert btc_to_sats(rpc.gettxout(later.txid, later.vout)["value"]) == 15_000
        tip = rpc.getblock(best, 2)
        assert rpc.gettxout(tip["tx"][0]["txid"], 0, include_mempool=False)["confirmations"] == 1
        mine_blocks(rpc, 2)
        assert rpc.getblockcount() == height + 2
    finally:
        node.stop()


def test_fund_helpers_pay_addresses_and_scripts(
    btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput], btc_mine: Callable[..., list[str]]
) -> None:
    by_address = btc_fund(PAYOUT, 12_000, confirmations=2)
    assert by_address.script_pubkey == address_to_script(PAYOUT)
    utxo = btc_rpc.gettxout(by_address.txid, by_address.vout)
    assert utxo["confirmations"] == 2
    assert utxo["scriptPubKey"]["address"] == PAYOUT
    assert by_address.height == btc_rpc.getblockcount() - 1
    by_hex = btc_fund(OP_TRUE_P2WSH.hex(), 13_000)
    assert btc_rpc.gettxout_sats(by_hex.txid, by_hex.vout) == 13_000
    height = btc_rpc.getblockcount()
    assert len(btc_mine(3)) == 3
    assert btc_rpc.getblockcount() == height + 3


def test_broadcast_is_idempotent(btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput]) -> None:
    coin = btc_fund(OP_TRUE_P2WSH, 40_000)
    tx = spend_op_true((coin.txid, coin.vout), coin.sats, 39_000)
    raw = tx.serialize().hex()
    assert btc_rpc.broadcast(raw, tx.txid_hex) == tx.txid_hex
    assert btc_rpc.broadcast(raw, tx.txid_hex) == tx.txid_hex  # in the mempool
    mine_blocks(btc_rpc, 1)
    assert btc_rpc.broadcast(raw, tx.txid_hex) == tx.txid_hex  # confirmed, outputs unspent (-27)
    child = spend_op_true((tx.txid_hex, 0), 39_000, 38_000)
    btc_rpc.sendrawtransaction(child.serialize().hex())
    mine_blocks(btc_rpc, 1)
    assert btc_rpc.broadcast(raw, tx.txid_hex) == tx.txid_hex  # confirmed, outputs spent (-25)
    utxo = btc_rpc.get_utxo(child.txid_hex, 0)
    assert (utxo.sats, utxo.script_pubkey, utxo.confirmations, utxo.coinbase) == (38_000, OP_TRUE_P2WSH, 1, False)
    conflict = spend_op_true((coin.txid, coin.vout), coin.sats, 30_000)
    with pytest.raises(RPCError) as info:
        btc_rpc.broadcast(conflict.serialize().hex(), conflict.txid_hex)
    assert info.value.code == -25
    with pytest.raises(RPCError) as info:  # the txid of another transaction does not make it "known"
        btc_rpc.broadcast(conflict.serialize().hex(), tx.txid_hex)
    assert info.value.code == -25
