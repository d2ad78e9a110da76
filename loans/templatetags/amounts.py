"""Amounts for people beside the integers the pages show: ``{{ n }} wei ({{ n|rbtc }})``, ``{{ n }} sat ({{ n|btc }})``.

Exact decimals from the integers (1 rBTC = 10^18 wei, 1 BTC = 10^8 sat; Rootstock's rBTC is pegged 1:1), never a
float: the integer is split with ``divmod`` and the fraction's trailing zeros are stripped ("0.01 rBTC",
"0.012 BTC", "0 BTC"). Anything that is not an integer amount (None, text, a bool) renders as nothing.
"""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()

WEI_PER_RBTC_DIGITS = 18
SATS_PER_BTC_DIGITS = 8


def exact_decimal(amount: int, digits: int) -> str:
    """``amount`` / 10**``digits`` as an exact decimal string, trailing zeros (and a bare point) stripped."""
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**digits)
    fraction_text = str(fraction).rjust(digits, "0").rstrip("0")
    return f"{sign}{whole}.{fraction_text}" if fraction_text else f"{sign}{whole}"


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


@register.filter
def rbtc(wei: object) -> str:
    """An amount of wei as rBTC: ``10000000000000000`` -> ``"0.01 rBTC"``."""
    amount = _integer(wei)
    return "" if amount is None else f"{exact_decimal(amount, WEI_PER_RBTC_DIGITS)} rBTC"


@register.filter
def btc(sats: object) -> str:
    """An amount of satoshis as BTC: ``1200000`` -> ``"0.012 BTC"``."""
    amount = _integer(sats)
    return "" if amount is None else f"{exact_decimal(amount, SATS_PER_BTC_DIGITS)} BTC"
