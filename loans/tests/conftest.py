"""The personas: one per party, each a Django user, an EVM account and a Bitcoin key (``Persona``).

The EVM accounts come from ``evm.testing`` (``borrower_account``, ``lender_account``, ``operator_account``: anvil's
keys, no node needed); the Bitcoin keys of the borrower and the lender are PROTOCOL.md's test vector (the lender's
is the ``lender_btc_pubkey`` the test contracts are deployed with). ``borrower``, ``lender`` and ``operator`` are the
personas' Django users, for tests that need no more.
"""

import pytest
from eth_account.signers.local import LocalAccount

from bitcoin.keys import PrivateKey
from bitcoin.tests.loan_vectors import borrower_key, lender_key
from loans.models import User

from .factories import Persona, make_persona


@pytest.fixture
def borrower_persona(db, borrower_account: LocalAccount) -> Persona:
    return make_persona(User.Role.BORROWER, borrower_account, borrower_key(), username="borrower")


@pytest.fixture
def lender_persona(db, lender_account: LocalAccount) -> Persona:
    return make_persona(User.Role.LENDER, lender_account, lender_key(), username="lender")


@pytest.fixture
def operator_persona(db, operator_account: LocalAccount) -> Persona:
    return make_persona(User.Role.OPERATOR, operator_account, PrivateKey.generate(), username="operator")


@pytest.fixture
def borrower(borrower_persona: Persona) -> User:
    return borrower_persona.user


@pytest.fixture
def lender(lender_persona: Persona) -> User:
    return lender_persona.user


@pytest.fixture
def operator(operator_persona: Persona) -> User:
    return operator_persona.user
