"""loans.vault: the Secret wrapper, sealing, the key settings, the system checks and the start-up refusal, the
sealed column (ciphertext only) and key rotation (``manage.py rotate_vault_keys``)."""

from __future__ import annotations

import io
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from loanproject.checks import check_vault_key_present, check_vault_keys
from loans import vault
from loans.models import LenderKey, LenderPreimage, Loan
from loans.services import lender_hash_commit_prepare, loan_status_transition
from loans.services.lender_secrets import lender_evm_account, lender_key_store, lender_preimage_reveal
from loans.vault import Sealed, Secret, VaultError

from .factories import make_loan
from .leaks import leaked

BASE_DIR = Path(__file__).resolve().parents[2]


def new_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def keys(settings):
    """A fresh vault key configured through LOAN_VAULT_KEYS; returns a setter for the comma-separated list."""

    def configure(*values: str) -> None:
        settings.LOAN_VAULT_KEYS_FILE = ""
        settings.LOAN_VAULT_KEYS = ",".join(values)

    first = new_key()
    configure(first)
    configure.first = first
    return configure


# ------------------------------------------------------------------------------------------------ values


def test_a_secret_never_shows():
    secret = Secret(b"\x42" * 32)
    logged = logging.LogRecord("loans", logging.INFO, __file__, 1, "%s %r", (secret, secret), None).getMessage()
    assert logged == "Secret(<redacted>) Secret(<redacted>)"
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", format(secret, ">80"), str([secret])):
        assert text in ("Secret(<redacted>)", "[Secret(<redacted>)]")
        assert not leaked(text, b"\x42" * 32)
    assert secret.reveal() == b"\x42" * 32
    assert secret == Secret(b"\x42" * 32) and secret != Secret(b"\x43" * 32)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError):
        Secret("not bytes")


def test_seal_and_unseal_round_trip_under_the_newest_key(keys):
    newest, older = new_key(), new_key()
    keys(newest, older)
    sealed = vault.seal(Secret(b"pL" * 16))
    assert sealed.key_id == vault.key_id(newest) != vault.key_id(older)
    assert repr(sealed) == f"Sealed(key_id={sealed.key_id!r})"
    assert vault.unseal(sealed) == Secret(b"pL" * 16)
    assert Sealed.parse(str(sealed)) == sealed
    with pytest.raises(TypeError, match="takes a Secret"):
        vault.seal(b"plain bytes")


def test_a_tampered_or_foreign_ciphertext_is_refused_without_showing_anything(keys):
    sealed = vault.seal(Secret(b"\x07" * 32))
    token = sealed.token
    tampered = Sealed(sealed.key_id, token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB"))
    with pytest.raises(VaultError, match="does not authenticate") as refused:
        vault.unseal(tampered)
    assert not leaked(str(refused.value), b"\x07" * 32)
    keys(new_key())
    with pytest.raises(VaultError, match=f"sealed with key {sealed.key_id}"):
        vault.unseal(sealed)


# ------------------------------------------------------------------------------------------------ settings


def test_the_keys_file_wins_over_the_variable(settings, tmp_path):
    in_file, in_variable = new_key(), new_key()
    path = tmp_path / "vault.keys"
    path.write_text(f"# rotated 2026-11\n{in_file}\n\n")
    settings.LOAN_VAULT_KEYS_FILE = str(path)
    settings.LOAN_VAULT_KEYS = in_variable
    assert vault.configured_keys() == (in_file,)
    settings.LOAN_VAULT_KEYS_FILE = ""
    assert vault.configured_keys() == (in_variable,)
    settings.LOAN_VAULT_KEYS = f" {in_variable} , {in_file} "
    assert vault.configured_keys() == (in_variable, in_file)


def test_the_development_key_is_generated_once_under_var_dir_mode_0600(settings, tmp_path):
    settings.LOAN_VAULT_KEYS_FILE = settings.LOAN_VAULT_KEYS = ""
    settings.LOAN_VAULT_DEV_KEYS_ALLOWED = True
    settings.LOAN_VAULT_DEV_KEYS_FILE = tmp_path / "var" / "vault.keys"
    first = vault.configured_keys()
    assert len(first) == 1 and vault.configured_keys() == first
    assert (settings.LOAN_VAULT_DEV_KEYS_FILE.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in settings.LOAN_VAULT_DEV_KEYS_FILE.parent.iterdir()] == ["vault.keys"]
    assert str(settings.LOAN_VAULT_DEV_KEYS_FILE).startswith(str(tmp_path))


def test_without_a_key_and_without_debug_nothing_is_sealed(settings):
    settings.LOAN_VAULT_KEYS_FILE = settings.LOAN_VAULT_KEYS = ""
    settings.LOAN_VAULT_DEV_KEYS_ALLOWED = False
    with pytest.raises(ImproperlyConfigured, match="no vault key"):
        vault.seal(Secret(b"x" * 32))
    with pytest.raises(ImproperlyConfigured, match="no vault key"):
        vault.require_keys()


def test_the_system_checks(settings, tmp_path):
    settings.LOAN_VAULT_KEYS_FILE = settings.LOAN_VAULT_KEYS = ""
    settings.LOAN_VAULT_DEV_KEYS_ALLOWED = False
    assert [e.id for e in check_vault_key_present()] == ["loans.E007"]
    with pytest.raises(Exception, match=r"loans\.E007"):
        call_command("check", "--deploy", "--fail-level", "ERROR", stdout=io.StringIO(), stderr=io.StringIO())
    settings.LOAN_VAULT_DEV_KEYS_ALLOWED = True  # DEBUG or the tests: the development key
    assert check_vault_key_present() == [] and check_vault_keys() == []

    settings.LOAN_VAULT_DEV_KEYS_ALLOWED = False
    settings.LOAN_VAULT_KEYS = "not-a-fernet-key"
    errors = check_vault_keys()
    assert [e.id for e in errors] == ["loans.E008"] and "not-a-fernet-key" not in errors[0].msg
    path = tmp_path / "keys"
    path.write_text(new_key() + "\n")
    path.chmod(0o644)
    settings.LOAN_VAULT_KEYS_FILE = str(path)
    assert [e.id for e in check_vault_keys()] == ["loans.W003"]
    path.chmod(0o600)
    assert check_vault_key_present() == [] and check_vault_keys() == []
    settings.LOAN_VAULT_KEYS_FILE = str(tmp_path / "missing")
    assert [e.id for e in check_vault_keys()] == ["loans.E008"]


@pytest.mark.parametrize("entry_point", ["loanproject.asgi", "loanproject.wsgi"])
def test_the_web_entry_points_refuse_to_start_without_a_key(entry_point):
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}
    env.update(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="entry-point-test",
        DATABASE_URL="sqlite:///:memory:",
        LOAN_VAULT_KEYS="",
        LOAN_VAULT_KEYS_FILE="",
        DJANGO_SETTINGS_MODULE="loanproject.settings",
    )
    code = f"import {entry_point}"
    refused = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "ImproperlyConfigured: no vault key" in refused.stderr
    env["LOAN_VAULT_KEYS"] = key = new_key()
    started = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    assert key not in started.stdout + started.stderr


