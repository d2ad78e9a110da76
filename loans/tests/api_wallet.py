"""A wallet driving the REST API, as the end-to-end API tests and the happy-path benchmark use it: signed in with
SIWE (a bearer token), it signs the contract calls the API prepares with its EVM account, sends them through its own
node connection and reports them by hash. A refusal raises ``WalletRefused`` (an ``AssertionError``: a test fails on
it; the benchmark stops)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.urls import reverse
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from rest_framework.test import APIClient
from siwe import SiweMessage
from web3 import Web3


class WalletRefused(AssertionError):
    """The API or the chain did not do what the wallet expected."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise WalletRefused(message)


@dataclass
class Wallet:
    """An API client signed in with SIWE as ``account`` (bearer token), sending what the API prepares."""

    api: APIClient
    account: LocalAccount
    w3: Web3
    gas_paid_wei: int = 0

    @classmethod
    def sign_in(cls, account: LocalAccount, w3: Web3) -> Wallet:
        client = APIClient()
        nonce = client.post(reverse("api:auth-nonce")).json()
        text = SiweMessage(
            domain=nonce["domain"],
            address=account.address,
            statement="Sign in to the loan desk.",
            uri=nonce["uri"] + "/",
            version="1",
            chain_id=nonce["chain_id"],
            nonce=nonce["nonce"],
            issued_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        ).prepare_message()
        signature = Account.sign_message(encode_defunct(text=text), account.key).signature.hex()
        response = client.post(
            reverse("api:auth-siwe"),
            {"message": text, "signature": "0x" + signature.removeprefix("0x"), "token": True},
            format="json",
        )
        expect(response.status_code == 200, f"sign-in refused: {response.content!r}")
        api = APIClient()  # a wallet: no session, only the bearer token
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
        return cls(api, account, w3)

    def get(self, name: str, *args: object, **query: object) -> dict:
        response = self.api.get(reverse(f"api:{name}", args=args), query)
        expect(response.status_code == 200, f"GET {name}: {response.status_code} {response.content!r}")
        return response.json()

    def post(self, name: str, *args: object, status: int = 201, **body: object) -> dict:
        response = self.api.post(
            reverse(f"api:{name}", args=args), body, format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex
        )
        expect(response.status_code == status, f"POST {name}: {response.status_code} {response.content!r}")
        return response.json()

    def call(self, loan_id: int, name: str, *, append: bytes = b"", send: bool = False) -> dict:
        """POST evm-calls/NAME; for a wallet's call, sign what it prepared (plus ``append``: pB), send it through
        the wallet's own node and report the hash; returns the reported or server-sent transaction."""
        body = self.post("loan-evm-call", loan_id, name, status=200, send=send)
        if send:
            return body["transaction"]
        prepared = body["prepared"]
        expect(prepared["to"] and prepared["wallet_request"]["from"] == self.account.address, f"{name}: {prepared}")
        data = prepared["data"] + append.hex()
        expect((prepared["needs"] is not None) == bool(append), f"{name} needs {prepared['needs']}")
        tx = {
            "to": prepared["to"],
            "data": data,
            "value": int(prepared["value_wei"]),
            "chainId": prepared["chain_id"],
            "nonce": self.w3.eth.get_transaction_count(self.account.address),
            "gas": 600_000,
        }
        base_fee = int(self.w3.eth.get_block("latest")["baseFeePerGas"])
        tx.update(type=2, maxPriorityFeePerGas=10**9, maxFeePerGas=2 * base_fee + 10**9)
        tx_hash = self.w3.eth.send_raw_transaction(self.account.sign_transaction(tx).raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        expect(receipt["status"] == 1, f"{name} reverted")
        self.gas_paid_wei += receipt["gasUsed"] * receipt["effectiveGasPrice"]
        reported = self.post("loan-evm-transactions", loan_id, tx_hash="0x" + bytes(tx_hash).hex())
        expect(
            reported["status"] == "mined" and reported["function"] == prepared["method"].split("(")[0],
            f"{name} reported as {reported}",
        )
        return reported
