"""WeiField keeps every digit on both databases and never lets a float in."""

import sqlite3
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper

from loans.fields import MAX_WEI, WeiField

AMOUNTS = [0, 1, 5 * 10**15, 2**63 - 1, 2**63, 10**20 + 1, 12345678901234567890123456789, MAX_WEI]


@pytest.fixture
def sqlite_connection():
    wrapper = SQLiteWrapper({"NAME": ":memory:", "TIME_ZONE": None, "OPTIONS": {}})
    return wrapper


def test_sqlite_keeps_every_digit_and_orders_numerically(sqlite_connection):
    field = WeiField()
    assert field.db_type(sqlite_connection) == "varchar(78)"
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE amounts (wei varchar(78) NOT NULL)")
    shuffled = AMOUNTS[::-1][1:] + AMOUNTS[-1:]
    db.executemany(
        "INSERT INTO amounts VALUES (?)", [(field.get_db_prep_value(a, sqlite_connection),) for a in shuffled]
    )
    rows = [
        field.from_db_value(v, None, sqlite_connection) for (v,) in db.execute("SELECT wei FROM amounts ORDER BY wei")
    ]
    assert rows == sorted(AMOUNTS)
    above = field.get_db_prep_value(2**63, sqlite_connection)
    (count,) = db.execute("SELECT count(*) FROM amounts WHERE wei > ?", (above,)).fetchone()
    assert count == sum(1 for a in AMOUNTS if a > 2**63)


def test_sqlite_refuses_what_it_cannot_order(sqlite_connection):
    with pytest.raises(ValueError, match="outside"):
        WeiField().get_db_prep_value(-1, sqlite_connection)


@pytest.mark.django_db
def test_postgresql_column_is_numeric_78():
    assert WeiField().db_type(connection) == "numeric(78, 0)"


@pytest.mark.parametrize("value", [1.0, 1e18, True])
def test_floats_and_bools_are_refused(value):
    with pytest.raises(TypeError):
        WeiField().get_prep_value(value)


@pytest.mark.parametrize(
    "value, expected", [("42", 42), (Decimal("1000000000000000000000"), 10**21), (7, 7), (None, None)]
)
def test_to_python_accepts_whole_numbers(value, expected):
    assert WeiField().to_python(value) == expected


@pytest.mark.parametrize("value", [Decimal("1.5"), "1e18", "-3", "0x10"])
def test_to_python_refuses_anything_else(value):
    with pytest.raises(ValidationError):
        WeiField().to_python(value)


def test_validators_bound_the_range():
    field = WeiField()
    field.run_validators(MAX_WEI)
    with pytest.raises(ValidationError):
        field.run_validators(MAX_WEI + 1)
    with pytest.raises(ValidationError):
        field.run_validators(-1)
