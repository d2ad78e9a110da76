"""Whole loans through the REST API alone, as wallets drive them, on anvil and the regtest node.

The borrower is a wallet: an EVM account that signs in with SIWE and signs the contract calls the API prepares
(eth-account; sent through its own node connection, then reported by hash), and a Bitcoin key that never reaches
the server: every Bitcoin signature is made by the offline tool, ``python -m bitcoin``, in its own process, from the
loan file the API hands out. The lender is the desk: signed in the same way, it sends its calls and Bitcoin
transactions with the keys in the server's vault. Between steps the watchers run once (``sync_chains --once``
does the same), as the worker would; the chains move only by the transactions the parties send and the blocks the
test mines to reach a deadline.

Two paths: request to TX_release confirmed (the happy path), and a default to TX_capture confirmed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from web3 import Web3

from bitcoin.addresses import address_to_script_pubkey
from bitcoin.keys import PrivateKey
from bitcoin.rpc import BitcoinRPC
from bitcoin.testing import fund_output, mine_blocks
from bitcoin.tests.loan_vectors import REGTEST_P2TR, REGTEST_P2WPKH
from bitcoin.transactions import Transaction
from evm.client import LoanContractClient
from evm.testing import mine
from loans import vault
from loans.models import PARAMETER_FIELDS, LenderKey, Loan, ProtocolParameters, User
from loans.services.lender_secrets import lender_key_store
from loans.sync.bitcoin import sync_bitcoin
from loans.sync.evm import sync_evm

from .api_wallet import Wallet
from .caches import use_own_cache
from .conftest import Desk
from .evm_calls_scene import SMALL_WITH_CAPTURE

pytestmark = pytest.mark.django_db(transaction=False)

REPO = Path(__file__).resolve().parents[2]
AMOUNT_WEI = 10**16
FEE_RATE = "2"


# ------------------------------------------------------------------------------------------------ the parties


def offline_tool(*args: str) -> str:
    """``python -m bitcoin ARGS`` in its own process, as the borrower runs it: stdout, or the test fails."""
    done = subprocess.run(
        [sys.executable, "-m", "bitcoin", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"python -m bitcoin {' '.join(args)}: {done.stderr}"
    return done.stdout


@dataclass
class World:
    w3: Web3
    btc: BitcoinRPC
    client: LoanContractClient
    borrower: Wallet
    lender: Wallet
    borrower_btc_key: PrivateKey
    borrower_payout: str
    lender_payout: str
    tmp: Path

    def sync(self) -> None:
        """One run of each watcher (the worker's job)."""
        sync_evm(w3=self.w3, confirmations=1)
        sync_bitcoin(rpc=self.btc, confirmations=1)

    def loan(self, loan_id: int) -> dict:
        return self.borrower.get("loan-detail", loan_id)

    def mine_btc(self, blocks: int) -> None:
        mine_blocks(self.btc, blocks)

    def loan_file(self, loan_id: int) -> str:
        path = self.tmp / f"loan-{loan_id}.json"
        path.write_text(json.dumps(self.borrower.get("loan-file", loan_id)))
        return str(path)

    def key_file(self) -> str:
        path = self.tmp / "borrower.key"
        path.write_text(self.borrower_btc_key.to_wif("regtest"))
        return str(path)

    def next_actions(self, wallet: Wallet, loan_id: int) -> dict[str, bool]:
        return {step["name"]: step["open"] for step in wallet.get("loan-detail", loan_id)["next_actions"]}


@pytest.fixture
def world(settings, anvil, w3, btc_rpc, desk: Desk, stranger_account, tmp_path) -> World:
    settings.EVM_RPC_URL, settings.EVM_CHAIN_ID = anvil.url, desk.client.chain_id
    settings.BITCOIN_RPC_URL, settings.BITCOIN_NETWORK = btc_rpc.url, "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB, settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "1", "500"
    settings.BITCOIN_CONFIRMATIONS = settings.EVM_CONFIRMATIONS = 1
    settings.LOAN_VAULT_KEYS_FILE, settings.LOAN_VAULT_KEYS = "", Fernet.generate_key().decode()
    settings.ALLOWED_HOSTS = ["testserver"]
    use_own_cache(settings)
    settings.LENDER_BTC_PAYOUT_ADDRESS = lender_payout = REGTEST_P2WPKH

    # The operator's setup: the contracts' parameters for this desk, and the lender's keys in the vault.
    client = desk.client
    small = client.parameters().replace(**SMALL_WITH_CAPTURE)
    client.send(client.update_parameters(small), desk.lender.account)
    ProtocolParameters.objects.create(
        version=client.parameters_version(),
        lender_btc_pubkey=small.lender_btc_pubkey.hex(),
        **{name: getattr(small, name) for name in PARAMETER_FIELDS},
    )
    lender = desk.lender
    assert lender.btc_key.xonly_pubkey == small.lender_btc_pubkey
    for kind, secret in (
        (LenderKey.Kind.EVM, bytes(lender.account.key)),
        (LenderKey.Kind.BITCOIN, lender.btc_key.secret),
    ):
        lender_key_store(lender=lender.user, kind=kind, private_key=vault.Secret(secret), actor=None)

    sync_bitcoin(rpc=btc_rpc, confirmations=1)  # the Bitcoin watcher's first run: it follows from here
    borrower_key = PrivateKey.generate()
    world = World(
        w3=w3,
        btc=btc_rpc,
        client=client,
        borrower=Wallet.sign_in(stranger_account, w3),  # a first sign-in: a new borrower
        lender=Wallet.sign_in(lender.account, w3),
        borrower_btc_key=borrower_key,
        borrower_payout=REGTEST_P2TR,
        lender_payout=lender_payout,
        tmp=tmp_path,
    )
    assert User.objects.get(evm_address=stranger_account.address).role == User.Role.BORROWER
    return world


def output_paying(btc: BitcoinRPC, txid: str, address: str) -> int:
    """The value (sats) of ``txid``'s output to ``address``, read from the node."""
    tx = Transaction.parse(btc.getrawtransaction(txid, False))
    script = address_to_script_pubkey(address, "regtest")
    (value,) = [out.value for out in tx.outputs if out.script_pubkey == script]
    return value


# ------------------------------------------------------------------------------------------------ one loan


def open_a_loan(world: World) -> tuple[int, bytes, dict]:
    """Draft, fund, request, commit hL, pre-sign TX_1 and the ladders, offer, accept, lock TX_1: an active loan
    with its collateral locked. Returns the loan id, pB and TX_1's broadcast."""
    borrower, lender = world.borrower, world.lender
    preimage = os.urandom(32)
    created = borrower.post(
        "loan-list",
        amount_wei=str(AMOUNT_WEI),
        borrower_btc_pubkey=world.borrower_btc_key.xonly_pubkey.hex(),
        borrower_hash=sha256(preimage).hexdigest(),
        borrower_payout_address=world.borrower_payout,
        fee_rate_sat_vb=FEE_RATE,
    )
    loan_id, funding = created["id"], created["funding"]
    assert created["status"] == "draft" and world.next_actions(borrower, loan_id) == {"fund-escrow": True}

    # Any Bitcoin wallet pays the escrow address the exact amount; the watcher sees it confirmed.
    fund_output(world.btc, address_to_script_pubkey(funding["escrow_address"], "regtest"), int(funding["total_sats"]))
    world.sync()
    assert world.loan(loan_id)["bitcoin"]["status"] == "escrow_confirmed"

    borrower.call(loan_id, "request")
    world.sync()
    assert world.loan(loan_id)["loan"]["status"] == "requested"

    (queued,) = [entry for entry in lender.get("lender-queue")["results"] if entry["loan"]["id"] == loan_id]
    assert queued["escrow"]["ok"] and queued["escrow"]["problems"] == []
    committed = lender.call(loan_id, "commit-lender-hash", send=True)
    assert committed["source"] == "server_key" and committed["status"] == "mined"
    world.sync()

    # The borrower's own tool builds and signs TX_1 from the loan file, then the ladders; the server verifies.
    loan_file, key_file = world.loan_file(loan_id), world.key_file()
    unsigned = world.tmp / "tx1.psbt"
    offline_tool("build-tx1", "--loan", loan_file, "--fee-rate", FEE_RATE, "--output", str(unsigned))
    signed = offline_tool("sign", "--loan", loan_file, "--psbt", str(unsigned), "--key-file", key_file).strip()
    presigned = borrower.post("loan-presignature", loan_id, psbt=signed)
    ladders = json.loads(
        offline_tool(
            "ladders",
            "--loan",
            loan_file,
            "--key-file",
            key_file,
            "--tx1-txid",
            presigned["txid"],
            "--fee-rates",
            "2,5",
        )
    )
    rungs = borrower.post(
        "loan-ladders",
        loan_id,
        release=[rung["psbt"] for rung in ladders["release"]],
        exit=[rung["tx_hex"] for rung in ladders["exit"]],
    )
    assert sorted(rung["kind"] for rung in rungs) == ["tx_exit", "tx_exit", "tx_release", "tx_release"]

    assert world.next_actions(lender, loan_id) == {"offer": True}
    lender.call(loan_id, "offer", send=True)
    world.sync()
    assert world.loan(loan_id)["loan"]["status"] == "offered"

    borrower.call(loan_id, "accept-offer", append=preimage)
    world.sync()
    detail = world.loan(loan_id)
    assert detail["loan"]["status"] == "active" and detail["evm"]["borrower_preimage"] == preimage.hex()

    # pB is public: the desk completes the borrower's pre-signed TX_1 with it and its own key.
    tx1 = lender.post("loan-collateral-lock", loan_id)
    assert tx1["kind"] == "tx_1" and tx1["txid"] == presigned["txid"] and tx1["accepted_at"]
    world.mine_btc(1)
    world.sync()
    assert world.loan(loan_id)["bitcoin"]["status"] == "collateral_locked"
    return loan_id, preimage, tx1


def test_a_loan_from_the_draft_to_tx_release_confirmed_through_the_api(world: World):
    borrower, lender = world.borrower, world.lender
    evm_before = world.w3.eth.get_balance(borrower.account.address)
    loan_id, _, tx1 = open_a_loan(world)
    collateral_sats = int(world.loan(loan_id)["bitcoin"]["collateral_sats"])

    borrower.call(loan_id, "repay")
    world.sync()
    assert world.loan(loan_id)["loan"]["status"] == "repayment_in_progress"
    lender.call(loan_id, "accept-repayment", send=True)
    world.sync()
    detail = world.loan(loan_id)
    assert detail["loan"]["status"] == "repaid" and detail["evm"]["lender_preimage"]

    # pL is public: the borrower asks for the TX_release PSBT (pL in it), signs it offline, broadcasts it.
    assert world.next_actions(borrower, loan_id) == {"release-psbt": True}
    prepared = borrower.get("loan-release-psbt", loan_id, fee_rate_sat_vb=FEE_RATE)
    psbt_file = world.tmp / "release.psbt"
    psbt_file.write_text(prepared["psbt"])
    loan_file, key_file = world.loan_file(loan_id), world.key_file()
    signed = offline_tool(
        "sign", "--loan", loan_file, "--psbt", str(psbt_file), "--key-file", key_file, "--tx1-txid", tx1["txid"]
    ).strip()
    psbt_file.write_text(signed)
    final = json.loads(offline_tool("finalize", "--loan", loan_file, "--psbt", str(psbt_file)))
    sent = borrower.post("loan-bitcoin-broadcasts", loan_id, transaction=final["tx_hex"])
    assert sent["kind"] == "tx_release" and sent["accepted_at"] and sent["txid"] == prepared["txid"]
    world.mine_btc(1)
    world.sync()

    detail = world.loan(loan_id)
    assert detail["loan"]["status"] == "repaid" and detail["bitcoin"]["status"] == "released"
    assert Loan.objects.get(pk=loan_id).closed_at is not None and world.next_actions(borrower, loan_id) == {}
    # The borrower's BTC is back at their payout address, less TX_release's fee; on the EVM side they received the
    # amount, paid the repayment and their own gas, and the processing fee paid with the request came back with
    # the amount when they accepted (PROTOCOL.md): nothing else moved.
    assert output_paying(world.btc, sent["txid"], world.borrower_payout) == collateral_sats - int(prepared["fee_sats"])
    repayment = int(detail["evm"]["repayment_wei"])
    expected = evm_before + AMOUNT_WEI - repayment - borrower.gas_paid_wei
    assert world.w3.eth.get_balance(borrower.account.address) == expected
    timeline = borrower.get("loan-timeline", loan_id)
    changes = [
        (entry["status_change"]["side"], entry["status_change"]["to_status"])
        for entry in timeline
        if entry["kind"] == "status_change"
    ]
    assert changes == [
        ("bitcoin", "escrow_confirmed"),
        ("contract", "requested"),
        ("contract", "offered"),
        ("contract", "active"),
        ("bitcoin", "collateral_locked"),
        ("contract", "repayment_in_progress"),
        ("contract", "repaid"),
        ("bitcoin", "released"),
    ]


def test_a_default_through_the_api_ends_with_tx_capture_confirmed(world: World):
    lender = world.lender
    loan_id, _, tx1 = open_a_loan(world)
    detail = world.loan(loan_id)
    collateral_sats = int(detail["bitcoin"]["collateral_sats"])

    # Nobody repays. The default opens at activation + t_D: refused one block before, marked at it.
    deadline = detail["evm"]["repayment_deadline"]["block"]
    mine(world.w3, deadline - 2 - world.w3.eth.block_number)  # the next block is deadline - 1
    refused = lender.post("loan-evm-call", loan_id, "mark-default", status=409, send=True)
    assert refused["code"] == "too_early"
    mine(world.w3, 1)
    lender.call(loan_id, "mark-default", send=True)
    world.sync()
    assert world.loan(loan_id)["loan"]["status"] == "defaulted"

    # The collateral is the lender's after t_1: refused one block early, taken at maturity.
    capture = world.loan(loan_id)["bitcoin"]["capture_timelock"]
    world.mine_btc(capture["blocks_remaining"] - 1)
    world.sync()
    early = lender.post("loan-collateral-capture", loan_id, status=409, fee_rate_sat_vb=FEE_RATE)
    assert early["code"] == "too_early"
    world.mine_btc(1)
    world.sync()
    taken = lender.post("loan-collateral-capture", loan_id, fee_rate_sat_vb=FEE_RATE)
    assert taken["kind"] == "tx_capture" and taken["accepted_at"]
    world.mine_btc(1)
    world.sync()
    detail = world.loan(loan_id)
    assert detail["loan"]["status"] == "defaulted" and detail["bitcoin"]["status"] == "captured"
    assert Loan.objects.get(pk=loan_id).closed_at is not None
    paid = output_paying(world.btc, taken["txid"], world.lender_payout)
    assert 0 < collateral_sats - paid < 1_000  # the collateral less TX_capture's fee, to the lender's address
    assert tx1["txid"] != taken["txid"]
