"""``python -m bitcoin`` run as a subprocess with a clean environment (no Django settings, no database).

Everything a loan's transactions depend on comes from its loan file (``LoanFacts.to_json``). The borrower's
signer refuses anything that is not this loan's TX_1, TX_exit or TX_release paying exactly what the loan says
(PROTOCOL.md attack 16; attack 15 for the collateral cap): each refusal below names its reason code and leaves
nothing signed behind.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import pytest

from bitcoin.addresses import address_to_script_pubkey, encode_segwit_address
from bitcoin.consensus import verify_input
from bitcoin.descriptors import descriptor_checksum
from bitcoin.encoding import sha256
from bitcoin.keys import PrivateKey
from bitcoin.loan import LoanFacts
from bitcoin.presignature import verify_borrower_presignature
from bitcoin.psbt import PSBT_IN_TAP_BIP32_DERIVATION, Psbt, create_psbt
from bitcoin.scripts import tap_leaf_hash
from bitcoin.tests.loan_vectors import (
    BORROWER_HASH,
    BORROWER_PREIMAGE,
    BORROWER_WIF,
    BORROWER_XONLY,
    COLLATERAL_ADDRESS_REGTEST,
    COLLATERAL_DESCRIPTOR_CHECKSUM,
    ESCROW_ADDRESS_REGTEST,
    ESCROW_DESCRIPTOR_CHECKSUM,
    LENDER_HASH,
    LENDER_PREIMAGE,
    LENDER_WIF,
    LENDER_XONLY,
    ODD_Y_SECRET,
    borrower_key,
    lender_key,
    vector_facts,
)
from bitcoin.transactions import (
    SEQUENCE_RBF_NO_LOCK,
    OutPoint,
    PreparedSpend,
    Transaction,
    TxOut,
    build_exit,
    build_release,
    build_tx1,
    finalize_tx1,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# PROTOCOL.md, "Bitcoin outputs" and "Test vector", written out here rather than derived with the library.
H = "50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0"
ESCROW_DESCRIPTOR = (
    f"tr({H},{{and_v(v:pk({BORROWER_XONLY}),older(100)),"
    f"and_v(v:sha256({BORROWER_HASH}),multi_a(2,{LENDER_XONLY},{BORROWER_XONLY}))}})#{ESCROW_DESCRIPTOR_CHECKSUM}"
)
COLLATERAL_DESCRIPTOR = (
    f"tr({H},{{and_v(v:pk({LENDER_XONLY}),older(30000)),"
    f"and_v(v:sha256({LENDER_HASH}),pk({BORROWER_XONLY}))}})#{COLLATERAL_DESCRIPTOR_CHECKSUM}"
)
# <xB> OP_CHECKSIGVERIFY <100> OP_CSV; OP_SIZE <32> OP_EQUALVERIFY OP_SHA256 <hB> OP_EQUALVERIFY <xL> OP_CHECKSIG
# <xB> OP_CHECKSIGADD OP_2 OP_NUMEQUAL; <xL> OP_CHECKSIGVERIFY <30000> OP_CSV; ... <hL> OP_EQUALVERIFY <xB> OP_CHECKSIG
ESCROW_LEAVES = [
    f"20{BORROWER_XONLY}ad0164b2",
    f"82012088a820{BORROWER_HASH}8820{LENDER_XONLY}ac20{BORROWER_XONLY}ba529c",
]
COLLATERAL_LEAVES = [f"20{LENDER_XONLY}ad023075b2", f"82012088a820{LENDER_HASH}8820{BORROWER_XONLY}ac"]

VECTOR_ARGS = [
    *("--borrower-pubkey", BORROWER_XONLY),
    *("--lender-pubkey", LENDER_XONLY),
    *("--borrower-hash", BORROWER_HASH),
    *("--lender-hash", LENDER_HASH),
    *("--escrow-timelock", "100"),
    *("--collateral-timelock", "30000"),
]

FACTS = vector_facts()
TX1 = build_tx1(FACTS, fee_rate_sat_vb=2)
TX1_TXID = TX1.tx.txid
#: A standard regtest P2WPKH address nobody in the loan chose.
STRANGER = encode_segwit_address("regtest", 0, sha256(b"a stranger")[:20])
STRANGER_SCRIPT = address_to_script_pubkey(STRANGER, "regtest")


def run_cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """Run the CLI with only PATH set: no DJANGO_SETTINGS_MODULE, no PYTHONPATH, no database URL."""
    return subprocess.run(
        [sys.executable, "-m", "bitcoin", *args],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def _assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str, status: int = 1) -> None:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def _assert_refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    _assert_one_line_error(result, f"error: refused ({reason}): ")


@dataclass(frozen=True)
class Files:
    """A loan file, B's key file and a directory for PSBTs."""

    directory: Path
    loan: Path
    key: Path

    def psbt(self, name: str, prepared_or_psbt: PreparedSpend | Psbt) -> Path:
        """Write a PSBT (base64) of ``prepared_or_psbt`` to ``name``."""
        psbt = prepared_or_psbt if isinstance(prepared_or_psbt, Psbt) else create_psbt(prepared_or_psbt)
        path = self.directory / name
        path.write_text(psbt.to_base64() + "\n")
        return path

    def loan_file(self, name: str, facts: LoanFacts) -> Path:
        path = self.directory / name
        path.write_text(facts.to_json())
        return path


@pytest.fixture
def files(tmp_path: Path) -> Files:
    loan = tmp_path / "loan.json"
    loan.write_text(FACTS.to_json())
    key = tmp_path / "borrower.key"
    key.write_text(BORROWER_WIF + "\n")
    return Files(tmp_path, loan, key)


def _with_outputs(prepared: PreparedSpend, *outputs: TxOut) -> PreparedSpend:
    return replace(prepared, tx=replace(prepared.tx, outputs=outputs))


