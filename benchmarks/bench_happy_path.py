"""The happy path's wall time on local chains, split into time in the app and time waiting for the chains (plain
script; prints figures).

    python benchmarks/bench_happy_path.py [--loans 3]

``--loans`` loans in turn (figures are the mean per loan), each from the draft to TX_release confirmed, driven as
wallets drive it through the REST API (the approach of ``loans/tests/test_api_end_to_end.py``): the borrower is an EVM
account signed in with SIWE that signs the calls the API prepares and reports their hashes, and a Bitcoin key used only
by the offline tool (``python -m bitcoin`` in its own process, from the loan file); the lender is the desk, sending with
the keys in the vault. Between steps the watchers run once (``sync_evm``, ``sync_bitcoin``), as the worker would;
Bitcoin blocks are mined when a transaction needs one, anvil mines each EVM transaction at once. Steps: request (draft,
escrow paid and confirmed, requestLoan), offer (hL committed, TX_1 and the ladders pre-signed, offer), accept, TX_1
(locked by the desk, mined), repay, accept repayment, TX_release (signed offline, broadcast, mined, followed).

Time waiting for the chains is every JSON-RPC round trip to anvil (web3's HTTP provider: sends, receipts, calls,
logs, mining) and to the regtest node (``BitcoinRPC``: broadcasts, blocks, mining), the app's and the wallets'
alike, measured by a timing wrapper around both clients. Time in the app is the rest: API requests through
Django (in-process test client), services, watcher runs, signing, and the offline tool (each run a fresh Python
process; shown apart). Both nodes run on this machine, so "chains" is mostly their own processing, not a network.

The database is a throwaway one (``DATABASE_URL``'s server, a database of its own, migrated, dropped at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loanproject.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-happy-throwaway-key")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("STATIC_COLLECTED", "0")  # no collected static files needed: no page is rendered here
os.environ["CACHE_KEY_PREFIX"] = f"bench-happy-{uuid.uuid4().hex}"  # sign-in throttles count per run

AMOUNT_WEI = 10**16
FEE_RATE = "2"


def throwaway_database() -> Callable[[], None]:
    """Set Django up on a database of the benchmark's own; returns the function that drops it."""
    import django
    from django.conf import settings

    django.setup()
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = ""
    else:
        database.setdefault("TEST", {})["NAME"] = f"bench_happy_{os.getpid()}"
    from django.test.utils import setup_databases, teardown_databases

    config = setup_databases(verbosity=0, interactive=False, serialized_aliases=set())
    return lambda: teardown_databases(config, verbosity=0)


# ------------------------------------------------------------------------------------------------ the clocks


@dataclass
class Clock:
    """Seconds spent in node round trips (EVM, Bitcoin) and in the offline tool, with call counts."""

    seconds: dict[str, float] = field(default_factory=lambda: {"evm": 0.0, "bitcoin": 0.0, "tool": 0.0})
    calls: dict[str, int] = field(default_factory=lambda: {"evm": 0, "bitcoin": 0, "tool": 0})

    def timed(self, kind: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[kind] += time.perf_counter() - started
                self.calls[kind] += 1

        return wrapper

    def snapshot(self) -> tuple[dict[str, float], dict[str, int]]:
        return dict(self.seconds), dict(self.calls)


CLOCK = Clock()


def install_clock() -> None:
    """Time every JSON-RPC round trip: web3's HTTP provider (anvil) and ``BitcoinRPC._post`` (the regtest node)."""
    from web3.providers.rpc.rpc import HTTPProvider

    from bitcoin.rpc import BitcoinRPC

    HTTPProvider.make_request = CLOCK.timed("evm", HTTPProvider.make_request)
    HTTPProvider.make_batch_request = CLOCK.timed("evm", HTTPProvider.make_batch_request)
    BitcoinRPC._post = CLOCK.timed("bitcoin", BitcoinRPC._post)


def offline_tool(*args: str) -> str:
    """``python -m bitcoin ARGS`` in its own process, as the borrower runs it (timed as the app's: signing)."""

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bitcoin", *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
        )

    done = CLOCK.timed("tool", run)()
    if done.returncode != 0:
        raise RuntimeError(f"python -m bitcoin {' '.join(args)}: {done.stderr}")
    return done.stdout


