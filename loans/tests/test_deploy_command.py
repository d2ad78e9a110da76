"""`manage.py deploy_contracts` deploys and links both contracts, writes the JSON record and the database row."""

import io
import json

import pytest
from django.core.management import CommandError, call_command
from web3 import Web3

from loans.models import ContractDeployment

pytestmark = [pytest.mark.django_db, pytest.mark.integration]
LENDER_KEY = "64b4b84f42da9bdb84f7eda2de12524516686e73849645627fb7a034c79c81c8"


def test_deploys_links_and_records(settings, anvil, evm_snapshot, tmp_path, monkeypatch):
    monkeypatch.delenv("EVM_DEPLOYER_PRIVATE_KEY", raising=False)
    settings.EVM_RPC_URL, settings.EVM_CHAIN_ID = anvil.url, anvil.chain_id
    output = tmp_path / "deployment.json"
    call_command("deploy_contracts", lender_btc_pubkey=LENDER_KEY, output=output, stdout=io.StringIO())

    record = json.loads(output.read_text())
    row = ContractDeployment.objects.get()
    assert row.chain_id == anvil.chain_id
    assert row.loan_contract_address == record["contracts"]["BtcCollateralLoan"]["address"]
    assert row.ether_swap_address == record["contracts"]["EtherSwap"]["address"]
    assert (row.block_number, "0x" + row.block_hash) == (record["block_number"], record["block_hash"])
    assert row.parameters.lender_btc_pubkey == LENDER_KEY
    assert row.parameters.evm_blocks_per_btc_block == settings.EVM_BLOCKS_PER_BTC_BLOCK
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    assert w3.eth.get_code(row.loan_contract_address) and w3.eth.get_code(row.ether_swap_address)
    block = w3.eth.get_block(row.block_number)
    assert block["hash"].hex().removeprefix("0x") == row.block_hash


def test_refuses_a_bad_key_and_changes_nothing(settings, anvil, evm_snapshot, tmp_path):
    settings.EVM_RPC_URL, settings.EVM_CHAIN_ID = anvil.url, anvil.chain_id
    with pytest.raises(CommandError, match="lender-btc-pubkey"):
        call_command("deploy_contracts", lender_btc_pubkey="00" * 31, output=tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists()
    assert not ContractDeployment.objects.exists()


def test_refuses_the_dev_key_off_the_dev_chain(settings, tmp_path, monkeypatch):
    from evm.anvil import AnvilNode

    monkeypatch.delenv("EVM_DEPLOYER_PRIVATE_KEY", raising=False)
    with AnvilNode(chain_id=31) as node:
        settings.EVM_RPC_URL, settings.EVM_CHAIN_ID = node.url, 31
        with pytest.raises(CommandError, match="EVM_DEPLOYER_PRIVATE_KEY"):
            call_command("deploy_contracts", lender_btc_pubkey=LENDER_KEY, output=tmp_path / "d.json")
    assert not ContractDeployment.objects.exists()


def test_devstack_redeploys_a_deployment_recorded_from_older_contracts(
    settings, anvil, evm_snapshot, tmp_path, monkeypatch
):
    """A developer's var/deployment.json from before a contract change is replaced, not fatal."""
    from loans.management.commands.devstack import Command as Devstack

    monkeypatch.delenv("EVM_DEPLOYER_PRIVATE_KEY", raising=False)
    settings.EVM_RPC_URL, settings.EVM_CHAIN_ID = anvil.url, anvil.chain_id
    settings.VAR_DIR, settings.EVM_DEPLOYMENT_FILE = tmp_path, tmp_path / "deployment.json"
    call_command(
        "deploy_contracts", lender_btc_pubkey=LENDER_KEY, output=settings.EVM_DEPLOYMENT_FILE, stdout=io.StringIO()
    )
    record = json.loads(settings.EVM_DEPLOYMENT_FILE.read_text())
    first = record["contracts"]["BtcCollateralLoan"]["address"]

    devstack = Devstack(stdout=io.StringIO())
    devstack.ensure_deployment()  # today's contracts, code on chain: kept
    assert json.loads(settings.EVM_DEPLOYMENT_FILE.read_text())["contracts"]["BtcCollateralLoan"]["address"] == first

    record["contracts"]["BtcCollateralLoan"]["bytecode_sha256"] = "00" * 32  # made from other sources
    settings.EVM_DEPLOYMENT_FILE.write_text(json.dumps(record))
    devstack.ensure_deployment()
    second = json.loads(settings.EVM_DEPLOYMENT_FILE.read_text())["contracts"]["BtcCollateralLoan"]["address"]
    assert second != first and "other contract sources" in devstack.stdout.getvalue()

    del record["parameters"]["drift_margin_bps"]  # an older format no longer loads
    settings.EVM_DEPLOYMENT_FILE.write_text(json.dumps(record))
    devstack.ensure_deployment()
    third = json.loads(settings.EVM_DEPLOYMENT_FILE.read_text())["contracts"]["BtcCollateralLoan"]["address"]
    assert third not in (first, second) and "older contracts" in devstack.stdout.getvalue()
