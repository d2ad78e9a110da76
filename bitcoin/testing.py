"""Pytest fixtures and helpers for tests that need a Bitcoin node (the embedded regtest node).

Register project-wide with `pytest_plugins = ["bitcoin.testing"]` (or `pytest -p bitcoin.testing`).

Fixtures:
* `btc_node` (session): a `RegtestProcess` running `python -m bitcoin.regtest` in a temporary data directory on a
  free port, with 101 blocks mined to its faucet so `sendtoaddress` works; stopped cleanly (SIGTERM) at the end.
* `btc_rpc`: a `BitcoinRPC` client for it.
* `btc_fund`: `btc_fund(script_pubkey_or_address, sats, confirmations=1) -> FundedOutput`.
* `btc_mine`: `btc_mine(n) -> list[block hashes]`.
* `btc_reorg`: `btc_reorg(depth, txs=None) -> BtcReorg`: the last `depth` blocks are replaced by a competing
  branch of `depth + 1` blocks from the fork point, submitted with `submitblock` (so the node reorganises as Bitcoin
  Core does: the orphaned blocks' transactions go back to the mempool unless the new branch confirms or conflicts
  with them). `txs` (raw transactions: hex, bytes, `bitcoin.regtest.serialize.Tx` or
  `bitcoin.transactions.Transaction`) go in the branch's first block, so a test can re-confirm a transaction in
  another block, leave it unconfirmed (back in the mempool) or drop it for good (the branch confirms a conflict).
"""

from __future__ import annotations

import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bitcoin.regtest.address import address_to_script
from bitcoin.regtest.mining import assemble_block
from bitcoin.regtest.serialize import Block, Tx
from bitcoin.rpc import BitcoinRPC, btc_to_sats, sats_to_btc
from bitcoin.transactions import Transaction

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0


@dataclass(frozen=True)
class FundedOutput:
    """A confirmed output created for a test."""

    txid: str
    vout: int
    sats: int
    script_pubkey: bytes
    height: int


class RegtestProcess:
    """The regtest node in a child process: start, stop cleanly (SIGTERM), kill (unclean), restart."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = Path(datadir)
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.ready_line = ""
        self._log_path = self.datadir.parent / f"{self.datadir.name}.log"

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Launch the node on a free port (--port 0) and wait for its ready line."""
        if self.process is not None:
            raise RuntimeError("node already running")
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        log = self._log_path.open("a")
        self.process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "bitcoin.regtest", "--datadir", str(self.datadir), "--port", "0"),
                *("--parent-pid", str(os.getpid())),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                line = self.process.stdout.readline()
                if not line:
                    break
                if line.startswith("regtest node ready "):
                    self.ready_line = line.strip()
                    fields = dict(item.split("=", 1) for item in line.split()[3:])
                    self.url = fields["url"]
                    return
        finally:
            selector.close()
        self.kill()
        raise RuntimeError(f"regtest node did not start; see {self._log_path}")

    def rpc(self, **kwargs: object) -> BitcoinRPC:
        """A client for the running node."""
        if not self.url:
            raise RuntimeError("node not started")
        return BitcoinRPC(self.url, **kwargs)  # type: ignore[arg-type]

    @property
    def rebuilt_indexes(self) -> bool:
        """Whether the last start rebuilt the indexes from the kernel (after an unclean exit)."""
        return "rebuilt_indexes=True" in self.ready_line

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT) -> int:
        """SIGTERM and wait for the clean shutdown; return the exit code."""
        if self.process is None:
            return 0
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            if process.stdout is not None:
                process.stdout.close()
        return code

    def wait_exit(self, timeout: float = SHUTDOWN_TIMEOUT) -> int:
        """Wait for the node to exit by itself (e.g. after the `stop` RPC); return its exit code."""
        if self.process is None:
            return 0
        process = self.process
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.process = None
        if process.stdout is not None:
            process.stdout.close()
        return code

    def kill(self) -> None:
        """SIGKILL: simulate a crash (no flush, no snapshot)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def restart(self) -> None:
        """Stop cleanly and start again on a new free port."""
        self.stop()
        self.start()


def faucet_address(rpc: BitcoinRPC) -> str:
    """The node's faucet address (coinbase outputs mined there fund `sendtoaddress`)."""
    return str(rpc.call("getnewaddress"))


def mine_blocks(rpc: BitcoinRPC, n: int, address: str | None = None) -> list[str]:
    """Mine `n` blocks (the first takes the whole mempool) paying the faucet unless `address` is given."""
    return rpc.generatetoaddress(n, address or faucet_address(rpc))


def fund_output(rpc: BitcoinRPC, script_pubkey: bytes | str, sats: int, confirmations: int = 1) -> FundedOutput:
    """Pay `sats` from the faucet to a scriptPubKey (bytes or hex) or an address (str starting with bcrt1/m/n/2).

    The output is mined `confirmations` deep (0 leaves it in the mempool).
    """
    if isinstance(script_pubkey, bytes):
        target = f"raw({script_pubkey.hex()})"
        script = script_pubkey
    elif all(c in "0123456789abcdef" for c in script_pubkey) and len(script_pubkey) % 2 == 0:
        target = f"raw({script_pubkey})"
        script = bytes.fromhex(script_pubkey)
    else:
        target = script_pubkey
        script = b""
    txid = str(rpc.call("sendtoaddress", target, sats_to_btc(sats)))
    tx = rpc.getrawtransaction(txid, True)
    vout = next(
        out["n"]
        for out in tx["vout"]
        if btc_to_sats(out["value"]) == sats
        and (not script or out["scriptPubKey"]["hex"] == script.hex())
        and (script or out["scriptPubKey"].get("address") == target)
    )
    script = script or bytes.fromhex(tx["vout"][vout]["scriptPubKey"]["hex"])
    if confirmations:
        mine_blocks(rpc, confirmations)
    height = rpc.getblockcount() - confirmations + 1 if confirmations else -1
    return FundedOutput(txid, vout, sats, script, height)


