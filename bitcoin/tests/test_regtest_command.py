"""`manage.py btcnode` starts the node on the port of BITCOIN_RPC_URL and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitcoin.rpc import BitcoinRPC, NodeUnavailableError
from bitcoin.testing import RegtestProcess

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_btcnode_command_serves_rpc_and_stops_cleanly(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_DEBUG": "1",
        "BITCOIN_NETWORK": "regtest",
        "BITCOIN_RPC_URL": "http://127.0.0.1:0",  # 0: a free port, announced on the ready line
        "BITCOIN_RPC_USER": "alice",
        "BITCOIN_RPC_PASSWORD": "s3cret",
        "BTCNODE_DATA_DIR": str(tmp_path / "btcnode"),
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "btcnode"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("regtest node ready "), line
        url = line.split("url=")[1].split()[0]
        rpc = BitcoinRPC(url, user="alice", password="s3cret")
        rpc.generatetoaddress(3, rpc.call("getnewaddress"))
        assert rpc.getblockcount() == 3
        with pytest.raises(NodeUnavailableError, match="401"):
            BitcoinRPC(url, user="alice", password="wrong", retries=0).getblockcount()
    except Exception:
        process.kill()
        raise
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        if process.stdout is not None:
            process.stdout.close()
    assert (tmp_path / "btcnode" / "indexes.json").exists()
    assert not (tmp_path / "btcnode" / "node.dirty").exists()


def test_stop_rpc_shuts_down_cleanly(tmp_path: Path) -> None:
    node = RegtestProcess(tmp_path / "node")
    node.start()
    try:
        rpc = node.rpc()
        rpc.generatetoaddress(2, rpc.call("getnewaddress"))
        assert rpc.call("stop") == "Bitcoin Core stopping"
        assert node.wait_exit() == 0
        assert not (tmp_path / "node" / "node.dirty").exists()
        node.start()
        assert not node.rebuilt_indexes
        assert node.rpc().getblockcount() == 2
    finally:
        node.stop()


def test_node_stops_cleanly_when_its_launcher_dies(tmp_path: Path) -> None:
    """A test run killed with SIGKILL must not leave its node running: the node watches its parent."""
    datadir = tmp_path / "node"
    launcher = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from bitcoin.testing import RegtestProcess\n"
        f"node = RegtestProcess(Path({str(datadir)!r}))\n"
        "node.start()\n"
        "print(node.url, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        url = parent.stdout.readline().strip()
        assert BitcoinRPC(url).getblockcount() == 0
        assert (datadir / "node.dirty").exists()
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    deadline = time.monotonic() + 30
    while (datadir / "node.dirty").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (datadir / "node.dirty").exists()  # closed cleanly: kernel flushed, marker removed
    with pytest.raises(NodeUnavailableError):
        BitcoinRPC(url, retries=0, timeout=2).getblockcount()
