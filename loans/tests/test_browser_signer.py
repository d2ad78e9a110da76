"""The borrower's signer in the browser (static/loans/vendor/signer.js, built from frontend/signer/) run under node.

The bundle is the file the pages load, byte for byte: each test imports the committed bundle in a small node
driver and holds what it builds and signs against the Python library. Its TX_1, TX_release and TX_exit are the
Python builders' transactions exactly; what it signs passes ``bitcoin.presignature``'s verifiers; its TX_exit is
accepted by the regtest node exactly t_0 blocks after the escrow; its check refuses every tampered transaction the
Python check refuses, with the same reason; and ``node frontend/build.js --check`` fails on an edited bundle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bitcoin.errors import PresignatureError
from bitcoin.keys import PrivateKey, verify_schnorr
from bitcoin.loan import LoanFacts
from bitcoin.presignature import (
    check_borrower_transaction,
    verify_borrower_presignature,
    verify_borrower_sweep_signature,
)
from bitcoin.psbt import PSBT_IN_SIGHASH_TYPE, Psbt, create_psbt
from bitcoin.rpc import BitcoinRPC, RPCError, btc_to_sats
from bitcoin.scripts import HASHLOCK_LEAF
from bitcoin.testing import FundedOutput
from bitcoin.tests.loan_vectors import BORROWER_WIF, LENDER_WIF, ODD_Y_SECRET, REGTEST_P2WPKH, vector_facts
from bitcoin.transactions import (
    OutPoint,
    PreparedSpend,
    SpendKind,
    Transaction,
    TxIn,
    TxOut,
    build_exit,
    build_release,
    build_tx1,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "static" / "loans" / "vendor" / "signer.js"
DRIVER = """
import { readFileSync } from 'node:fs';
import * as signer from './signer.mjs';
const request = JSON.parse(readFileSync(0, 'utf8'));
let reply;
try {
  reply = { ok: signer[request.fn](...request.args) };
} catch (error) {
  reply = { error: { name: error.name, reason: error.reason ?? null, message: error.message } };
}
process.stdout.write(JSON.stringify(reply));
"""
T_0 = 3
T_1 = 10
ESCROW_SATS = 1_200_000


def _odd_y_key(seed: bytes) -> PrivateKey:
    counter = 0
    while True:
        key = PrivateKey.from_hex(hashlib.sha256(seed + bytes([counter])).hexdigest())
        if key.has_odd_y:
            return key
        counter += 1


PARTIES: dict[str, Callable[[], tuple[PrivateKey, PrivateKey]]] = {
    "vector-even-y": lambda: (PrivateKey.from_wif(BORROWER_WIF), PrivateKey.from_wif(LENDER_WIF)),
    "odd-y": lambda: (PrivateKey.from_hex(ODD_Y_SECRET), _odd_y_key(b"lender")),
}


class SignerError(Exception):
    def __init__(self, name: str, reason: str | None, message: str) -> None:
        super().__init__(f"{name} ({reason}): {message}")
        self.name, self.reason = name, reason


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    """``signer(fn, *args)``: call an export of the committed bundle under node; raises ``SignerError``."""
    workdir = tmp_path_factory.mktemp("signer")
    shutil.copyfile(BUNDLE, workdir / "signer.mjs")
    (workdir / "driver.mjs").write_text(DRIVER)

    def call(fn: str, *args: object) -> Any:
        result = subprocess.run(
            ["node", str(workdir / "driver.mjs")],
            input=json.dumps({"fn": fn, "args": list(args)}),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(f"node failed: {result.stderr}")
        reply = json.loads(result.stdout)
        if "error" in reply:
            raise SignerError(reply["error"]["name"], reply["error"]["reason"], reply["error"]["message"])
        return reply["ok"]

    return call


def _facts(parties: str = "vector-even-y", **overrides: object) -> tuple[LoanFacts, PrivateKey]:
    borrower, lender = PARTIES[parties]()
    return vector_facts(borrower, lender, **overrides), borrower


def _psbt_b64(prepared: PreparedSpend, tx: Transaction | None = None) -> str:
    return create_psbt(replace(prepared, tx=tx) if tx is not None else prepared).to_base64()


def _refusal(call: Callable[[], object]) -> str:
    with pytest.raises(PresignatureError) as info:
        call()
    return info.value.reason


# -- keys ----------------------------------------------------------------------------------------------------------


def test_new_borrower_secrets_are_valid_keys_and_a_committed_preimage(signer: Callable[..., Any]) -> None:
    first, second = signer("newBorrowerSecrets"), signer("newBorrowerSecrets")
    for secrets in (first, second):
        key = PrivateKey.from_hex(secrets["private_key"])
        assert key.xonly_pubkey.hex() == secrets["xonly_pubkey"]
        assert hashlib.sha256(bytes.fromhex(secrets["preimage"])).hexdigest() == secrets["hash"]
        assert len(bytes.fromhex(secrets["preimage"])) == 32
    assert first["private_key"] != second["private_key"] and first["preimage"] != second["preimage"]
    # The secrets work as a loan's borrower secrets: the signer builds and signs the TX_1 of a loan made from them.
    facts = vector_facts(PrivateKey.from_hex(first["private_key"]), borrower_hash=first["hash"])
    built = signer("buildTx1", facts.to_json_dict(), "2")
    signed = signer("signPsbt", facts.to_json_dict(), built["psbt"], first["private_key"])
    assert (
        verify_borrower_presignature(facts, psbt=signed["psbt"]).transaction == build_tx1(facts, fee_rate_sat_vb=2).tx
    )


# -- TX_1 --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parties", sorted(PARTIES))
@pytest.mark.parametrize(
    ("fee_rate", "escrow_sats"),
    [("1", 1_200_000), ("2.5", 1_200_000), ("100", 1_200_000), ("7/3", 1_200_000), ("2", 1_010_000 + 600)],
)
def test_tx1_built_and_signed_by_the_bundle_is_pythons_tx1_and_passes_the_verifier(
    signer: Callable[..., Any], parties: str, fee_rate: str, escrow_sats: int
) -> None:
    facts, borrower = _facts(parties, escrow_sats=escrow_sats)
    loan_file = facts.to_json_dict()
    python_rate = fee_rate if "/" not in fee_rate else __import__("fractions").Fraction(fee_rate)
    expected = build_tx1(facts, fee_rate_sat_vb=python_rate)

    built = signer("buildTx1", loan_file, fee_rate)
    assert Psbt.load(built["psbt"]).unsigned_tx == expected.tx
    assert built["txid"] == expected.tx.txid
    assert built["summary"]["fee_sats"] == str(expected.fee_sats)
    assert built["summary"]["kind"] == "tx_1"
    assert [output["amount_sats"] for output in built["summary"]["outputs"]] == [
        str(output.value) for output in expected.tx.outputs
    ]

    signed = signer("signPsbt", loan_file, built["psbt"], borrower.secret.hex())
    verified = verify_borrower_presignature(facts, psbt=signed["psbt"])
    assert verified.transaction == expected.tx
    assert verify_schnorr(facts.borrower_btc_pubkey, expected.sighash(), verified.borrower_signature)
    assert signed["summary"] == built["summary"]


def test_a_python_built_tx1_psbt_signed_by_the_bundle_passes_the_verifier(signer: Callable[..., Any]) -> None:
    facts, borrower = _facts("odd-y")
    prepared = build_tx1(facts, fee_rate_sat_vb=3)
    signed = signer("signPsbt", facts.to_json_dict(), _psbt_b64(prepared), borrower.secret.hex())
    psbt = Psbt.load(signed["psbt"])
    assert list(psbt.tap_script_sigs(0)) == [(facts.borrower_btc_pubkey, facts.escrow.leaf_hash(HASHLOCK_LEAF))]
    assert verify_borrower_presignature(facts, psbt=signed["psbt"]).transaction == prepared.tx


def test_the_signer_refuses_another_key_and_a_loan_file_whose_address_disagrees(signer: Callable[..., Any]) -> None:
    facts, _ = _facts()
    psbt = _psbt_b64(build_tx1(facts, fee_rate_sat_vb=2))
    with pytest.raises(SignerError) as info:
        signer("signPsbt", facts.to_json_dict(), psbt, PrivateKey.from_wif(LENDER_WIF).secret.hex())
    assert info.value.reason == "wrong_signer"

    lying = facts.to_json_dict() | {
        "escrow_address": vector_facts(escrow_timelock_btc_blocks=7).escrow.address("regtest")
    }
    with pytest.raises(SignerError) as info:
        signer("checkLoanTransaction", lying, psbt)
    assert info.value.name == "SignerInputError" and "escrow address" in str(info.value)


# -- the ladders -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parties", sorted(PARTIES))
def test_the_bundles_ladders_are_pythons_sweeps_and_pass_the_sweep_verifier(
    signer: Callable[..., Any], parties: str
) -> None:
    facts, borrower = _facts(parties)
    tx1_txid = build_tx1(facts, fee_rate_sat_vb=2).tx.txid
    rates = ["1", "2.5", "10", "100"]
    ladders = signer("buildLadders", facts.to_json_dict(), tx1_txid, rates, borrower.secret.hex())
    assert ladders["tx1_txid"] == tx1_txid
    assert [rung["fee_rate_sat_vb"] for rung in ladders["release"]] == rates
    for rate, release, exit_rung in zip(rates, ladders["release"], ladders["exit"], strict=True):
        expected_release = build_release(facts, tx1_txid=tx1_txid, fee_rate_sat_vb=rate)
        verified = verify_borrower_sweep_signature(facts, SpendKind.TX_RELEASE, psbt=release["psbt"], tx1_txid=tx1_txid)
        assert verified.transaction == expected_release.tx
        assert release["fee_sats"] == str(expected_release.fee_sats)

        expected_exit = build_exit(facts, fee_rate_sat_vb=rate)
        verified = verify_borrower_sweep_signature(facts, SpendKind.TX_EXIT, transaction=exit_rung["tx_hex"])
        assert verified.transaction == expected_exit.tx.without_witness()
        assert exit_rung["fee_sats"] == str(expected_exit.fee_sats)
        assert exit_rung["txid"] == expected_exit.tx.txid


@pytest.mark.parametrize("parties", sorted(PARTIES))
def test_the_bundles_exit_ladder_needs_no_hl_and_each_rung_is_pythons_tx_exit(
    signer: Callable[..., Any], parties: str
) -> None:
    """A request that never got hL (cancelled, never offered) has no TX_1 and no collateral: buildExitLadder signs
    the TX_exit rungs alone, each shown (its summary) and accepted by the sweep verifier; buildLadders refuses."""
    facts, borrower = _facts(parties, lender_hash=None)
    rates = ["1", "2.5", "10"]
    with pytest.raises(SignerError) as info:
        signer("buildLadders", facts.to_json_dict(), "11" * 32, rates, borrower.secret.hex())
    assert info.value.name == "SignerInputError" and "hL" in str(info.value)
    ladder = signer("buildExitLadder", facts.to_json_dict(), rates, borrower.secret.hex())
    assert [rung["fee_rate_sat_vb"] for rung in ladder["exit"]] == rates
    for rate, rung in zip(rates, ladder["exit"], strict=True):
        expected = build_exit(facts, fee_rate_sat_vb=rate)
        verified = verify_borrower_sweep_signature(facts, SpendKind.TX_EXIT, transaction=rung["tx_hex"])
        assert verified.transaction == expected.tx.without_witness()
        assert (rung["txid"], rung["fee_sats"]) == (expected.tx.txid, str(expected.fee_sats))
        shown = rung["summary"]
        assert shown["kind"] == "tx_exit" and shown["fee_sats"] == str(expected.fee_sats)
        [payout] = shown["outputs"]
        assert (payout["role"], payout["address"]) == ("payout", facts.borrower_payout_address)
        assert payout["amount_sats"] == str(expected.tx.outputs[0].value)
        # The page shows the unsigned TX_exit first (buildExit, then checkLoanTransaction): the same transaction.
        unsigned = signer("buildExit", facts.to_json_dict(), rate)
        assert unsigned["txid"] == rung["txid"]
        assert signer("checkLoanTransaction", facts.to_json_dict(), unsigned["psbt"]) == shown
    with pytest.raises(SignerError) as info:  # another key than xB: nothing signed
        signer("buildExitLadder", facts.to_json_dict(), rates, PrivateKey.from_wif(LENDER_WIF).secret.hex())
    assert info.value.reason == "wrong_signer"
    unfunded = _facts(parties, lender_hash=None, escrow_outpoint=None, escrow_sats=None)[0]
    with pytest.raises(SignerError) as info:
        signer("buildExitLadder", unfunded.to_json_dict(), rates, borrower.secret.hex())
    assert info.value.name == "SignerInputError" and "escrowOutpoint" in str(info.value)


@pytest.mark.integration
@pytest.mark.parametrize("parties", sorted(PARTIES))
def test_the_bundles_tx_exit_is_accepted_by_the_node_at_exactly_t0(
    signer: Callable[..., Any],
    btc_rpc: BitcoinRPC,
    btc_fund: Callable[..., FundedOutput],
    btc_mine: Callable[..., list[str]],
    parties: str,
) -> None:
    unfunded, borrower = _facts(
        parties,
        escrow_timelock_btc_blocks=T_0,
        collateral_timelock_btc_blocks=T_1,
        escrow_outpoint=None,
        escrow_sats=None,
    )
    escrow = btc_fund(unfunded.to_json_dict()["escrow_address"], ESCROW_SATS)
    facts = unfunded.with_escrow(OutPoint(escrow.txid, escrow.vout), escrow.sats)
    tx1_txid = build_tx1(facts, fee_rate_sat_vb=2).tx.txid
    ladders = signer("buildLadders", facts.to_json_dict(), tx1_txid, ["2"], borrower.secret.hex())
    [exit_rung] = ladders["exit"]

    btc_mine(T_0 - 2)  # the escrow has t_0 - 1 confirmations: too early (BIP-68 via OP_CSV and nSequence = t_0)
    with pytest.raises(RPCError) as info:
        btc_rpc.sendrawtransaction(exit_rung["tx_hex"])
    assert info.value.message.startswith("non-BIP68-final")
    btc_mine(1)
    assert btc_rpc.sendrawtransaction(exit_rung["tx_hex"]) == exit_rung["txid"]
    btc_mine(1)
    payout = btc_rpc.gettxout(exit_rung["txid"], 0)
    assert payout["scriptPubKey"]["address"] == facts.borrower_payout_address
    assert btc_to_sats(payout["value"]) == ESCROW_SATS - int(exit_rung["fee_sats"])
    assert btc_rpc.gettxout(escrow.txid, escrow.vout) is None


# -- tampered transactions: the same refusal as the Python check ---------------------------------------------------

OTHER = TxOut(5_000, bytes.fromhex("0014") + bytes(20))  # P2WPKH to someone else


def _tx1_outputs(tx: Transaction, *outputs: TxOut) -> Transaction:
    return replace(tx, outputs=tuple(outputs))


def _tampered_tx1(facts: LoanFacts, how: str) -> tuple[PreparedSpend, Transaction]:
    prepared = build_tx1(facts, fee_rate_sat_vb=2)
    tx = prepared.tx
    fee, collateral, change = tx.outputs
    cases = {
        "wrong_change_output": lambda: _tx1_outputs(
            tx, fee, collateral, replace(change, script_pubkey=OTHER.script_pubkey)
        ),
        "wrong_fee_output": lambda: _tx1_outputs(
            tx, replace(fee, script_pubkey=OTHER.script_pubkey), collateral, change
        ),
        "wrong_fee_amount": lambda: _tx1_outputs(
            tx, replace(fee, value=fee.value + 1), collateral, replace(change, value=change.value - 1)
        ),
        "collateral_above_cap": lambda: _tx1_outputs(
            tx,
            fee,
            replace(collateral, value=facts.collateral_cap_sats + 1),
            replace(change, value=change.value - (facts.collateral_cap_sats + 1 - collateral.value)),
        ),
        "insufficient_collateral": lambda: _tx1_outputs(
            tx, fee, replace(collateral, value=collateral.value - 1), replace(change, value=change.value + 1)
        ),
        "wrong_collateral_amount": lambda: _tx1_outputs(
            tx, fee, replace(collateral, value=collateral.value + 1), replace(change, value=change.value - 1)
        ),
        "wrong_output_count": lambda: _tx1_outputs(
            tx, fee, collateral, replace(change, value=change.value - OTHER.value), OTHER
        ),
        "fee_rate_too_high": lambda: _tx1_outputs(tx, fee, collateral, replace(change, value=change.value // 2)),
        "fee_rate_too_low": lambda: _tx1_outputs(
            tx, fee, collateral, replace(change, value=change.value + prepared.fee_sats - 100)
        ),
        "outputs_exceed_input": lambda: _tx1_outputs(tx, fee, collateral, replace(change, value=change.value + 10**6)),
        "missing_change_output": lambda: _tx1_outputs(tx, fee, collateral),
        "dust_change_output": lambda: _tx1_outputs(tx, fee, collateral, replace(change, value=100)),
        "wrong_sequence": lambda: replace(tx, inputs=(replace(tx.inputs[0], sequence=0xFFFFFFFF),)),
        "wrong_locktime": lambda: replace(tx, locktime=1),
        "wrong_version": lambda: replace(tx, version=1),
        "not_a_loan_transaction": lambda: replace(
            tx, inputs=(TxIn(outpoint=OutPoint("b2" * 32, 0), sequence=tx.inputs[0].sequence),)
        ),
    }
    return prepared, cases[how]()


TX1_TAMPERINGS = [
    "wrong_change_output",
    "wrong_fee_output",
    "wrong_fee_amount",
    "collateral_above_cap",
    "insufficient_collateral",
    "wrong_collateral_amount",
    "wrong_output_count",
    "fee_rate_too_high",
    "fee_rate_too_low",
    "outputs_exceed_input",
    "missing_change_output",
    "dust_change_output",
    "wrong_sequence",
    "wrong_locktime",
    "wrong_version",
    "not_a_loan_transaction",
]


@pytest.mark.parametrize("how", TX1_TAMPERINGS)
def test_the_bundle_refuses_a_tampered_tx1_with_the_python_reason(signer: Callable[..., Any], how: str) -> None:
    facts, borrower = _facts(max_fee_rate_sat_vb=50)
    prepared, tampered = _tampered_tx1(facts, how)
    assert _refusal(lambda: check_borrower_transaction(facts, tampered)) == how
    psbt = _psbt_b64(prepared, tampered)
    for fn, args in (("checkLoanTransaction", ()), ("signPsbt", (borrower.secret.hex(),))):
        with pytest.raises(SignerError) as info:
            signer(fn, facts.to_json_dict(), psbt, *args)
        assert info.value.reason == how, str(info.value)


def _sweep_cases(facts: LoanFacts) -> dict[str, tuple[PreparedSpend, Transaction, str | None]]:
    tx1_txid = build_tx1(facts, fee_rate_sat_vb=2).tx.txid
    release = build_release(facts, tx1_txid=tx1_txid, fee_rate_sat_vb=2)
    exit_ = build_exit(facts, fee_rate_sat_vb=2)
    [payout] = release.tx.outputs
    [exit_payout] = exit_.tx.outputs
    other_payout = TxOut(payout.value, bytes.fromhex("0014") + bytes(20))
    return {
        "release-wrong_payout_output": (release, replace(release.tx, outputs=(other_payout,)), tx1_txid),
        "exit-wrong_payout_output": (
            exit_,
            replace(exit_.tx, outputs=(replace(exit_payout, script_pubkey=other_payout.script_pubkey),)),
            None,
        ),
        "release-fee_rate_too_high": (
            release,
            replace(release.tx, outputs=(replace(payout, value=400_000),)),
            tx1_txid,
        ),
        "release-wrong_output_count": (
            release,
            replace(release.tx, outputs=(replace(payout, value=payout.value - 5_000), OTHER)),
            tx1_txid,
        ),
        "release-dust_payout_output": (release, replace(release.tx, outputs=(replace(payout, value=10),)), tx1_txid),
        "release-wrong_outpoint": (release, release.tx, "c3" * 32),
    }


@pytest.mark.parametrize(
    "case",
    [
        "release-wrong_payout_output",
        "exit-wrong_payout_output",
        "release-fee_rate_too_high",
        "release-wrong_output_count",
        "release-dust_payout_output",
        "release-wrong_outpoint",
    ],
)
def test_the_bundle_refuses_a_tampered_sweep_with_the_python_reason(signer: Callable[..., Any], case: str) -> None:
    facts, borrower = _facts(max_fee_rate_sat_vb=50)
    prepared, tampered, tx1_txid = _sweep_cases(facts)[case]
    reason = case.split("-", 1)[1]
    assert _refusal(lambda: check_borrower_transaction(facts, tampered, tx1_txid=tx1_txid)) == reason
    psbt = _psbt_b64(prepared, tampered)
    for fn, args in (("checkLoanTransaction", ()), ("signPsbt", (borrower.secret.hex(),))):
        with pytest.raises(SignerError) as info:
            signer(fn, facts.to_json_dict(), psbt, *args, {"tx1Txid": tx1_txid})
        assert info.value.reason == reason, str(info.value)


def test_the_bundle_refuses_a_psbt_that_lies_about_the_escrow(signer: Callable[..., Any]) -> None:
    facts, borrower = _facts()
    prepared = build_tx1(facts, fee_rate_sat_vb=2)
    psbt = create_psbt(replace(prepared, prevout=TxOut(prepared.prevout.value + 1, prepared.prevout.script_pubkey)))
    assert _refusal(lambda: check_borrower_transaction(facts, prepared.tx, psbt.witness_utxo(0))) == (
        "witness_utxo_mismatch"
    )
    with pytest.raises(SignerError) as info:
        signer("signPsbt", facts.to_json_dict(), psbt.to_base64(), borrower.secret.hex())
    assert info.value.reason == "witness_utxo_mismatch"
    with pytest.raises(SignerError) as info:
        signer("checkLoanTransaction", facts.to_json_dict(), base64.b64encode(b"not a psbt").decode())
    assert info.value.reason == "malformed_psbt"


def test_the_bundle_refuses_a_psbt_asking_for_another_sighash_type(signer: Callable[..., Any]) -> None:
    facts, borrower = _facts()
    psbt = create_psbt(build_tx1(facts, fee_rate_sat_vb=2))
    psbt.inputs[0][bytes([PSBT_IN_SIGHASH_TYPE])] = (1).to_bytes(4, "little")  # SIGHASH_ALL
    assert _refusal(lambda: verify_borrower_presignature(facts, psbt=psbt.to_base64())) == "wrong_sighash_type"
    with pytest.raises(SignerError) as info:
        signer("signPsbt", facts.to_json_dict(), psbt.to_base64(), borrower.secret.hex())
    assert info.value.reason == "wrong_sighash_type"


def test_the_summary_names_every_output_with_its_address(signer: Callable[..., Any]) -> None:
    facts, _ = _facts()
    prepared = build_tx1(facts, fee_rate_sat_vb=2)
    summary = signer("checkLoanTransaction", facts.to_json_dict(), _psbt_b64(prepared))
    assert [(o["role"], o["address"]) for o in summary["outputs"]] == [
        ("origination_fee", REGTEST_P2WPKH),
        ("collateral", facts.collateral.address("regtest")),
        ("change", facts.borrower_payout_address),
    ]
    assert summary["fee_sats"] == str(prepared.fee_sats)
    assert summary["vsize"] == prepared.final_vsize
    assert summary["input_sats"] == str(facts.escrow_sats)


# -- the bundle is what the source and the lock file produce ----------------------------------------------------------


def _build_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(root / "frontend" / "build.js"), "--check"], capture_output=True, text=True, timeout=120
    )


def test_build_check_passes_on_the_committed_bundle_and_fails_when_it_or_the_source_is_edited(tmp_path: Path) -> None:
    assert _build_check(REPO_ROOT).returncode == 0
    # A copy of the build's inputs, so editing them never touches the checkout other tests read.
    shutil.copytree(REPO_ROOT / "frontend", tmp_path / "frontend")
    shutil.copyfile(REPO_ROOT / "package.json", tmp_path / "package.json")
    (tmp_path / "static" / "loans" / "vendor").mkdir(parents=True)
    bundle = tmp_path / "static" / "loans" / "vendor" / "signer.js"
    shutil.copyfile(BUNDLE, bundle)
    (tmp_path / "node_modules").symlink_to(REPO_ROOT / "node_modules")
    assert _build_check(tmp_path).returncode == 0

    text = bundle.read_text()
    assert "var SEQUENCE_RBF_NO_LOCK = 4294967293;" in text
    bundle.write_text(text.replace("var SEQUENCE_RBF_NO_LOCK = 4294967293;", "var SEQUENCE_RBF_NO_LOCK = 4294967295;"))
    edited = _build_check(tmp_path)
    assert edited.returncode == 1
    assert "differs from a fresh build" in edited.stderr

    shutil.copyfile(BUNDLE, bundle)
    source = tmp_path / "frontend" / "signer" / "index.js"
    source.write_text(source.read_text() + "\nexport const extra = 1;\n")
    assert _build_check(tmp_path).returncode == 1
