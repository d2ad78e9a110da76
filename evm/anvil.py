"""Start and stop Foundry's anvil (from npm `@foundry-rs/anvil-linux-amd64`) for development and tests.

No Django and no ORM here: the run script, the test fixtures and the benchmarks all use this one launcher.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ANVIL_BINARY = REPO_ROOT / "node_modules" / ".bin" / "anvil"

# Foundry's well-known test mnemonic: reproducible development addresses, never for real funds.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_CHAIN_ID = 31337


class AnvilError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def anvil_binary() -> str:
    if ANVIL_BINARY.exists():
        return str(ANVIL_BINARY)
    found = shutil.which("anvil")
    if found:
        return found
    raise AnvilError(f"anvil not found at {ANVIL_BINARY}: run `npm ci` in {REPO_ROOT}")


@dataclass
class AnvilNode:
    """One anvil process on 127.0.0.1.

    `--prune-history` keeps state in memory (~90x faster mining, no GBs on disk).
    """

    port: int = field(default_factory=free_port)
    chain_id: int = DEV_CHAIN_ID
    mnemonic: str = DEV_MNEMONIC
    accounts: int = 10
    balance_ether: int = 10_000
    block_time: int | None = None
    state_file: Path | None = None  # load the chain from it at start, dump it there at a clean stop
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> AnvilNode:
        if self.process is not None:
            raise AnvilError("anvil is already running")
        args = [
            anvil_binary(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--mnemonic", self.mnemonic,
            "--accounts", str(self.accounts),
            "--balance", str(self.balance_ether),
            "--prune-history", "256",
            "--silent",
        ]  # fmt: skip
        if self.block_time:
            args += ["--block-time", str(self.block_time)]
        if self.state_file is not None:
            args += ["--state", str(self.state_file)]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise AnvilError(f"anvil exited with code {self.process.returncode}: {stderr.strip()}")
            if self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise AnvilError(f"anvil did not answer on {self.url} within {timeout}s")

    def answers(self) -> bool:
        """True when a node with our chain id answers on our port (ours or one started elsewhere)."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
        # our own loopback node, always http://127.0.0.1
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310
                return int(json.load(response)["result"], 16) == self.chain_id
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        # SIGINT is anvil's clean shutdown: it dumps --state then.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
