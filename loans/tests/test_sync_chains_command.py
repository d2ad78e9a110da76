"""``manage.py sync_chains``: which runs a pass makes (the watchers, and with ``--duties`` the unattended duties), and
that one failing run does not stop the others in the loop. The runs themselves are tested on real nodes elsewhere
(test_sync_*, test_automation, test_watchtower, test_deadline_alerts) and in the browser scenarios."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from loans.management.commands import sync_chains


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    made: list[str] = []

    def recorder(name: str):
        def run():
            made.append(name)
            return f"{name} ran"

        return run

    monkeypatch.setattr(sync_chains, "WATCHERS", {name: recorder(name) for name in sync_chains.WATCHERS})
    monkeypatch.setattr(sync_chains, "DUTIES", {name: recorder(name) for name in sync_chains.DUTIES})
    return made


def test_once_runs_each_watcher_and_no_duty(calls, capsys):
    call_command("sync_chains", "--once")
    assert calls == ["evm", "bitcoin"]
    assert "evm: evm ran" in capsys.readouterr().out


def test_duties_run_after_the_watchers_in_their_order(calls):
    call_command("sync_chains", "--once", "--duties")
    assert calls == ["evm", "bitcoin", "automation", "watchtower", "alerts"]


def test_one_chain_with_the_duties(calls):
    call_command("sync_chains", "--once", "--chain", "bitcoin", "--duties")
    assert calls == ["bitcoin", "automation", "watchtower", "alerts"]


def test_the_duties_are_the_worker_schedules_entry_points():
    from loans import tasks

    scheduled = {path.rsplit(".", 1)[1] for _, path, _ in tasks.SCHEDULES}
    assert {run.__name__ for run in sync_chains.DUTIES.values()} <= scheduled


def test_a_failing_run_does_not_stop_the_loop(monkeypatch, calls):
    def broken():
        calls.append("broken")
        raise ConnectionError("node down")

    monkeypatch.setitem(sync_chains.WATCHERS, "evm", broken)
    passes = iter([None, KeyboardInterrupt()])

    def sleep(_seconds):
        if isinstance(outcome := next(passes), BaseException):
            raise outcome

    monkeypatch.setattr(sync_chains.time, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        call_command("sync_chains", "--duties", "--interval", "0")
    assert calls == ["broken", "bitcoin", "automation", "watchtower", "alerts"] * 2
