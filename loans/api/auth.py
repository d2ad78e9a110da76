"""Sign-In with Ethereum (EIP-4361) for browsers and wallets, and sign-out.

1. ``POST /api/v1/auth/nonce`` → ``{nonce, expires_at, domain, uri, chain_id}``: what the message must say.
2. The wallet signs an EIP-4361 message with that nonce (personal_sign).
3. ``POST /api/v1/auth/siwe`` ``{message, signature, token?}`` → the session is signed in, bound to the address;
   with ``"token": true`` the answer also carries a bearer token for wallets (shown once; stored hashed).
4. ``POST /api/v1/auth/logout`` revokes the token the request used, or ends the session.

A first sign-in creates a borrower; sign-in never grants the lender or operator role.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login, logout
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import ApiToken
from ..services.accounts import api_token_issue, api_token_revoke, siwe_nonce_issue, siwe_sign_in
from .authentication import SESSION_ADDRESS_KEY
from .idempotency import IDEMPOTENCY_PARAMETER, IdempotentPostMixin
from .serializers import ErrorSerializer
from .throttles import SignInRateThrottle, WriteRateThrottle

AUTH_ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 429: ErrorSerializer}


def siwe_domain(request: Request) -> str:
    return settings.SIWE_DOMAIN or request.get_host()


def siwe_origin(request: Request) -> str:
    """The origin the message's URI must be on: SIWE_URI's, or this request's."""
    if settings.SIWE_URI:
        from urllib.parse import urlsplit

        parts = urlsplit(settings.SIWE_URI)
        return f"{parts.scheme}://{parts.netloc}".lower()
    return f"{request.scheme}://{request.get_host()}".lower()


class NonceSerializer(serializers.Serializer):
    nonce = serializers.CharField()
    expires_at = serializers.DateTimeField()
    domain = serializers.CharField(help_text="The message's domain must be this.")
    uri = serializers.CharField(help_text="The message's URI must be on this origin.")
    chain_id = serializers.IntegerField(help_text="The message's chain id must be this.")


class SignInRequestSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=4000, trim_whitespace=False, help_text="The EIP-4361 text signed.")
    signature = serializers.RegexField(r"^0x[0-9a-fA-F]{130}$", help_text="65 bytes, hex, personal_sign.")
    token = serializers.BooleanField(default=False, help_text="Also return a bearer token (for wallets).")


class SignInResponseSerializer(serializers.Serializer):
    address = serializers.CharField()
    role = serializers.CharField()
    created = serializers.BooleanField(help_text="This sign-in created the account (a borrower).")
    token = serializers.CharField(required=False, help_text="Only with token=true; shown once.")
    token_expires_at = serializers.DateTimeField(required=False)


class NonceView(IdempotentPostMixin, APIView):
    """A fresh single-use nonce for one Sign-In with Ethereum message, and what the message must say."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [SignInRateThrottle]

    @extend_schema(request=None, responses={201: NonceSerializer, 429: ErrorSerializer}, auth=[],
                   parameters=[IDEMPOTENCY_PARAMETER])  # fmt: skip
    def post(self, request: Request) -> Response:
        nonce = siwe_nonce_issue()
        data = {
            "nonce": nonce.nonce,
            "expires_at": nonce.expires_at,
            "domain": siwe_domain(request),
            "uri": siwe_origin(request),
            "chain_id": settings.EVM_CHAIN_ID,
        }
        return Response(NonceSerializer(data).data, status=status.HTTP_201_CREATED)


class SignInView(IdempotentPostMixin, APIView):
    """Sign in with an EIP-4361 message and its signature."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [SignInRateThrottle]

    @extend_schema(request=SignInRequestSerializer, responses={200: SignInResponseSerializer, **AUTH_ERRORS},
                   auth=[], parameters=[IDEMPOTENCY_PARAMETER])  # fmt: skip
    def post(self, request: Request) -> Response:
        body = SignInRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = siwe_sign_in(
            message=body.validated_data["message"],
            signature=body.validated_data["signature"],
            domain=siwe_domain(request),
            origin=siwe_origin(request),
            chain_id=settings.EVM_CHAIN_ID,
        )
        login(request._request, result.user, backend="django.contrib.auth.backends.ModelBackend")
        request._request.session[SESSION_ADDRESS_KEY] = result.address
        data = {"address": result.address, "role": result.user.role, "created": result.created}
        if body.validated_data["token"]:
            raw, token = api_token_issue(user=result.user)
            data.update(token=raw, token_expires_at=token.expires_at)
        return Response(SignInResponseSerializer(data).data)


class LogoutView(IdempotentPostMixin, APIView):
    """Revoke the bearer token this request carries, or end this session."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [WriteRateThrottle]

    @extend_schema(request=None, responses={204: None, 401: ErrorSerializer, 429: ErrorSerializer},
                   parameters=[IDEMPOTENCY_PARAMETER])  # fmt: skip
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, ApiToken):
            api_token_revoke(token=request.auth)
        else:
            logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)
