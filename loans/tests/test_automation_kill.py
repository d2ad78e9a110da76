"""A worker killed in the middle of a contract call of the lender's automation sends nothing twice when restarted.

A child process runs one pass and dies (``os._exit``) at the submit step: right after the node has the transaction
(nothing of the outcome recorded), or right before (signed and recorded only). A normal pass then finishes the duty:
one transaction on chain for it, the very one that was signed and recorded (same hash, same nonce)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.db import connection
from eth_utils import keccak
from hexbytes import HexBytes

from evm.client import LoanStatus
from loans import vault
from loans.models import Automation, DeploymentPolicy, EvmTransaction
from loans.services.automation import automation_run

from .evm_calls_scene import Scene, scene_fixture  # noqa: F401 - the fixture
from .watcher_process import shared_database_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("when", ["after", "before"])
def test_killed_around_sending_it_sends_the_same_transaction_once(scene: Scene, settings, when: str):
    if connection.vendor != "postgresql":
        pytest.skip("the child process needs a database it can share: PostgreSQL")
    DeploymentPolicy.objects.update_or_create(deployment=scene.desk.record, defaults={"auto_withdraw_offer": True})
    loan = scene.offered()
    deadline = scene.chain(loan).offer_deadline_block
    w3 = scene.desk.w3
    scene.mine_evm(deadline - 1 - w3.eth.block_number)
    lender = scene.desk.lender.address
    nonce = w3.eth.get_transaction_count(lender)
    env = {
        **os.environ,
        "DATABASE_URL": shared_database_url(),
        "EVM_RPC_URL": settings.EVM_RPC_URL,
        "EVM_CHAIN_ID": str(settings.EVM_CHAIN_ID),
        "BITCOIN_RPC_URL": settings.BITCOIN_RPC_URL,
        "BITCOIN_NETWORK": "regtest",
        "LOAN_VAULT_KEYS": django_settings.LOAN_VAULT_KEYS,
        "LOAN_VAULT_KEYS_FILE": "",
        "LOG_LEVEL": "WARNING",
    }
    child = subprocess.run(
        [sys.executable, "-m", "loans.tests.automation_process", when],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 17, child.stderr[-3000:]
    row = Automation.objects.get(loan=loan, action="withdraw-offer")
    assert (row.state, row.evm_nonce) == ("sent", nonce)  # recorded before the node saw anything
    recorded = row.evm_tx_hash
    # The signed transaction is kept sealed (an acceptLoanRepayment's would carry pL): ciphertext in the column,
    # opening to the transaction whose hash was recorded.
    with connection.cursor() as cursor:
        cursor.execute("SELECT evm_signed_tx FROM loans_automation WHERE id = %s", [row.pk])
        (stored,) = cursor.fetchone()
    signed = vault.unseal(row.evm_signed_tx).reveal()
    assert stored.startswith("fernet:") and signed.hex() not in stored
    assert keccak(signed).hex() == recorded
    if when == "after":
        assert w3.eth.get_transaction(HexBytes(bytes.fromhex(recorded))) is not None
        assert w3.eth.get_transaction_count(lender) == nonce + 1
    else:
        assert w3.eth.get_transaction_count(lender) == nonce  # never sent

    automation_run()
    row.refresh_from_db()
    assert (row.state, row.evm_tx_hash, row.evm_nonce) == ("done", recorded, nonce)
    receipt = w3.eth.get_transaction_receipt(HexBytes(bytes.fromhex(recorded)))
    assert receipt["status"] == 1
    assert w3.eth.get_transaction_count(lender) == nonce + 1  # one transaction for the duty, no second one
    assert scene.chain(loan).status is LoanStatus.OFFER_EXPIRED
    automation_run()
    assert w3.eth.get_transaction_count(lender) == nonce + 1
    assert not EvmTransaction.objects.filter(loan=loan, function="withdrawLoanOffer").exclude(tx_hash=recorded).exists()
