"""The pinned libraries the next doors stand on work together (a transitive upgrade once broke siwe's import)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct


def test_siwe_parses_signs_and_verifies_an_eip4361_message() -> None:
    from siwe import SiweMessage
    from siwe.siwe import InvalidSignature

    account = Account.create()
    now = datetime.now(UTC)
    message = SiweMessage(
        domain="loans.example",
        address=account.address,
        statement="Sign in to the loan desk.",
        uri="https://loans.example/login",
        version="1",
        chain_id=31,
        nonce="k3j5h6g7f8d9s0a1",
        issued_at=now.isoformat().replace("+00:00", "Z"),
        expiration_time=(now + timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
    )
    text = message.prepare_message()
    signature = Account.sign_message(encode_defunct(text=text), account.key).signature.hex()
    parsed = SiweMessage.from_message(text)
    parsed.verify("0x" + signature.removeprefix("0x"), domain="loans.example", nonce="k3j5h6g7f8d9s0a1")
    other = Account.create()
    forged = Account.sign_message(encode_defunct(text=text), other.key).signature.hex()
    with pytest.raises(InvalidSignature):
        parsed.verify("0x" + forged.removeprefix("0x"))
