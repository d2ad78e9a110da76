"""The loan contract's `Parameters` struct in Python: defaults, ordering rules, money and deadline maths.

Every formula here is the contract's formula in integer arithmetic (floor division where Solidity divides), so
the server can show a borrower exactly what the contract will charge before anything is sent. Parameters are
snapshotted per loan: use the `params` of a `Loan`, not the current parameters, for anything about a loan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument

WEI_PER_SAT = 10**10  # rBTC is pegged 1:1 to BTC: 1 sat = 10^10 wei
BIP68_MAX_BLOCKS = 0xFFFF  # a relative timelock in blocks fits 16 bits
MAX_AMOUNT_LIMIT = 2**128 - 1  # the contract's cap on maxAmountWei (keeps amount * rate * duration far from overflow)

UINT16 = 2**16 - 1
UINT32 = 2**32 - 1
UINT64 = 2**64 - 1
UINT256 = 2**256 - 1


class InvalidParameters(InvalidArgument):
    """The parameters break the protocol's rules; `reason` says which (the contract would revert too)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid protocol parameters: {reason}")


# (python field name, Solidity field name, Solidity type, upper bound)
FIELDS: tuple[tuple[str, str, str, int], ...] = (
    ("offer_window_blocks", "offerWindowBlocks", "uint64", UINT64),
    ("request_to_offer_allowance_blocks", "requestToOfferAllowanceBlocks", "uint64", UINT64),
    ("escrow_timelock_btc_blocks", "escrowTimelockBtcBlocks", "uint32", UINT32),
    ("loan_duration_blocks", "loanDurationBlocks", "uint64", UINT64),
    ("repayment_window_blocks", "repaymentWindowBlocks", "uint64", UINT64),
    ("collateral_timelock_btc_blocks", "collateralTimelockBtcBlocks", "uint32", UINT32),
    ("evm_blocks_per_btc_block", "evmBlocksPerBtcBlock", "uint32", UINT32),
    ("safety_btc_blocks", "safetyBtcBlocks", "uint32", UINT32),
    ("processing_fee_wei", "processingFeeWei", "uint256", UINT256),
    ("bond_percent", "bondPercent", "uint16", UINT16),
    ("origination_fee_bps", "originationFeeBps", "uint16", UINT16),
    ("interest_bps", "interestBps", "uint16", UINT16),
    ("blocks_per_year", "blocksPerYear", "uint64", UINT64),
    ("min_amount_wei", "minAmountWei", "uint256", UINT256),
    ("max_amount_wei", "maxAmountWei", "uint256", UINT256),
    ("min_collateral_ratio_percent", "minCollateralRatioPercent", "uint16", UINT16),
    ("lender_btc_pubkey", "lenderBtcPubkey", "bytes32", 0),
)
PARAMETERS_ABI_TYPE = "(" + ",".join(solidity_type for _, _, solidity_type, _ in FIELDS) + ")"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def as_bytes32(value: bytes | str, what: str) -> bytes:
    """32 bytes from bytes or hex (with or without 0x); anything else is a clear `InvalidArgument`."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    elif isinstance(value, str):
        text = value[2:] if value.startswith(("0x", "0X")) else value
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise InvalidArgument(f"{what} must be 32 bytes of hex, got {value!r}") from None
    else:
        raise InvalidArgument(f"{what} must be 32 bytes (bytes or hex string), got {type(value).__name__}")
    if len(raw) != 32:
        raise InvalidArgument(f"{what} must be exactly 32 bytes, got {len(raw)}")
    return raw


def as_uint(value: Any, what: str, upper: int = UINT256) -> int:
    """A non-negative integer up to `upper`; bools, floats and strings are refused (money is never a float)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    if value < 0 or value > upper:
        raise InvalidArgument(f"{what} must be between 0 and {upper}, got {value}")
    return value