# ------------------------------------------------------------------------------------------------ the parties


@dataclass
class World:
    w3: object
    btc: object  # BitcoinRPC
    borrower: object  # loans.tests.api_wallet.Wallet (imported once Django is set up)
    lender: object
    borrower_btc_key: object
    tmp: Path

    def sync(self) -> None:
        """One run of each watcher (the worker's job)."""
        from loans.sync.bitcoin import sync_bitcoin
        from loans.sync.evm import sync_evm

        sync_evm(w3=self.w3, confirmations=1)
        sync_bitcoin(rpc=self.btc, confirmations=1)

    def loan(self, loan_id: int) -> dict:
        return self.borrower.get("loan-detail", loan_id)

    def expect(self, loan_id: int, status: str | None = None, bitcoin: str | None = None) -> None:
        detail = self.loan(loan_id)
        if (status and detail["loan"]["status"] != status) or (bitcoin and detail["bitcoin"]["status"] != bitcoin):
            raise RuntimeError(f"loan {loan_id}: {detail['loan']['status']}/{detail['bitcoin']['status']}")

    def loan_file(self, loan_id: int) -> str:
        path = self.tmp / f"loan-{loan_id}.json"
        path.write_text(json.dumps(self.borrower.get("loan-file", loan_id)))
        return str(path)

    def key_file(self) -> str:
        path = self.tmp / "borrower.key"
        path.write_text(self.borrower_btc_key.to_wif("regtest"))
        return str(path)


def make_world(stack: ExitStack, tmp: Path) -> World:
    from cryptography.fernet import Fernet
    from django.conf import settings

    from bitcoin.keys import PrivateKey
    from bitcoin.testing import RegtestProcess, mine_blocks
    from bitcoin.tests.loan_vectors import REGTEST_P2WPKH
    from evm.anvil import AnvilNode
    from evm.client import LoanContractClient
    from evm.connection import connect
    from evm.deploy import deploy_contracts, dev_accounts
    from evm.parameters import ProtocolParameters as ChainParameters
    from loans import vault
    from loans.models import PARAMETER_FIELDS, LenderKey, ProtocolParameters, User
    from loans.services import contract_deployment_record
    from loans.services.lender_secrets import lender_key_store
    from loans.sync.bitcoin import sync_bitcoin
    from loans.tests.api_wallet import Wallet  # the end-to-end API tests' wallet
    from loans.tests.evm_calls_scene import SMALL_WITH_CAPTURE  # the whole-loan tests' windows

    anvil = stack.enter_context(AnvilNode())
    node = RegtestProcess(tmp / "btcnode")
    node.start()
    stack.callback(node.stop)
    btc = node.rpc()
    mine_blocks(btc, 110)  # mature coinbases for the faucet
    settings.EVM_RPC_URL, settings.EVM_CHAIN_ID = anvil.url, anvil.chain_id
    settings.BITCOIN_RPC_URL, settings.BITCOIN_NETWORK = node.url, "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB, settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "1", "500"
    settings.BITCOIN_CONFIRMATIONS = settings.EVM_CONFIRMATIONS = 1
    settings.LOAN_VAULT_KEYS_FILE, settings.LOAN_VAULT_KEYS = "", Fernet.generate_key().decode()
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.LENDER_BTC_PAYOUT_ADDRESS = REGTEST_P2WPKH

    w3 = connect(anvil.url, expected_chain_id=anvil.chain_id, timeout=60)
    lender_account, _, borrower_account = dev_accounts(3)
    lender_btc_key = PrivateKey.generate()
    deployment = deploy_contracts(w3, lender_account, ChainParameters(lender_btc_pubkey=lender_btc_key.xonly_pubkey))
    contract_deployment_record(deployment=deployment)
    client = LoanContractClient.from_deployment(w3, deployment)
    small = client.parameters().replace(**SMALL_WITH_CAPTURE)
    client.send(client.update_parameters(small), lender_account)
    ProtocolParameters.objects.create(
        version=client.parameters_version(),
        lender_btc_pubkey=small.lender_btc_pubkey.hex(),
        **{name: getattr(small, name) for name in PARAMETER_FIELDS},
    )
    lender = User.objects.create_user(username="lender", role=User.Role.LENDER, evm_address=lender_account.address)
    for kind, secret in (
        (LenderKey.Kind.EVM, bytes(lender_account.key)),
        (LenderKey.Kind.BITCOIN, lender_btc_key.secret),
    ):
        lender_key_store(lender=lender, kind=kind, private_key=vault.Secret(secret), actor=None)
    sync_bitcoin(rpc=btc, confirmations=1)  # the Bitcoin watcher's first run: it follows from here
    return World(
        w3=w3,
        btc=btc,
        borrower=Wallet.sign_in(borrower_account, w3),  # a first sign-in: a new borrower
        lender=Wallet.sign_in(lender_account, w3),
        borrower_btc_key=PrivateKey.generate(),
        tmp=tmp,
    )


