"""Who is calling: a wallet's bearer token, or a browser session signed in with Ethereum.

Tokens are stored hashed (``ApiToken.key_hash``); a revoked or expired token, or one of a disabled user, is
refused with ``authentication_failed``. A session made by Sign-In with Ethereum is bound to the address that
signed: if the user's address changes, the session no longer authenticates.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from ..services.accounts import api_token_find

SESSION_ADDRESS_KEY = "siwe_address"


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>``; ``request.auth`` is the ``ApiToken``."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send 'Authorization: Bearer <token>'.")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The token is not valid.") from None
        token = api_token_find(raw=raw)
        if token is None:
            raise exceptions.AuthenticationFailed("The token is not valid, expired or revoked.")
        return token.user, token

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class AddressBoundSessionAuthentication(authentication.SessionAuthentication):
    """Django's session (CSRF-checked on writes), refused when the address it was signed in with is no longer the
    user's."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, auth = result
        bound = request._request.session.get(SESSION_ADDRESS_KEY)
        if bound is not None and (user.evm_address or "").lower() != bound.lower():
            return None
        return user, auth


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = BearerTokenAuthentication
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A wallet's token from POST /api/v1/auth/siwe."}


class AddressBoundSessionScheme(OpenApiAuthenticationExtension):
    target_class = AddressBoundSessionAuthentication
    name = "session"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
