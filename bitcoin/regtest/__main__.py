"""`python -m bitcoin.regtest --datadir DIR --port P`: run the embedded regtest node (no Django needed)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bitcoin.regtest.node import RegtestNode
from bitcoin.regtest.server import RegtestRPCServer


def run(
    datadir: Path,
    port: int,
    host: str = "127.0.0.1",
    *,
    user: str = "",
    password: str = "",
    cookie: bool = False,
    parent_pid: int | None = None,
) -> int:
    """Start the node and its RPC server; block until SIGTERM/SIGINT or `stop`, then shut down cleanly."""
    node = RegtestNode(datadir)
    cookie_file = datadir / ".cookie" if cookie else None
    server = RegtestRPCServer(node, host, port, user=user, password=password, cookie_file=cookie_file)

    def on_signal(signum: int, frame: object) -> None:
        logging.getLogger(__name__).info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid, server.shutdown), daemon=True).start()
    # One machine-readable line so launchers can learn the port when --port 0 was given.
    print(
        f"regtest node ready url={server.url} height={node.get_block_count()} "
        f"rebuilt_indexes={node.rebuilt_indexes} faucet={node.faucet.address}",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.shutdown()
        node.close()
        with contextlib.suppress(OSError):  # stdout may be a pipe whose reader is gone
            print("regtest node stopped cleanly", flush=True)
    return 0


def _watch_parent(parent_pid: int, shutdown: Callable[[], None]) -> None:
    """Shut down cleanly when the launching process is gone (e.g. a test runner killed with SIGKILL)."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            logging.getLogger(__name__).warning("parent process %d is gone: shutting down", parent_pid)
            shutdown()
            return
        except PermissionError:
            continue


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bitcoin.regtest", description=__doc__)
    parser.add_argument("--datadir", required=True, type=Path, help="data directory (created if missing)")
    parser.add_argument("--port", type=int, default=18443, help="RPC port (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--rpcuser", default="", help="require HTTP basic auth with this user")
    parser.add_argument("--rpcpassword", default="", help="password for --rpcuser")
    parser.add_argument("--cookie", action="store_true", help="write DATADIR/.cookie and require it")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--parent-pid", type=int, help="shut down cleanly when this process exits")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(
        args.datadir,
        args.port,
        args.host,
        user=args.rpcuser,
        password=args.rpcpassword,
        cookie=args.cookie,
        parent_pid=args.parent_pid,
    )


if __name__ == "__main__":
    sys.exit(main())