# ------------------------------------------------------------------------------------------------ the happy path


def happy_path(world: World, step: Callable[[str], object]) -> None:
    """One loan from the draft to TX_release confirmed; ``step(name)`` opens each timed step."""
    from bitcoin.addresses import address_to_script_pubkey
    from bitcoin.testing import fund_output, mine_blocks
    from bitcoin.tests.loan_vectors import REGTEST_P2TR

    borrower, lender = world.borrower, world.lender
    preimage = os.urandom(32)

    with step("request"):
        created = borrower.post(
            "loan-list",
            amount_wei=str(AMOUNT_WEI),
            borrower_btc_pubkey=world.borrower_btc_key.xonly_pubkey.hex(),
            borrower_hash=sha256(preimage).hexdigest(),
            borrower_payout_address=REGTEST_P2TR,
            fee_rate_sat_vb=FEE_RATE,
        )
        loan_id, funding = created["id"], created["funding"]
        escrow = address_to_script_pubkey(funding["escrow_address"], "regtest")
        fund_output(world.btc, escrow, int(funding["total_sats"]))  # any wallet pays; one block confirms it
        world.sync()
        world.expect(loan_id, bitcoin="escrow_confirmed")
        borrower.call(loan_id, "request")
        world.sync()
        world.expect(loan_id, status="requested")

    with step("offer"):
        (queued,) = [entry for entry in lender.get("lender-queue")["results"] if entry["loan"]["id"] == loan_id]
        if not queued["escrow"]["ok"]:
            raise RuntimeError(f"escrow check: {queued['escrow']['problems']}")
        lender.call(loan_id, "commit-lender-hash", send=True)
        world.sync()
        loan_file, key_file = world.loan_file(loan_id), world.key_file()
        unsigned = world.tmp / "tx1.psbt"
        offline_tool("build-tx1", "--loan", loan_file, "--fee-rate", FEE_RATE, "--output", str(unsigned))
        signed = offline_tool("sign", "--loan", loan_file, "--psbt", str(unsigned), "--key-file", key_file).strip()
        presigned = borrower.post("loan-presignature", loan_id, psbt=signed)
        ladders = json.loads(
            offline_tool(
                "ladders", "--loan", loan_file, "--key-file", key_file, "--tx1-txid", presigned["txid"],
                "--fee-rates", "2,5",
            )
        )  # fmt: skip
        borrower.post(
            "loan-ladders",
            loan_id,
            release=[rung["psbt"] for rung in ladders["release"]],
            exit=[rung["tx_hex"] for rung in ladders["exit"]],
        )
        lender.call(loan_id, "offer", send=True)
        world.sync()
        world.expect(loan_id, status="offered")

    with step("accept"):
        borrower.call(loan_id, "accept-offer", append=preimage)
        world.sync()
        world.expect(loan_id, status="active")

    with step("TX_1"):
        tx1 = lender.post("loan-collateral-lock", loan_id)
        mine_blocks(world.btc, 1)
        world.sync()
        world.expect(loan_id, bitcoin="collateral_locked")

    with step("repay"):
        borrower.call(loan_id, "repay")
        world.sync()
        world.expect(loan_id, status="repayment_in_progress")

    with step("accept repayment"):
        lender.call(loan_id, "accept-repayment", send=True)
        world.sync()
        world.expect(loan_id, status="repaid")

    with step("TX_release confirmed"):
        prepared = borrower.get("loan-release-psbt", loan_id, fee_rate_sat_vb=FEE_RATE)
        psbt_file = world.tmp / "release.psbt"
        psbt_file.write_text(prepared["psbt"])
        loan_file, key_file = world.loan_file(loan_id), world.key_file()
        signed = offline_tool(
            "sign", "--loan", loan_file, "--psbt", str(psbt_file), "--key-file", key_file, "--tx1-txid", tx1["txid"]
        ).strip()
        psbt_file.write_text(signed)
        final = json.loads(offline_tool("finalize", "--loan", loan_file, "--psbt", str(psbt_file)))
        borrower.post("loan-bitcoin-broadcasts", loan_id, transaction=final["tx_hex"])
        mine_blocks(world.btc, 1)
        world.sync()
        world.expect(loan_id, status="repaid", bitcoin="released")


