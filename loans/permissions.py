"""Who may do what: the one module that decides. Services call these; views, the API and the admin ask them too.

Roles are on the user (`User.Role`): a borrower borrows, the lender (the contract's owner, one per deployment)
lends, an operator runs the desk. A superuser counts as an operator. An inactive account may do nothing.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from .models import Loan, User


def is_operator(user: object) -> bool:
    """An active operator or superuser (anonymous users and other roles are not)."""
    return bool(
        getattr(user, "is_active", False)
        and (getattr(user, "is_superuser", False) or getattr(user, "role", None) == User.Role.OPERATOR)
    )


def is_lender(user: object) -> bool:
    """An active user with the lender role."""
    return bool(getattr(user, "is_active", False) and getattr(user, "role", None) == User.Role.LENDER)


def is_loan_borrower(user: object, loan: Loan) -> bool:
    """The active borrower who owns ``loan``."""
    return bool(getattr(user, "is_active", False) and getattr(user, "pk", None) == loan.borrower_id)


def can_borrow(user: object) -> bool:
    """An active user with the borrower role may create loans."""
    return bool(getattr(user, "is_active", False) and getattr(user, "role", None) == User.Role.BORROWER)


def can_view_loan(user: object, loan: Loan) -> bool:
    """The loan's borrower, the lender and operators see a loan; nobody else does."""
    return is_loan_borrower(user, loan) or is_lender(user) or is_operator(user)


def can_set_parameters(user: object) -> bool:
    """A new version of the protocol parameters: an operator or the lender."""
    return is_operator(user) or is_lender(user)


def can_prepare_lender_hash(user: object, loan: Loan) -> bool:
    """pL is made for a loan by the lender (the loan's own, once it names one) or an operator; nobody else."""
    if is_operator(user):
        return True
    return is_lender(user) and (loan.lender_id is None or getattr(user, "pk", None) == loan.lender_id)


def can_manage_lender_keys(user: object, lender: User) -> bool:
    """The lender's keys are stored by that lender or an operator."""
    return is_operator(user) or (is_lender(user) and getattr(user, "pk", None) == lender.pk)


def require(allowed: bool, message: str) -> None:
    """Raise ``PermissionDenied(message)`` unless ``allowed``."""
    if not allowed:
        raise PermissionDenied(message)
