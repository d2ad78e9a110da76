"""The lender's secrets as services: pL made on the server (hL returned, the same hL again), revealed only to accept a
repayment; the lender's keys stored and unsealed for signing. Refusals change nothing. No secret reaches a log, a
command's output, an error message or an admin page."""

from __future__ import annotations

import hashlib
import io
import logging

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse

from loans import vault
from loans.errors import LoanServiceError
from loans.models import EvmNonce, LenderKey, LenderPreimage, Loan, LoanStatusChange, User
from loans.services import lender_hash_commit_prepare, loan_status_transition
from loans.services.lender_secrets import (
    lender_bitcoin_key,
    lender_evm_account,
    lender_key_store,
    lender_preimage_reveal,
)
from loans.vault import Secret

from .factories import hex32, make_loan, make_user
from .leaks import leaked

pytestmark = pytest.mark.django_db

TO_REPAYMENT = (Loan.Status.OFFERED, Loan.Status.ACTIVE, Loan.Status.REPAYMENT_IN_PROGRESS)


@pytest.fixture(autouse=True)
def vault_key(settings) -> str:
    key = Fernet.generate_key().decode()
    settings.LOAN_VAULT_KEYS_FILE = ""
    settings.LOAN_VAULT_KEYS = key
    return key


def requested_loan(**overrides) -> Loan:
    loan = make_loan(**overrides)
    loan_status_transition(loan_id=loan.pk, to_status=Loan.Status.REQUESTED, cause="LoanRequested")
    loan.refresh_from_db()
    return loan


def move(loan: Loan, *statuses: str) -> None:
    for status in statuses:
        loan_status_transition(loan_id=loan.pk, to_status=status, cause="test")
    loan.refresh_from_db()


def snapshot(loan: Loan) -> tuple:
    loan.refresh_from_db()
    return (
        loan.lender_hash,
        loan.updated_at,
        LenderPreimage.objects.count(),
        LoanStatusChange.objects.filter(loan=loan).count(),
    )


# ------------------------------------------------------------------------------------------------ pL


def test_the_lender_gets_hl_and_pl_stays_sealed(lender):
    loan = requested_loan()
    hl = lender_hash_commit_prepare(loan=loan, actor=lender)
    loan.refresh_from_db()
    assert len(hl) == 32 and loan.lender_hash == hl.hex()
    row = LenderPreimage.objects.get(loan=loan)
    assert row.created_by == lender and isinstance(row.preimage, vault.Sealed)
    assert hashlib.sha256(vault.unseal(row.preimage).reveal()).digest() == hl


def test_a_second_call_returns_the_same_hl_and_writes_nothing(lender, operator):
    loan = requested_loan()
    hl = lender_hash_commit_prepare(loan=loan, actor=lender)
    before = snapshot(loan)
    sealed = LenderPreimage.objects.get(loan=loan).preimage
    assert lender_hash_commit_prepare(loan=loan, actor=lender) == hl
    assert lender_hash_commit_prepare(loan=loan, actor=operator) == hl
    move(loan, Loan.Status.OFFERED)  # still the same hL once the offer is out
    before = snapshot(loan)
    assert lender_hash_commit_prepare(loan=loan, actor=lender) == hl
    assert snapshot(loan) == before
    assert LenderPreimage.objects.get(loan=loan).preimage == sealed


def test_each_loan_gets_its_own_preimage(lender):
    hashes = {lender_hash_commit_prepare(loan=requested_loan(), actor=lender) for _ in range(5)}
    assert len(hashes) == 5


@pytest.mark.parametrize("who", ["borrower", "stranger", "another_lender", "inactive_lender", "anonymous"])
def test_only_the_lender_or_an_operator_prepares_hl(who, lender, borrower):
    from django.contrib.auth.models import AnonymousUser

    loan = requested_loan(borrower=borrower, lender=lender)
    actor = {
        "borrower": borrower,
        "stranger": make_user(User.Role.BORROWER),
        "another_lender": make_user(User.Role.LENDER),  # not this loan's lender
        "inactive_lender": make_user(User.Role.LENDER, is_active=False),
        "anonymous": AnonymousUser(),
    }[who]
    if who == "inactive_lender":
        loan.lender = actor
        loan.save(update_fields=["lender"])
    before = snapshot(loan)
    with pytest.raises(PermissionDenied):
        lender_hash_commit_prepare(loan=loan, actor=actor)
    assert snapshot(loan) == before and loan.lender_hash is None


