"""Shared fixtures. Node fixtures live beside the code they start and are registered here."""

import pytest


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Test users need a password hash, not a slow one.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
