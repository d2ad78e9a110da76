"""`manage.py deploy_contracts` against anvil: deploys, links, writes and prints the record; refuses bad input
and a missing key on a non-development chain without writing anything."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from eth_utils import to_checksum_address

from evm.anvil import AnvilNode
from evm.artifacts import load_artifacts
from evm.client import LoanContractClient
from evm.connection import connect
from evm.deploy import Deployment, dev_accounts, load_deployment
from evm.errors import InvalidArgument
from evm.management.commands.deploy_contracts import Command
from evm.parameters import ProtocolParameters

X_L = "64b4b84f42da9bdb84f7eda2de12524516686e73849645627fb7a034c79c81c8"


@pytest.fixture
def configured(settings, anvil, tmp_path, monkeypatch):
    settings.EVM_RPC_URL = anvil.url
    settings.EVM_CHAIN_ID = 31337
    settings.EVM_RPC_TIMEOUT = 30
    settings.EVM_BLOCKS_PER_BTC_BLOCK = 20
    settings.EVM_DEPLOYMENT_FILE = tmp_path / "var" / "nested" / "deployment.json"
    monkeypatch.delenv("EVM_DEPLOYER_PRIVATE_KEY", raising=False)
    return settings


def run(*args: str) -> str:
    """evm's own command (the `loans` app overrides the name to also record the deployment in the database;
    that extension is tested there)."""
    out = io.StringIO()
    call_command(Command(), *args, stdout=out)
    return out.getvalue()


@pytest.mark.integration
def test_deploys_links_and_records(configured, w3, evm_snapshot):
    output = run("--lender-btc-pubkey", X_L)
    path = configured.EVM_DEPLOYMENT_FILE
    record = json.loads(path.read_text())
    deployment = load_deployment(path)
    assert Deployment.from_json_dict(record) == deployment
    assert json.loads(output[: output.rindex("}") + 1]) == record  # the same JSON is printed
    assert f"deployment written to {path}" in output

    anvil_account_0 = dev_accounts(1)[0].address
    assert deployment.chain_id == 31337 and deployment.deployer == anvil_account_0
    assert deployment.parameters == ProtocolParameters(lender_btc_pubkey=bytes.fromhex(X_L))
    swap_receipt = w3.eth.get_transaction_receipt(deployment.ether_swap_tx_hash)
    loan_receipt = w3.eth.get_transaction_receipt(deployment.loan_tx_hash)
    link_receipt = w3.eth.get_transaction_receipt(deployment.link_tx_hash)
    assert to_checksum_address(swap_receipt["contractAddress"]) == deployment.ether_swap_address
    assert to_checksum_address(loan_receipt["contractAddress"]) == deployment.loan_address
    assert link_receipt["to"] == deployment.ether_swap_address and link_receipt["status"] == 1
    assert deployment.block_number == swap_receipt["blockNumber"]
    assert deployment.block_hash == bytes(w3.eth.get_block(deployment.block_number)["hash"])
    artifacts = load_artifacts()
    assert deployment.loan_bytecode_sha256 == artifacts.loan.bytecode_sha256

    client = LoanContractClient(w3, deployment.loan_address)
    assert client.linked_loan_contract() == deployment.loan_address
    assert client.ether_swap.address == deployment.ether_swap_address
    assert client.owner() == anvil_account_0 and client.parameters() == deployment.parameters


@pytest.mark.integration
def test_a_live_deployment_is_not_replaced_by_accident(configured, w3, evm_snapshot):
    run("--lender-btc-pubkey", X_L)
    path = configured.EVM_DEPLOYMENT_FILE
    first = load_deployment(path)
    block = w3.eth.block_number
    with pytest.raises(
        CommandError, match=f"already deployed on chain 31337 \\(BtcCollateralLoan {first.loan_address}"
    ):
        run("--lender-btc-pubkey", X_L)
    assert load_deployment(path) == first and w3.eth.block_number == block

    run("--lender-btc-pubkey", X_L, "--replace")
    second = load_deployment(path)
    assert second.loan_address != first.loan_address and w3.eth.get_code(second.loan_address)


@pytest.mark.integration
def test_a_record_of_a_reset_chain_is_replaced(configured, w3, evm_snapshot):
    gone = stale_record()  # its contracts do not exist on this chain (a development chain that was reset)
    gone.write(configured.EVM_DEPLOYMENT_FILE)
    run("--lender-btc-pubkey", X_L)
    assert load_deployment(configured.EVM_DEPLOYMENT_FILE).loan_address != gone.loan_address


@pytest.mark.integration
def test_an_unreadable_record_is_not_overwritten(configured):
    path = configured.EVM_DEPLOYMENT_FILE
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(CommandError, match="cannot check the recorded deployment"):
        run("--lender-btc-pubkey", X_L)
    assert path.read_text() == "{not json"


def stale_record() -> Deployment:
    return Deployment(
        chain_id=31337,
        ether_swap_address="0x000000000000000000000000000000000000bEEF",
        loan_address="0x000000000000000000000000000000000000dEaD",
        deployer=dev_accounts(1)[0].address,
        block_number=1,
        block_hash=b"\x01" * 32,
        ether_swap_tx_hash=b"\x02" * 32,
        loan_tx_hash=b"\x03" * 32,
        link_tx_hash=b"\x04" * 32,
        parameters=ProtocolParameters(lender_btc_pubkey=bytes.fromhex(X_L)),
    )


@pytest.mark.integration
def test_the_deployer_key_comes_from_the_environment(configured, w3, evm_snapshot, monkeypatch):
    account = dev_accounts(4)[3]
    monkeypatch.setenv("EVM_DEPLOYER_PRIVATE_KEY", account.key.hex())
    run("--lender-btc-pubkey", "0x" + X_L)
    deployment = load_deployment(configured.EVM_DEPLOYMENT_FILE)
    assert deployment.deployer == account.address
    assert LoanContractClient(w3, deployment.loan_address).owner() == account.address


@pytest.mark.integration
@pytest.mark.parametrize(
    ("key", "message"),
    [
        (X_L[:-2], "exactly 32 bytes, got 31"),
        ("zz" + X_L[2:], "32 bytes of hex"),
        ("00" * 32, "must not be zero"),
    ],
)
def test_a_bad_lender_key_is_refused_and_nothing_is_written(configured, w3, key, message):
    block = w3.eth.block_number
    with pytest.raises(CommandError, match=message):
        run("--lender-btc-pubkey", key)
    assert not configured.EVM_DEPLOYMENT_FILE.exists()
    assert w3.eth.block_number == block  # nothing was sent


@pytest.mark.integration
def test_the_lender_key_is_required(configured):
    with pytest.raises(CommandError, match="--lender-btc-pubkey"):
        run()


@pytest.mark.integration
def test_a_node_on_another_chain_is_refused(configured, w3):
    configured.EVM_CHAIN_ID = 31
    with pytest.raises(CommandError, match="serves chain id 31337, but chain id 31 is configured"):
        run("--lender-btc-pubkey", X_L)
    assert not configured.EVM_DEPLOYMENT_FILE.exists()


@pytest.mark.integration
def test_an_invalid_private_key_is_refused(configured, monkeypatch):
    monkeypatch.setenv("EVM_DEPLOYER_PRIVATE_KEY", "0x1234")
    with pytest.raises(CommandError, match="not a valid 32-byte hex key"):
        run("--lender-btc-pubkey", X_L)
    assert not configured.EVM_DEPLOYMENT_FILE.exists()


@pytest.fixture(scope="module")
def testnet_like_node():
    """An anvil that claims to be Rootstock testnet (chain id 31)."""
    with AnvilNode(chain_id=31) as node:
        yield node


@pytest.mark.integration
def test_outside_the_dev_chain_a_key_is_required_and_legacy_transactions_are_used(
    configured, testnet_like_node, monkeypatch
):
    configured.EVM_RPC_URL = testnet_like_node.url
    configured.EVM_CHAIN_ID = 31
    with pytest.raises(CommandError, match="no deployer key: set EVM_DEPLOYER_PRIVATE_KEY"):
        run("--lender-btc-pubkey", X_L)
    assert not configured.EVM_DEPLOYMENT_FILE.exists()

    account = dev_accounts(6)[5]
    monkeypatch.setenv("EVM_DEPLOYER_PRIVATE_KEY", account.key.hex())
    run("--lender-btc-pubkey", X_L)
    deployment = load_deployment(configured.EVM_DEPLOYMENT_FILE)
    assert deployment.chain_id == 31 and deployment.deployer == account.address
    w3 = connect(testnet_like_node.url, expected_chain_id=31)
    for tx_hash in (deployment.ether_swap_tx_hash, deployment.loan_tx_hash, deployment.link_tx_hash):
        tx = w3.eth.get_transaction(tx_hash)
        assert tx["type"] == 0 and tx["chainId"] == 31  # Rootstock accepts only legacy (EIP-155) transactions


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d | {"format": 2}, "unknown deployment file format 2"),
        (lambda d: {k: v for k, v in d.items() if k != "contracts"}, "malformed deployment record: KeyError"),
        (lambda d: d | {"block_hash": "0xzz"}, "malformed deployment record"),
        (lambda d: d | {"deployer": "not an address"}, "malformed deployment record"),
    ],
)
def test_malformed_records_are_refused(tmp_path, mutate, message):
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(mutate(stale_record().to_json_dict())))
    with pytest.raises(InvalidArgument, match=message):
        load_deployment(path)


def test_records_round_trip_and_a_missing_file_is_explained(tmp_path):
    record = stale_record()
    record.write(tmp_path / "a" / "b.json")
    assert load_deployment(tmp_path / "a" / "b.json") == record
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]  # no temporary file left behind
    with pytest.raises(InvalidArgument, match=r"no deployment file at .*run `manage\.py deploy_contracts`"):
        load_deployment(tmp_path / "missing.json")
