"""loans.permissions: one answer per role, the same for every door."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied

from loans import permissions
from loans.models import User

from .factories import make_loan, make_user

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("role", "superuser", "active", "operator", "lender", "sets_parameters"),
    [
        (User.Role.BORROWER, False, True, False, False, False),
        (User.Role.LENDER, False, True, False, True, True),
        (User.Role.OPERATOR, False, True, True, False, True),
        (User.Role.BORROWER, True, True, True, False, True),  # a superuser counts as an operator
        (User.Role.OPERATOR, False, False, False, False, False),  # an inactive account may do nothing
        (User.Role.LENDER, False, False, False, False, False),
    ],
)
def test_roles(role, superuser, active, operator, lender, sets_parameters) -> None:
    user = make_user(role, is_superuser=superuser, is_active=active)
    assert permissions.is_operator(user) is operator
    assert permissions.is_lender(user) is lender
    assert permissions.can_set_parameters(user) is sets_parameters


def test_anonymous_may_nothing() -> None:
    anonymous = AnonymousUser()
    loan = make_loan()
    assert not permissions.is_operator(anonymous)
    assert not permissions.is_lender(anonymous)
    assert not permissions.can_view_loan(anonymous, loan)
    assert not permissions.can_set_parameters(anonymous)


def test_a_loan_is_seen_by_its_borrower_the_lender_and_operators_only() -> None:
    owner = make_user(User.Role.BORROWER)
    loan = make_loan(borrower=owner)
    assert permissions.is_loan_borrower(owner, loan) and permissions.can_view_loan(owner, loan)
    assert not permissions.can_view_loan(make_user(User.Role.BORROWER), loan)
    assert permissions.can_view_loan(make_user(User.Role.LENDER), loan)
    assert permissions.can_view_loan(make_user(User.Role.OPERATOR), loan)
    owner.is_active = False
    assert not permissions.can_view_loan(owner, loan)


def test_require_raises_permission_denied_with_the_reason() -> None:
    permissions.require(True, "unused")
    with pytest.raises(PermissionDenied, match="only operators"):
        permissions.require(False, "only operators")
