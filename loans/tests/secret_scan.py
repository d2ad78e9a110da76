"""A pytest plugin for the whole suite: no log line and no HTTP response contains a lender's secret before it is
public.

- The secrets: every plaintext ``loans.services.lender_secrets`` seals, the lender's keys (``lender_key_store``) and
  each loan's pL (``lender_hash_commit_prepare``), caught where they reach ``loans.vault.seal`` (whatever name the
  caller imported the service under). A pL stops being a secret once it is revealed on chain: a scan that finds one
  allows it when some ``Loan.lender_preimage`` holds it (the watcher wrote it from acceptRepayment or TX_release).
- The scanned text: every log record of every logger at every level (the root logger is set to DEBUG so that
  debug records are made too; pytest still captures from the level it did before), and every response Django
  makes (``BaseHandler.get_response``: the test client, DRF's APIClient, the live server), headers and body.
- A leak fails the test it happened in (or its setup/teardown), naming where and which printed form, never the
  secret; one outside any test fails the session. ``checked()`` is a nested check: it raises ``SecretLeaked`` for
  what leaked inside it and keeps that out of the test's findings, so a test can show the scan catching a leak.

``leaks.printed_forms`` says what counts as the secret printed (hex, 0x, base64, bytes repr, WIF, ...).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from .leaks import printed_forms

SOURCES = {"lender_hash_commit_prepare": "a lender preimage pL", "lender_key_store": "a lender private key"}
SECRETS_MODULE = "loans.services.lender_secrets"


class SecretLeaked(Exception):
    """A lender's secret was in a log line or a response."""


@dataclass(frozen=True)
class Finding:
    where: str  # "log <logger> <LEVEL>" or "response <METHOD> <path> <part>"
    what: str  # "a lender private key", "a lender preimage pL"
    form: int  # index into printed_forms(secret): which printing of it

    def __str__(self) -> str:
        return f"{self.what} (printed form #{self.form}) in {self.where}"


class SecretScan:
    """The secrets made so far and the findings of the test (and nested checks) running now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: dict[str, tuple[bytes, str, int]] = {}  # printed form -> (secret, what, form index)
        self._stack: list[list[Finding]] = [[]]  # [session-level, current test, nested checks...]
        self.scanned = 0

    # -- secrets

    def add(self, secret: bytes, what: str) -> None:
        forms = {form: (secret, what, index) for index, form in enumerate(printed_forms(secret))}
        with self._lock:
            self._forms.update(forms)

    def forget(self, secret: bytes) -> None:
        with self._lock:
            for form in printed_forms(secret):
                self._forms.pop(form, None)

    def knows(self, secret: bytes) -> bool:
        return secret.hex() in self._forms

    # -- scanning

    def scan(self, text: str, where: str) -> None:
        if not self._forms or not text:
            return
        self.scanned += 1
        hits = [(form, entry) for form, entry in list(self._forms.items()) if form in text]
        for _form, (secret, what, index) in hits:
            if what == SOURCES["lender_hash_commit_prepare"] and _revealed_on_chain(secret):
                self.forget(secret)  # public from now on
                continue
            with self._lock:
                self._stack[-1].append(Finding(where, what, index))

    # -- findings

    def begin(self) -> None:
        with self._lock:
            self._stack[1:] = [[]]

    def end(self) -> list[Finding]:
        with self._lock:
            found = [finding for level in self._stack[1:] for finding in level]
            del self._stack[1:]
            return found

    def session_findings(self) -> list[Finding]:
        return list(self._stack[0])

    @contextmanager
    def checked(self) -> Iterator[list[Finding]]:
        """Raise ``SecretLeaked`` if a secret leaks inside the block (and keep it out of the test's findings)."""
        found: list[Finding] = []
        with self._lock:
            self._stack.append(found)
        try:
            yield found
        finally:
            with self._lock:
                del self._stack[next(i for i, level in enumerate(self._stack) if level is found)]
        if found:
            raise SecretLeaked("; ".join(map(str, found)))


def _revealed_on_chain(secret: bytes) -> bool:
    from loans.models import Loan

    try:
        return Loan.objects.filter(lender_preimage=secret.hex()).exists()
    except Exception:  # no database here (or a broken transaction): not shown to be public, so a leak
        return False


SCAN = SecretScan()
checked = SCAN.checked


# ------------------------------------------------------------------------------------------------ hooks


class _ScanHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if not SCAN._forms:
            return
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + record.stack_info
        SCAN.scan(text, f"log {record.name} {record.levelname}")


def _install_seal_hook() -> None:
    from loans import vault

    original = vault.seal
    if getattr(original, "_secret_scan", False):
        return

    def seal(secret):
        caller = sys._getframe(1)
        what = SOURCES.get(caller.f_code.co_name)
        if what is not None and caller.f_globals.get("__name__") == SECRETS_MODULE and isinstance(secret, vault.Secret):
            SCAN.add(secret.reveal(), what)
        return original(secret)

    seal._secret_scan = True
    vault.seal = seal


def _scan_response(request, response) -> None:
    if not SCAN._forms or response is None:
        return
    where = f"response {request.method} {request.path}"
    headers = "\n".join(f"{name}: {value}" for name, value in response.items())
    SCAN.scan(headers + "\n" + response.cookies.output(), f"{where} headers")
    if not getattr(response, "streaming", False):
        SCAN.scan(response.content.decode("utf-8", errors="replace"), f"{where} body")


def _install_response_hook() -> None:
    from django.core.handlers.base import BaseHandler

    if getattr(BaseHandler.get_response, "_secret_scan", False):
        return
    get_response, get_response_async = BaseHandler.get_response, BaseHandler.get_response_async

    def scanned(self, request):
        response = get_response(self, request)
        _scan_response(request, response)
        return response

    async def scanned_async(self, request):
        response = await get_response_async(self, request)
        _scan_response(request, response)
        return response

    scanned._secret_scan = scanned_async._secret_scan = True
    BaseHandler.get_response, BaseHandler.get_response_async = scanned, scanned_async


def _install_log_hook(config: pytest.Config) -> None:
    root = logging.getLogger()
    before = root.getEffectiveLevel()
    for existing in root.handlers:  # the console prints what it printed before, not the debug records
        if existing.level == logging.NOTSET:
            existing.setLevel(before)
    handler = _ScanHandler(level=logging.NOTSET)
    root.addHandler(handler)
    for logger in list(logging.Logger.manager.loggerDict.values()):  # those that keep their records to themselves
        if isinstance(logger, logging.Logger) and not logger.propagate:
            logger.addHandler(handler)
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    if plugin is not None and plugin.log_level is None:
        plugin.log_level = before  # pytest's capture and reports stay as they were
    root.setLevel(logging.DEBUG)


def pytest_sessionstart(session: pytest.Session) -> None:
    _install_seal_hook()
    _install_response_hook()
    _install_log_hook(session.config)


def _fail_on_leaks(when: str) -> None:
    found = SCAN.end()
    if found:
        raise SecretLeaked(f"a lender's secret leaked during {when}: " + "; ".join(map(str, found)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    SCAN.begin()
    try:
        return (yield)
    finally:
        _fail_on_leaks("setup")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    SCAN.begin()
    try:
        return (yield)
    finally:
        _fail_on_leaks("the test")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    SCAN.begin()
    try:
        return (yield)
    finally:
        _fail_on_leaks("teardown")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = SCAN.session_findings()
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("SECRET SCAN: a lender's secret leaked outside any test:", red=True)
            for finding in found:
                reporter.write_line(f"  {finding}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
