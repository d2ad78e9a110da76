import pytest

from loans.models import User

from .factories import make_user


@pytest.fixture
def borrower(db) -> User:
    return make_user(User.Role.BORROWER)


@pytest.fixture
def lender(db) -> User:
    return make_user(User.Role.LENDER)


@pytest.fixture
def operator(db) -> User:
    return make_user(User.Role.OPERATOR)
