"""The pieces of the browser tests: an EIP-1193 wallet injected into the page and backed by Python (eth-account
signs with an anvil dev account, anvil gets the transactions), screenshots per step, an axe-core check, the
console's Content-Security-Policy errors and a recorder of every request a page makes.

No Django here: the fixtures in ``conftest.py`` wire these to the live server and the nodes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from web3 import Web3

VENDOR_DIR = Path(__file__).resolve().parent / "vendor"
AXE_SOURCE = VENDOR_DIR / "axe-core-4.14.1.min.js"  # npm axe-core 4.14.1, MPL-2.0 (vendor/axe-core-LICENSE.txt)
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"

# window.ethereum for the page: each request goes to Python through the exposed function; an error comes back as
# {code, message} and is thrown as an EIP-1193 ProviderRpcError (code 4001: the user rejected the request).
WALLET_BRIDGE = "__loansTestWallet"
WALLET_INIT_SCRIPT = """
(() => {
  const listeners = {};
  const provider = {
    isLoansTestWallet: true,
    async request({ method, params }) {
      const answer = JSON.parse(await window.__BRIDGE__(method, JSON.stringify(params === undefined ? [] : params)));
      if (answer.error) {
        const error = new Error(answer.error.message);
        error.code = answer.error.code;
        throw error;
      }
      return answer.result;
    },
    on(event, handler) { (listeners[event] = listeners[event] || []).push(handler); return provider; },
    removeListener(event, handler) {
      listeners[event] = (listeners[event] || []).filter((h) => h !== handler);
      return provider;
    },
  };
  window.ethereum = provider;
})();
""".replace("__BRIDGE__", WALLET_BRIDGE)


class WalletRefusal(Exception):
    """An EIP-1193 error the wallet answers with (4001 user rejected, 4200 unsupported method, ...)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class InjectedWallet:
    """A browser wallet for one page: ``account`` signs, ``w3`` (anvil) gets transactions and every read.

    ``chain_id`` overrides the chain the wallet says it is on (to test a wallet on the wrong chain); ``reject``
    holds the methods the wallet's owner declines (EIP-1193 code 4001). ``calls`` records (method, params).
    """

    account: LocalAccount
    w3: Web3 | None = None
    chain_id: int | None = None
    reject: set[str] = field(default_factory=set)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.account.address

    def install(self, page) -> None:
        page.expose_function(WALLET_BRIDGE, self._bridge)
        page.add_init_script(WALLET_INIT_SCRIPT)

    def _bridge(self, method: str, params_json: str) -> str:
        params = json.loads(params_json)
        self.calls.append((method, params))
        try:
            return json.dumps({"result": self.handle(method, params)})
        except WalletRefusal as refusal:
            return json.dumps({"error": {"code": refusal.code, "message": str(refusal)}})
        except Exception as exc:  # a node's error: what a wallet shows as an internal error
            return json.dumps({"error": {"code": -32603, "message": f"{type(exc).__name__}: {exc}"}})

    def handle(self, method: str, params: list) -> Any:
        if method in self.reject:
            raise WalletRefusal(4001, "User rejected the request.")
        if method in {"eth_requestAccounts", "eth_accounts"}:
            return [self.address.lower()]  # as MetaMask does: lower case, the page must checksum it
        if method == "eth_chainId":
            if self.chain_id is not None:
                return hex(self.chain_id)
            if self.w3 is None:
                raise WalletRefusal(4900, "The wallet is not connected to a chain.")
            return hex(self.w3.eth.chain_id)
        if method == "personal_sign":
            data, address = params[0], params[1]
            self._check_address(address)
            signable = (
                encode_defunct(hexstr=data) if re.fullmatch(r"0x[0-9a-fA-F]*", data) else encode_defunct(text=data)
            )
            return "0x" + self.account.sign_message(signable).signature.hex().removeprefix("0x")
        if method == "eth_sendTransaction":
            return self._send_transaction(params[0])
        if self.w3 is None:
            raise WalletRefusal(4200, f"The wallet does not support {method}.")
        response = self.w3.provider.make_request(method, params)
        if response.get("error"):
            raise WalletRefusal(response["error"].get("code", -32603), response["error"].get("message", "error"))
        return response.get("result")

    def _check_address(self, address: str) -> None:
        if address.lower() != self.address.lower():
            raise WalletRefusal(4100, f"The wallet does not hold {address}.")

    def _send_transaction(self, tx: dict) -> str:
        if self.w3 is None:
            raise WalletRefusal(4900, "The wallet is not connected to a chain.")
        self._check_address(tx.get("from", self.address))
        w3 = self.w3
        prepared: dict[str, Any] = {
            "from": self.address,
            "to": Web3.to_checksum_address(tx["to"]) if tx.get("to") else None,
            "value": int(tx.get("value", "0x0"), 16),
            "data": tx.get("data") or tx.get("input") or "0x",
            "nonce": w3.eth.get_transaction_count(self.address, "pending"),
            "chainId": w3.eth.chain_id,
        }
        if prepared["to"] is None:
            prepared.pop("to")
        prepared["gas"] = int(tx["gas"], 16) if tx.get("gas") else w3.eth.estimate_gas(prepared)
        base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
        prepared["maxPriorityFeePerGas"] = 1_000_000_000
        prepared["maxFeePerGas"] = 2 * base_fee + prepared["maxPriorityFeePerGas"]
        signed = Account.sign_transaction(prepared, self.account.key)
        return "0x" + w3.eth.send_raw_transaction(signed.raw_transaction).hex().removeprefix("0x")


