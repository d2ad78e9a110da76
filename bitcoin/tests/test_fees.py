"""Fee-rate, vsize and dust arithmetic."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitcoin.errors import DustError, FeeError
from bitcoin.fees import check_not_dust, dust_threshold, fee_for_vsize, fee_rate_of, parse_fee_rate, vsize_from_weight


@pytest.mark.parametrize(
    ("spk_hex", "threshold"),
    [
        ("76a914" + "00" * 20 + "88ac", 546),  # P2PKH
        ("a914" + "00" * 20 + "87", 540),  # P2SH
        ("0014" + "00" * 20, 294),  # P2WPKH
        ("0020" + "00" * 32, 330),  # P2WSH
        ("5120" + "00" * 32, 330),  # P2TR
    ],
)
def test_dust_thresholds_match_bitcoin_core(spk_hex: str, threshold: int) -> None:
    spk = bytes.fromhex(spk_hex)
    assert dust_threshold(spk) == threshold
    check_not_dust(threshold, spk)
    with pytest.raises(DustError, match=f"below the dust threshold of {threshold} sat"):
        check_not_dust(threshold - 1, spk)


def test_vsize_rounds_weight_up() -> None:
    assert vsize_from_weight(400) == 100
    assert vsize_from_weight(401) == 101
    assert vsize_from_weight(403) == 101


@pytest.mark.parametrize("rate", [1.5, 0, -1, "0", "abc", Decimal("-0.1"), 10_001, True, None, "nan"])
def test_invalid_fee_rates_are_refused(rate: object) -> None:
    with pytest.raises(FeeError):
        parse_fee_rate(rate)  # type: ignore[arg-type]


def test_fee_rates_are_exact() -> None:
    assert parse_fee_rate("1.1") == Fraction(11, 10)
    assert parse_fee_rate(Decimal("0.25")) == Fraction(1, 4)
    assert fee_for_vsize(141, "1.1") == 156  # 155.1 rounds up
    assert fee_for_vsize(200, 2) == 400
    assert fee_rate_of(156, 141) == Fraction(156, 141)


@given(
    vsize=st.integers(min_value=1, max_value=400_000),
    rate_millisat=st.integers(min_value=1, max_value=10_000_000),
)
def test_fee_is_the_smallest_whole_fee_meeting_the_rate(vsize: int, rate_millisat: int) -> None:
    rate = Decimal(rate_millisat) / 1000
    fee = fee_for_vsize(vsize, rate)
    assert isinstance(fee, int)
    assert Fraction(fee, vsize) >= Fraction(rate)
    assert Fraction(fee - 1, vsize) < Fraction(rate)
