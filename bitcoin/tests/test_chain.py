"""bitcoin.chain: typed blocks from getblock verbosity 2, and which loan transaction a witness spends.

Unit tests use transactions our library builds and signs (the PROTOCOL.md vector); the integration tests read
real blocks of the regtest node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitcoin.chain import (
    Block,
    BlockRef,
    BlockTx,
    BlockTxInput,
    BlockTxOutput,
    ChainDataError,
    LoanSpend,
    classify_loan_spend,
    confirmed_height,
    get_block,
    get_block_ref,
    parse_loan_spend,
)
from bitcoin.loan import LoanFacts
from bitcoin.rpc import BitcoinRPC, sats_to_btc
from bitcoin.scripts import HASHLOCK_LEAF, TIMELOCK_LEAF
from bitcoin.testing import FundedOutput
from bitcoin.tests.loan_vectors import (
    BORROWER_PREIMAGE,
    LENDER_PREIMAGE,
    REGTEST_P2WPKH,
    borrower_key,
    lender_key,
    reference_outputs,
    vector_facts,
)
from bitcoin.transactions import (
    SEQUENCE_RBF_NO_LOCK,
    OutPoint,
    SpendKind,
    Transaction,
    TxIn,
    TxOut,
    build_capture,
    build_exit,
    build_release,
    build_tx1,
    collateral_outpoint,
    finalize_capture,
    finalize_exit,
    finalize_release,
    finalize_tx1,
    sweep_prepared,
)

BORROWER, LENDER = borrower_key(), lender_key()
FACTS = vector_facts()
P2WPKH_SCRIPT = bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6")  # REGTEST_P2WPKH's, L's payout
MINER_SCRIPT = bytes.fromhex("0014" + "11" * 20)


def signed_tx1(facts: LoanFacts = FACTS, fee_rate_sat_vb: int = 2) -> Transaction:
    prepared = build_tx1(facts, fee_rate_sat_vb=fee_rate_sat_vb)
    return finalize_tx1(
        prepared,
        borrower_signature=prepared.sign(BORROWER),
        lender_signature=prepared.sign(LENDER),
        borrower_preimage=BORROWER_PREIMAGE,
    )


def signed_exit(facts: LoanFacts = FACTS, fee_rate_sat_vb: int = 2) -> Transaction:
    prepared = build_exit(facts, fee_rate_sat_vb=fee_rate_sat_vb)
    return finalize_exit(prepared, borrower_signature=prepared.sign(BORROWER))


def signed_release(facts: LoanFacts = FACTS, tx1_txid: str | None = None, fee_rate_sat_vb: int = 2) -> Transaction:
    prepared = build_release(facts, tx1_txid=tx1_txid or signed_tx1(facts).txid, fee_rate_sat_vb=fee_rate_sat_vb)
    return finalize_release(prepared, borrower_signature=prepared.sign(BORROWER), lender_preimage=LENDER_PREIMAGE)


def signed_capture(facts: LoanFacts = FACTS, tx1_txid: str | None = None, fee_rate_sat_vb: int = 2) -> Transaction:
    prepared = build_capture(facts, tx1_txid=tx1_txid or signed_tx1(facts).txid, fee_rate_sat_vb=fee_rate_sat_vb)
    return finalize_capture(prepared, lender_signature=prepared.sign(LENDER))


def classify(witness, facts: LoanFacts = FACTS, *, with_collateral: bool = True) -> SpendKind | None:
    return classify_loan_spend(
        witness=witness, escrow=facts.escrow, collateral=facts.collateral if with_collateral else None
    )


# -- classify_loan_spend: the four loan transactions ------------------------------------------------------------


def test_each_loan_transaction_is_recognised_by_its_leaf() -> None:
    tx1 = signed_tx1()
    cases = [
        (tx1, SpendKind.TX_1, HASHLOCK_LEAF, BORROWER_PREIMAGE),
        (signed_exit(), SpendKind.TX_EXIT, TIMELOCK_LEAF, None),
        (signed_release(tx1_txid=tx1.txid), SpendKind.TX_RELEASE, HASHLOCK_LEAF, LENDER_PREIMAGE),
        (signed_capture(tx1_txid=tx1.txid), SpendKind.TX_CAPTURE, TIMELOCK_LEAF, None),
    ]
    for tx, kind, leaf_index, preimage in cases:
        witness = tx.inputs[0].witness
        assert classify(witness) is kind
        assert parse_loan_spend(witness=witness, escrow=FACTS.escrow, collateral=FACTS.collateral) == LoanSpend(
            kind, leaf_index, preimage
        )


def test_spends_the_platform_did_not_build_are_recognised() -> None:
    """Only the leaf matters: another fee, another destination, an explicit sighash byte, an annex."""
    tx1 = signed_tx1()
    assert classify(signed_release(tx1_txid=tx1.txid, fee_rate_sat_vb=37).inputs[0].witness) is SpendKind.TX_RELEASE
    assert classify(signed_exit(fee_rate_sat_vb=90).inputs[0].witness) is SpendKind.TX_EXIT
    # The borrower's own wallet sweeps the collateral to a P2WPKH address of its choice, with a 1000 sat fee.
    wallet_tx = Transaction(
        version=2,
        inputs=(TxIn(collateral_outpoint(tx1.txid), SEQUENCE_RBF_NO_LOCK),),
        outputs=(TxOut(FACTS.collateral_sats - 1_000, P2WPKH_SCRIPT),),
    )
    prepared = sweep_prepared(FACTS, SpendKind.TX_RELEASE, wallet_tx, 1_000)
    released = finalize_release(prepared, borrower_signature=prepared.sign(BORROWER), lender_preimage=LENDER_PREIMAGE)
    assert classify(released.inputs[0].witness) is SpendKind.TX_RELEASE
    # SIGHASH_ALL spelled out: 65-byte signatures.
    sig_b, sig_l, p_b, leaf, control = tx1.inputs[0].witness
    assert classify([sig_b + b"\x01", sig_l + b"\x01", p_b, leaf, control]) is SpendKind.TX_1
    # BIP-341 annex (last item starting with 0x50) is not part of the stack.
    assert classify([sig_b, sig_l, p_b, leaf, control, b"\x50\x01\x02"]) is SpendKind.TX_1
    assert classify((sig_b, sig_l, p_b, leaf, control)) is SpendKind.TX_1  # any sequence of bytes


def test_collateral_spends_need_the_collateral_output() -> None:
    tx1 = signed_tx1()
    assert classify(signed_release(tx1_txid=tx1.txid).inputs[0].witness, with_collateral=False) is None
    assert classify(signed_capture(tx1_txid=tx1.txid).inputs[0].witness, with_collateral=False) is None
    assert classify(tx1.inputs[0].witness, with_collateral=False) is SpendKind.TX_1
    assert classify(signed_exit().inputs[0].witness, with_collateral=False) is SpendKind.TX_EXIT


def test_wrong_preimage_or_stack_shape_is_not_a_loan_spend() -> None:
    sig_b, sig_l, p_b, leaf, control = signed_tx1().inputs[0].witness
    assert classify([sig_b, sig_l, LENDER_PREIMAGE, leaf, control]) is None  # pL does not open hB
    assert classify([sig_b, sig_l, p_b[:31], leaf, control]) is None
    assert classify([sig_b, sig_l, p_b + b"\x00", leaf, control]) is None
    assert classify([sig_b, p_b, leaf, control]) is None  # one signature short
    assert classify([sig_b, sig_l, sig_l, p_b, leaf, control]) is None
    assert classify([sig_b[:63], sig_l, p_b, leaf, control]) is None
    assert classify([b"", sig_l, p_b, leaf, control]) is None
    assert classify([sig_b, sig_l, p_b, leaf, control, b"\x51"]) is None  # not an annex: a different leaf/control
    sig, _, rel_leaf, rel_control = signed_release().inputs[0].witness
    assert classify([sig, BORROWER_PREIMAGE, rel_leaf, rel_control]) is None
    assert classify([sig, rel_leaf, rel_control]) is None
    sig, exit_leaf, exit_control = signed_exit().inputs[0].witness
    assert classify([sig, LENDER_PREIMAGE, exit_leaf, exit_control]) is None
    assert classify([exit_leaf, exit_control]) is None


def test_control_block_must_commit_to_the_loans_output() -> None:
    tx1 = signed_tx1()
    sig_b, sig_l, p_b, leaf, control = tx1.inputs[0].witness
    # The escrow's hashlock leaf with the collateral's control block, or the sibling leaf's one.
    assert classify([sig_b, sig_l, p_b, leaf, FACTS.collateral.control_block(HASHLOCK_LEAF)]) is None
    assert classify([sig_b, sig_l, p_b, leaf, FACTS.escrow.control_block(TIMELOCK_LEAF)]) is None
    assert classify([sig_b, sig_l, p_b, leaf, bytes([control[0] ^ 1]) + control[1:]]) is None  # parity flipped
    assert classify([sig_b, sig_l, p_b, leaf, control[:33]]) is None  # no merkle path
    assert classify([sig_b, sig_l, p_b, leaf, bytes([0xC2]) + control[1:]]) is None  # another leaf version
    # Another loan (another escrow key) spending the same kind of leaf is not this loan's spend.
    other = vector_facts(borrower_hash=bytes(32))
    assert classify(tx1.inputs[0].witness, other) is None
    assert classify(signed_release(tx1_txid=tx1.txid).inputs[0].witness, vector_facts(lender_hash=bytes(32))) is None
    # The same leaves under the reference implementation's internal key make other outputs.
    reference_escrow, _ = reference_outputs()
    swapped = replace(reference_escrow, leaves=FACTS.escrow.leaves)
    foreign = [sig_b, sig_l, p_b, leaf, swapped.control_block(HASHLOCK_LEAF)]
    assert classify(foreign) is None
    assert classify_loan_spend(witness=foreign, escrow=swapped, collateral=None) is SpendKind.TX_1


@pytest.mark.parametrize(
    "witness",
    [
        [],
        [b"\x01"],
        [b"\x50"],
        [b"\x30" * 71, bytes(33)],  # P2WPKH: signature, public key
        [b"\x51"],  # P2WSH OP_TRUE
        None,
        b"\x00" * 64,
        "not bytes",
        [bytearray(64)],
        [1, 2, 3],
        [bytes(64), None, FACTS.escrow.leaves[1], FACTS.escrow.control_block(1)],
    ],
)
def test_foreign_and_malformed_witnesses_are_none(witness) -> None:
    assert classify(witness) is None


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    witness=st.lists(st.binary(max_size=70), max_size=6),
    index=st.integers(min_value=0, max_value=4),
    position=st.integers(min_value=0, max_value=80),
    flip=st.integers(min_value=1, max_value=255),
)
def test_random_and_mutated_witnesses_never_raise(witness, index, position, flip) -> None:
    assert classify(witness) is None
    items = list(signed_tx1_witness())
    item = items[index]
    if position < len(item):
        items[index] = item[:position] + bytes([item[position] ^ flip]) + item[position + 1 :]
        mutated = classify(items)
        # A changed signature keeps the shape (signatures are not verified here); anything else is refused.
        assert mutated is (SpendKind.TX_1 if index < 2 else None)


_TX1_WITNESS: list[tuple[bytes, ...]] = []


def signed_tx1_witness() -> tuple[bytes, ...]:
    if not _TX1_WITNESS:
        _TX1_WITNESS.append(signed_tx1().inputs[0].witness)
    return _TX1_WITNESS[0]


# -- Block.from_json -------------------------------------------------------------------------------------------


def tx_json(tx: Transaction) -> dict:
    """A transaction the way getblock verbosity 2 shows it (amounts as Decimal, as BitcoinRPC parses them)."""
    vin = []
    for txin in tx.inputs:
        item: dict = {"txid": txin.outpoint.txid, "vout": txin.outpoint.vout, "scriptSig": {"asm": "", "hex": ""}}
        if txin.witness:
            item["txinwitness"] = [w.hex() for w in txin.witness]
        item["sequence"] = txin.sequence
        vin.append(item)
    vout = [
        {"value": sats_to_btc(o.value), "n": n, "scriptPubKey": {"hex": o.script_pubkey.hex()}}
        for n, o in enumerate(tx.outputs)
    ]
    return {"txid": tx.txid, "hash": tx.wtxid, "vin": vin, "vout": vout, "fee": Decimal("0.00001")}


COINBASE_JSON = {
    "txid": "ab" * 32,
    "vin": [{"coinbase": "0165", "txinwitness": ["00" * 32], "sequence": 4294967295}],
    "vout": [
        {"value": Decimal("50.00000001"), "n": 0, "scriptPubKey": {"hex": MINER_SCRIPT.hex()}},
        {"value": Decimal("0E-8"), "n": 1, "scriptPubKey": {"hex": "6a24aa21a9ed" + "00" * 32}},
    ],
}


def block_json(*txs: dict, height: int = 101, previous: str | None = "cd" * 32) -> dict:
    data = {"hash": "EF" * 32, "height": height, "confirmations": 1, "tx": [COINBASE_JSON, *txs]}
    if previous is not None:
        data["previousblockhash"] = previous
    return data


def test_block_from_getblock_json_is_typed_and_exact() -> None:
    tx1 = signed_tx1()
    block = Block.from_json(block_json(tx_json(tx1)))
    assert (block.height, block.hash, block.previous_hash) == (101, "ef" * 32, "cd" * 32)
    assert block.ref == BlockRef(101, "ef" * 32, "cd" * 32)
    coinbase, tx = block.txs
    assert coinbase == BlockTx(
        txid="ab" * 32,
        inputs=(),
        outputs=(
            BlockTxOutput(5_000_000_001, MINER_SCRIPT),
            BlockTxOutput(0, bytes.fromhex("6a24aa21a9ed" + "00" * 32)),
        ),
        is_coinbase=True,
    )
    assert tx.txid == tx1.txid and not tx.is_coinbase
    assert tx.inputs == (BlockTxInput(FACTS.escrow_outpoint, tx1.inputs[0].witness),)
    assert tx.outputs == tuple((o.value, o.script_pubkey) for o in tx1.outputs)
    assert [value for value, _ in tx.outputs] == [10_000, FACTS.collateral_sats, tx1.outputs[2].value]
    assert all(type(value) is int for value, _ in tx.outputs)
    assert tx.outpoint(1) == collateral_outpoint(tx1.txid)
    with pytest.raises(IndexError):
        tx.outpoint(3)
    assert tx.input_spending(FACTS.escrow_outpoint) == 0
    assert tx.input_spending(OutPoint("00" * 32, 0)) is None
    assert list(block.spends([FACTS.escrow_outpoint, OutPoint("00" * 32, 0)])) == [(tx, 0)]
    assert list(block.outputs_to([FACTS.collateral.script_pubkey])) == [(tx, 1)]
    assert list(block.outputs_to([MINER_SCRIPT, P2WPKH_SCRIPT])) == [(coinbase, 0), (tx, 0)]
    assert classify(tx.inputs[0].witness) is SpendKind.TX_1


def test_genesis_has_no_previous_hash() -> None:
    assert Block.from_json(block_json(height=0, previous=None)).previous_hash is None
    with pytest.raises(ChainDataError, match="previous hash"):
        Block.from_json(block_json(height=5, previous=None))
    with pytest.raises(ChainDataError, match="previous hash"):
        Block.from_json(block_json(height=0))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b["tx"][1]["vout"][0].update(value=0.0001), "float"),
        (lambda b: b["tx"][1]["vout"][0].update(value=Decimal("0.000000001")), "whole number"),
        (lambda b: b["tx"][1]["vout"][0].update(n=1), "position"),
        (lambda b: b["tx"][1]["vin"][0].update(txinwitness=["zz"]), "hex"),
        (lambda b: b["tx"][1]["vin"][0].pop("txid"), "txid"),
        (lambda b: b["tx"][1].update(txid="12"), "txid"),
        (lambda b: b.update(tx=["ab" * 32]), "verbosity 2"),
        (lambda b: b.update(tx=[]), "verbosity 2"),
        (lambda b: b.pop("height"), "height"),
        (lambda b: b.update(hash=None), "block hash"),
    ],
)
def test_malformed_block_json_is_refused(mutate, message) -> None:
    data = block_json(tx_json(signed_tx1()))
    mutate(data)
    with pytest.raises(ChainDataError, match=message):
        Block.from_json(data)


# -- on the regtest node ----------------------------------------------------------------------------------------

ESCROW_SATS = 1_200_000


def funded_facts(btc_fund: Callable[..., FundedOutput], **overrides: object) -> LoanFacts:
    facts = vector_facts(
        escrow_outpoint=None,
        escrow_sats=None,
        escrow_timelock_btc_blocks=2,
        collateral_timelock_btc_blocks=2,
        **overrides,
    )
    escrow = btc_fund(facts.escrow.script_pubkey, ESCROW_SATS)
    return facts.with_escrow(OutPoint(escrow.txid, escrow.vout), escrow.sats)


def loan_spends_of(block: Block, facts: LoanFacts) -> list[tuple[str, SpendKind | None]]:
    """(txid, kind) of every input of the block; nothing in a real block makes the classifier raise."""
    return [
        (tx.txid, classify_loan_spend(witness=txin.witness, escrow=facts.escrow, collateral=facts.collateral))
        for tx in block.txs
        for txin in tx.inputs
    ]


@pytest.mark.integration
def test_loan_spends_are_read_from_real_blocks(
    btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput], btc_mine: Callable[..., list[str]]
) -> None:
    facts = funded_facts(btc_fund)
    tx1 = signed_tx1(facts)
    btc_rpc.sendrawtransaction(tx1.hex())
    [block_hash] = btc_mine(1)
    height = btc_rpc.getblockcount()

    block = get_block(btc_rpc, height)
    assert block == get_block(btc_rpc, block_hash)
    assert block.ref == get_block_ref(btc_rpc) == get_block_ref(btc_rpc, height) == get_block_ref(btc_rpc, block_hash)
    assert (block.height, block.hash, block.previous_hash) == (height, block_hash, btc_rpc.getblockhash(height - 1))
    assert block.txs[0].is_coinbase and block.txs[0].inputs == ()
    [(tx, index)] = block.spends([facts.escrow_outpoint])
    assert (tx.txid, index) == (tx1.txid, 0)
    assert tx.inputs[0] == (facts.escrow_outpoint, tx1.inputs[0].witness)
    assert tx.outputs == tuple((o.value, o.script_pubkey) for o in tx1.outputs)
    assert list(block.outputs_to([facts.collateral.script_pubkey])) == [(tx, 1)]
    assert parse_loan_spend(witness=tx.inputs[0].witness, escrow=facts.escrow, collateral=facts.collateral) == (
        LoanSpend(SpendKind.TX_1, HASHLOCK_LEAF, BORROWER_PREIMAGE)
    )
    assert [kind for _, kind in loan_spends_of(block, facts)] == [SpendKind.TX_1]

    # The borrower's wallet releases the collateral at its own fee rate; the block is read by hash.
    release = signed_release(facts, tx1_txid=tx1.txid, fee_rate_sat_vb=7)
    btc_rpc.sendrawtransaction(release.hex())
    [block_hash] = btc_mine(1)
    block = get_block(btc_rpc, block_hash)
    assert block.height == height + 1 and block.previous_hash == get_block(btc_rpc, height).hash
    [(tx, _)] = block.spends([collateral_outpoint(tx1.txid)])
    assert tx.txid == release.txid
    assert tx.outputs == ((release.outputs[0].value, facts.borrower_payout_script),)
    spend = parse_loan_spend(witness=tx.inputs[0].witness, escrow=facts.escrow, collateral=facts.collateral)
    assert spend == LoanSpend(SpendKind.TX_RELEASE, HASHLOCK_LEAF, LENDER_PREIMAGE)


@pytest.mark.integration
def test_timelock_spends_and_foreign_inputs_in_one_block(
    btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput], btc_mine: Callable[..., list[str]]
) -> None:
    exiting = funded_facts(btc_fund)
    defaulted = funded_facts(btc_fund, lender_payout_address=REGTEST_P2WPKH)
    tx1 = signed_tx1(defaulted)
    btc_rpc.sendrawtransaction(tx1.hex())
    btc_mine(2)  # TX_1 is 2 deep, the escrows deeper: t_0 = t_1 = 2 let both sweeps into the next block
    exit_tx = signed_exit(exiting)
    capture = signed_capture(defaulted, tx1_txid=tx1.txid)
    btc_rpc.sendrawtransaction(exit_tx.hex())
    btc_rpc.sendrawtransaction(capture.hex())
    foreign = btc_fund(P2WPKH_SCRIPT, 50_000, confirmations=0)  # a faucet payment in the same block
    [block_hash] = btc_mine(1)

    block = get_block(btc_rpc, block_hash)
    assert {tx.txid for tx in block.txs} == {block.txs[0].txid, exit_tx.txid, capture.txid, foreign.txid}
    kinds = {
        txid: kind for facts in (exiting, defaulted) for txid, kind in loan_spends_of(block, facts) if kind is not None
    }
    assert kinds == {exit_tx.txid: SpendKind.TX_EXIT, capture.txid: SpendKind.TX_CAPTURE}
    foreign_tx = next(tx for tx in block.txs if tx.txid == foreign.txid)
    assert foreign_tx.outputs[foreign.vout] == (50_000, P2WPKH_SCRIPT)
    assert all(len(txin.witness) == 2 for txin in foreign_tx.inputs)  # P2WPKH inputs, classified as None above
    assert confirmed_height(btc_rpc, 1) == block.height
    assert confirmed_height(btc_rpc, 3) == block.height - 2
    assert confirmed_height(btc_rpc, block.height + 2) is None
    with pytest.raises(ValueError):
        confirmed_height(btc_rpc, 0)
