"""Money in JSON: a decimal string of an integer (``"1500000"`` sats, ``"10000000000000000"`` wei).

Never a JSON number: a float cannot hold every wei amount, and a JavaScript client would round it silently. On
input only such a string is accepted; a number (float or integer) is refused, so no rounded value gets in.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..fields import MAX_WEI


@extend_schema_field({"type": "string", "pattern": "^[0-9]+$", "example": "1500000"})
class AmountField(serializers.Field):
    """A non-negative integer amount (``unit``: "sats" or "wei") as a decimal string."""

    default_error_messages = {
        "not_a_string": "Send amounts as a decimal string of an integer ({unit}), never a JSON number.",
        "invalid": "Enter a whole number of {unit} as decimal digits.",
        "too_large": "The amount exceeds the largest {unit} amount.",
    }

    def __init__(self, *, unit: str, max_value: int = MAX_WEI, **kwargs):
        self.unit = unit
        self.max_value = max_value
        super().__init__(**kwargs)

    def to_representation(self, value: int) -> str:
        if isinstance(value, (float, bool)) or not isinstance(value, int):
            raise TypeError(f"amounts are integers, got {type(value).__name__}")
        return str(value)

    def to_internal_value(self, data: object) -> int:
        if not isinstance(data, str):
            self.fail("not_a_string", unit=self.unit)
        if not data.isascii() or not data.isdigit() or (len(data) > 1 and data.startswith("0")):
            self.fail("invalid", unit=self.unit)
        value = int(data)
        if value > self.max_value:
            self.fail("too_large", unit=self.unit)
        return value


def SatsField(**kwargs) -> AmountField:
    return AmountField(unit="sats", max_value=21_000_000 * 10**8, **kwargs)


def WeiField(**kwargs) -> AmountField:
    return AmountField(unit="wei", **kwargs)


__all__ = ["AmountField", "SatsField", "WeiField"]
