"""Rate limits (429 ``rate_limited`` with Retry-After), counted in the default cache (Redis in production).

``write``: every POST/PUT/PATCH/DELETE, per user (per client address when anonymous). ``sign_in``: the nonce and
sign-in endpoints, per client address. Rates in settings (``API_WRITE_RATE``, ``API_SIGN_IN_RATE``).
"""

from __future__ import annotations

from rest_framework.throttling import SimpleRateThrottle

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class WriteRateThrottle(SimpleRateThrottle):
    scope = "write"

    def get_cache_key(self, request, view):
        if request.method in SAFE_METHODS:
            return None
        ident = f"user-{request.user.pk}" if request.user.is_authenticated else f"ip-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class SignInRateThrottle(SimpleRateThrottle):
    scope = "sign_in"

    def get_cache_key(self, request, view):
        if request.method in SAFE_METHODS:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