# ------------------------------------------------------------------------------------------------ the column


@pytest.mark.django_db
def test_the_sealed_column_refuses_plaintext(keys, lender):
    sealed = vault.seal(Secret(b"\x01" * 32))
    for plaintext in (b"\x01" * 32, "01" * 32, Secret(b"\x01" * 32)):
        with pytest.raises(TypeError, match="stores ciphertext only"), transaction.atomic():
            LenderKey.objects.create(lender=lender, kind="bitcoin", public_id="ab" * 32, private_key=plaintext)
    assert not LenderKey.objects.exists()
    assert LenderKey._meta.get_field("private_key").editable is False
    row = LenderKey.objects.create(lender=lender, kind="bitcoin", public_id="ab" * 32, private_key=sealed)
    assert LenderKey.objects.get(pk=row.pk).private_key == sealed


def raw_rows(table: str) -> list[str]:
    """Every row of ``table`` as PostgreSQL's JSON text: all columns, as stored."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT row_to_json(t)::text FROM {table} t")  # noqa: S608 - our own table names
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
def test_only_ciphertext_reaches_the_database(keys, lender_persona, operator):
    """pL and both of the lender's keys, stored through the services: no column of any table holds them."""
    loan = make_loan()
    loan_status_transition(loan_id=loan.pk, to_status=Loan.Status.REQUESTED, cause="LoanRequested")
    hl = lender_hash_commit_prepare(loan=loan, actor=operator)
    for status in (Loan.Status.OFFERED, Loan.Status.ACTIVE, Loan.Status.REPAYMENT_IN_PROGRESS):
        loan_status_transition(loan_id=loan.pk, to_status=status, cause="test")
    pl = lender_preimage_reveal(loan=loan)
    btc_secret = lender_persona.btc_key.secret
    evm_secret = bytes(lender_persona.account.key)
    lender_key_store(lender=lender_persona.user, kind="bitcoin", private_key=Secret(btc_secret), actor=operator)
    lender_key_store(lender=lender_persona.user, kind="evm", private_key=Secret(evm_secret), actor=operator)

    (preimage_row,) = raw_rows("loans_lenderpreimage")
    assert f'"preimage":"fernet:{vault.key_id(keys.first)}:' in preimage_row
    key_rows = raw_rows("loans_lenderkey")
    assert len(key_rows) == 2 and all('"private_key":"fernet:' in row for row in key_rows)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_name LIKE 'loans_%'"
        )
        tables = [row[0] for row in cursor.fetchall()]
    everything = "\n".join(row for table in tables for row in raw_rows(table))
    assert hl.hex() in everything  # hL is public, in clear on the loan
    assert not leaked(everything, pl, btc_secret, evm_secret)


