"""Sign-In with Ethereum (EIP-4361) and wallets' bearer tokens: the one write path for both.

A sign-in proves control of an EVM address: the server issues a single-use, expiring nonce
(``siwe_nonce_issue``); the wallet signs an EIP-4361 message naming it, our domain and URI, our chain id and a fresh
issued-at; ``siwe_sign_in`` checks every one of those, then the signature (EIP-191 over the exact text signed),
and only then spends the nonce (a compare-and-set update, so two racing sign-ins with one nonce cannot both
succeed). A first sign-in creates a borrower; sign-in never grants another role (an operator does, in the admin).

A refusal raises ``SignInRefused`` with a stable code and changes nothing (the nonce stays unspent unless the
signature was good).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from eth_account import Account
from eth_account.messages import encode_defunct

from ..errors import LoanServiceError
from ..models import ApiToken, SiweNonce, User

SIGN_IN_CODES: tuple[str, ...] = (
    "siwe_malformed",
    "siwe_wrong_domain",
    "siwe_wrong_uri",
    "siwe_wrong_chain",
    "siwe_wrong_version",
    "siwe_issued_in_future",
    "siwe_too_old",
    "siwe_expired",
    "siwe_not_yet_valid",
    "siwe_bad_signature",
    "siwe_nonce_unknown",
    "siwe_nonce_expired",
    "siwe_nonce_used",
    "account_disabled",
)


class SignInRefused(LoanServiceError):
    """A sign-in was refused (``code`` one of ``SIGN_IN_CODES``); no session, no token, nothing written."""

    code = "siwe_malformed"


@dataclass(frozen=True)
class SignIn:
    user: User
    created: bool
    address: str


def siwe_nonce_issue(*, now: datetime | None = None) -> SiweNonce:
    """A fresh nonce (alphanumeric, 96 bits), stored with its expiry."""
    now = now or timezone.now()
    nonce = secrets.token_hex(12)  # EIP-4361: at least 8 alphanumeric characters
    return SiweNonce.objects.create(nonce=nonce, expires_at=now + timedelta(seconds=settings.SIWE_NONCE_TTL_SECONDS))


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _parse(message: str):
    from siwe import SiweMessage

    try:
        return SiweMessage.from_message(message)
    except Exception as exc:  # abnf's ParseError, pydantic's ValidationError, ValueError: all "not EIP-4361"
        raise SignInRefused(f"not an EIP-4361 message: {exc}".splitlines()[0][:300], code="siwe_malformed") from None


def siwe_sign_in(
    *, message: str, signature: str, domain: str, origin: str, chain_id: int, now: datetime | None = None
) -> SignIn:
    """Check ``message`` (EIP-4361 text) and ``signature`` (65 bytes hex), spend its nonce, return the user of the
    address (created as a borrower on a first sign-in). The message's URI must be on ``origin``
    (``scheme://host[:port]``, no trailing slash)."""
    now = now or timezone.now()
    parsed = _parse(message)
    if parsed.domain != domain:
        raise SignInRefused(f"the message is for {parsed.domain!r}, not {domain!r}", code="siwe_wrong_domain")
    if _origin(str(parsed.uri)) != origin:
        raise SignInRefused(f"the message's URI {parsed.uri!r} is not on {origin!r}", code="siwe_wrong_uri")
    if str(parsed.version) != "1":
        raise SignInRefused("only EIP-4361 version 1 is accepted", code="siwe_wrong_version")
    if int(parsed.chain_id) != chain_id:
        raise SignInRefused(f"the message is for chain {parsed.chain_id}, not {chain_id}", code="siwe_wrong_chain")
    skew = timedelta(seconds=settings.SIWE_CLOCK_SKEW_SECONDS)
    issued_at = parsed.issued_at._datetime
    if issued_at > now + skew:
        raise SignInRefused("the message was issued in the future", code="siwe_issued_in_future")
    if issued_at < now - timedelta(seconds=settings.SIWE_MAX_MESSAGE_AGE_SECONDS):
        raise SignInRefused("the message was issued too long ago; sign a new one", code="siwe_too_old")
    if parsed.expiration_time is not None and now >= parsed.expiration_time._datetime:
        raise SignInRefused("the message has expired", code="siwe_expired")
    if parsed.not_before is not None and now < parsed.not_before._datetime:
        raise SignInRefused("the message is not valid yet", code="siwe_not_yet_valid")
    try:
        signer = Account.recover_message(encode_defunct(text=message), signature=signature)
    except Exception:  # malformed hex, wrong length, s out of range
        signer = None
    if signer != parsed.address:
        raise SignInRefused("the signature is not the message's address's", code="siwe_bad_signature")

    with transaction.atomic():
        spent = SiweNonce.objects.filter(nonce=parsed.nonce, used_at__isnull=True, expires_at__gt=now).update(
            used_at=now
        )
        if not spent:
            row = SiweNonce.objects.filter(nonce=parsed.nonce).first()
            if row is None:
                raise SignInRefused("this server did not issue the message's nonce", code="siwe_nonce_unknown")
            if row.used_at is not None:
                raise SignInRefused("the message's nonce was already used", code="siwe_nonce_used")
            raise SignInRefused("the message's nonce has expired; ask for a new one", code="siwe_nonce_expired")
        user = User.objects.select_for_update().filter(evm_address__iexact=parsed.address).first()
        created = user is None
        if created:
            user = User(username=parsed.address.lower(), evm_address=parsed.address, role=User.Role.BORROWER)
            user.set_unusable_password()
            user.save()
        elif not user.is_active:
            raise SignInRefused("this account is disabled", code="account_disabled")
    return SignIn(user=user, created=created, address=parsed.address)


def _token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_issue(*, user: User, now: datetime | None = None) -> tuple[str, ApiToken]:
    """A new bearer token for ``user``: the token itself (shown once, never stored) and its row (the hash)."""
    now = now or timezone.now()
    raw = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        key_hash=_token_hash(raw),
        prefix=raw[:8],
        expires_at=now + timedelta(seconds=settings.API_TOKEN_TTL_SECONDS),
    )
    return raw, token


def api_token_find(*, raw: str, now: datetime | None = None) -> ApiToken | None:
    """The live token ``raw`` is (not revoked, not expired, of an active user), or None."""
    now = now or timezone.now()
    return (
        ApiToken.objects.select_related("user")
        .filter(key_hash=_token_hash(raw), revoked_at__isnull=True, expires_at__gt=now, user__is_active=True)
        .first()
    )


def api_token_revoke(*, token: ApiToken, now: datetime | None = None) -> None:
    """Revoke ``token`` (once; revoking again changes nothing)."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now())
