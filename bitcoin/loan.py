"""``LoanFacts``: everything one loan's Bitcoin transactions depend on, in one frozen value, and its loan file.

The builders (``bitcoin.transactions``), the lender's verification and the borrower's checks
(``bitcoin.presignature``) and the offline tool (``python -m bitcoin``) all take this one object, so a fact has
one name and one unit wherever it is used. The server makes it from a ``Loan`` (``loans.loan_facts``), converting
units exactly once; the borrower keeps it as the JSON *loan file* of their recovery kit.

Units: satoshis (``*_sats``), basis points (``*_bps``), BTC blocks (``*_btc_blocks``), fee rates in sat/vB as exact
fractions. Facts that do not exist yet when the loan file is first written (hL before the lender commits it, the
escrow outpoint before B funds it) are ``None``; a builder that needs one says so (``require``).

The loan file is JSON with every fact (integers as JSON integers, fee rates as decimal strings, or ``n/d`` where
no finite decimal is exact) plus the derived addresses and descriptors, which ``from_json`` re-derives and compares,
so a file whose facts and addresses disagree is refused rather than believed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from fractions import Fraction
from functools import cached_property
from typing import Any

from bitcoin.addresses import address_to_script_pubkey
from bitcoin.descriptors import loan_output_descriptors
from bitcoin.errors import FeeError, InvalidParameterError
from bitcoin.fees import parse_fee_rate
from bitcoin.keys import parse_xonly_pubkey
from bitcoin.networks import get_network
from bitcoin.scripts import TwoLeafTaprootOutput, collateral_output, escrow_output, parse_hash32, validate_timelock
from bitcoin.transactions import BPS, MAX_MONEY_SATS, OutPoint

#: The loan file's format marker; a file with another one is refused.
LOAN_FILE_FORMAT = "btc-collateral-loan/1"
#: The collateral ratio may not exceed 100 %·(1 + 100 %): PROTOCOL.md caps it at repayment + bond.
MAX_COLLATERAL_RATIO_BPS = 2 * BPS


def required_collateral_sats(loan_amount_sats: int, min_collateral_ratio_bps: int) -> int:
    """TX_1's collateral: ceil(amount in sats · ratio / 10000) (PROTOCOL.md, TX_1 amounts)."""
    return -(-loan_amount_sats * min_collateral_ratio_bps // BPS)


def origination_fee_sats(loan_amount_sats: int, origination_fee_bps: int) -> int:
    """L's origination fee, TX_1 output 0: amount in sats · bps // 10000 (rounded down)."""
    return loan_amount_sats * origination_fee_bps // BPS


def _sats(value: object, name: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(f"{name} must be an integer number of satoshis")
    if not 0 < value <= MAX_MONEY_SATS:
        raise InvalidParameterError(f"{name} must be between 1 and {MAX_MONEY_SATS} sat, got {value}")
    return value


def _bps(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterError(f"{name} must be an integer between {low} and {high} basis points")
    return value


def fee_rate_text(rate: Fraction) -> str:
    """A fee rate as exact text: a decimal string when one is exact, else ``numerator/denominator``."""
    denominator = rate.denominator
    for factor in (2, 5):
        while denominator % factor == 0:
            denominator //= factor
    if denominator != 1:
        return f"{rate.numerator}/{rate.denominator}"
    decimal = Decimal(rate.numerator) / Decimal(rate.denominator)
    return format(decimal.normalize(), "f")


def parse_fee_rate_text(text: object, name: str) -> Fraction:
    """The inverse of ``fee_rate_text`` (also accepts ints and Fractions), validated by ``parse_fee_rate``."""
    if isinstance(text, str) and "/" in text:
        numerator, _, denominator = text.partition("/")
        if not (numerator.isdigit() and denominator.isdigit()) or int(denominator) == 0:
            raise FeeError(f"{name}: invalid fee rate {text!r}")
        return parse_fee_rate(Fraction(int(numerator), int(denominator)))
    try:
        return parse_fee_rate(text)  # type: ignore[arg-type]
    except FeeError as error:
        raise FeeError(f"{name}: {error}") from None


@dataclass(frozen=True, kw_only=True)
class LoanFacts:
    """One loan's Bitcoin facts (see the module docstring for units and the loan file)."""

    network: str
    borrower_btc_pubkey: bytes  # xB, x-only
    lender_btc_pubkey: bytes  # xL, x-only
    borrower_hash: bytes  # hB = SHA256(pB)
    lender_hash: bytes | None  # hL = SHA256(pL), once the lender committed it
    escrow_timelock_btc_blocks: int  # t_0
    collateral_timelock_btc_blocks: int  # t_1
    escrow_outpoint: OutPoint | None  # the escrow UTXO, once funded
    escrow_sats: int | None  # its value as seen on chain
    loan_amount_sats: int  # the loan amount in sats (wei rounded up: the collateral covers at least the loan)
    min_collateral_ratio_bps: int  # collateral / amount
    collateral_cap_sats: int  # repayment + bond in sats (rounded down): the collateral never exceeds it
    origination_fee_bps: int
    lender_payout_address: str  # TX_1 output 0 (origination fee), TX_capture
    borrower_payout_address: str  # TX_1 change, TX_exit, TX_release
    min_fee_rate_sat_vb: Fraction  # bounds on every loan transaction's fee rate
    max_fee_rate_sat_vb: Fraction

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "network", get_network(self.network).name)
        set_(self, "borrower_btc_pubkey", parse_xonly_pubkey(self.borrower_btc_pubkey))
        set_(self, "lender_btc_pubkey", parse_xonly_pubkey(self.lender_btc_pubkey))
        if self.borrower_btc_pubkey == self.lender_btc_pubkey:
            raise InvalidParameterError("the borrower's and the lender's Bitcoin keys must differ")
        set_(self, "borrower_hash", parse_hash32(self.borrower_hash, "borrower hash hB"))
        if self.lender_hash is not None:
            set_(self, "lender_hash", parse_hash32(self.lender_hash, "lender hash hL"))
        validate_timelock(self.escrow_timelock_btc_blocks, "escrow timelock t_0")
        validate_timelock(self.collateral_timelock_btc_blocks, "collateral timelock t_1")
        if self.escrow_outpoint is not None and not isinstance(self.escrow_outpoint, OutPoint):
            raise InvalidParameterError("escrow outpoint must be an OutPoint")
        if (self.escrow_outpoint is None) != (self.escrow_sats is None):
            raise InvalidParameterError("the escrow outpoint and its value come together")
        _sats(self.escrow_sats, "escrow value", optional=True)
        _sats(self.loan_amount_sats, "loan amount")
        _sats(self.collateral_cap_sats, "collateral cap")
        _bps(self.min_collateral_ratio_bps, "minimum collateral ratio", BPS, MAX_COLLATERAL_RATIO_BPS)
        _bps(self.origination_fee_bps, "origination fee", 0, BPS)
        for name in ("lender_payout_address", "borrower_payout_address"):
            if not isinstance(getattr(self, name), str):
                raise InvalidParameterError(f"{name} must be an address string")
            address_to_script_pubkey(getattr(self, name), self.network)
        set_(self, "min_fee_rate_sat_vb", parse_fee_rate_text(self.min_fee_rate_sat_vb, "minimum fee rate"))
        set_(self, "max_fee_rate_sat_vb", parse_fee_rate_text(self.max_fee_rate_sat_vb, "maximum fee rate"))
        if self.min_fee_rate_sat_vb > self.max_fee_rate_sat_vb:
            raise FeeError("the minimum fee rate is above the maximum")
        if self.collateral_sats > self.collateral_cap_sats:
            raise InvalidParameterError(
                f"the required collateral of {self.collateral_sats} sat is above repayment + bond "
                f"({self.collateral_cap_sats} sat): the lender would gain by refusing the repayment"
            )

    # -- what a step needs ---------------------------------------------------------------------------------

    def require(self, *names: str) -> None:
        """Raise ``InvalidParameterError`` naming every fact in ``names`` that is not known yet."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise InvalidParameterError(f"the loan's facts lack {', '.join(missing)} for this step")

    def with_escrow(self, outpoint: OutPoint, value_sats: int) -> LoanFacts:
        """The same facts with the escrow UTXO (outpoint and on-chain value) filled in."""
        return replace(self, escrow_outpoint=outpoint, escrow_sats=value_sats)

    # -- derived amounts and outputs -------------------------------------------------------------------------

    @property
    def collateral_sats(self) -> int:
        """TX_1 output 1: exactly the required collateral."""
        return required_collateral_sats(self.loan_amount_sats, self.min_collateral_ratio_bps)

    @property
    def origination_fee_sats(self) -> int:
        """TX_1 output 0."""
        return origination_fee_sats(self.loan_amount_sats, self.origination_fee_bps)

    @cached_property
    def escrow(self) -> TwoLeafTaprootOutput:
        """The escrow output (B's TX_0 pays it)."""
        return escrow_output(
            borrower_pubkey=self.borrower_btc_pubkey,
            lender_pubkey=self.lender_btc_pubkey,
            borrower_hash=self.borrower_hash,
            escrow_timelock=self.escrow_timelock_btc_blocks,
        )

    @cached_property
    def collateral(self) -> TwoLeafTaprootOutput:
        """The collateral output (TX_1 output 1); needs hL."""
        self.require("lender_hash")
        return collateral_output(
            borrower_pubkey=self.borrower_btc_pubkey,
            lender_pubkey=self.lender_btc_pubkey,
            lender_hash=self.lender_hash,  # type: ignore[arg-type]
            collateral_timelock=self.collateral_timelock_btc_blocks,
        )

    @property
    def lender_payout_script(self) -> bytes:
        return address_to_script_pubkey(self.lender_payout_address, self.network)

    @property
    def borrower_payout_script(self) -> bytes:
        return address_to_script_pubkey(self.borrower_payout_address, self.network)

    def _derived(self) -> dict[str, str]:
        derived = {
            "escrow_address": self.escrow.address(self.network),
            "escrow_descriptor": loan_output_descriptors(self.escrow).tree_descriptor,
        }
        if self.lender_hash is not None:
            derived["collateral_address"] = self.collateral.address(self.network)
            derived["collateral_descriptor"] = loan_output_descriptors(self.collateral).tree_descriptor
        return derived

    # -- the loan file ---------------------------------------------------------------------------------------

    def to_json_dict(self) -> dict[str, Any]:
        """The loan file's content: every fact plus the derived addresses and descriptors."""
        data: dict[str, Any] = {"format": LOAN_FILE_FORMAT}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bytes):
                value = value.hex()
            elif isinstance(value, OutPoint):
                value = str(value)
            elif isinstance(value, Fraction):
                value = fee_rate_text(value)
            data[item.name] = value
        data.update(self._derived())
        return data

    def to_json(self) -> str:
        """The loan file as text (sorted keys, so equal facts give equal files)."""
        return json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_dict(cls, data: object) -> LoanFacts:
        """Facts from a loan file's content; refuses unknown or missing keys and derived values that disagree."""
        if not isinstance(data, dict):
            raise InvalidParameterError("a loan file is a JSON object")
        if data.get("format") != LOAN_FILE_FORMAT:
            raise InvalidParameterError(f"not a loan file of format {LOAN_FILE_FORMAT!r}")
        names = {item.name for item in fields(cls)}
        derived_names = {"escrow_address", "escrow_descriptor", "collateral_address", "collateral_descriptor"}
        unknown = set(data) - names - derived_names - {"format"}
        if unknown:
            raise InvalidParameterError(f"unknown loan file entries: {', '.join(sorted(unknown))}")
        missing = names - set(data)
        if missing:
            raise InvalidParameterError(f"the loan file lacks {', '.join(sorted(missing))}")
        values = {name: data[name] for name in names}
        outpoint = values["escrow_outpoint"]
        if outpoint is not None:
            if not isinstance(outpoint, str):
                raise InvalidParameterError("escrow_outpoint must be TXID:VOUT")
            values["escrow_outpoint"] = OutPoint.parse(outpoint)
        for name in ("borrower_btc_pubkey", "lender_btc_pubkey", "borrower_hash", "lender_hash"):
            if values[name] is not None and not isinstance(values[name], str):
                raise InvalidParameterError(f"{name} must be hex")
        facts = cls(**values)
        claimed = {name: data[name] for name in derived_names if name in data}
        if claimed != facts._derived():
            raise InvalidParameterError("the loan file's addresses or descriptors do not match its facts")
        return facts

    @classmethod
    def from_json(cls, text: str | bytes) -> LoanFacts:
        """Facts from a loan file's text."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidParameterError(f"the loan file is not valid JSON: {error}") from None
        return cls.from_json_dict(data)
