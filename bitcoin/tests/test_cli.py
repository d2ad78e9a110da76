"""``python -m bitcoin`` run as a subprocess with a clean environment (no Django settings, no database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bitcoin.encoding import sha256
from bitcoin.psbt import Psbt, create_psbt
from bitcoin.scripts import BIP341_NUMS_H, REFERENCE_INTERNAL_KEY
from bitcoin.tests.loan_vectors import (
    BORROWER_HASH,
    BORROWER_WIF,
    BORROWER_XONLY,
    COLLATERAL_ADDRESS_REGTEST,
    ESCROW_ADDRESS_REGTEST,
    ESCROW_OUTPOINT,
    LENDER_HASH,
    LENDER_XONLY,
    REGTEST_P2WPKH,
    vector_scripts,
)
from bitcoin.transactions import build_tx1

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTOR_ARGS = [
    "--borrower-pubkey",
    BORROWER_XONLY,
    "--lender-pubkey",
    LENDER_XONLY,
    "--borrower-hash",
    BORROWER_HASH,
    "--lender-hash",
    LENDER_HASH,
    "--escrow-timelock",
    "100",
    "--collateral-timelock",
    "27150",
]


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


def _assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_addresses_of_the_protocol_vector() -> None:
    result = run_cli("addresses", "--network", "regtest", "--reference-internal-key", *VECTOR_ARGS)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["escrow_address"] == ESCROW_ADDRESS_REGTEST
    assert output["collateral_address"] == COLLATERAL_ADDRESS_REGTEST
    scripts = vector_scripts(internal_key=REFERENCE_INTERNAL_KEY)
    assert output["escrow"]["script_pubkey"] == scripts.escrow.script_pubkey.hex()
    assert output["collateral"]["leaves"] == [leaf.hex() for leaf in scripts.collateral.leaves]
    assert output["escrow_descriptor"].startswith(
        "tr(50929b74c1a04954b78b4b60c595c211f8b853e6e84bfa2be95712a7b0dd59e6,{"
    )
    assert output["collateral_watch_descriptor"].startswith(f"rawtr({scripts.collateral.output_key.hex()})#")


def test_addresses_default_to_bip341_h() -> None:
    result = run_cli("addresses", "--network", "regtest", *VECTOR_ARGS)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    scripts = vector_scripts()
    assert output["escrow_address"] == scripts.escrow.address("regtest") != ESCROW_ADDRESS_REGTEST
    assert output["collateral_address"] == scripts.collateral.address("regtest") != COLLATERAL_ADDRESS_REGTEST
    assert output["escrow_descriptor"].startswith(f"tr({BIP341_NUMS_H.hex()},{{")


def test_addresses_on_mainnet() -> None:
    output = json.loads(run_cli("addresses", "--network", "mainnet", *VECTOR_ARGS).stdout)
    assert output["escrow_address"] == vector_scripts().escrow.address("mainnet")
    assert output["escrow_address"].startswith("bc1p")


def test_bad_input_gives_one_line_error() -> None:
    bad_key = list(VECTOR_ARGS)
    bad_key[1] = "00" * 32
    _assert_one_line_error(run_cli("addresses", "--network", "regtest", *bad_key), "not the X coordinate")
    bad_timelock = [*VECTOR_ARGS[:-1], "70000"]
    _assert_one_line_error(run_cli("addresses", "--network", "regtest", *bad_timelock), "between 1 and 65535")
    _assert_one_line_error(run_cli("addresses", "--network", "litecoin", *VECTOR_ARGS), "invalid choice")
    _assert_one_line_error(run_cli("addresses"), "required")
    _assert_one_line_error(run_cli(), "required")


def test_preimage_is_fresh_and_hashes() -> None:
    first = json.loads(run_cli("preimage").stdout)
    second = json.loads(run_cli("preimage").stdout)
    assert len(bytes.fromhex(first["preimage"])) == 32
    assert sha256(bytes.fromhex(first["preimage"])).hex() == first["hash"]
    assert first["preimage"] != second["preimage"]


def test_sign_then_verify(tmp_path: Path) -> None:
    prepared = build_tx1(
        scripts=vector_scripts(),
        escrow_outpoint=ESCROW_OUTPOINT,
        escrow_value_sats=1_100_000,
        loan_amount_sats=1_000_000,
        origination_fee_bps=100,
        lender_payout_address=REGTEST_P2WPKH,
        network="regtest",
        fee_rate_sat_vb=3,
    )
    unsigned = tmp_path / "tx1.psbt"
    unsigned.write_text(create_psbt(prepared).to_base64())
    key_file = tmp_path / "borrower.key"
    key_file.write_text(BORROWER_WIF + "\n")

    # Nothing to verify yet.
    _assert_one_line_error(run_cli("verify", "--psbt", str(unsigned)), "no tap script signature")
    # A mainnet-only signer refuses a regtest WIF.
    _assert_one_line_error(
        run_cli("sign", "--psbt", str(unsigned), "--key-file", str(key_file), "--network", "mainnet"),
        "not for mainnet",
    )

    # Signing a collateral lock without the loan's facts is refused unless explicitly unchecked.
    _assert_one_line_error(
        run_cli("sign", "--psbt", str(unsigned), "--key-file", str(key_file)), "spends an escrow's collateral lock"
    )
    signed_text = run_cli("sign", "--psbt", str(unsigned), "--key-file", str(key_file), "--unchecked").stdout.strip()
    signed = Psbt.from_base64(signed_text)
    assert (bytes.fromhex(BORROWER_XONLY), prepared.leaf_hash) in signed.tap_script_sigs(0)

    signed_file = tmp_path / "signed.psbt"
    result = run_cli(
        "sign", "--psbt", str(unsigned), "--key-file", str(key_file), "--unchecked", "--output", str(signed_file)
    )
    assert json.loads(result.stdout)["signatures_added"] == 1

    plain = json.loads(run_cli("verify", "--psbt", str(signed_file)).stdout)
    assert plain["valid"] is True
    assert plain["signatures"][0]["pubkey"] == BORROWER_XONLY

    loan = [
        "--network",
        "regtest",
        *VECTOR_ARGS,
        "--escrow-outpoint",
        f"{ESCROW_OUTPOINT.txid}:{ESCROW_OUTPOINT.vout}",
        "--escrow-value",
        "1100000",
        "--loan-amount",
        "1000000",
        "--origination-fee-bps",
        "100",
        "--lender-payout-address",
        REGTEST_P2WPKH,
        "--min-fee-rate",
        "1",
        "--max-fee-rate",
        "20",
    ]
    checked = json.loads(run_cli("verify", "--psbt", str(signed_file), *loan).stdout)
    assert checked["valid"] is True
    assert checked["txid"] == prepared.tx.txid
    assert checked["origination_fee_sats"] == 10_000
    assert checked["fee_rate_sat_vb"] == "3.000"

    wrong_amount = [*loan]
    wrong_amount[wrong_amount.index("--loan-amount") + 1] = "2000000"
    _assert_one_line_error(run_cli("verify", "--psbt", str(signed_file), *wrong_amount), "wrong_fee_amount")
    _assert_one_line_error(
        run_cli("verify", "--psbt", str(signed_file), "--network", "regtest", "--loan-amount", "5"),
        "missing --borrower-pubkey",
    )


def test_unreadable_files_give_one_line_errors(tmp_path: Path) -> None:
    _assert_one_line_error(run_cli("verify", "--psbt", str(tmp_path / "missing.psbt")), "cannot read PSBT file")
    garbage = tmp_path / "garbage.psbt"
    garbage.write_text("definitely not a psbt")
    _assert_one_line_error(run_cli("verify", "--psbt", str(garbage)), "PSBT")


def test_the_protocol_library_never_imports_django() -> None:
    code = (
        "import sys, bitcoin.cli, bitcoin.presignature, bitcoin.psbt, bitcoin.consensus, bitcoin.descriptors; "
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


def _loan_args(loan_amount: str = "1000000") -> list[str]:
    return [
        "--network",
        "regtest",
        *VECTOR_ARGS,
        "--escrow-outpoint",
        f"{ESCROW_OUTPOINT.txid}:{ESCROW_OUTPOINT.vout}",
        "--escrow-value",
        "1100000",
        "--loan-amount",
        loan_amount,
        "--origination-fee-bps",
        "100",
        "--lender-payout-address",
        REGTEST_P2WPKH,
    ]


def test_build_sign_verify_and_complete_offline(tmp_path: Path) -> None:
    """B builds TX_1, checks and signs it against the loan; L verifies it; L completes it; the kernel agrees."""
    from bitcoin.consensus import verify_input
    from bitcoin.presignature import verify_borrower_presignature
    from bitcoin.tests.loan_vectors import BORROWER_PREIMAGE, lender_key
    from bitcoin.transactions import finalize_tx1

    built = run_cli("build-tx1", *_loan_args(), "--fee-rate", "2.5")
    assert built.returncode == 0, built.stderr
    unsigned = tmp_path / "tx1.psbt"
    unsigned.write_text(built.stdout)
    key_file = tmp_path / "borrower.key"
    key_file.write_text(BORROWER_WIF)
    bounds = ["--min-fee-rate", "1", "--max-fee-rate", "10"]
    signed_file = tmp_path / "signed.psbt"
    signed = run_cli(
        "sign",
        "--psbt",
        str(unsigned),
        "--key-file",
        str(key_file),
        "--output",
        str(signed_file),
        *_loan_args(),
        *bounds,
    )
    assert signed.returncode == 0, signed.stderr
    summary = json.loads(signed.stdout)
    assert summary["checked_against_loan"] is True
    assert summary["origination_fee_sats"] == 10_000
    assert summary["fee_rate_sat_vb"] == "2.500"

    verified = verify_borrower_presignature(
        network="regtest",
        borrower_pubkey=BORROWER_XONLY,
        lender_pubkey=LENDER_XONLY,
        borrower_hash=BORROWER_HASH,
        lender_hash=LENDER_HASH,
        escrow_timelock=100,
        collateral_timelock=27150,
        escrow_outpoint=ESCROW_OUTPOINT,
        escrow_value_sats=1_100_000,
        loan_amount_sats=1_000_000,
        origination_fee_bps=100,
        lender_payout_address=REGTEST_P2WPKH,
        min_fee_rate_sat_vb=1,
        max_fee_rate_sat_vb=10,
        psbt=signed_file.read_text(),
    )
    tx = finalize_tx1(
        verified.prepared,
        borrower_signature=verified.borrower_signature,
        lender_signature=verified.prepared.sign(lender_key()),
        borrower_preimage=BORROWER_PREIMAGE,
    )
    verify_input(tx, 0, [verified.prepared.prevout])


def test_sign_refuses_a_tx1_that_does_not_match_the_loan(tmp_path: Path) -> None:
    """A PSBT built for other terms (here a bigger origination fee) is not signed."""
    built = run_cli("build-tx1", *_loan_args(loan_amount="1050000"), "--fee-rate", "2")
    unsigned = tmp_path / "tx1.psbt"
    unsigned.write_text(built.stdout)
    key_file = tmp_path / "borrower.key"
    key_file.write_text(BORROWER_WIF)
    signed_file = tmp_path / "signed.psbt"
    result = run_cli(
        "sign",
        "--psbt",
        str(unsigned),
        "--key-file",
        str(key_file),
        "--output",
        str(signed_file),
        *_loan_args(),
        "--min-fee-rate",
        "1",
        "--max-fee-rate",
        "10",
    )
    _assert_one_line_error(result, "refused (wrong_fee_amount)")
    assert not signed_file.exists()


def test_build_tx1_refuses_dust_fee() -> None:
    args = _loan_args(loan_amount="20000")
    args[args.index("--escrow-value") + 1] = "40000"
    _assert_one_line_error(run_cli("build-tx1", *args, "--fee-rate", "1"), "dust")