@pytest.mark.parametrize("status", [Loan.Status.DRAFT, Loan.Status.CANCELLED])
def test_hl_is_prepared_for_a_requested_loan_only(status, operator):
    loan = make_loan()
    if status == Loan.Status.CANCELLED:
        move(loan, Loan.Status.REQUESTED, Loan.Status.CANCELLED)
    before = snapshot(loan)
    with pytest.raises(LoanServiceError) as refused:
        lender_hash_commit_prepare(loan=loan, actor=operator)
    assert refused.value.code == "wrong_state"
    assert snapshot(loan) == before


def test_a_loan_with_an_hl_made_elsewhere_is_refused(operator):
    loan = requested_loan(lender_hash=hex32())
    before = snapshot(loan)
    with pytest.raises(LoanServiceError) as refused:
        lender_hash_commit_prepare(loan=loan, actor=operator)
    assert refused.value.code == "lender_hash_elsewhere"
    assert snapshot(loan) == before


def test_pl_is_revealed_only_to_accept_a_repayment(lender):
    loan = requested_loan()
    hl = lender_hash_commit_prepare(loan=loan, actor=lender)
    for status in (None, *TO_REPAYMENT[:-1]):
        if status:
            move(loan, status)
        with pytest.raises(LoanServiceError) as refused:
            lender_preimage_reveal(loan=loan)
        assert refused.value.code == "lender_preimage_not_due"
    move(loan, Loan.Status.REPAYMENT_IN_PROGRESS)
    pl = lender_preimage_reveal(loan=loan)
    assert isinstance(pl, bytes) and hashlib.sha256(pl).digest() == hl
    move(loan, Loan.Status.REPAID)
    assert lender_preimage_reveal(loan=loan) == pl


def test_reveal_refuses_a_loan_without_our_pl_and_a_ciphertext_from_another_row(lender):
    with pytest.raises(LoanServiceError) as refused:
        lender_preimage_reveal(loan=requested_loan())
    assert refused.value.code == "no_lender_preimage"
    first, second = requested_loan(), requested_loan()
    for loan in (first, second):
        lender_hash_commit_prepare(loan=loan, actor=lender)
        move(loan, *TO_REPAYMENT)
    # Someone with write access to the table copies the first loan's ciphertext into the second's row.
    LenderPreimage.objects.filter(loan=second).update(preimage=LenderPreimage.objects.get(loan=first).preimage)
    with pytest.raises(LoanServiceError) as refused:
        lender_preimage_reveal(loan=second)
    assert refused.value.code == "lender_secret_mismatch"


# ------------------------------------------------------------------------------------------------ keys


def test_the_lenders_keys_are_stored_once_and_unsealed_for_signing(lender_persona, operator):
    user, btc_key, account = lender_persona.user, lender_persona.btc_key, lender_persona.account
    evm_row = lender_key_store(lender=user, kind="evm", private_key=Secret(bytes(account.key)), actor=user)
    btc_row = lender_key_store(lender=user, kind="bitcoin", private_key=Secret(btc_key.secret), actor=operator)
    assert (evm_row.public_id, btc_row.public_id) == (account.address, btc_key.xonly_pubkey.hex())
    assert lender_key_store(lender=user, kind="evm", private_key=Secret(bytes(account.key)), actor=None) == evm_row
    assert LenderKey.objects.count() == 2
    assert lender_evm_account(address=account.address.lower()).address == account.address
    assert lender_bitcoin_key(xonly_pubkey=btc_key.xonly_pubkey.hex()) == btc_key
    with pytest.raises(LoanServiceError) as missing:
        lender_evm_account(address="0x" + "00" * 20)
    assert missing.value.code == "no_lender_key"