class Steps:
    """Per step: wall seconds, and the clock's EVM / Bitcoin / offline tool seconds and calls, summed over loans."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def __call__(self, name: str):
        steps = self

        class Step:
            def __enter__(self):
                self.before = CLOCK.snapshot()
                self.started = time.perf_counter()

            def __exit__(self, kind, *_):
                if kind is not None:
                    return
                wall = time.perf_counter() - self.started
                (seconds, calls), (seconds_0, calls_0) = CLOCK.snapshot(), self.before
                row = steps.rows.setdefault(name, dict.fromkeys(["wall", "evm", "bitcoin", "tool", "rpc"], 0.0))
                row["wall"] += wall
                for kind_ in ("evm", "bitcoin", "tool"):
                    row[kind_] += seconds[kind_] - seconds_0[kind_]
                row["rpc"] += calls["evm"] - calls_0["evm"] + calls["bitcoin"] - calls_0["bitcoin"]

        return Step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loans", type=int, default=3, help="loans driven in turn, figures per loan (default 3)")
    args = parser.parse_args()
    if args.loans < 1:
        parser.error("--loans must be at least 1")
    drop = throwaway_database()
    try:
        install_clock()
        steps = Steps()
        with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-happy-") as tmp:
            world = make_world(stack, Path(tmp))
            for _ in range(args.loans):
                happy_path(world, steps)
    finally:
        drop()

    n = args.loans
    print(f"happy path on anvil and the regtest node, mean of {n} loan(s): seconds per step")
    header = f"{'step':<22} {'wall':>8} {'app':>8} {'chains':>8} {'(evm':>8} {'bitcoin)':>9} {'RPCs':>6} {'tool':>7}"
    print(header)
    total = dict.fromkeys(["wall", "evm", "bitcoin", "tool", "rpc"], 0.0)
    for name, row in [*steps.rows.items(), ("total", None)]:
        row = row or total
        if name != "total":
            for key in total:
                total[key] += row[key]
        chains = row["evm"] + row["bitcoin"]
        print(
            f"{name:<22} {row['wall'] / n:>8.3f} {(row['wall'] - chains) / n:>8.3f} {chains / n:>8.3f} "
            f"{row['evm'] / n:>8.3f} {row['bitcoin'] / n:>9.3f} {row['rpc'] / n:>6.0f} {row['tool'] / n:>7.3f}"
        )
    chains = total["evm"] + total["bitcoin"]
    print(
        f"happy path: {total['wall'] / n:.2f} s wall, {(total['wall'] - chains) / n:.2f} s in the app "
        f"({total['tool'] / n:.2f} s of it the offline tool's processes), {chains / n:.2f} s waiting for the chains"
    )


if __name__ == "__main__":
    main()