RawTx = str | bytes | Tx | Transaction


@dataclass(frozen=True)
class BtcReorg:
    """What a reorg replaced: blocks `fork_height + 1 ..` of the old chain (`orphaned`) by `branch` (one block
    longer), hashes in display order, lowest first."""

    fork_height: int
    fork_hash: str
    orphaned: tuple[str, ...]
    branch: tuple[str, ...]

    @property
    def tip_hash(self) -> str:
        """The new tip."""
        return self.branch[-1]


def _as_regtest_tx(tx: RawTx) -> Tx:
    if isinstance(tx, Tx):
        return tx
    if isinstance(tx, Transaction):
        return Tx.from_bytes(tx.serialize())
    if isinstance(tx, bytes):
        return Tx.from_bytes(tx)
    if isinstance(tx, str):
        return Tx.from_hex(tx)
    raise TypeError(f"not a raw transaction: {type(tx).__name__}")


def build_branch(
    rpc: BitcoinRPC,
    fork_hash: str,
    length: int,
    txs: Sequence[RawTx] | None = None,
    *,
    coinbase_script: bytes | None = None,
) -> list[Block]:
    """`length` valid blocks on top of `fork_hash` (the first one carrying `txs`, fees left unclaimed), not
    submitted. Coinbases pay `coinbase_script` (default: the faucet, as `mine_blocks` does) and carry a random
    extranonce, so two branches built from the same block in the same second still differ."""
    header = rpc.getblockheader(fork_hash)
    assert isinstance(header, dict)
    script = coinbase_script or address_to_script(faucet_address(rpc))
    first_txs = [_as_regtest_tx(tx) for tx in txs or ()]
    prev, height = bytes.fromhex(fork_hash)[::-1], int(header["height"])
    # Each block's time must exceed the median time past of the 11 before it: stay above every time so far.
    latest = max(int(header["time"]), int(header.get("mediantime", 0)))
    extranonce = secrets.randbits(32)
    blocks = []
    for i in range(length):
        height += 1
        latest = max(latest + 1, int(time.time()))
        block = assemble_block(
            prev_hash=prev,
            height=height,
            block_time=latest,
            coinbase_script=script,
            txs=first_txs if i == 0 else [],
            fees=0,
            extranonce=extranonce + i,
        )
        blocks.append(block)
        prev = block.hash
    return blocks


def reorg_chain(rpc: BitcoinRPC, depth: int, txs: Sequence[RawTx] | None = None) -> BtcReorg:
    """Replace the last `depth` blocks by a branch of `depth + 1` blocks from the fork point (the first one
    carrying `txs`), submitted block by block with `submitblock`; the node switches when the branch gets more
    work. Raises if a block is refused or the node did not end on the branch's tip."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    tip_height = rpc.getblockcount()
    if depth > tip_height:
        raise ValueError(f"cannot replace {depth} blocks of a chain of height {tip_height}")
    fork_height = tip_height - depth
    fork_hash = rpc.getblockhash(fork_height)
    orphaned = tuple(rpc.getblockhash(height) for height in range(fork_height + 1, tip_height + 1))
    blocks = build_branch(rpc, fork_hash, depth + 1, txs)
    for height, block in enumerate(blocks, start=fork_height + 1):
        reason = rpc.submitblock(block.serialize().hex())
        if reason is not None:
            raise RuntimeError(f"the competing block at height {height} was refused: {reason}")
    branch = tuple(block.hash[::-1].hex() for block in blocks)
    if rpc.getbestblockhash() != branch[-1]:
        raise RuntimeError(f"the node did not switch to the competing branch (tip {rpc.getbestblockhash()})")
    return BtcReorg(fork_height, fork_hash, orphaned, branch)


@pytest.fixture(scope="session")
def btc_node() -> Iterator[RegtestProcess]:
    """A regtest node for the whole test session, with a mature faucet."""
    with tempfile.TemporaryDirectory(prefix="btcnode-") as tmp:
        node = RegtestProcess(Path(tmp) / "node")
        node.start()
        try:
            rpc = node.rpc()
            if rpc.getblockcount() < 101:
                mine_blocks(rpc, 101 - rpc.getblockcount())
            yield node
        finally:
            node.stop()


@pytest.fixture
def btc_rpc(btc_node: RegtestProcess) -> BitcoinRPC:
    """A JSON-RPC client for the session's regtest node."""
    return btc_node.rpc()


@pytest.fixture
def btc_fund(btc_rpc: BitcoinRPC) -> Callable[..., FundedOutput]:
    """`btc_fund(script_pubkey_or_address, sats, confirmations=1) -> FundedOutput`."""

    def fund(script_pubkey: bytes | str, sats: int, confirmations: int = 1) -> FundedOutput:
        return fund_output(btc_rpc, script_pubkey, sats, confirmations)

    return fund


@pytest.fixture
def btc_mine(btc_rpc: BitcoinRPC) -> Callable[..., list[str]]:
    """`btc_mine(n, address=None) -> block hashes`."""

    def mine(n: int = 1, address: str | None = None) -> list[str]:
        return mine_blocks(btc_rpc, n, address)

    return mine


@pytest.fixture
def btc_reorg(btc_rpc: BitcoinRPC) -> Callable[..., BtcReorg]:
    """`btc_reorg(depth, txs=None) -> BtcReorg`: replace the last `depth` blocks by a longer competing branch."""

    def reorg(depth: int, txs: Sequence[RawTx] | None = None) -> BtcReorg:
        return reorg_chain(btc_rpc, depth, txs)

    return reorg
