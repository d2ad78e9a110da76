"""Model fields for money and chain data.

Wei amounts need up to 78 decimal digits (2**256 - 1), more than any integer column holds, so they are stored as
`NUMERIC(78, 0)` and read back as Python `int`: code never sees a `Decimal` or a float for money.
"""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.utils.functional import cached_property

HEX32_PATTERN = r"^[0-9a-f]{64}$"
validate_hex32 = RegexValidator(HEX32_PATTERN, "Enter 32 bytes as 64 lowercase hex characters (no 0x).")
EVM_ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
validate_evm_address = RegexValidator(EVM_ADDRESS_PATTERN, "Enter a 0x-prefixed 20-byte EVM address.")

WEI_DIGITS = 78


class WeiField(models.DecimalField):
    """An amount in wei: `NUMERIC(78, 0)` in the database, `int` in Python."""

    description = "Amount in wei (integer, up to 78 digits)"

    def __init__(self, *args, **kwargs):
        kwargs["max_digits"] = WEI_DIGITS
        kwargs["decimal_places"] = 0
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("max_digits", None)
        kwargs.pop("decimal_places", None)
        return name, path, args, kwargs

    @cached_property
    def validators(self):
        # DecimalField's DecimalValidator expects Decimal; our values are ints bounded by the column's digits.
        return [*self.default_validators, *self._validators, MaxValueValidator(10**WEI_DIGITS - 1)]

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return int(value)

    def to_python(self, value):
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, float):
            raise ValidationError("Wei amounts must be integers, never floats.", code="float")
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        decimal = super().to_python(value)
        if decimal is None:
            return None
        if decimal != decimal.to_integral_value():
            raise ValidationError("Wei amounts must be whole numbers.", code="fractional")
        return int(decimal)

    def get_db_prep_save(self, value, connection):
        if isinstance(value, float):
            raise TypeError("Wei amounts must be integers, never floats.")
        if isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
        return super().get_db_prep_save(value, connection)


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