def _signature(psbt: Psbt, prepared: PreparedSpend) -> bytes:
    """B's signature in ``psbt`` for ``prepared``'s leaf, checked to verify over exactly ``prepared``."""
    signature = psbt.tap_script_sigs(0)[(borrower_key().xonly_pubkey, prepared.leaf_hash)]
    assert prepared.verify_signature(borrower_key().xonly_pubkey, signature)
    return signature


# -- addresses ---------------------------------------------------------------------------------------------------


def _assert_protocol_vector(output: dict) -> None:
    assert output["network"] == "regtest"
    assert output["escrow_address"] == output["escrow"]["address"] == ESCROW_ADDRESS_REGTEST
    assert output["collateral_address"] == output["collateral"]["address"] == COLLATERAL_ADDRESS_REGTEST
    assert output["escrow_descriptor"] == output["escrow"]["descriptor"] == ESCROW_DESCRIPTOR
    assert output["collateral_descriptor"] == output["collateral"]["descriptor"] == COLLATERAL_DESCRIPTOR
    for name, address, leaves in (
        ("escrow", ESCROW_ADDRESS_REGTEST, ESCROW_LEAVES),
        ("collateral", COLLATERAL_ADDRESS_REGTEST, COLLATERAL_LEAVES),
    ):
        item = output[name]
        assert item["internal_key"] == H
        assert item["leaves"] == leaves
        leaf_hashes = [tap_leaf_hash(bytes.fromhex(leaf)).hex() for leaf in leaves]
        assert item["leaf_hashes"] == leaf_hashes
        assert item["script_pubkey"] == "5120" + item["output_key"]
        assert address_to_script_pubkey(address, "regtest").hex() == item["script_pubkey"]
        watch = f"rawtr({item['output_key']})"
        assert item["watch_descriptor"] == f"{watch}#{descriptor_checksum(watch)}"
        for index, control in enumerate(item["control_blocks"]):
            # (0xc0 | parity of Q) || x(H) || hash of the sibling leaf
            assert control[:2] in ("c0", "c1")
            assert control[2:] == H + leaf_hashes[1 - index]


def test_addresses_print_the_protocol_vector_from_the_six_facts() -> None:
    output = json.loads(_ok(run_cli("addresses", "--network", "regtest", *VECTOR_ARGS)))
    _assert_protocol_vector(output)


def test_addresses_print_the_protocol_vector_from_a_loan_file(files: Files) -> None:
    from_file = json.loads(_ok(run_cli("addresses", "--loan", str(files.loan))))
    _assert_protocol_vector(from_file)
    assert from_file == json.loads(_ok(run_cli("addresses", "--network", "regtest", *VECTOR_ARGS)))
    # The loan file carries the same addresses and descriptors.
    loan = json.loads(files.loan.read_text())
    assert loan["escrow_address"] == ESCROW_ADDRESS_REGTEST
    assert loan["escrow_descriptor"] == ESCROW_DESCRIPTOR
    assert loan["collateral_address"] == COLLATERAL_ADDRESS_REGTEST
    assert loan["collateral_descriptor"] == COLLATERAL_DESCRIPTOR


def test_addresses_of_a_loan_file_before_hl_and_the_escrow_exist(files: Files) -> None:
    early = files.loan_file("early.json", vector_facts(lender_hash=None, escrow_outpoint=None, escrow_sats=None))
    output = json.loads(_ok(run_cli("addresses", "--loan", str(early))))
    assert output["escrow_address"] == ESCROW_ADDRESS_REGTEST
    assert output["escrow_descriptor"] == ESCROW_DESCRIPTOR
    assert "collateral" not in output
    assert "collateral_address" not in output
    # No transaction can be built yet, and the tool says which facts are missing.
    _assert_one_line_error(run_cli("build-tx1", "--loan", str(early), "--fee-rate", "2"), "escrow_outpoint")
    _assert_one_line_error(run_cli("build-exit", "--loan", str(early), "--fee-rate", "2"), "escrow_outpoint")


def test_a_loan_file_whose_addresses_disagree_with_its_facts_is_refused(files: Files) -> None:
    data = json.loads(files.loan.read_text())
    data["escrow_address"] = COLLATERAL_ADDRESS_REGTEST
    files.loan.write_text(json.dumps(data))
    _assert_one_line_error(run_cli("addresses", "--loan", str(files.loan)), "do not match its facts")
    _assert_one_line_error(run_cli("build-tx1", "--loan", str(files.loan), "--fee-rate", "2"), "do not match")
    files.loan.write_text("{not json")
    _assert_one_line_error(run_cli("addresses", "--loan", str(files.loan)), "not valid JSON")
    _assert_one_line_error(run_cli("addresses", "--loan", str(files.directory / "missing.json")), "cannot read")


def test_addresses_on_mainnet() -> None:
    output = json.loads(_ok(run_cli("addresses", "--network", "mainnet", *VECTOR_ARGS)))
    assert output["escrow_address"].startswith("bc1p")
    assert output["escrow_descriptor"] == ESCROW_DESCRIPTOR  # descriptors do not depend on the network
    regtest = json.loads(_ok(run_cli("addresses", "--network", "regtest", *VECTOR_ARGS)))
    assert output["escrow"]["script_pubkey"] == regtest["escrow"]["script_pubkey"]


def test_bad_input_gives_one_line_error() -> None:
    bad_key = list(VECTOR_ARGS)
    bad_key[1] = "00" * 32
    _assert_one_line_error(run_cli("addresses", "--network", "regtest", *bad_key), "not the X coordinate")
    bad_timelock = [*VECTOR_ARGS[:-1], "70000"]
    _assert_one_line_error(run_cli("addresses", "--network", "regtest", *bad_timelock), "between 1 and 65535")
    _assert_one_line_error(run_cli("addresses", "--network", "litecoin", *VECTOR_ARGS), "invalid choice", 2)
    _assert_one_line_error(run_cli("addresses", "--network", "regtest"), "missing --borrower-pubkey")
    _assert_one_line_error(run_cli("addresses", *VECTOR_ARGS), "missing --network")
    _assert_one_line_error(run_cli("sign"), "required", 2)
    _assert_one_line_error(run_cli(), "required", 2)


