"""``manage.py demo`` on anvil and the regtest node: the demo lender set up once, rBTC for a wallet, an escrow paid
as the loan page asks, both chains mined exactly to a loan's next deadline, and the refusals (nothing changed)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from eth_account import Account

from bitcoin.addresses import address_to_script_pubkey
from bitcoin.keypath import bip86_script_pubkey, build_keypath_spend
from bitcoin.keys import PrivateKey
from bitcoin.rpc import BitcoinRPC
from bitcoin.testing import fund_output
from bitcoin.tests.loan_vectors import REGTEST_P2TR, REGTEST_P2WPKH, lender_key
from bitcoin.transactions import OutPoint, TxOut, build_exit, finalize_exit
from evm.deploy import dev_accounts
from loans.chains import loan_contract_client
from loans.facts import loan_facts
from loans.funding import current_fee_rate_sat_vb, loan_funding_instructions
from loans.models import DeploymentPolicy, LenderKey, Loan, User
from loans.selectors import parameters_in_force
from loans.services import contract_deployment_record
from loans.services import evm_calls as calls
from loans.services.demo import DEMO_AUTOMATION_SWITCHES, DEMO_LENDER_USERNAME, DEMO_WINDOWS, demo_payout_address
from loans.services.lender_secrets import lender_bitcoin_key, lender_evm_account

from .evm_calls_scene import Scene, scene_fixture  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def demo(*args: str) -> str:
    out = io.StringIO()
    call_command("demo", *args, stdout=out)
    return out.getvalue()


def refused(code: str, *args: str) -> str:
    with pytest.raises(CommandError) as info:
        demo(*args)
    message = str(info.value)
    assert message.endswith(f"({code})"), message
    return message


def development(settings, tmp_path, *, anvil_url: str, btc_url: str) -> None:
    settings.DEBUG = True
    settings.EVM_RPC_URL = anvil_url
    settings.EVM_CHAIN_ID = 31337
    settings.BITCOIN_RPC_URL = btc_url
    settings.BITCOIN_NETWORK = "regtest"
    settings.VAR_DIR = str(tmp_path)
    (tmp_path / "dev-lender.key").write_text(lender_key().secret.hex() + "\n")  # the test contracts' xL


@pytest.fixture
def dev(db, settings, tmp_path, anvil, btc_rpc, deployment):
    """What devstack leaves before ``demo setup``: development settings, the contracts recorded, the key file."""
    development(settings, tmp_path, anvil_url=anvil.url, btc_url=btc_rpc.url)
    settings.LENDER_BTC_PAYOUT_ADDRESS = ""
    settings.LOAN_VAULT_KEYS_FILE = ""
    settings.LOAN_VAULT_KEYS = Fernet.generate_key().decode()
    return contract_deployment_record(deployment=deployment)


@pytest.fixture
def stage(settings, tmp_path, scene: Scene) -> Scene:
    development(settings, tmp_path, anvil_url=settings.EVM_RPC_URL, btc_url=scene.btc.url)
    return scene


def heads(scene: Scene) -> tuple[int, int]:
    return int(scene.desk.w3.eth.block_number), scene.btc.getblockcount()


def written() -> tuple:
    return (
        list(User.objects.order_by("pk").values_list("pk", "role", "evm_address")),
        list(LenderKey.objects.order_by("pk").values_list("pk", "public_id")),
        list(DeploymentPolicy.objects.values_list("pk", "updated_at", *DEMO_AUTOMATION_SWITCHES)),
    )


# ------------------------------------------------------------------------------------------------ windows


def test_windows_puts_the_short_windows_in_force_on_the_contract_and_the_desk_once(dev):
    client = loan_contract_client(deployment=dev)
    before = client.parameters()
    assert before.loan_duration_blocks != DEMO_WINDOWS["loan_duration_blocks"]
    out = demo("windows")
    on_chain = client.parameters()
    assert {name: getattr(on_chain, name) for name in DEMO_WINDOWS} == DEMO_WINDOWS
    assert on_chain.lender_btc_pubkey == before.lender_btc_pubkey and on_chain.bond_percent == before.bond_percent
    in_force = parameters_in_force()
    assert {name: getattr(in_force, name) for name in DEMO_WINDOWS} == DEMO_WINDOWS
    assert f"demo windows put in force (parameters version {in_force.version})" in out
    version = client.parameters_version()
    again = demo("windows")
    assert "demo windows already in force" in again
    assert client.parameters_version() == version and parameters_in_force().pk == in_force.pk  # nothing sent


def test_windows_refused_outside_development_changes_nothing(dev, settings):
    client = loan_contract_client(deployment=dev)
    version = client.parameters_version()
    settings.DEBUG = False
    refused("not_development", "windows")
    assert client.parameters_version() == version


# ------------------------------------------------------------------------------------------------ setup


def test_setup_makes_the_demo_lender_with_its_keys_sealed_and_automation_on_once(dev, btc_rpc: BitcoinRPC):
    owner = dev_accounts(1)[0]
    xonly = lender_key().xonly_pubkey
    out = demo("setup")

    user = User.objects.get(username=DEMO_LENDER_USERNAME)
    assert (user.role, user.evm_address, user.has_usable_password()) == (User.Role.LENDER, owner.address, False)
    keys = {key.kind: key for key in LenderKey.objects.filter(lender=user)}
    assert keys[LenderKey.Kind.EVM].public_id == owner.address
    assert keys[LenderKey.Kind.BITCOIN].public_id == xonly.hex()
    with connection.cursor() as cursor:  # at rest: ciphertext only
        cursor.execute(f"SELECT private_key FROM {LenderKey._meta.db_table}")  # noqa: S608 - our own table name
        stored = " ".join(row[0] for row in cursor.fetchall())
    for secret in (bytes(owner.key), lender_key().secret):
        assert secret.hex() not in stored.lower() and secret.hex() not in out
    assert lender_evm_account(address=owner.address).key == owner.key  # the vault gives them back to the worker
    assert lender_bitcoin_key(xonly_pubkey=xonly.hex()).secret == lender_key().secret
    policy = DeploymentPolicy.objects.get(deployment=dev)
    assert all(getattr(policy, switch) for switch in DEMO_AUTOMATION_SWITCHES) and not policy.new_loans_paused

    # The payout address is the dev lender key's BIP-86 key path: the regtest node pays it, the key alone spends it.
    payout = demo_payout_address(xonly_pubkey=xonly, network="regtest")
    assert payout.startswith("bcrt1p") and f"lender payout address {payout}" in out
    assert address_to_script_pubkey(payout, "regtest") == bip86_script_pubkey(xonly)
    funded = fund_output(btc_rpc, payout, 50_000, 1)
    spend = build_keypath_spend(
        lender_key(),
        outpoint=OutPoint(funded.txid, funded.vout),
        spent=TxOut(50_000, funded.script_pubkey),
        outputs=[TxOut(49_000, address_to_script_pubkey(REGTEST_P2TR, "regtest"))],
    )
    assert btc_rpc.testmempoolaccept([spend.hex()])[0]["allowed"] is True

    before = written()
    again = demo("setup")
    assert written() == before  # idempotent: the same rows, the policy not even saved again
    assert "in place" in again and "created" in out


def test_setup_keeps_a_configured_payout_address_and_an_existing_lender(dev, settings, lender_persona):
    settings.LENDER_BTC_PAYOUT_ADDRESS = REGTEST_P2WPKH
    out = demo("setup")
    assert f"lender payout address {REGTEST_P2WPKH} (LENDER_BTC_PAYOUT_ADDRESS)" in out
    assert not User.objects.filter(username=DEMO_LENDER_USERNAME).exists()  # account 0's lender is the persona
    assert set(LenderKey.objects.values_list("lender_id", flat=True)) == {lender_persona.user.pk}


def test_setup_refusals_write_nothing(dev, settings, tmp_path):
    before = written()
    settings.DEBUG = False
    refused("not_development", "setup")
    settings.DEBUG = True
    settings.EVM_CHAIN_ID = 31
    refused("not_development", "setup")
    settings.EVM_CHAIN_ID = 31337
    key_file = tmp_path / "dev-lender.key"
    key_file.write_text(PrivateKey.generate().secret.hex())
    assert "is not the contracts' lender key" in refused("demo_key_mismatch", "setup")
    key_file.unlink()
    refused("no_dev_lender_key", "setup")
    key_file.write_text(lender_key().secret.hex())
    assert written() == before
    User.objects.create(username="someone", evm_address=dev_accounts(1)[0].address, role=User.Role.BORROWER)
    before = written()
    refused("demo_user_conflict", "setup")
    assert written() == before


# ------------------------------------------------------------------------------------------------ fund, mine


def test_fund_adds_rbtc_to_an_address_and_refuses_bad_input(dev, w3):
    address = Account.create().address
    assert "gave" in demo("fund", address, "--wei", "123")
    demo("fund", address.lower(), "--wei", str(10**18))
    assert w3.eth.get_balance(address) == 10**18 + 123
    demo("fund", address)
    assert w3.eth.get_balance(address) == 101 * 10**18 + 123  # 100 rBTC by default
    refused("invalid_address", "fund", "0x1234")
    refused("invalid_amount", "fund", address, "--wei", "0")
    assert w3.eth.get_balance(address) == 101 * 10**18 + 123


def test_mine_mines_each_chain_and_refuses_nothing_to_mine(dev, w3, btc_rpc):
    evm, btc = int(w3.eth.block_number), btc_rpc.getblockcount()
    assert demo("mine").strip() == f"mined 1 EVM block (head {evm + 1}) and 1 Bitcoin block (tip {btc + 1})"
    demo("mine", "--evm", "7")
    demo("mine", "--btc", "3")
    assert (int(w3.eth.block_number), btc_rpc.getblockcount()) == (evm + 8, btc + 4)
    refused("invalid_blocks", "mine", "--evm", "0", "--btc", "0")
    refused("invalid_blocks", "mine", "--btc", "-1")
    assert (int(w3.eth.block_number), btc_rpc.getblockcount()) == (evm + 8, btc + 4)


# ------------------------------------------------------------------------------------------------ pay-escrow


def test_pay_escrow_pays_what_the_loan_page_asks_and_the_watcher_confirms_it(stage: Scene, watch):
    loan = stage.desk.draft(
        parameters=stage.parameters, borrower_payout_address=REGTEST_P2TR, lender_payout_address=REGTEST_P2WPKH
    )
    rate, source = current_fee_rate_sat_vb(rpc=stage.btc)
    asked = loan_funding_instructions(loan=loan, fee_rate_sat_vb=rate, fee_rate_source=source)  # the page's figures
    tip = stage.btc.getblockcount()
    out = demo("pay-escrow", str(loan.pk))

    [utxo] = stage.btc.scan_script_utxos(loan_facts(loan=loan).escrow.script_pubkey.hex())
    assert utxo["sats"] == asked.total_sats and utxo["height"] == tip + 1 == stage.btc.getblockcount()
    assert f"paid {asked.total_sats} sat to loan {loan.pk}'s escrow {asked.escrow_address}" in out
    assert utxo["txid"] in out
    # Before the watcher has seen it, a second payment is refused by the node's own UTXO set.
    refused("escrow_already_paid", "pay-escrow", str(loan.pk))
    assert stage.btc.getblockcount() == tip + 1

    watch()
    loan.refresh_from_db()
    assert loan.bitcoin_status == Loan.BitcoinStatus.ESCROW_CONFIRMED
    assert (loan.escrow_txid, loan.escrow_sats, loan.escrow_btc_height) == (utxo["txid"], asked.total_sats, tip + 1)
    refused("escrow_not_due", "pay-escrow", str(loan.pk))
    refused("unknown_loan", "pay-escrow", str(loan.pk + 1000))
    assert len(stage.btc.scan_script_utxos(loan_facts(loan=loan).escrow.script_pubkey.hex())) == 1


# ------------------------------------------------------------------------------------------------ advance


def test_advance_reaches_an_evm_deadline_exactly(stage: Scene):
    loan = stage.active()
    deadline = loan.repayment_deadline_evm_block
    evm, btc = heads(stage)
    demo("mine", "--evm", str(deadline - 2 - evm))  # one block short: markAsDefaulted would land before t_D
    with pytest.raises(calls.LoanServiceError) as info:
        calls.loan_default_mark(loan=loan, actor=stage.lender, send=True)
    assert info.value.code == "too_early"

    out = demo("advance", str(loan.pk))
    assert heads(stage) == (deadline - 1, btc)  # the next block is t_D's first; Bitcoin moves 1 // 20 = 0 blocks
    assert out.splitlines() == [
        f"mined 1 EVM block (head {deadline - 1}) and 0 Bitcoin blocks (tip {btc})",
        f"loan {loan.pk} reached the repayment deadline (t_D) at EVM block {deadline}: repay closes, "
        "mark-default opens with the next block",
    ]
    calls.loan_default_mark(loan=loan, actor=stage.lender, send=True)
    assert stage.sync(loan).status == Loan.Status.DEFAULTED

    # Defaulted without collateral locked: nothing ahead (the escrow is owed to the lender, no t_1 running).
    before = heads(stage)
    assert "has no deadline ahead" in refused("no_deadline_ahead", "advance", str(loan.pk))
    refused("unknown_loan", "advance", str(loan.pk + 1000))
    assert heads(stage) == before


def test_advance_reaches_a_bitcoin_timelock_exactly(stage: Scene):
    loan = stage.requested(funded=True)
    mature = loan.escrow_btc_height + loan.escrow_timelock_btc_blocks  # the first height TX_exit may be mined at
    prepared = build_exit(loan_facts(loan=loan), fee_rate_sat_vb=2)
    tx_exit = finalize_exit(prepared, borrower_signature=prepared.sign(stage.desk.borrower.btc_key)).hex()
    evm, btc = heads(stage)
    demo("mine", "--btc", str(mature - 2 - btc))
    assert stage.btc.testmempoolaccept([tx_exit])[0]["reject-reason"] == "non-BIP68-final"  # one block short

    out = demo("advance", str(loan.pk))
    assert heads(stage) == (evm + 20, mature - 1)  # one Bitcoin block, and the EVM chain in step (20 per block)
    assert out.splitlines()[1] == (
        f"loan {loan.pk} reached the escrow's timelock (t_0) at Bitcoin height {mature}: exit-psbt opens with the "
        "next block"
    )
    assert stage.btc.testmempoolaccept([tx_exit])[0]["allowed"] is True


def test_advance_moves_both_chains_in_step_to_the_next_deadline(stage: Scene):
    loan = stage.offered()
    cutoff = loan.offer_deadline_evm_block - loan.accept_cutoff_blocks + 1  # the first block no accept may land in
    evm, btc = heads(stage)
    calls.loan_offer_accept_prepare(loan=loan, actor=stage.borrower)  # still open

    out = demo("advance", str(loan.pk))
    mined = cutoff - 1 - evm
    assert heads(stage) == (cutoff - 1, btc + mined // loan.evm_blocks_per_btc_block)
    assert "the accept cutoff" in out and "accept-offer closes" in out
    with pytest.raises(calls.LoanServiceError) as info:
        calls.loan_offer_accept_prepare(loan=loan, actor=stage.borrower)
    assert info.value.code == "accept_cutoff"

    demo("advance", str(loan.pk))  # then the offer deadline: the lender may withdraw from the next block on
    assert heads(stage)[0] == loan.offer_deadline_evm_block - 1
    calls.loan_offer_withdraw(loan=loan, actor=stage.lender, send=True)
    assert stage.sync(loan).status == Loan.Status.OFFER_EXPIRED


# ------------------------------------------------------------------------------------------------ SQLite


SQLITE_LEASE = """
from django.core.management import call_command
from evm.connection import connect
from loans.models import EvmNonce, User
from loans.nonces import DATABASE_NONCES
from loans.services.automation import _in_own_connection

call_command("migrate", verbosity=0)
w3 = connect({url!r}, expected_chain_id=31337)
with DATABASE_NONCES.lease(w3, 31337, {address!r}) as lease:
    nonce = lease.next_nonce()
    # What the automation does between signing and sending: record on a connection of its own, committed.
    _in_own_connection(lambda: User.objects.create(username="recorded") and 1)
    lease.accepted(nonce, bytes(32))
row = EvmNonce.objects.get()
print(row.next_nonce == nonce + 1, User.objects.filter(username="recorded").exists())
"""


def test_the_automations_record_is_written_inside_a_nonce_lease_on_sqlite(tmp_path, anvil):
    """The newcomer's database is SQLite (one writer per file): a lease must not hold a write transaction while
    the automation commits its record of the signed transaction on another connection ("database is locked")."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_", "DATABASE_", "REDIS_"))},
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "VAR_DIR": str(tmp_path / "var"),
    }
    script = SQLITE_LEASE.format(url=anvil.url, address=dev_accounts(1)[0].address)
    manage = str(Path(settings.BASE_DIR) / "manage.py")
    result = subprocess.run(
        [sys.executable, manage, "shell", "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["True", "True"]
