"""``manage.py sync_chains --chain CHAIN`` in a child process that shares the test database, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from loans.sync.locks import exclusive_run


def shared_database_url() -> str:
    """The database this test runs on, as a URL a child process can use (PostgreSQL: it must be shared)."""
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class WatcherProcess:
    """One chain's watcher as its own process: ``start`` it looping, ``kill`` it with -9, run it ``once``."""

    def __init__(self, chain: str, log: Path, **env: str) -> None:
        self.chain = chain
        self.env = {**os.environ, "DATABASE_URL": shared_database_url(), "LOG_LEVEL": "WARNING", **env}
        self.log = log
        self.command = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "sync_chains", "--chain", chain]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen([*self.command, "--interval", "0.2"], env=self.env, stdout=log, stderr=log)

    def kill(self) -> None:
        assert self.process is not None
        assert self.process.poll() is None, f"the watcher died by itself: {self.log.read_text()[-3000:]}"
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL
        self.process = None
        self._wait_for_its_lock_to_go()

    def _wait_for_its_lock_to_go(self, timeout: float = 15.0) -> None:
        """PostgreSQL frees a dead client's advisory lock when its server process notices the closed connection,
        which under load takes a moment: wait for that, so the next run is not skipped for a lock nobody holds."""
        deadline = time.monotonic() + timeout
        while True:
            with exclusive_run(self.chain) as acquired:
                if acquired:
                    return
            assert time.monotonic() < deadline, f"the killed {self.chain} watcher's run lock outlived it by {timeout} s"
            time.sleep(0.05)

    def once(self) -> str:
        """One run to the end (``--once``); its output."""
        result = subprocess.run(
            [*self.command, "--once"], env=self.env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout
