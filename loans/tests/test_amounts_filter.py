"""The pages' amounts for people (loans/templatetags/amounts.py): exact decimals from the integers, never floats."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from django.template import Context, Template
from hypothesis import given
from hypothesis import strategies as st

from loans.templatetags.amounts import btc, exact_decimal, rbtc


@pytest.mark.parametrize(
    ("wei", "text"),
    [
        (10**16, "0.01 rBTC"),
        (0, "0 rBTC"),
        (1, "0.000000000000000001 rBTC"),
        (10**18, "1 rBTC"),
        (100 * 10**18, "100 rBTC"),
        (1_000_475_646_879_756_468, "1.000475646879756468 rBTC"),
        (10**17 + 5 * 10**15, "0.105 rBTC"),
        # beyond a float's 53 bits: every digit kept
        (123456789012345678901234567890, "123456789012.34567890123456789 rBTC"),
        ("10000000000000000", "0.01 rBTC"),
        (Decimal("2500000000000000000"), "2.5 rBTC"),
        (-(10**16), "-0.01 rBTC"),
    ],
)
def test_wei_as_rbtc(wei, text):
    assert rbtc(wei) == text


@pytest.mark.parametrize(
    ("sats", "text"),
    [
        (1_200_000, "0.012 BTC"),
        (0, "0 BTC"),
        (1, "0.00000001 BTC"),
        (10**8, "1 BTC"),
        (2_100_000_000_000_000, "21000000 BTC"),
    ],
)
def test_sats_as_btc(sats, text):
    assert btc(sats) == text


@pytest.mark.parametrize("value", [None, "", "lots", "1.5", True, 1.5, Decimal("1.5")])
def test_anything_but_an_integer_amount_renders_as_nothing(value):
    assert rbtc(value) == "" and btc(value) == ""


@given(st.integers(min_value=0, max_value=10**40), st.sampled_from([8, 18]))
def test_the_decimal_is_the_integer_exactly(amount, digits):
    text = exact_decimal(amount, digits)
    with localcontext(prec=100):
        assert Decimal(text) * 10**digits == amount  # exact: nothing rounded
    assert not text.endswith("0") or "." not in text  # trailing zeros stripped from the fraction
    assert not text.endswith(".")


def test_the_filters_in_a_template():
    rendered = Template("{% load amounts %}{{ w }} wei ({{ w|rbtc }}); {{ s }} sat ({{ s|btc }})").render(
        Context({"w": 10**16, "s": 1_200_000})
    )
    assert rendered == "10000000000000000 wei (0.01 rBTC); 1200000 sat (0.012 BTC)"
