"""The cache of one test: Redis (as in production, so throttles count across processes) under a key prefix of its
own, so rate-limit counters never carry over between tests or suites sharing the Redis database."""

from __future__ import annotations

import uuid


def use_own_cache(settings) -> None:
    """Point ``settings.CACHES`` (pytest-django's ``settings`` fixture) at Redis under a fresh key prefix."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": f"test-{uuid.uuid4().hex}",
        }
    }