# ------------------------------------------------------------------------------------------------ rotation


@pytest.fixture
def sealed_everything(keys, lender_persona, operator):
    """Two loans' pL and the lender's two keys, sealed under ``keys.first``; (loans, [pL...], [key secrets])."""
    loans = []
    for _ in range(2):
        loan = make_loan()
        loan_status_transition(loan_id=loan.pk, to_status=Loan.Status.REQUESTED, cause="LoanRequested")
        lender_hash_commit_prepare(loan=loan, actor=operator)
        for status in (Loan.Status.OFFERED, Loan.Status.ACTIVE, Loan.Status.REPAYMENT_IN_PROGRESS):
            loan_status_transition(loan_id=loan.pk, to_status=status, cause="test")
        loans.append(loan)
    btc_secret = lender_persona.btc_key.secret
    evm_secret = bytes(lender_persona.account.key)
    lender_key_store(lender=lender_persona.user, kind="bitcoin", private_key=Secret(btc_secret), actor=None)
    lender_key_store(lender=lender_persona.user, kind="evm", private_key=Secret(evm_secret), actor=None)
    preimages = [lender_preimage_reveal(loan=loan) for loan in loans]
    return loans, preimages, [btc_secret, evm_secret]


def sealed_key_ids() -> set[str]:
    return {row.private_key.key_id for row in LenderKey.objects.all()} | {
        row.preimage.key_id for row in LenderPreimage.objects.all()
    }


@pytest.mark.django_db
def test_rotation_moves_every_value_to_the_newest_key(keys, sealed_everything, lender_persona):
    loans, preimages, key_secrets = sealed_everything
    old, new = keys.first, new_key()
    before = raw_rows("loans_lenderpreimage") + raw_rows("loans_lenderkey")

    keys(new, old)  # the new key first; the old one still decrypts until rotation is done
    assert sealed_key_ids() == {vault.key_id(old)}
    assert [lender_preimage_reveal(loan=loan) for loan in loans] == preimages

    out = io.StringIO()
    call_command("rotate_vault_keys", stdout=out)
    report = out.getvalue()
    assert "LenderKey.private_key: 2 re-encrypted, 0 already under the newest key" in report
    assert "LenderPreimage.preimage: 2 re-encrypted, 0 already under the newest key" in report
    assert f"done: 4 re-encrypted under {vault.key_id(new)}" in report
    assert sealed_key_ids() == {vault.key_id(new)}
    after = raw_rows("loans_lenderpreimage") + raw_rows("loans_lenderkey")
    assert not set(before) & set(after)

    again = io.StringIO()
    call_command("rotate_vault_keys", stdout=again)  # idempotent
    assert "LenderKey.private_key: 0 re-encrypted, 2 already under the newest key" in again.getvalue()
    assert "LenderPreimage.preimage: 0 re-encrypted, 2 already under the newest key" in again.getvalue()
    assert raw_rows("loans_lenderpreimage") + raw_rows("loans_lenderkey") == after

    keys(new)  # the old key is gone: everything still opens
    assert [lender_preimage_reveal(loan=loan) for loan in loans] == preimages
    assert bytes(lender_evm_account(address=lender_persona.address).key) == key_secrets[1]
    keys(old)  # and the old key alone opens nothing any more
    with pytest.raises(VaultError):
        lender_preimage_reveal(loan=loans[0])

    printed = report + again.getvalue()
    assert not leaked(printed, *preimages, *key_secrets)
    assert old not in printed and new not in printed


@pytest.mark.django_db
def test_rotation_reports_what_no_configured_key_opens_and_keeps_it(keys, sealed_everything):
    loans, preimages, _ = sealed_everything
    lost, new = new_key(), new_key()
    keys(lost)
    stray = make_loan()
    loan_status_transition(loan_id=stray.pk, to_status=Loan.Status.REQUESTED, cause="LoanRequested")
    # sealed under a key that is then not configured
    LenderPreimage.objects.create(loan=stray, preimage=vault.seal(Secret(b"\x09" * 32)))
    stray_row = raw_rows("loans_lenderpreimage")
    keys(new, keys.first)
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 sealed value"):
        call_command("rotate_vault_keys", stdout=out)
    stray_id = LenderPreimage.objects.get(loan=stray).pk
    assert (
        "LenderPreimage.preimage: 2 re-encrypted, 0 already under the newest key,"
        f" 1 that no configured key opens (ids {stray_id})"
    ) in out.getvalue()
    assert LenderPreimage.objects.get(loan=stray).preimage.key_id == vault.key_id(lost)
    assert any(str(LenderPreimage.objects.get(loan=stray).preimage) in row for row in stray_row)
    assert [lender_preimage_reveal(loan=loan) for loan in loans] == preimages
