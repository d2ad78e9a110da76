"""Structured logs (loans/logging.py): JSON lines that parse and carry the loan id, whether the call named it in
``extra`` or ``loan_context`` set it around the work; the settings wire both into the console handler; the
watchers set the context while they apply a loan's facts."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings

from bitcoin.rpc import BitcoinRPC
from loans.logging import JsonFormatter, LoanContextFilter, current_loan_id, loan_context

from .test_sync_bitcoin import make_chain_loan


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict]]]:
    """A JSON handler as settings.LOGGING builds it, on the root logger; ``lines()`` parses what it wrote."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(LoanContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


log = logging.getLogger("loans.tests.structured")


def test_a_json_line_has_the_fields_and_the_loan_id_the_call_passed(lines):
    log.warning("loan %s: %s", 7, "offer expires", extra={"loan_id": 7, "blocks_left": 12, "where": object()})
    log.warning("about no loan")
    first, second = lines()
    assert first["message"] == "loan 7: offer expires" and first["level"] == "WARNING"
    assert first["logger"] == "loans.tests.structured" and first["loan_id"] == 7
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert first["blocks_left"] == 12 and first["where"].startswith("<object object")  # extras; str() if not JSON
    assert "msg" not in first and "args" not in first and "exception" not in first
    assert second["loan_id"] is None and second["message"] == "about no loan"


def test_loan_context_names_the_loan_of_every_line_inside_and_restores_the_outer_one(lines):
    with loan_context(3):
        log.info("working")
        logging.getLogger("web3.somewhere").warning("a library's line")
        with loan_context(4):
            log.info("nested")
            log.info("named by the call", extra={"loan_id": 9})  # the call wins over the context
        log.info("back")
    log.info("outside")
    assert [(line["message"], line["loan_id"]) for line in lines()] == [
        ("working", 3),
        ("a library's line", 3),
        ("nested", 4),
        ("named by the call", 9),
        ("back", 3),
        ("outside", None),
    ]


def test_the_context_is_restored_when_the_work_raises_and_the_exception_is_in_the_line(lines):
    with pytest.raises(ValueError), loan_context(5):
        try:
            raise ValueError("bad fact")
        except ValueError:
            log.exception("apply failed")
            raise
    assert current_loan_id() is None
    (line,) = lines()
    assert line["loan_id"] == 5 and line["level"] == "ERROR"
    assert line["exception"].startswith("Traceback") and "ValueError: bad fact" in line["exception"]


def test_another_thread_does_not_see_this_threads_loan(lines):
    seen = []
    with loan_context(11):
        worker = threading.Thread(target=lambda: (seen.append(current_loan_id()), log.info("other thread")))
        worker.start()
        worker.join()
    assert seen == [None] and lines()[0]["loan_id"] is None


def _django_logs(env: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    code = (
        "import django, logging; django.setup(); from loans.logging import loan_context\n"
        "logging.getLogger('loans.x').info('with extra', extra={'loan_id': 42})\n"
        "with loan_context(43): logging.getLogger('django.request').warning('from context')\n"
    )
    base = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "loanproject.settings", "PYTEST_VERSION": "x"}
    env = {key: value for key, value in {**base, **env}.items() if value is not None}  # None: unset
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=settings.BASE_DIR)


def test_settings_write_json_lines_with_log_format_json_and_plain_text_by_default():
    done = _django_logs({"LOG_FORMAT": "json"})
    assert done.returncode == 0, done.stderr
    parsed = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["logger"], line["message"], line["loan_id"]) for line in parsed] == [
        ("loans.x", "with extra", 42),
        ("django.request", "from context", 43),
    ]
    text = _django_logs({})  # under pytest (and with DEBUG on) the default is text: the message alone
    assert text.stderr.splitlines() == ["with extra", "from context"], text.stderr
    production = _django_logs({"DJANGO_DEBUG": "0", "PYTEST_VERSION": None, "DJANGO_SECRET_KEY": "k" * 50})
    assert production.returncode == 0, production.stderr
    assert [json.loads(line)["loan_id"] for line in production.stderr.splitlines()] == [42, 43]
    bad = _django_logs({"LOG_FORMAT": "xml"})
    assert bad.returncode != 0 and "LOG_FORMAT must be text or json" in bad.stderr


def test_the_console_handler_of_the_settings_has_the_filter_and_formatter():
    console = settings.LOGGING["handlers"]["console"]
    assert console["filters"] == ["loan_context"] and console["formatter"] in {"text", "json"}
    assert settings.LOGGING["filters"]["loan_context"]["()"] == "loans.logging.LoanContextFilter"
    assert settings.LOGGING["formatters"]["json"]["()"] == "loans.logging.JsonFormatter"


# -- the watchers set the context --------------------------------------------------------------------------------


def _logging_first(real: Callable, message: str) -> Callable:
    """``real``, preceded by a log line that names no loan (as a library deep inside a service would log)."""

    def wrapped(**kwargs):
        logging.getLogger("somewhere.deep").info(message)
        return real(**kwargs)

    return wrapped


@pytest.mark.integration
@pytest.mark.django_db
def test_the_bitcoin_watcher_names_the_loan_while_it_records_and_applies_its_transaction(
    lines, monkeypatch, settings, btc_rpc: BitcoinRPC
):
    from loans.sync import bitcoin as watcher

    settings.BITCOIN_NETWORK = "regtest"
    start = btc_rpc.getblockcount() + 1
    monkeypatch.setattr(
        watcher, "bitcoin_transaction_record", _logging_first(watcher.bitcoin_transaction_record, "rec")
    )
    monkeypatch.setattr(watcher, "bitcoin_transaction_apply", _logging_first(watcher.bitcoin_transaction_apply, "app"))
    loan = make_chain_loan()
    loan.request(loan.fund(btc_rpc))
    report = watcher.sync_bitcoin(rpc=btc_rpc, confirmations=1, start_height=start)
    assert (report.recorded, report.applied) == (1, 1)
    deep = [(line["message"], line["loan_id"]) for line in lines() if line["logger"] == "somewhere.deep"]
    assert deep == [("rec", loan.pk), ("app", loan.pk)]
    about_the_loan = [line for line in lines() if line["message"].startswith(f"loan {loan.pk}")]
    assert len(about_the_loan) == 3 and {line["loan_id"] for line in about_the_loan} == {loan.pk}
    (summary,) = [line for line in lines() if line["message"].startswith("bitcoin: followed")]
    assert summary["loan_id"] is None  # the run's summary is about no loan
    assert current_loan_id() is None


@pytest.mark.integration
@pytest.mark.django_db
def test_the_evm_watcher_names_the_loan_while_it_applies_its_events(lines, monkeypatch, desk):
    from loans.sync import evm as watcher

    loan = desk.draft()
    contract_id = desk.request(loan)
    desk.sync()
    loan.refresh_from_db()
    assert loan.status == "requested"
    monkeypatch.setattr(watcher, "evm_event_apply", _logging_first(watcher.evm_event_apply, "apply"))
    desk.flow.commit(contract_id)
    desk.flow.offer(contract_id)
    desk.sync()
    loan.refresh_from_db()
    assert loan.status == "offered"
    deep = [(line["message"], line["loan_id"]) for line in lines() if line["logger"] == "somewhere.deep"]
    assert deep == [("apply", loan.pk), ("apply", loan.pk)]  # LenderHashCommitted, LoanOffered