def test_key_storage_refusals_change_nothing(lender_persona, borrower_persona):
    user, secret = lender_persona.user, Secret(bytes(lender_persona.account.key))
    with pytest.raises(PermissionDenied):
        lender_key_store(lender=user, kind="evm", private_key=secret, actor=borrower_persona.user)
    with pytest.raises(PermissionDenied):
        lender_key_store(lender=user, kind="evm", private_key=secret, actor=make_user(User.Role.LENDER))
    with pytest.raises(LoanServiceError) as not_lender:
        lender_key_store(lender=borrower_persona.user, kind="evm", private_key=secret, actor=None)
    assert not_lender.value.code == "not_a_lender"
    for bad in (b"\x00" * 32, b"\xff" * 32, b"short"):
        with pytest.raises(LoanServiceError) as invalid:
            lender_key_store(lender=user, kind="bitcoin", private_key=Secret(bad), actor=None)
        assert invalid.value.code == "invalid_key"
    lender_key_store(lender=user, kind="evm", private_key=secret, actor=None)
    other_lender = make_user(User.Role.LENDER)
    with pytest.raises(LoanServiceError) as taken:
        lender_key_store(lender=other_lender, kind="evm", private_key=secret, actor=None)
    assert taken.value.code == "key_exists"
    assert LenderKey.objects.count() == 1


def test_a_key_ciphertext_moved_to_another_row_is_refused(lender_persona, dev_accounts):
    user = lender_persona.user
    lender_key_store(lender=user, kind="evm", private_key=Secret(bytes(dev_accounts[0].key)), actor=None)
    lender_key_store(lender=user, kind="evm", private_key=Secret(bytes(dev_accounts[5].key)), actor=None)
    first = LenderKey.objects.get(public_id=dev_accounts[0].address)
    LenderKey.objects.filter(public_id=dev_accounts[5].address).update(private_key=first.private_key)
    with pytest.raises(LoanServiceError) as refused:
        lender_evm_account(address=dev_accounts[5].address)
    assert refused.value.code == "lender_secret_mismatch"


def test_lender_key_import_reads_the_key_from_a_file_or_stdin_and_prints_only_public_facts(
    lender_persona, tmp_path, monkeypatch
):
    user, account, btc_key = lender_persona.user, lender_persona.account, lender_persona.btc_key
    path = tmp_path / "evm.key"
    path.write_text("0x" + bytes(account.key).hex() + "\n")
    out = io.StringIO()
    call_command("lender_key_import", "--kind", "evm", "--lender", user.username, "--file", str(path), stdout=out)
    assert f"evm key {account.address} of {user.username}, sealed with vault key" in out.getvalue()
    monkeypatch.setattr("sys.stdin", io.StringIO(btc_key.to_wif("regtest") + "\n"))
    call_command("lender_key_import", "--kind", "bitcoin", "--lender", user.username, stdout=out)
    assert f"bitcoin key {btc_key.xonly_pubkey.hex()} of {user.username}" in out.getvalue()
    assert not leaked(out.getvalue(), bytes(account.key), btc_key.secret)
    monkeypatch.setattr("sys.stdin", io.StringIO("not a key"))
    with pytest.raises(CommandError, match="not 64 hex characters") as refused:
        call_command("lender_key_import", "--kind", "evm", "--lender", user.username, stdout=out)
    assert "not a key" not in str(refused.value)
    assert LenderKey.objects.count() == 2


# ------------------------------------------------------------------------------------------------ never shown