@dataclass
class RecordedRequest:
    method: str
    url: str
    body: str | None


class RequestRecorder:
    """Every request a page makes (document, fetch, XHR, static file, websocket handshake), with URL and body."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []

    def attach(self, page) -> None:
        page.on("request", self._record)
        page.on("websocket", lambda ws: self.requests.append(RecordedRequest("WEBSOCKET", ws.url, None)))

    def _record(self, request) -> None:
        try:
            body = request.post_data
        except Exception:  # a binary body that is no text
            body = (request.post_data_buffer or b"").hex()
        self.requests.append(RecordedRequest(request.method, request.url, body))

    def containing(self, secret: str) -> list[RecordedRequest]:
        """The requests whose URL or body holds ``secret`` (case-insensitive: hex may travel in either case)."""
        needle = secret.lower()
        return [r for r in self.requests if needle in r.url.lower() or needle in (r.body or "").lower()]

    def to(self, path_fragment: str) -> list[RecordedRequest]:
        return [r for r in self.requests if path_fragment in r.url]


class ConsoleLog:
    """The page's console errors and uncaught exceptions; ``csp_errors`` are the Content-Security-Policy refusals."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def attach(self, page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _console(self, message) -> None:
        if message.type == "error":
            url = (message.location or {}).get("url", "")
            self.errors.append(f"{message.text} ({url})" if url else message.text)

    @property
    def csp_errors(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e or "Content-Security-Policy" in e]


class Screenshots:
    """One PNG per step under ``directory`` (numbered in order), kept by CI as an artifact."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def __call__(self, page, step: str) -> Path:
        self.count += 1
        self.directory.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")
        path = self.directory / f"{self.count:02d}-{slug}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


BLOCKING_IMPACTS = ("serious", "critical")


def axe_violations(page, *, impacts: Iterable[str] = BLOCKING_IMPACTS) -> list[dict]:
    """Run axe-core (WCAG 2.x A and AA rules and best practices) on the page; the violations of ``impacts``.

    axe is evaluated through the DevTools protocol, which the page's Content-Security-Policy does not govern, so
    the page is checked under its real policy."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_SOURCE.read_text() + "\n;undefined")
    results = page.evaluate(
        """async () => {
          const r = await window.axe.run(document, {resultTypes: ["violations"]});
          return r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
                                           nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5)}));
        }"""
    )
    wanted = set(impacts)
    return [v for v in results if v["impact"] in wanted]


def horizontal_overflow(page) -> dict:
    """How far the page is wider than its viewport (0: nothing overflows), and the widest offending elements."""
    return page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          const offenders = [];
          for (const el of document.querySelectorAll("body *")) {
            const r = el.getBoundingClientRect();
            if (r.width > 0 && r.right > width + 1) {
              const cls = typeof el.className === "string" ? el.className : "";
              const classes = cls ? "." + cls.split(" ").join(".") : "";
              const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + classes;
              offenders.push(`${name} right=${Math.round(r.right)}`);
            }
          }
          return {overflow: document.documentElement.scrollWidth - width, offenders: offenders.slice(0, 10)};
        }"""
    )


def sign_in(page) -> None:
    """Sign in on /signin/ with the page's injected wallet (EIP-4361); back on the home page."""
    page.goto("/signin/")
    page.get_by_role("button", name="Connect wallet").click()
    page.wait_for_url(re.compile(r"://[^/]+/$"))