def test_preimage_is_fresh_and_hashes() -> None:
    first = json.loads(_ok(run_cli("preimage")))
    second = json.loads(_ok(run_cli("preimage")))
    assert len(bytes.fromhex(first["preimage"])) == 32
    assert sha256(bytes.fromhex(first["preimage"])).hex() == first["hash"]
    assert first["preimage"] != second["preimage"]


# -- building ----------------------------------------------------------------------------------------------------


def _assert_derivations(psbt: Psbt, prepared: PreparedSpend) -> None:
    """Every signer named with the spent leaf (what BDK needs to find it): fingerprint hash160(x)[:4], no path."""
    derivations = psbt.tap_key_leaf_hashes(0)
    assert derivations == {signer: [prepared.leaf_hash] for signer in prepared.signers}


def test_build_tx1_from_a_loan_file(files: Files) -> None:
    psbt = Psbt.from_base64(_ok(run_cli("build-tx1", "--loan", str(files.loan), "--fee-rate", "2")))
    assert psbt.unsigned_tx == TX1.tx
    fee, collateral, change = psbt.unsigned_tx.outputs
    assert fee == TxOut(10_000, FACTS.lender_payout_script)
    assert collateral == TxOut(1_000_000, FACTS.collateral.script_pubkey)
    assert change.script_pubkey == FACTS.borrower_payout_script
    assert change.value == 1_200_000 - 10_000 - 1_000_000 - TX1.fee_sats
    assert psbt.unsigned_tx.inputs[0].outpoint == FACTS.escrow_outpoint
    assert psbt.unsigned_tx.inputs[0].sequence == SEQUENCE_RBF_NO_LOCK
    assert psbt.witness_utxo(0) == TxOut(1_200_000, FACTS.escrow.script_pubkey)
    _assert_derivations(psbt, TX1)
    assert psbt.tap_script_sigs(0) == {}

    out = files.directory / "tx1.psbt"
    summary = json.loads(_ok(run_cli("build-tx1", "--loan", str(files.loan), "--fee-rate", "2", "--output", str(out))))
    assert summary == {"txid": TX1_TXID, "output": str(out)}
    assert Psbt.from_base64(out.read_text()).unsigned_tx == TX1.tx


def test_build_exit_and_release_from_a_loan_file(files: Files) -> None:
    exit_psbt = Psbt.from_base64(_ok(run_cli("build-exit", "--loan", str(files.loan), "--fee-rate", "3")))
    expected_exit = build_exit(FACTS, fee_rate_sat_vb=3)
    assert exit_psbt.unsigned_tx == expected_exit.tx
    assert exit_psbt.unsigned_tx.inputs[0].sequence == 100
    [payout] = exit_psbt.unsigned_tx.outputs
    assert payout == TxOut(1_200_000 - expected_exit.fee_sats, FACTS.borrower_payout_script)
    _assert_derivations(exit_psbt, expected_exit)

    release_args = ["build-release", "--loan", str(files.loan), "--fee-rate", "3", "--tx1-txid", TX1_TXID]
    release_psbt = Psbt.from_base64(_ok(run_cli(*release_args)))
    expected_release = build_release(FACTS, tx1_txid=TX1_TXID, fee_rate_sat_vb=3)
    assert release_psbt.unsigned_tx == expected_release.tx
    assert release_psbt.unsigned_tx.inputs[0].outpoint == OutPoint(TX1_TXID, 1)
    assert release_psbt.unsigned_tx.inputs[0].sequence == SEQUENCE_RBF_NO_LOCK
    assert release_psbt.unsigned_tx.outputs[0].script_pubkey == FACTS.borrower_payout_script
    assert release_psbt.witness_utxo(0) == TxOut(1_000_000, FACTS.collateral.script_pubkey)
    assert release_psbt.sha256_preimages(0) == {}
    _assert_derivations(release_psbt, expected_release)

    with_pl = Psbt.from_base64(_ok(run_cli(*release_args, "--lender-preimage", LENDER_PREIMAGE.hex())))
    assert with_pl.sha256_preimages(0) == {bytes.fromhex(LENDER_HASH): LENDER_PREIMAGE}


def test_build_release_refuses_a_wrong_lender_preimage(files: Files) -> None:
    args = ["build-release", "--loan", str(files.loan), "--fee-rate", "3", "--tx1-txid", TX1_TXID]
    out = files.directory / "release.psbt"
    for wrong in (BORROWER_PREIMAGE.hex(), "00" * 32):
        _assert_one_line_error(
            run_cli(*args, "--lender-preimage", wrong, "--output", str(out)), "does not hash to the loan's hL"
        )
    _assert_one_line_error(run_cli(*args, "--lender-preimage", "abcd"), "64 hex characters")
    assert not out.exists()


def test_build_refuses_fee_rates_outside_the_loans_bounds(files: Files) -> None:
    _assert_one_line_error(run_cli("build-exit", "--loan", str(files.loan), "--fee-rate", "101"), "outside")
    _assert_one_line_error(run_cli("build-tx1", "--loan", str(files.loan), "--fee-rate", "0.5"), "outside")
    _assert_one_line_error(run_cli("build-tx1", "--loan", str(files.loan), "--fee-rate", "fast"), "fee rate")


# -- signing what the loan says ----------------------------------------------------------------------------------


