"""Looking for a secret in text: every way a 32-byte secret could be printed (hex, 0x-hex, upper hex, Python bytes
repr, base64 and url-safe base64, a WIF for Bitcoin keys)."""

from __future__ import annotations

import base64

from bitcoin.keys import PrivateKey


def printed_forms(secret: bytes) -> list[str]:
    forms = [
        secret.hex(),
        secret.hex().upper(),
        "0x" + secret.hex(),
        repr(secret),
        repr(secret)[2:-1],
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
    ]
    try:
        key = PrivateKey(secret)
    except Exception:  # not a valid scalar: no WIF form
        return forms
    return [*forms, key.to_wif("regtest"), key.to_wif("mainnet")]


def leaked(text: str, *secrets: bytes) -> list[str]:
    """The printed forms of ``secrets`` that occur in ``text`` (empty: nothing leaked)."""
    return [form for secret in secrets for form in printed_forms(secret) if form in text]
