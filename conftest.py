"""Shared fixtures. Node fixtures live beside the code they start and are registered here."""

import pytest

# btc_node / btc_rpc / btc_fund / btc_mine / btc_reorg (the embedded regtest node) and
# anvil / w3 / deployment / evm_mine / evm_reorg; the secret scan (no lender secret in a log line or a response).
pytest_plugins = ["bitcoin.testing", "evm.testing", "loans.tests.secret_scan"]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Test users need a password hash, not a slow one.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