def _sign(files: Files, psbt: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("sign", "--psbt", str(psbt), "--key-file", str(files.key), "--loan", str(files.loan), *extra)


def test_sign_a_correct_tx1_prints_the_summary_and_lender_completes_it(files: Files) -> None:
    unsigned = files.psbt("tx1.psbt", TX1)
    out = files.directory / "signed.psbt"
    result = _sign(files, unsigned, "--output", str(out))
    reply = json.loads(_ok(result))
    assert reply["checked_against_loan"] is True
    assert reply["output"] == str(out)
    summary = reply["summary"]
    assert summary["transaction"] == "tx_1"
    assert summary["fee_sats"] == TX1.fee_sats
    assert 2 <= Decimal(summary["fee_rate_sat_vb"]) < Decimal("2.01")
    assert summary["inputs"] == [
        {"outpoint": str(FACTS.escrow_outpoint), "sats": 1_200_000, "spends": "the loan's escrow"}
    ]
    assert [(item["sats"], item["pays"]) for item in summary["outputs"]] == [
        (10_000, "the lender's payout address"),
        (1_000_000, "the loan's collateral output"),
        (TX1.tx.outputs[2].value, "your payout address"),
    ]
    assert [item["address"] for item in summary["outputs"]] == [
        FACTS.lender_payout_address,
        COLLATERAL_ADDRESS_REGTEST,
        FACTS.borrower_payout_address,
    ]
    # The same summary, for a person, on stderr.
    stderr = result.stderr.splitlines()
    assert stderr[0] == "signing tx_1"
    assert f"  input  {FACTS.escrow_outpoint}  1200000 sat  (the loan's escrow)" in stderr
    assert f"  output {FACTS.lender_payout_address}  10000 sat  (the lender's payout address)" in stderr
    assert f"  output {COLLATERAL_ADDRESS_REGTEST}  1000000 sat  (the loan's collateral output)" in stderr
    assert f"  output {FACTS.borrower_payout_address}  {TX1.tx.outputs[2].value} sat  (your payout address)" in stderr
    assert stderr[-1].startswith(f"  miner fee {TX1.fee_sats} sat (")

    signed = Psbt.from_base64(out.read_text())
    assert signed.unsigned_tx == TX1.tx
    _signature(signed, TX1)
    # The lender's full verification accepts it, and L can complete TX_1 (Bitcoin Core's interpreter agrees).
    verified = verify_borrower_presignature(FACTS, psbt=out.read_text())
    tx = finalize_tx1(
        verified.prepared,
        borrower_signature=verified.borrower_signature,
        lender_signature=verified.prepared.sign(lender_key()),
        borrower_preimage=BORROWER_PREIMAGE,
    )
    verify_input(tx, 0, [verified.prepared.prevout])

    # Printed on stdout without --output.
    on_stdout = Psbt.from_base64(_ok(_sign(files, unsigned)))
    _signature(on_stdout, TX1)


def test_sign_keeps_the_lenders_valid_signature_and_drops_forged_ones(files: Files) -> None:
    psbt = create_psbt(TX1)
    psbt.add_tap_script_sig(0, lender_key().xonly_pubkey, TX1.leaf_hash, TX1.sign(lender_key()))
    psbt.add_tap_script_sig(0, bytes.fromhex(LENDER_XONLY), FACTS.escrow.leaf_hash(0), b"\x01" * 64)
    signed = Psbt.from_base64(_ok(_sign(files, files.psbt("tx1.psbt", psbt))))
    assert set(signed.tap_script_sigs(0)) == {
        (lender_key().xonly_pubkey, TX1.leaf_hash),
        (borrower_key().xonly_pubkey, TX1.leaf_hash),
    }


def test_sign_a_correct_tx_exit(files: Files) -> None:
    prepared = build_exit(FACTS, fee_rate_sat_vb=5)
    result = _sign(files, files.psbt("exit.psbt", prepared))
    signed = Psbt.from_base64(_ok(result))
    _signature(signed, prepared)
    assert result.stderr.splitlines()[0] == "signing tx_exit"
    assert f"  output {FACTS.borrower_payout_address}  {prepared.tx.outputs[0].value} sat  (your payout address)" in (
        result.stderr.splitlines()
    )


def test_sign_a_correct_tx_release(files: Files) -> None:
    prepared = build_release(FACTS, tx1_txid=TX1_TXID, fee_rate_sat_vb=2)
    psbt = create_psbt(prepared)
    psbt.add_sha256_preimage(0, LENDER_PREIMAGE)
    path = files.psbt("release.psbt", psbt)
    for extra in ([], ["--tx1-txid", TX1_TXID]):
        result = _sign(files, path, *extra)
        signed = Psbt.from_base64(_ok(result))
        _signature(signed, prepared)
        assert signed.sha256_preimages(0) == {bytes.fromhex(LENDER_HASH): LENDER_PREIMAGE}
        stderr = result.stderr.splitlines()
        assert stderr[0] == "signing tx_release"
        assert f"  input  {TX1_TXID}:1  1000000 sat  (the loan's collateral output)" in stderr


def test_sign_with_an_odd_y_borrower_key(files: Files) -> None:
    """BIP-340 signing negates an odd-Y key: the CLI's signature verifies for its x-only key."""
    borrower = PrivateKey.from_hex(ODD_Y_SECRET)
    assert borrower.has_odd_y
    facts = vector_facts(borrower=borrower)
    loan = files.loan_file("odd.json", facts)
    files.key.write_text(ODD_Y_SECRET.lower())
    tx1 = build_tx1(facts, fee_rate_sat_vb=2)
    for prepared in (
        tx1,
        build_exit(facts, fee_rate_sat_vb=2),
        build_release(facts, tx1_txid=tx1.tx.txid, fee_rate_sat_vb=2),
    ):
        path = files.psbt("odd.psbt", prepared)
        result = run_cli("sign", "--psbt", str(path), "--key-file", str(files.key), "--loan", str(loan))
        signed = Psbt.from_base64(_ok(result))
        signature = signed.tap_script_sigs(0)[(borrower.xonly_pubkey, prepared.leaf_hash)]
        assert prepared.verify_signature(borrower.xonly_pubkey, signature)
        if prepared is tx1:
            assert verify_borrower_presignature(facts, psbt=signed).borrower_signature == signature


def test_sign_refuses_a_key_that_is_not_the_borrowers(files: Files) -> None:
    files.key.write_text(LENDER_WIF)
    out = files.directory / "signed.psbt"
    _assert_one_line_error(_sign(files, files.psbt("tx1.psbt", TX1), "--output", str(out)), "not the loan's borrower")
    assert not out.exists()


# -- refusing what the loan does not say (attacks 15 and 16) ---------------------------------------------------


def _tx1_with_collateral(value: int) -> PreparedSpend:
    fee, collateral, change = TX1.tx.outputs
    moved = value - collateral.value
    return _with_outputs(TX1, fee, replace(collateral, value=value), replace(change, value=change.value - moved))


def _exit(rate: int = 2) -> PreparedSpend:
    return build_exit(FACTS, fee_rate_sat_vb=rate)


def _release(rate: int = 2) -> PreparedSpend:
    return build_release(FACTS, tx1_txid=TX1_TXID, fee_rate_sat_vb=rate)


OTHER_LOAN = vector_facts(
    borrower_hash=sha256(b"another loan's pB"),
    lender_hash=sha256(b"another loan's pL"),
    escrow_outpoint=OutPoint("b2" * 32, 0),
)
OTHER_TX1 = build_tx1(OTHER_LOAN, fee_rate_sat_vb=2)


@dataclass(frozen=True)
class Malicious:
    """A PSBT a server might send, the facts of the borrower's own loan, and the reason the signer gives."""

    psbt: Callable[[], Psbt]
    reason: str
    facts: LoanFacts = FACTS
    extra: tuple[str, ...] = ()


MALICIOUS = {
    # Attack 16: TX_exit and TX_release pay only B.
    "tx_exit_paying_a_stranger": Malicious(
        lambda: create_psbt(_with_outputs(_exit(), TxOut(_exit().tx.outputs[0].value, STRANGER_SCRIPT))),
        "wrong_payout_output",
    ),
    "tx_exit_paying_b_and_a_stranger": Malicious(
        lambda: create_psbt(
            _with_outputs(_exit(), TxOut(600_000, FACTS.borrower_payout_script), TxOut(590_000, STRANGER_SCRIPT))
        ),
        "wrong_output_count",
    ),
    "tx_release_paying_the_lender": Malicious(
        lambda: create_psbt(
            _with_outputs(_release(), TxOut(_release().tx.outputs[0].value, FACTS.lender_payout_script))
        ),
        "wrong_payout_output",
        extra=("--tx1-txid", TX1_TXID),
    ),
    "tx_release_paying_the_lender_without_tx1_txid": Malicious(
        lambda: create_psbt(
            _with_outputs(_release(), TxOut(_release().tx.outputs[0].value, FACTS.lender_payout_script))
        ),
        "wrong_payout_output",
    ),
    "tx_exit_giving_the_miner_most_of_it": Malicious(
        lambda: create_psbt(_with_outputs(_exit(), TxOut(100_000, FACTS.borrower_payout_script))),
        "fee_rate_too_high",
    ),
    "tx_exit_whose_psbt_understates_the_escrow": Malicious(
        # The server hides a 1.1 M sat fee by claiming the escrow holds less than the chain (and the loan) says.
        lambda: create_psbt(
            replace(
                _with_outputs(_exit(), TxOut(100_000, FACTS.borrower_payout_script)),
                prevout=TxOut(100_400, FACTS.escrow.script_pubkey),
            )
        ),
        "witness_utxo_mismatch",
    ),
    "tx_release_of_another_tx1": Malicious(
        lambda: create_psbt(build_release(FACTS, tx1_txid="cd" * 32, fee_rate_sat_vb=2)),
        "wrong_outpoint",
        extra=("--tx1-txid", TX1_TXID),
    ),
    # Attack 15: the collateral is exactly amount x ratio, never above repayment + bond.
    "tx1_collateral_above_the_cap": Malicious(
        lambda: create_psbt(_tx1_with_collateral(FACTS.collateral_cap_sats + 1)), "collateral_above_cap"
    ),
    "tx1_collateral_below_the_cap_but_above_the_loans": Malicious(
        lambda: create_psbt(_tx1_with_collateral(FACTS.collateral_sats + 1)), "wrong_collateral_amount"
    ),
    "tx1_collateral_below_the_required": Malicious(
        lambda: create_psbt(_tx1_with_collateral(FACTS.collateral_sats - 1)), "insufficient_collateral"
    ),
    "tx1_without_its_change_output": Malicious(
        lambda: create_psbt(_with_outputs(TX1, *TX1.tx.outputs[:2])), "missing_change_output"
    ),
    "tx1_change_to_a_stranger": Malicious(
        lambda: create_psbt(
            _with_outputs(TX1, *TX1.tx.outputs[:2], replace(TX1.tx.outputs[2], script_pubkey=STRANGER_SCRIPT))
        ),
        "wrong_change_output",
    ),
    "tx1_collateral_to_a_stranger": Malicious(
        lambda: create_psbt(
            _with_outputs(
                TX1, TX1.tx.outputs[0], replace(TX1.tx.outputs[1], script_pubkey=STRANGER_SCRIPT), TX1.tx.outputs[2]
            )
        ),
        "wrong_collateral_output",
    ),
    "tx1_with_a_bigger_origination_fee": Malicious(
        lambda: create_psbt(
            _with_outputs(
                TX1,
                replace(TX1.tx.outputs[0], value=20_000),
                TX1.tx.outputs[1],
                replace(TX1.tx.outputs[2], value=TX1.tx.outputs[2].value - 10_000),
            )
        ),
        "wrong_fee_amount",
    ),
    "tx1_with_a_sub_dust_origination_fee": Malicious(
        # The loan's fee is 2 bps of 0.01 BTC = 200 sat, below P2WPKH's 294 sat dust: no TX_1 may carry it.
        lambda: create_psbt(
            _with_outputs(
                TX1,
                replace(TX1.tx.outputs[0], value=200),
                TX1.tx.outputs[1],
                replace(TX1.tx.outputs[2], value=TX1.tx.outputs[2].value + 9_800),
            )
        ),
        "dust_fee_output",
        facts=vector_facts(origination_fee_bps=2),
    ),
    "tx1_with_a_sub_dust_origination_fee_under_a_normal_loan": Malicious(
        lambda: create_psbt(
            _with_outputs(
                TX1,
                replace(TX1.tx.outputs[0], value=200),
                TX1.tx.outputs[1],
                replace(TX1.tx.outputs[2], value=TX1.tx.outputs[2].value + 9_800),
            )
        ),
        "wrong_fee_amount",
    ),
    "tx1_origination_fee_to_a_stranger": Malicious(
        lambda: create_psbt(
            _with_outputs(TX1, replace(TX1.tx.outputs[0], script_pubkey=STRANGER_SCRIPT), *TX1.tx.outputs[1:])
        ),
        "wrong_fee_output",
    ),
    # A PSBT of another loan: its escrow, its collateral output, its TX_1.
    "tx1_of_another_loan": Malicious(lambda: create_psbt(OTHER_TX1), "not_a_loan_transaction"),
    "tx_exit_of_another_loan_on_this_escrow": Malicious(
        # Same outpoint, another loan's escrow script: the PSBT's witness UTXO gives it away.
        lambda: create_psbt(build_exit(replace(OTHER_LOAN, escrow_outpoint=FACTS.escrow_outpoint), fee_rate_sat_vb=2)),
        "witness_utxo_mismatch",
    ),
    "tx_release_of_another_loan": Malicious(
        lambda: create_psbt(build_release(OTHER_LOAN, tx1_txid=OTHER_TX1.tx.txid, fee_rate_sat_vb=2)),
        "witness_utxo_mismatch",
    ),
    "tx_release_of_another_loan_given_our_tx1": Malicious(
        lambda: create_psbt(build_release(OTHER_LOAN, tx1_txid=OTHER_TX1.tx.txid, fee_rate_sat_vb=2)),
        "wrong_outpoint",
        extra=("--tx1-txid", TX1_TXID),
    ),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_sign_refuses_what_the_loan_does_not_say(files: Files, case: str) -> None:
    malicious = MALICIOUS[case]
    loan = files.loan_file("own-loan.json", malicious.facts)
    path = files.psbt("malicious.psbt", malicious.psbt())
    out = files.directory / "signed.psbt"
    result = run_cli(
        "sign",
        *("--psbt", str(path), "--key-file", str(files.key), "--loan", str(loan), "--output", str(out)),
        *malicious.extra,
    )
    _assert_refused(result, malicious.reason)
    assert not out.exists()
    # Not printed either (stdout is empty), and the same PSBT is refused on stdout mode too.
    _assert_refused(
        run_cli("sign", "--psbt", str(path), "--key-file", str(files.key), "--loan", str(loan), *malicious.extra),
        malicious.reason,
    )


def test_the_honest_counterparts_of_the_malicious_psbts_are_signed(files: Files) -> None:
    """The refusals above are about the outputs, not about the way the PSBTs were made."""
    for prepared in (TX1, _exit(), _release(), _tx1_with_collateral(FACTS.collateral_sats)):
        _ok(_sign(files, files.psbt("honest.psbt", create_psbt(prepared)), "--tx1-txid", TX1_TXID))


# -- without a loan file -----------------------------------------------------------------------------------------


def test_sign_without_a_loan_file_refuses_unless_unchecked(files: Files) -> None:
    stranger_exit = _with_outputs(_exit(), TxOut(_exit().tx.outputs[0].value, STRANGER_SCRIPT))
    path = files.psbt("exit.psbt", stranger_exit)
    out = files.directory / "signed.psbt"
    base = ["sign", "--psbt", str(path), "--key-file", str(files.key), "--network", "regtest", "--output", str(out)]

    refused = run_cli(*base)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert not out.exists()
    lines = refused.stderr.strip().splitlines()
    # The summary is printed anyway, so the person sees what they were asked to sign ...
    assert lines[0] == "signing an unchecked transaction WITHOUT checking it against a loan"
    assert f"  input  {FACTS.escrow_outpoint}  1200000 sat  (unknown)" in lines
    assert f"  output {STRANGER}  {stranger_exit.tx.outputs[0].value} sat  (unknown)" in lines
    assert f"  miner fee {stranger_exit.fee_sats} sat" in lines
    # ... then one error line.
    assert lines[-1].startswith("error: refusing to sign without the loan file (--loan)")
    assert sum(line.startswith("error: ") for line in lines) == 1
    assert "Traceback" not in refused.stderr

    signed = run_cli(*base, "--unchecked")
    reply = json.loads(_ok(signed))
    assert reply["checked_against_loan"] is False
    assert reply["summary"]["outputs"] == [
        {"address": STRANGER, "sats": stranger_exit.tx.outputs[0].value, "pays": "unknown"}
    ]
    assert signed.stderr.splitlines()[0] == "signing an unchecked transaction WITHOUT checking it against a loan"
    _signature(Psbt.from_base64(out.read_text()), stranger_exit)


def test_sign_unchecked_still_refuses_foreign_keys_and_networks(files: Files) -> None:
    path = files.psbt("tx1.psbt", TX1)
    base = ["sign", "--psbt", str(path), "--unchecked"]
    # L's key is in the leaf too (the unchecked signer would sign with it): use a key that is in no leaf.
    stranger_file = files.directory / "stranger.key"
    stranger_file.write_text("11" * 32)
    result = run_cli(*base, "--key-file", str(stranger_file))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: key ")
    assert "does not appear in any leaf script" in result.stderr
    result = run_cli(*base, "--key-file", str(files.key), "--network", "mainnet")
    assert result.returncode == 1
    assert "not for mainnet" in result.stderr.strip().splitlines()[-1]


# -- verify ------------------------------------------------------------------------------------------------------


def test_verify_without_a_loan_checks_only_signatures(files: Files) -> None:
    unsigned = files.psbt("tx1.psbt", TX1)
    _assert_one_line_error(run_cli("verify", "--psbt", str(unsigned)), "no tap script signature")

    signed = files.directory / "signed.psbt"
    _ok(_sign(files, unsigned, "--output", str(signed)))
    plain = json.loads(_ok(run_cli("verify", "--psbt", str(signed))))
    assert plain["checked_against_loan"] is False
    assert "valid" not in plain
    assert plain["signatures_valid"] is True
    assert "only the signatures were checked" in plain["warning"]
    assert plain["signatures"] == [{"input": 0, "pubkey": BORROWER_XONLY, "leaf_hash": TX1.leaf_hash.hex()}]

    # A correctly signed transaction that pays a stranger passes the signature-only check: that is all it says.
    stranger = files.psbt("stranger.psbt", _with_outputs(_exit(), TxOut(1_000_000, STRANGER_SCRIPT)))
    stranger_signed = files.directory / "stranger-signed.psbt"
    _ok(
        run_cli(
            "sign",
            "--psbt",
            str(stranger),
            "--key-file",
            str(files.key),
            "--unchecked",
            "--output",
            str(stranger_signed),
        )
    )
    plain = json.loads(_ok(run_cli("verify", "--psbt", str(stranger_signed))))
    assert plain["checked_against_loan"] is False
    assert "valid" not in plain


def test_verify_with_a_loan_is_the_lenders_full_check(files: Files) -> None:
    signed = files.directory / "signed.psbt"
    _ok(_sign(files, files.psbt("tx1.psbt", TX1), "--output", str(signed)))
    checked = json.loads(_ok(run_cli("verify", "--psbt", str(signed), "--loan", str(files.loan))))
    assert checked["checked_against_loan"] is True
    assert checked["valid"] is True
    assert checked["txid"] == TX1_TXID
    assert checked["origination_fee_sats"] == 10_000
    assert checked["collateral_sats"] == 1_000_000
    assert checked["change_sats"] == TX1.tx.outputs[2].value
    assert checked["miner_fee_sats"] == TX1.fee_sats
    _signature(Psbt.from_base64(signed.read_text()), TX1)

    other_amount = files.loan_file("other.json", vector_facts(loan_amount_sats=1_050_000))
    _assert_refused(run_cli("verify", "--psbt", str(signed), "--loan", str(other_amount)), "wrong_fee_amount")

    # B's signed TX_exit is not a TX_1 pre-signature.
    exit_signed = files.directory / "exit-signed.psbt"
    _ok(_sign(files, files.psbt("exit.psbt", _exit()), "--output", str(exit_signed)))
    _assert_refused(run_cli("verify", "--psbt", str(exit_signed), "--loan", str(files.loan)), "wrong_leaf")


# -- malformed PSBT files ----------------------------------------------------------------------------------------


def _bad_tap_derivation() -> bytes:
    """A PSBT whose tap BIP-32 derivation value is a lone byte (no leaf hashes, no fingerprint)."""
    psbt = create_psbt(TX1)
    psbt.inputs[0][bytes([PSBT_IN_TAP_BIP32_DERIVATION]) + b"\x02" * 32] = b"\x05"
    return psbt.serialize()


_SERIALIZED = create_psbt(TX1).serialize()
MALFORMED: dict[str, bytes] = {
    "garbage_text": b"definitely not a psbt\n",
    "empty": b"",
    "binary_junk": bytes(range(256)),
    "truncated_binary": _SERIALIZED[: len(_SERIALIZED) // 2],
    "truncated_base64": base64.b64encode(_SERIALIZED[: len(_SERIALIZED) // 2]),
    "base64_cut_mid_character": base64.b64encode(_SERIALIZED)[:-3],
    "magic_then_junk": b"psbt\xff\x01\x02\x03",
    "hex_with_junk": b"70736274ff" + b"zz" * 20,
    "trailing_bytes": _SERIALIZED + b"\x00",
    "bad_tap_derivation": _bad_tap_derivation(),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_psbt_files_are_refused(files: Files, name: str) -> None:
    path = files.directory / "bad.psbt"
    path.write_bytes(MALFORMED[name])
    out = files.directory / "signed.psbt"
    key, loan = ["--key-file", str(files.key)], ["--loan", str(files.loan)]
    for args in (
        ["sign", *key, *loan, "--output", str(out)],
        ["sign", *key, "--unchecked", "--output", str(out)],
        ["verify"],
        ["verify", *loan],
        ["finalize", *loan],
    ):
        _assert_refused(run_cli(*args, "--psbt", str(path)), "malformed_psbt")
    assert not out.exists()


def test_unreadable_files_give_one_line_errors(files: Files) -> None:
    missing = str(files.directory / "missing.psbt")
    _assert_one_line_error(run_cli("verify", "--psbt", missing), "cannot read PSBT file")
    path = files.psbt("tx1.psbt", TX1)
    _assert_one_line_error(
        run_cli("sign", "--psbt", str(path), "--key-file", missing, "--loan", str(files.loan)), "cannot read key file"
    )


# -- ladders and finalize ----------------------------------------------------------------------------------------


def test_ladders_then_finalize(files: Files) -> None:
    result = run_cli(
        "ladders",
        *("--loan", str(files.loan), "--key-file", str(files.key), "--tx1-txid", TX1_TXID, "--fee-rates", "1,2,5"),
    )
    ladders = json.loads(_ok(result))
    assert ladders["tx1_txid"] == TX1_TXID
    assert [item["fee_rate_sat_vb"] for item in ladders["release"]] == ["1", "2", "5"]
    assert [item["fee_rate_sat_vb"] for item in ladders["exit"]] == ["1", "2", "5"]

    for rate, item in zip((1, 2, 5), ladders["exit"], strict=True):
        prepared = build_exit(FACTS, fee_rate_sat_vb=rate)
        tx = Transaction.parse(item["tx_hex"])
        assert tx.without_witness() == prepared.tx
        assert item["fee_sats"] == prepared.fee_sats
        verify_input(tx, 0, [prepared.prevout])  # sigB, leaf 0, control: complete, valid after t_0
        assert tx.inputs[0].sequence == 100
    fees = [item["fee_sats"] for item in ladders["exit"]]
    assert fees == sorted(fees) and len(set(fees)) == 3

    for rate, item in zip((1, 2, 5), ladders["release"], strict=True):
        prepared = build_release(FACTS, tx1_txid=TX1_TXID, fee_rate_sat_vb=rate)
        psbt = Psbt.from_base64(item["psbt"])
        assert psbt.unsigned_tx == prepared.tx
        assert item["fee_sats"] == prepared.fee_sats
        _signature(psbt, prepared)

    # Once L reveals pL: finalize a pre-signed TX_release (pL given on the command line) ...
    release_psbt = files.directory / "release-2.psbt"
    release_psbt.write_text(ladders["release"][1]["psbt"])
    _assert_one_line_error(
        run_cli("finalize", "--loan", str(files.loan), "--psbt", str(release_psbt)), "needs the preimage"
    )
    _assert_one_line_error(
        run_cli(
            "finalize",
            *("--loan", str(files.loan), "--psbt", str(release_psbt)),
            *("--lender-preimage", BORROWER_PREIMAGE.hex()),
        ),
        "does not hash to the loan's hL",
    )
    final = json.loads(
        _ok(
            run_cli(
                "finalize",
                *("--loan", str(files.loan), "--psbt", str(release_psbt)),
                *("--lender-preimage", LENDER_PREIMAGE.hex()),
            )
        )
    )
    prepared = build_release(FACTS, tx1_txid=TX1_TXID, fee_rate_sat_vb=2)
    tx = Transaction.parse(final["tx_hex"])
    assert final["transaction"] == "tx_release"
    assert final["txid"] == tx.txid == prepared.tx.txid
    assert tx.inputs[0].witness[1] == LENDER_PREIMAGE
    verify_input(tx, 0, [prepared.prevout])

    # ... or pL recorded in the PSBT (build-release --lender-preimage, then sign, then finalize).
    with_pl = files.directory / "release-with-pl.psbt"
    _ok(
        run_cli(
            "build-release",
            *("--loan", str(files.loan), "--fee-rate", "2", "--tx1-txid", TX1_TXID),
            *("--lender-preimage", LENDER_PREIMAGE.hex(), "--output", str(with_pl)),
        )
    )
    signed = files.directory / "release-signed.psbt"
    _ok(_sign(files, with_pl, "--output", str(signed)))
    final_from_psbt = json.loads(_ok(run_cli("finalize", "--loan", str(files.loan), "--psbt", str(signed))))
    assert final_from_psbt["txid"] == prepared.tx.txid
    verify_input(Transaction.parse(final_from_psbt["tx_hex"]), 0, [prepared.prevout])


def test_finalize_tx_exit_and_refusals(files: Files) -> None:
    prepared = _exit(3)
    unsigned = files.psbt("exit.psbt", prepared)
    _assert_one_line_error(
        run_cli("finalize", "--loan", str(files.loan), "--psbt", str(unsigned)),
        "lacks the signature of " + BORROWER_XONLY,
    )
    signed = files.directory / "exit-signed.psbt"
    _ok(_sign(files, unsigned, "--output", str(signed)))
    final = json.loads(_ok(run_cli("finalize", "--loan", str(files.loan), "--psbt", str(signed))))
    assert final["transaction"] == "tx_exit"
    verify_input(Transaction.parse(final["tx_hex"]), 0, [prepared.prevout])
    # finalize checks the transaction against the loan again: a TX_exit to a stranger, even if B signed it
    # unchecked, is refused.
    stranger = files.psbt(
        "stranger.psbt", _with_outputs(prepared, TxOut(prepared.tx.outputs[0].value, STRANGER_SCRIPT))
    )
    stranger_signed = files.directory / "stranger-signed.psbt"
    _ok(
        run_cli(
            "sign",
            "--psbt",
            str(stranger),
            "--key-file",
            str(files.key),
            "--unchecked",
            "--output",
            str(stranger_signed),
        )
    )
    _assert_refused(
        run_cli("finalize", "--loan", str(files.loan), "--psbt", str(stranger_signed)), "wrong_payout_output"
    )


def test_ladders_refuse_the_lenders_key_and_bad_rates(files: Files) -> None:
    base = ["ladders", "--loan", str(files.loan), "--tx1-txid", TX1_TXID]
    _assert_one_line_error(run_cli(*base, "--key-file", str(files.key), "--fee-rates", "1,500"), "outside")
    _assert_one_line_error(run_cli(*base, "--key-file", str(files.key), "--fee-rates", ","), "at least one rate")
    lender_file = files.directory / "lender.key"
    lender_file.write_text(LENDER_WIF)
    _assert_one_line_error(
        run_cli(*base, "--key-file", str(lender_file), "--fee-rates", "1"), "not the loan's borrower"
    )


def test_the_protocol_library_never_imports_django() -> None:
    code = (
        "import sys, bitcoin.cli, bitcoin.loan, bitcoin.miniscript, bitcoin.presignature, bitcoin.psbt, "
        "bitcoin.consensus, bitcoin.descriptors, bitcoin.transactions, bitcoin.scripts; "
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"
