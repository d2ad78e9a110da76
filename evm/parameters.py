"""The loan contract's `Parameters` struct in Python: defaults, ordering rules, money and deadline maths.

Every formula here is the contract's formula in integer arithmetic (floor division where Solidity divides), so
the server can show a borrower exactly what the contract will charge before anything is sent. Parameters are
snapshotted per loan: use the `params` of a `Loan`, not the current parameters, for anything about a loan.

Bitcoin amounts (the collateral, the origination fee) are the Bitcoin layer's business: `bitcoin.transactions`
computes them from satoshis and basis points (`min_collateral_ratio_bps`, `origination_fee_bps`).
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
BPS = 10_000  # 100 % in basis points
# The contract's cap on driftMarginBps (100 %): a Bitcoin timelock then covers twice its EVM window. A larger drift
# means the assumed EVM-blocks-per-BTC-block ratio is wrong; change the ratio instead.
MAX_DRIFT_MARGIN_BPS = 10_000

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
    ("min_collateral_ratio_bps", "minCollateralRatioBps", "uint16", UINT16),
    ("drift_margin_bps", "driftMarginBps", "uint16", UINT16),
    ("accept_cutoff_blocks", "acceptCutoffBlocks", "uint64", UINT64),
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
    collateral_timelock_btc_blocks: int = 30_000  # t_1
    evm_blocks_per_btc_block: int = 20
    safety_btc_blocks: int = 6
    processing_fee_wei: int = 10**15  # 0.001 rBTC
    bond_percent: int = 10
    origination_fee_bps: int = 100
    interest_bps: int = 500  # per year
    blocks_per_year: int = 1_051_200
    min_amount_wei: int = 5 * 10**15  # 0.005 rBTC
    max_amount_wei: int = 100 * 10**18  # 100 rBTC
    min_collateral_ratio_bps: int = 10_000  # collateral ≥ amount (100 %); at most 10000 + bond_percent · 100
    drift_margin_bps: int = 1_000  # m = 1 + 10 %: how much faster Bitcoin blocks may come than the ratio assumes
    accept_cutoff_blocks: int = 250  # t_B / 4: B starts no accept with fewer offer blocks left

    def __post_init__(self) -> None:
        object.__setattr__(self, "lender_btc_pubkey", as_bytes32(self.lender_btc_pubkey, "lender_btc_pubkey"))
        for name, _, _, upper in FIELDS:
            if name != "lender_btc_pubkey":
                as_uint(getattr(self, name), name, upper)

    # -- the ordering rules (checked by the contract in its constructor and updateParameters) ---------

    @property
    def drift_factor_bps(self) -> int:
        """m in basis points: 10000 + drift margin (PROTOCOL.md's m = 1 + drift margin)."""
        return BPS + self.drift_margin_bps

    def problems(self) -> list[str]:
        """Every rule these parameters break, as sentences; empty when they are valid.

        The same rules, with the same bounds and in the same order, as the contract's `_validate` (which reverts
        with the first one). With m = 10000 + drift margin (bps), in exact integer arithmetic:
        t_0 · ratio · 10000 > (t_B + allowance) · m and t_1 · ratio · 10000 > (t_D + t_L) · m + safety · ratio · 10000.
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
        if p.drift_margin_bps > MAX_DRIFT_MARGIN_BPS:
            found.append(f"drift_margin_bps must not exceed {MAX_DRIFT_MARGIN_BPS}, got {p.drift_margin_bps}")
        m = p.drift_factor_bps
        ratio_bps = p.evm_blocks_per_btc_block * BPS
        escrow_side = p.escrow_timelock_btc_blocks * ratio_bps
        offer_side = (p.offer_window_blocks + p.request_to_offer_allowance_blocks) * m
        if escrow_side <= offer_side:
            found.append(
                f"t_0 * ratio * 10000 ({escrow_side}) must exceed (t_B + request-to-offer allowance) * "
                f"(10000 + drift margin) ({offer_side}): otherwise the borrower could take the loan and reclaim "
                "the escrow"
            )
        collateral_side = p.collateral_timelock_btc_blocks * ratio_bps
        loan_side = (p.loan_duration_blocks + p.repayment_window_blocks) * m + p.safety_btc_blocks * ratio_bps
        if collateral_side <= loan_side:
            found.append(
                f"t_1 * ratio * 10000 ({collateral_side}) must exceed (t_D + t_L) * (10000 + drift margin) + "
                f"safety * ratio * 10000 ({loan_side}): otherwise the lender could take the collateral before the "
                "borrower can use the lender's preimage"
            )
        if not 1 <= p.accept_cutoff_blocks < p.offer_window_blocks:
            found.append(
                f"accept_cutoff_blocks must be in [1, offer_window_blocks - 1], got {p.accept_cutoff_blocks} with "
                f"offer_window_blocks {p.offer_window_blocks}"
            )
        if p.min_amount_wei == 0:
            found.append("min_amount_wei must be positive")
        if p.min_amount_wei > p.max_amount_wei:
            found.append(f"min_amount_wei ({p.min_amount_wei}) must not exceed max_amount_wei ({p.max_amount_wei})")
        if p.max_amount_wei > MAX_AMOUNT_LIMIT:
            found.append(f"max_amount_wei must not exceed 2**128 - 1, got {p.max_amount_wei}")
        if not 1 <= p.bond_percent <= 100:
            found.append(
                f"bond_percent must be in [1, 100], got {p.bond_percent}: refusing a repayment must cost the lender"
            )
        ratio_cap = BPS + p.bond_percent * 100
        if not BPS <= p.min_collateral_ratio_bps <= ratio_cap:
            found.append(
                f"min_collateral_ratio_bps must be in [10000, 10000 + bond_percent * 100] = [10000, {ratio_cap}], "
                f"got {p.min_collateral_ratio_bps}: above amount + bond the lender gains by refusing a repayment"
            )
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
        """From `to_json_dict`'s output. Every field must be there and no other: a record written for another
        version of the contract (say with `min_collateral_ratio_percent`) is refused, not silently defaulted."""
        names = [name for name, _, _, _ in FIELDS]
        missing = [name for name in names if name not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise InvalidArgument(
                f"parameters record does not match this contract's Parameters (missing: {missing or 'none'}, "
                f"unknown: {unknown or 'none'}); was it written for an older contract?"
            )
        return cls(**{name: data[name] for name in names})

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

    def accept_blocks_left(self, offer_block: int, next_block: int) -> int:
        """Blocks in which an accept sent now can still be mined: offer deadline - `next_block`.

        `next_block` is the block the accept would be mined in at the earliest: the chain head + 1 (the block
        `eth_call` on "pending" simulates). The blocks counted are `next_block` … deadline - 1; at 0 or below the
        offer is closed to the borrower.
        """
        as_uint(next_block, "next_block")
        return self.offer_deadline(offer_block) - next_block

    def may_start_accept(self, offer_block: int, next_block: int) -> bool:
        """PROTOCOL.md lifecycle step 6: B starts an accept only while at least `accept_cutoff_blocks` blocks are
        left (`accept_blocks_left(…) ≥ accept_cutoff_blocks`), i.e. while `next_block ≤ last_accept_start_block`."""
        return self.accept_blocks_left(offer_block, next_block) >= self.accept_cutoff_blocks

    def last_accept_start_block(self, offer_block: int) -> int:
        """The last `next_block` (head + 1) for which B may still start an accept: deadline - accept cutoff."""
        return self.offer_deadline(offer_block) - self.accept_cutoff_blocks

    def offer_escrow_min_btc_blocks_left(self) -> int:
        """BTC blocks the escrow's CSV must still have left when L offers: ceil(t_B · m / (ratio · 10000)) + safety,
        m = 10000 + drift margin (the offer window measured in BTC blocks that may come faster than assumed)."""
        return (
            ceil_div(self.offer_window_blocks * self.drift_factor_bps, self.evm_blocks_per_btc_block * BPS)
            + self.safety_btc_blocks
        )

    def escrow_has_room_for_offer(self, escrow_confirmations: int) -> bool:
        """PROTOCOL.md's pre-offer check: t_0 - confirmations ≥ ceil(t_B · m / (ratio · 10000)) + safety."""
        as_uint(escrow_confirmations, "escrow_confirmations")
        return self.escrow_timelock_btc_blocks - escrow_confirmations >= self.offer_escrow_min_btc_blocks_left()
