"""`manage.py devstack` (the README's run command) brings the whole stack up and takes it all down again."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from bitcoin.keys import PrivateKey
from evm.anvil import free_port
from evm.deploy import dev_accounts
from loans.services.demo import DEMO_LENDER_USERNAME, demo_payout_address

pytestmark = pytest.mark.integration


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own loopback server
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_ready(url: str, process: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"devstack exited with {process.returncode}"
        try:
            status, body = get_json(url)
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready within {timeout}s")


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = child.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.add(int(child.parent.name))
                todo.append(int(child.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def environment_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode().partition("=")[::2] for pair in pairs if pair)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_devstack_runs_everything_and_stops_everything(tmp_path):
    web, evm, btc = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_", "DATABASE_", "REDIS_"))},
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "VAR_DIR": str(tmp_path / "var"),
        "EVM_RPC_URL": f"http://127.0.0.1:{evm}",
        "BITCOIN_RPC_URL": f"http://127.0.0.1:{btc}",
        "LENDER_BTC_PAYOUT_ADDRESS": "",  # devstack derives one (a newcomer's first run)
    }
    manage = str(Path(settings.BASE_DIR) / "manage.py")
    subprocess.run([sys.executable, manage, "migrate", "-v0"], env=env, check=True, timeout=120)
    log = (tmp_path / "devstack.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, manage, "devstack", "--addrport", f"127.0.0.1:{web}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        body = wait_ready(f"http://127.0.0.1:{web}/readyz", process, timeout=120)
        assert body["checks"]["bitcoin_node"]["detail"] == "regtest at height 101"  # mature faucet
        assert body["checks"]["evm_node"]["detail"].startswith("chain id 31337")
        deployment = json.loads((tmp_path / "var" / "deployment.json").read_text())
        assert deployment["chain_id"] == 31337
        children = descendants(process.pid)
        assert len(children) >= 5  # anvil, btcnode, qcluster, sync_chains, runserver (+ their own children)
        # The chain watchers follow both chains (on SQLite here, a newcomer's first run).
        deadline = time.monotonic() + 60
        watchers: dict = {}
        while time.monotonic() < deadline and not ({"evm", "bitcoin"} <= set(watchers)):
            time.sleep(1)
            watchers = wait_ready(f"http://127.0.0.1:{web}/readyz", process, timeout=30)["watchers"]
        assert watchers["bitcoin"]["ok"] and watchers["bitcoin"]["block"] == 101
        assert watchers["evm"]["ok"] and watchers["evm"]["block"] >= deployment["block_number"]
        # The demo lender (anvil's account 0) with both keys sealed and automation on; the derived payout address
        # in the environment of the worker, the watchers and the web app.
        with sqlite3.connect(tmp_path / "db.sqlite3") as db:
            lender = db.execute(
                "SELECT id, role, evm_address FROM loans_user WHERE username = ?", [DEMO_LENDER_USERNAME]
            ).fetchone()
            kinds = db.execute("SELECT kind FROM loans_lenderkey WHERE lender_id = ? ORDER BY kind", [lender[0]])
            switches = db.execute(
                "SELECT auto_offer, auto_accept_repayment, auto_withdraw_offer, auto_mark_default, auto_capture "
                "FROM loans_deploymentpolicy"
            ).fetchall()
        assert lender[1:] == ("lender", dev_accounts(1)[0].address)
        assert [kind for (kind,) in kinds] == ["bitcoin", "evm"]
        assert switches == [(1, 1, 1, 1, 1)]
        dev_key = PrivateKey.from_hex((tmp_path / "var" / "dev-lender.key").read_text().strip())
        payout = demo_payout_address(xonly_pubkey=dev_key.xonly_pubkey, network="regtest")
        for name in ("qcluster", "sync_chains", "runserver"):
            [pid] = [pid for pid in children if f"manage.py {name}" in command_line(pid)][:1]
            assert environment_of(pid)["LENDER_BTC_PAYOUT_ADDRESS"] == payout, name
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=90)
    log.close()
    assert process.returncode == 0
    printed = (tmp_path / "devstack.log").read_text()
    assert f"lender payout address {payout}" in printed
    assert f"web app on http://127.0.0.1:{web}/" in printed
    assert f"next: sign in with a wallet on http://127.0.0.1:{evm} chain 31337" in printed
    time.sleep(0.5)
    assert not [pid for pid in children if alive(pid)]
    assert (tmp_path / "var" / "anvil" / "state.json").stat().st_size > 0  # anvil dumped its state on the way out