@dataclass(frozen=True, kw_only=True)
class ProtocolParameters:
    """`BtcCollateralLoan.Parameters` with PROTOCOL.md's defaults; only the lender's x-only key has none."""

    lender_btc_pubkey: bytes
    offer_window_blocks: int = 1000  # t_B
    request_to_offer_allowance_blocks: int = 100
    escrow_timelock_btc_blocks: int = 100  # t_0
    loan_duration_blocks: int = 540_000  # t_D
    repayment_window_blocks: int = 1500  # t_L
    collateral_timelock_btc_blocks: int = 27_150  # t_1
    evm_blocks_per_btc_block: int = 20
    safety_btc_blocks: int = 6
    processing_fee_wei: int = 10**15  # 0.001 rBTC
    bond_percent: int = 10
    origination_fee_bps: int = 100
    interest_bps: int = 500  # per year
    blocks_per_year: int = 1_051_200
    min_amount_wei: int = 5 * 10**15  # 0.005 rBTC
    max_amount_wei: int = 100 * 10**18  # 100 rBTC
    min_collateral_ratio_percent: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "lender_btc_pubkey", as_bytes32(self.lender_btc_pubkey, "lender_btc_pubkey"))
        for name, _, _, upper in FIELDS:
            if name != "lender_btc_pubkey":
                as_uint(getattr(self, name), name, upper)

    # -- the ordering rules (checked by the contract in its constructor and updateParameters) ---------

    def problems(self) -> list[str]:
        """Every rule these parameters break, as sentences; empty when they are valid.

        The same rules, with the same bounds, as the contract's `_validate` (which reverts with the first
        one).
        """
        p = self
        found: list[str] = []
        for name in (
            "offer_window_blocks",
            "loan_duration_blocks",
            "repayment_window_blocks",
            "evm_blocks_per_btc_block",
        ):
            if getattr(p, name) == 0:
                found.append(f"{name} must be positive")
        for name in ("escrow_timelock_btc_blocks", "collateral_timelock_btc_blocks"):
            value = getattr(p, name)
            if not 1 <= value <= BIP68_MAX_BLOCKS:
                found.append(f"{name} must be a BIP-68 block timelock in [1, {BIP68_MAX_BLOCKS}], got {value}")
        escrow_evm = p.escrow_timelock_btc_blocks * p.evm_blocks_per_btc_block
        offer_span = p.offer_window_blocks + p.request_to_offer_allowance_blocks
        if escrow_evm <= offer_span:
            found.append(
                f"t_0 * ratio ({escrow_evm}) must exceed t_B + request-to-offer allowance ({offer_span}): "
                "otherwise the borrower could take the loan and reclaim the escrow"
            )
        collateral_evm = p.collateral_timelock_btc_blocks * p.evm_blocks_per_btc_block
        loan_span = (
            p.loan_duration_blocks + p.repayment_window_blocks + p.safety_btc_blocks * p.evm_blocks_per_btc_block
        )
        if collateral_evm <= loan_span:
            found.append(
                f"t_1 * ratio ({collateral_evm}) must exceed t_D + t_L + safety * ratio ({loan_span}): "
                "otherwise the lender could take the collateral before the borrower can use the lender's "
                "preimage"
            )
        if p.min_amount_wei == 0:
            found.append("min_amount_wei must be positive")
        if p.min_amount_wei > p.max_amount_wei:
            found.append(f"min_amount_wei ({p.min_amount_wei}) must not exceed max_amount_wei ({p.max_amount_wei})")
        if p.max_amount_wei > MAX_AMOUNT_LIMIT:
            found.append(f"max_amount_wei must not exceed 2**128 - 1, got {p.max_amount_wei}")
        if p.bond_percent > 100:
            found.append(f"bond_percent must not exceed 100, got {p.bond_percent}")
        if p.origination_fee_bps > 10_000:
            found.append(f"origination_fee_bps must not exceed 10000, got {p.origination_fee_bps}")
        if p.interest_bps > 10_000:
            found.append(f"interest_bps must not exceed 10000, got {p.interest_bps}")
        if p.blocks_per_year == 0:
            found.append("blocks_per_year must be positive")
        if p.lender_btc_pubkey == bytes(32):
            found.append("the lender's Bitcoin key (lender_btc_pubkey) must be set (non-zero)")
        return found

    def validate(self) -> ProtocolParameters:
        """Raise `InvalidParameters` naming every broken rule; return self when valid (for chaining)."""
        found = self.problems()
        if found:
            raise InvalidParameters("; ".join(found))
        return self

    def replace(self, **changes: Any) -> ProtocolParameters:
        return dataclasses.replace(self, **changes)

    # -- ABI conversion --------------------------------------------------------------------------------------

    def to_abi(self) -> tuple:
        """The tuple web3 encodes for a `Parameters` argument (field order of the Solidity struct)."""
        return tuple(getattr(self, name) for name, _, _, _ in FIELDS)

    @classmethod
    def from_abi(cls, value: Sequence[Any] | Mapping[str, Any]) -> ProtocolParameters:
        """From a decoded `Parameters` (a tuple in struct order, or a mapping by Solidity field name)."""
        if isinstance(value, Mapping):
            try:
                items = [value[solidity] for _, solidity, _, _ in FIELDS]
            except KeyError as exc:
                raise InvalidArgument(f"Parameters is missing field {exc.args[0]}") from None
        else:
            items = list(value)
            if len(items) != len(FIELDS):
                raise InvalidArgument(f"Parameters has {len(FIELDS)} fields, got {len(items)}")
        return cls(**{name: item for (name, _, _, _), item in zip(FIELDS, items, strict=True)})

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-safe: integers as they are (Python's json keeps big integers exact), the key as hex."""
        data: dict[str, Any] = {name: getattr(self, name) for name, _, _, _ in FIELDS}
        data["lender_btc_pubkey"] = self.lender_btc_pubkey.hex()
        return data

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> ProtocolParameters:
        return cls(**{name: data[name] for name, _, _, _ in FIELDS if name in data})

    # -- money -----------------------------------------------------------------------------------------------

    def check_amount(self, amount_wei: int) -> int:
        as_uint(amount_wei, "amount")
        if not self.min_amount_wei <= amount_wei <= self.max_amount_wei:
            raise InvalidArgument(
                f"amount {amount_wei} wei is outside [{self.min_amount_wei}, {self.max_amount_wei}] wei"
            )
        return amount_wei

    def interest(self, amount_wei: int) -> int:
        """amount · interestBps · t_D / (10000 · blocksPerYear), floored (the contract's integer division)."""
        as_uint(amount_wei, "amount")
        return amount_wei * self.interest_bps * self.loan_duration_blocks // (10_000 * self.blocks_per_year)

    def repayment_amount(self, amount_wei: int) -> int:
        """What the borrower sends to `attemptRepayment`: amount + interest (fixed when requested)."""
        return amount_wei + self.interest(amount_wei)

    def bond(self, amount_wei: int) -> int:
        """The lender's bond: amount · bondPercent / 100, floored."""
        as_uint(amount_wei, "amount")
        return amount_wei * self.bond_percent // 100

    def offer_value(self, amount_wei: int) -> int:
        """The value `extendLoanOffer` takes: amount + bond."""
        return amount_wei + self.bond(amount_wei)

    def origination_fee_sats(self, amount_sats: int) -> int:
        """L's origination fee, paid on Bitcoin in TX_1: amount · bps / 10000 (floored), in satoshis."""
        as_uint(amount_sats, "amount_sats")
        return amount_sats * self.origination_fee_bps // 10_000

    def min_collateral_sats(self, amount_wei: int) -> int:
        """The least collateral TX_1 may lock: amount in sats (rounded up) times the min collateral ratio."""
        as_uint(amount_wei, "amount")
        return ceil_div(ceil_div(amount_wei, WEI_PER_SAT) * self.min_collateral_ratio_percent, 100)

    # -- deadlines (EVM block numbers; one side may act before, the other from the deadline on) --------------

    def offer_deadline(self, offer_block: int) -> int:
        """The borrower may accept while block < this; the lender may withdraw the offer from it on."""
        return offer_block + self.offer_window_blocks

    def repayment_deadline(self, activation_block: int) -> int:
        """Repayment is possible while block < this; default may be marked from it on."""
        return activation_block + self.loan_duration_blocks

    def acceptance_deadline(self, repayment_block: int) -> int:
        """The lender may accept a repayment while block < this; the borrower may withdraw it from it on."""
        return repayment_block + self.repayment_window_blocks

    def offer_escrow_min_btc_blocks_left(self) -> int:
        """BTC blocks the escrow's CSV must still have left when L offers: ceil(t_B / ratio) + safety."""
        return ceil_div(self.offer_window_blocks, self.evm_blocks_per_btc_block) + self.safety_btc_blocks

    def escrow_has_room_for_offer(self, escrow_confirmations: int) -> bool:
        """PROTOCOL.md's pre-offer check: t_0 - confirmations ≥ ceil(t_B / ratio) + safety."""
        as_uint(escrow_confirmations, "escrow_confirmations")
        return self.escrow_timelock_btc_blocks - escrow_confirmations >= self.offer_escrow_min_btc_blocks_left()
