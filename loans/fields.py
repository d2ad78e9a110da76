"""Model fields for money and chain data.

Wei amounts need up to 78 decimal digits (2**256 - 1), more than any integer column holds; `WeiField` stores them
exactly and reads them back as Python `int`: code never sees a `Decimal` or a float for money.
"""

from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

HEX32_PATTERN = r"^[0-9a-f]{64}$"
validate_hex32 = RegexValidator(HEX32_PATTERN, "Enter 32 bytes as 64 lowercase hex characters (no 0x).")
EVM_ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
validate_evm_address = RegexValidator(EVM_ADDRESS_PATTERN, "Enter a 0x-prefixed 20-byte EVM address.")

WEI_DIGITS = 78
MAX_WEI = 10**WEI_DIGITS - 1


class WeiField(models.Field):
    """A non-negative amount in wei, an `int` in Python.

    PostgreSQL stores it as `NUMERIC(78, 0)`. SQLite (the newcomer's database) would turn integers above 2**63
    into floating point, so there it is stored as zero-padded text of 78 digits: every digit is kept, and text
    order is numeric order, so comparisons, constraints and ORDER BY stay right. Do not do arithmetic on wei in
    SQL (SUM and friends): load the integers.
    """

    description = "Amount in wei (non-negative integer, up to 78 digits)"
    empty_strings_allowed = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.validators.extend([MinValueValidator(0), MaxValueValidator(MAX_WEI)])

    def db_type(self, connection):
        if connection.vendor == "sqlite":
            return f"varchar({WEI_DIGITS})"
        return f"numeric({WEI_DIGITS}, 0)"

    def from_db_value(self, value, expression, connection):
        return None if value is None else int(value)

    def to_python(self, value):
        if value is None:
            return None
        if isinstance(value, (bool, float)):
            raise ValidationError("Wei amounts must be integers, never floats.", code="float")
        if isinstance(value, int):
            return value
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise ValidationError("Wei amounts must be whole numbers.", code="fractional")
            return int(value)
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        raise ValidationError(f"{value!r} is not a whole number of wei.", code="invalid")

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if isinstance(value, float):
            raise TypeError("Wei amounts must be integers, never floats.")
        if value is None or hasattr(value, "as_sql"):
            return value
        try:
            return self.to_python(value)
        except ValidationError as exc:
            raise TypeError(exc.messages[0]) from None

    def get_db_prep_value(self, value, connection, prepared=False):
        if not prepared:
            value = self.get_prep_value(value)
        if value is None or hasattr(value, "as_sql") or connection.vendor != "sqlite":
            return value
        if not 0 <= value <= MAX_WEI:
            raise ValueError(f"{value} wei is outside 0..10**{WEI_DIGITS}-1")
        return f"{value:0{WEI_DIGITS}d}"

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": forms.IntegerField, "min_value": 0, **kwargs})


class Hex32Field(models.CharField):
    """32 bytes as 64 lowercase hex characters: keys (x-only), hashes, preimages, txids."""

    def __init__(self, *args, **kwargs):
        kwargs["max_length"] = 64
        kwargs.setdefault("validators", [validate_hex32])
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("max_length", None)
        kwargs.pop("validators", None)
        return name, path, args, kwargs