class Everything(logging.Handler):
    """Every log record of every logger, formatted with its arguments (and any exception)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + " " + repr(record.args) + " " + repr(record.__dict__))


@pytest.fixture
def all_logs():
    handler = Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("django", "django.db.backends", "loans", "evm", "bitcoin")]
    old = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    connection.force_debug_cursor = True  # every SQL statement with its parameters, as DEBUG would log it
    try:
        yield handler
    finally:
        connection.force_debug_cursor = False
        root.removeHandler(handler)
        root.setLevel(old_level)
        for logger, level in old:
            logger.setLevel(level)


def test_no_path_puts_a_secret_in_a_log_an_output_an_error_or_an_admin_page(
    all_logs, client, lender_persona, operator, borrower, settings, vault_key, tmp_path, monkeypatch
):
    """Every path that touches a secret, refused ones included, with all logs (SQL too) captured."""
    user, account, btc_key = lender_persona.user, lender_persona.account, lender_persona.btc_key
    texts: list[str] = []

    def run(command: str, *args: str) -> None:
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command(command, *args, stdout=out, stderr=err)
        except CommandError as error:
            texts.append(str(error))
        texts.extend([out.getvalue(), err.getvalue()])

    def refused(call) -> None:
        try:
            call()
        except (LoanServiceError, PermissionDenied, vault.VaultError) as error:
            texts.append(f"{error!s} {error!r}")
        else:
            raise AssertionError("expected a refusal")

    # keys in
    path = tmp_path / "key"
    path.write_text(bytes(account.key).hex())
    run("lender_key_import", "--kind", "evm", "--lender", user.username, "--file", str(path))
    monkeypatch.setattr("sys.stdin", io.StringIO(btc_key.secret.hex()))
    run("lender_key_import", "--kind", "bitcoin", "--lender", user.username)
    refused(lambda: lender_key_store(lender=user, kind="evm", private_key=Secret(bytes(account.key)), actor=borrower))
    # pL made, refused, revealed
    loan = requested_loan()
    refused(lambda: lender_hash_commit_prepare(loan=loan, actor=borrower))
    hl = lender_hash_commit_prepare(loan=loan, actor=user)
    lender_hash_commit_prepare(loan=loan, actor=operator)
    refused(lambda: lender_preimage_reveal(loan=loan))
    move(loan, *TO_REPAYMENT)
    pl = lender_preimage_reveal(loan=loan)
    # keys out
    assert lender_evm_account(address=account.address).address == account.address
    assert lender_bitcoin_key(xonly_pubkey=btc_key.xonly_pubkey.hex()) == btc_key
    texts.extend(repr(row) + str(row) for row in [*LenderKey.objects.all(), *LenderPreimage.objects.all()])
    texts.extend(repr(row.private_key) for row in LenderKey.objects.all())
    # rotation, then the old key withdrawn: refusals say which key, not what it guards
    settings.LOAN_VAULT_KEYS = f"{Fernet.generate_key().decode()},{vault_key}"
    run("rotate_vault_keys")
    run("rotate_vault_keys")
    settings.LOAN_VAULT_KEYS = Fernet.generate_key().decode()
    refused(lambda: lender_preimage_reveal(loan=loan))
    run("rotate_vault_keys")
    settings.LOAN_VAULT_KEYS = ",".join([vault_key])  # back to a key that no longer opens the rotated values
    # the admin, as an operator: every list and every page of the secrets' models, and the loan
    EvmNonce.objects.create(chain_id=31337, address=account.address, next_nonce=4, last_tx_hash=hex32())
    client.force_login(operator)
    pages = []
    for model in (LenderKey, LenderPreimage, EvmNonce, Loan):
        name = f"admin:loans_{model._meta.model_name}"
        pages.append(client.get(reverse(f"{name}_changelist")))
        pages.extend(client.get(reverse(f"{name}_change", args=[row.pk])) for row in model.objects.all())
    assert all(page.status_code == 200 for page in pages)
    html = "\n".join(page.content.decode() for page in pages)
    assert account.address in html and btc_key.xonly_pubkey.hex() in html and hl.hex() in html
    assert "vault key id" in html.lower()
    for row in LenderKey.objects.all():
        assert row.private_key.key_id in html
        assert row.private_key.token not in html and "fernet:" not in html

    secrets = (pl, bytes(account.key), btc_key.secret)
    everything = "\n".join([*all_logs.lines, *texts, html])
    assert any("SELECT" in line for line in all_logs.lines)  # the SQL log was captured
    assert any("lender hash prepared" in line for line in all_logs.lines)
    assert not leaked(everything, *secrets)


def test_the_secrets_admin_is_operators_only_and_read_only(client, lender, operator):
    loan = requested_loan()
    lender_hash_commit_prepare(loan=loan, actor=lender)
    row = LenderPreimage.objects.get()
    client.force_login(lender)
    assert client.get(reverse("admin:loans_lenderpreimage_changelist")).status_code == 302  # to the login page
    client.force_login(operator)
    page = client.get(reverse("admin:loans_lenderpreimage_change", args=[row.pk]))
    assert page.status_code == 200 and b"_save" not in page.content and b"Save" not in page.content
    assert client.get(reverse("admin:loans_lenderpreimage_add")).status_code == 403
    assert client.post(reverse("admin:loans_lenderpreimage_delete", args=[row.pk]), {"post": "yes"}).status_code == 403
    assert LenderPreimage.objects.get() == row
