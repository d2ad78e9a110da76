"""`manage.py devstack`: the whole development stack in one process tree, stopped together with Ctrl-C.

Starts (unless already answering) anvil on EVM_RPC_URL with its state kept in var/anvil/, the embedded regtest
Bitcoin node on BITCOIN_RPC_URL, deploys the contracts once per anvil state and records them, sets up the demo lender
(`demo setup`: anvil's account 0 with its keys in the vault, automation on, the lender's payout address), then runs
the django-q2 worker, the chain watchers with the unattended duties (`sync_chains --duties`, every 2 s: the lender's
automation, the watchtower, the alerts) and the ASGI dev server on 127.0.0.1:8000.
Development only: it refuses any other chain.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bitcoin.keys import PrivateKey
from bitcoin.rpc import BitcoinRPCError
from evm.anvil import DEV_CHAIN_ID, AnvilNode
from evm.artifacts import load_artifacts
from evm.connection import connect
from evm.deploy import load_deployment
from evm.errors import EvmError
from loans import chains
from loans.management.commands.demo import dev_lender_payout_address
from loans.services import contract_deployment_record

COINBASE_MATURITY = 100
MANAGE = str(Path(settings.BASE_DIR) / "manage.py")


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def port_of(url: str) -> int:
    parsed = urllib.parse.urlsplit(url)
    if parsed.hostname not in {"127.0.0.1", "localhost"} or not parsed.port:
        raise CommandError(f"devstack runs nodes on 127.0.0.1 only, with an explicit port; got {url}")
    return parsed.port


class Command(BaseCommand):
    help = "Run anvil, the regtest Bitcoin node, the worker and the web app on 127.0.0.1:8000 (development)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addrport", default="127.0.0.1:8000", help="where the web app listens")
        parser.add_argument(
            "--no-worker", action="store_true", help="do not start the django-q2 worker and the chain watchers"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG or settings.EVM_CHAIN_ID != DEV_CHAIN_ID or settings.BITCOIN_NETWORK != "regtest":
            raise CommandError("devstack is for development: DJANGO_DEBUG=1, EVM_CHAIN_ID=31337, regtest")
        var = Path(settings.VAR_DIR)
        var.mkdir(parents=True, exist_ok=True)
        # Ctrl-C or SIGTERM stops everything in order (a background job may have inherited SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
        children: list[subprocess.Popen] = []
        anvil: AnvilNode | None = None
        try:
            anvil = self.start_anvil(var)
            children += self.start_bitcoin_node(var)
            call_command("migrate", interactive=False, verbosity=0)
            self.ensure_deployment()
            self.demo_setup()
            if not options["no_worker"]:
                children.append(self.spawn([sys.executable, MANAGE, "qcluster"], var / "worker.log"))
                # The chain watchers and the duties every 2 s (production schedules them in django-q2 each minute:
                # sync_chains --schedule), so a loan walked through by hand moves as fast as its chains are mined.
                children.append(self.spawn([sys.executable, MANAGE, "sync_chains", "--duties"], var / "watchers.log"))
            self.stdout.write(self.style.SUCCESS(f"web app on http://{options['addrport']}/ (Ctrl-C stops all)"))
            self.stdout.write(
                f"next: sign in with a wallet on {settings.EVM_RPC_URL} chain {settings.EVM_CHAIN_ID} (anvil's "
                "account 0 is the demo lender, any other a borrower); `.venv/bin/python manage.py demo fund 0x...` "
                "gives it rBTC (README: Demo)"
            )
            server = subprocess.Popen(
                [sys.executable, MANAGE, "runserver", options["addrport"]], start_new_session=True
            )
            children.append(server)
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            # Each child leads its own process group (runserver's reloader has a child of its own): stop the groups,
            # newest first, so the web server goes before the worker and the nodes.
            for child in reversed(children):
                self.stop_group(child)
            if anvil is not None:
                anvil.stop()

    @staticmethod
    def stop_group(child: subprocess.Popen, timeout: float = 20) -> None:
        if child.poll() is not None:
            return
        try:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        except ProcessLookupError:
            pass

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen:
        handle = log.open("ab")
        self.stdout.write(f"starting {' '.join(argv[1:])} (log: {log})")
        return subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def start_anvil(self, var: Path) -> AnvilNode | None:
        port = port_of(settings.EVM_RPC_URL)
        probe = AnvilNode(port=port)
        if probe.answers():
            self.stdout.write(f"anvil already answers on {settings.EVM_RPC_URL}")
            return None
        state = var / "anvil" / "state.json"
        state.parent.mkdir(exist_ok=True)
        self.stdout.write(f"starting anvil on {settings.EVM_RPC_URL} (state: {state})")
        return AnvilNode(port=port, state_file=state).start()

    def start_bitcoin_node(self, var: Path) -> list[subprocess.Popen]:
        try:
            chains.bitcoin_rpc(timeout=2, retries=0).getblockchaininfo()
            self.stdout.write(f"Bitcoin node already answers on {settings.BITCOIN_RPC_URL}")
            return []
        except BitcoinRPCError:
            pass
        node = self.spawn([sys.executable, MANAGE, "btcnode"], var / "btcnode.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if node.poll() is not None:
                raise CommandError(f"the Bitcoin node exited ({node.returncode}); see {var / 'btcnode.log'}")
            try:
                rpc = chains.bitcoin_rpc(timeout=30, retries=0)
                rpc.getblockchaininfo()
            except BitcoinRPCError:
                time.sleep(0.2)
                continue
            # A faucet needs a mature coinbase: 101 blocks to the node's own address on a new chain.
            missing = COINBASE_MATURITY + 1 - rpc.getblockcount()
            if missing > 0:
                rpc.generatetoaddress(missing, rpc.call("getnewaddress"))
                self.stdout.write(f"mined {missing} regtest blocks so the faucet (sendtoaddress) can pay")
            return [node]
        node.kill()
        raise CommandError("the Bitcoin node did not answer within 60 s")

    def ensure_deployment(self) -> None:
        """Deploy once per anvil state. A recorded deployment is redeployed (development only) when its code is
        gone (a new anvil state), or when it was made from other contract sources than today's artifacts (the
        contracts changed since; an old record may not even load)."""
        path = Path(settings.EVM_DEPLOYMENT_FILE)
        replace = False
        if path.exists():
            try:
                deployment = load_deployment(path)
            except EvmError as error:
                self.stdout.write(f"the recorded deployment is from older contracts ({error}): redeploying")
                deployment, replace = None, True
            if deployment is not None:
                w3 = connect(settings.EVM_RPC_URL, expected_chain_id=settings.EVM_CHAIN_ID)
                current = load_artifacts().loan.bytecode_sha256
                if deployment.loan_bytecode_sha256 != current:
                    self.stdout.write("the recorded deployment is from other contract sources: redeploying")
                    replace = True
                elif w3.eth.get_code(deployment.loan_address):
                    self.stdout.write(f"contracts already deployed at {deployment.loan_address}")
                    contract_deployment_record(deployment=deployment)
                    return
        call_command("deploy_contracts", lender_btc_pubkey=self.dev_lender_pubkey(), replace=replace)

    def demo_setup(self) -> None:
        """The demo lender with automation on (``manage.py demo setup``), the short demo windows (``demo windows``),
        and the lender's payout address: when
        ``LENDER_BTC_PAYOUT_ADDRESS`` is unset, the BIP-86 address of the development lender's key, put in the
        environment before the worker and the web app start so both see it."""
        try:
            call_command("demo", "setup", stdout=self.stdout)
        except CommandError as error:  # the app still runs; the newcomer is told why nothing lends by itself
            self.stderr.write(f"demo setup failed, the lender's automation cannot act: {error}")
        try:  # every deadline a few dozen blocks away, so `demo advance` reaches each way out in seconds
            call_command("demo", "windows", stdout=self.stdout)
        except CommandError as error:
            self.stderr.write(f"demo windows failed, new loans take the default windows: {error}")
        if not settings.LENDER_BTC_PAYOUT_ADDRESS:
            try:
                address = dev_lender_payout_address()
            except CommandError as error:
                self.stderr.write(f"no LENDER_BTC_PAYOUT_ADDRESS, so no loan can be created: {error}")
                return
            os.environ["LENDER_BTC_PAYOUT_ADDRESS"] = settings.LENDER_BTC_PAYOUT_ADDRESS = address

    def dev_lender_pubkey(self) -> str:
        """The development lender's x-only key; its secret stays in var/dev-lender.key (0600), dev only."""
        key_file = Path(settings.VAR_DIR) / "dev-lender.key"
        if not key_file.exists():
            key_file.touch(mode=0o600)
            key_file.write_text(secrets.token_bytes(32).hex() + "\n")
        return PrivateKey.from_hex(key_file.read_text().strip()).xonly_pubkey.hex()
