"""Fee-rate, virtual-size and dust arithmetic (BIP-141 weight, Bitcoin Core's dust policy).

* Weight = 3 x non-witness size + total size; vsize = ceil(weight / 4) (BIP-141).
* Fee rates are exact rationals in sat/vB: integers, ``Decimal`` or decimal strings (``"1.5"``); floats are
  refused so no binary rounding reaches money. A fee is ``ceil(rate x vsize)`` satoshis.
* Dust follows Bitcoin Core's ``GetDustThreshold`` with the default ``-dustrelayfee`` of 3000 sat/kvB: the
  output's serialized size plus the size of the input that would spend it (148 bytes for legacy outputs, 67
  for witness programs), priced at the dust relay fee. This gives 546 (P2PKH), 540 (P2SH), 294 (P2WPKH) and
  330 (P2WSH, P2TR) satoshis. An output is dust if its value is *below* the threshold.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from fractions import Fraction

from bitcoin.encoding import compact_size
from bitcoin.errors import DustError, FeeError

#: Bitcoin Core's DUST_RELAY_TX_FEE in sat/kvB.
DEFAULT_DUST_RELAY_FEE_SAT_PER_KVB = 3000
#: Witness scale factor of BIP-141.
WITNESS_SCALE_FACTOR = 4
#: Absolute sanity cap on a fee rate (sat/vB); anything above is almost certainly a unit mistake.
MAX_SANE_FEE_RATE_SAT_VB = 10_000


def vsize_from_weight(weight: int) -> int:
    """Virtual size in vbytes: ceil(weight / 4)."""
    return -(-weight // WITNESS_SCALE_FACTOR)


def parse_fee_rate(rate: int | Decimal | str | Fraction) -> Fraction:
    """Validate a fee rate in sat/vB (0 < rate <= 10000) and return it as an exact ``Fraction``."""
    if isinstance(rate, bool | float):
        raise FeeError("fee rate must be an int, Decimal or decimal string in sat/vB, never a float")
    try:
        if isinstance(rate, str):
            value = Fraction(Decimal(rate.strip()))
        elif isinstance(rate, int | Fraction | Decimal):
            value = Fraction(rate)
        else:
            raise FeeError(f"fee rate must be a number in sat/vB, got {type(rate).__name__}")
    except (InvalidOperation, ValueError, OverflowError):
        raise FeeError(f"invalid fee rate {rate!r}") from None
    if value <= 0:
        raise FeeError(f"fee rate must be positive, got {rate} sat/vB")
    if value > MAX_SANE_FEE_RATE_SAT_VB:
        raise FeeError(f"fee rate {rate} sat/vB is above the sanity cap of {MAX_SANE_FEE_RATE_SAT_VB} sat/vB")
    return value


def fee_for_vsize(vsize: int, rate: int | Decimal | str | Fraction) -> int:
    """Smallest whole-satoshi fee that pays at least ``rate`` sat/vB for ``vsize`` vbytes."""
    if vsize <= 0:
        raise FeeError("vsize must be positive")
    exact = parse_fee_rate(rate) * vsize
    return -(-exact.numerator // exact.denominator)


def fee_rate_of(fee_sats: int, vsize: int) -> Fraction:
    """The exact fee rate (sat/vB) a fee pays for a transaction of ``vsize`` vbytes."""
    if vsize <= 0:
        raise FeeError("vsize must be positive")
    return Fraction(fee_sats, vsize)


def _is_witness_program(script_pubkey: bytes) -> bool:
    """Core's CScript::IsWitnessProgram: OP_0/OP_1..OP_16 then one direct push of 2..40 bytes."""
    size = len(script_pubkey)
    if size < 4 or size > 42:
        return False
    version_opcode = script_pubkey[0]
    if version_opcode != 0x00 and not 0x51 <= version_opcode <= 0x60:
        return False
    return script_pubkey[1] + 2 == size


def dust_threshold(script_pubkey: bytes, dust_relay_fee_sat_per_kvb: int = DEFAULT_DUST_RELAY_FEE_SAT_PER_KVB) -> int:
    """Smallest non-dust value (sat) of an output paying ``script_pubkey`` (Core's GetDustThreshold)."""
    if script_pubkey[:1] == b"\x6a":  # OP_RETURN outputs are unspendable and never dust
        return 0
    output_size = 8 + len(compact_size(len(script_pubkey))) + len(script_pubkey)
    if _is_witness_program(script_pubkey):
        spend_size = 32 + 4 + 1 + (107 // WITNESS_SCALE_FACTOR) + 4
    else:
        spend_size = 32 + 4 + 1 + 107 + 4
    return dust_relay_fee_sat_per_kvb * (output_size + spend_size) // 1000


def check_not_dust(value_sats: int, script_pubkey: bytes, what: str = "output") -> None:
    """Raise ``DustError`` if ``value_sats`` is below the dust threshold of ``script_pubkey``."""
    threshold = dust_threshold(script_pubkey)
    if value_sats < threshold:
        raise DustError(f"{what} of {value_sats} sat is below the dust threshold of {threshold} sat")
