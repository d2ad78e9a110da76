"""Typed events of both contracts, decoded from raw logs, and a chunked `eth_getLogs` scan.

Each event is a frozen dataclass carrying its arguments (snake_case, addresses checksummed, bytes32 as
`bytes`) and the chain facts a watcher needs to persist it idempotently and to detect reorgs: contract address, block
number, block hash, transaction hash, transaction index and log index. The natural key of a log is
`(chain id, transaction hash, log index)` (`ChainEvent.key` gives the last two; the caller knows the chain
id).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import to_checksum_address
from eth_utils.abi import collapse_if_tuple, event_abi_to_log_topic
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import BlockNotFound, Web3RPCError

from .artifacts import Artifacts, load_artifacts
from .errors import EvmError, InvalidArgument, NodeUnavailable
from .parameters import as_uint


class EventDecodingError(EvmError):
    """A log from one of our contracts that does not match any event of their ABIs (stale ABI?)."""


# ---------------------------------------------------------------------------------------------- classes


@dataclass(frozen=True, kw_only=True)
class ChainEvent:
    event_name: ClassVar[str] = ""

    address: str
    block_number: int
    block_hash: bytes
    transaction_hash: bytes
    transaction_index: int
    log_index: int

    @property
    def key(self) -> tuple[bytes, int]:
        """(transaction hash, log index): with the chain id, the unique key to persist the event under."""
        return (self.transaction_hash, self.log_index)

    @property
    def position(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)

    def arguments(self) -> dict[str, Any]:
        """The event's own arguments (everything but the chain facts), bytes as hex (no 0x), integers as int."""
        base = {f.name for f in fields(ChainEvent)}
        return {
            f.name: (value.hex() if isinstance(value, bytes) else value)
            for f in fields(self)
            if f.name not in base
            for value in (getattr(self, f.name),)
        }

    def json_arguments(self) -> dict[str, Any]:
        """`arguments()` safe for any JSON reader: integers as decimal strings (JavaScript loses integers above
        2**53, and wei amounts are far above it)."""
        return {
            k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in self.arguments().items()
        }

    def record(self, chain_id: int) -> dict[str, Any]:
        """What to persist, keyed by the natural key (chain_id, tx_hash, log_index); hashes as hex without 0x.
        `contract_loan_id` is the contract's loan id (None for events that are not about one loan); it is not named
        `loan_id`, which is the database's foreign key to the app's loan (`EvmEvent.loan`)."""
        return {
            "chain_id": chain_id,
            "contract_address": self.address,
            "block_number": self.block_number,
            "block_hash": self.block_hash.hex(),
            "tx_hash": self.transaction_hash.hex(),
            "log_index": self.log_index,
            "name": self.event_name,
            "args": self.json_arguments(),
            "contract_loan_id": getattr(self, "loan_id", None),
        }


@dataclass(frozen=True, kw_only=True)
class LoanEvent(ChainEvent):
    loan_id: int


# BtcCollateralLoan


@dataclass(frozen=True, kw_only=True)
class ParametersUpdated(ChainEvent):
    event_name: ClassVar[str] = "ParametersUpdated"
    version: int


@dataclass(frozen=True, kw_only=True)
class LoanRequested(LoanEvent):
    event_name: ClassVar[str] = "LoanRequested"
    borrower: str
    amount: int
    repayment_amount: int
    borrower_btc_pubkey: bytes
    borrower_hash: bytes
    escrow_txid: bytes
    escrow_vout: int
    escrow_sats: int
    parameters_version: int


@dataclass(frozen=True, kw_only=True)
class LoanRequestCancelled(LoanEvent):
    event_name: ClassVar[str] = "LoanRequestCancelled"


@dataclass(frozen=True, kw_only=True)
class LenderHashCommitted(LoanEvent):
    event_name: ClassVar[str] = "LenderHashCommitted"
    lender_hash: bytes


@dataclass(frozen=True, kw_only=True)
class LoanOffered(LoanEvent):
    event_name: ClassVar[str] = "LoanOffered"
    amount: int
    bond: int
    offer_deadline_block: int


@dataclass(frozen=True, kw_only=True)
class LoanActivated(LoanEvent):
    """Reveals the borrower's preimage pB: the lender completes and broadcasts TX_1 at once."""

    event_name: ClassVar[str] = "LoanActivated"
    borrower_preimage: bytes
    repayment_deadline_block: int


@dataclass(frozen=True, kw_only=True)
class LoanOfferWithdrawn(LoanEvent):
    event_name: ClassVar[str] = "LoanOfferWithdrawn"


@dataclass(frozen=True, kw_only=True)
class RepaymentAttempted(LoanEvent):
    event_name: ClassVar[str] = "RepaymentAttempted"
    payer: str
    amount: int
    acceptance_deadline_block: int


@dataclass(frozen=True, kw_only=True)
class RepaymentAccepted(LoanEvent):
    """Reveals the lender's preimage pL: the borrower can release the collateral (TX_release)."""

    event_name: ClassVar[str] = "RepaymentAccepted"
    lender_preimage: bytes


@dataclass(frozen=True, kw_only=True)
class RepaymentWithdrawn(LoanEvent):
    event_name: ClassVar[str] = "RepaymentWithdrawn"


@dataclass(frozen=True, kw_only=True)
class LoanDefaulted(LoanEvent):
    event_name: ClassVar[str] = "LoanDefaulted"


@dataclass(frozen=True, kw_only=True)
class OwnershipTransferStarted(ChainEvent):
    event_name: ClassVar[str] = "OwnershipTransferStarted"
    previous_owner: str
    new_owner: str


@dataclass(frozen=True, kw_only=True)
class OwnershipTransferred(ChainEvent):
    event_name: ClassVar[str] = "OwnershipTransferred"
    previous_owner: str
    new_owner: str


# EtherSwap


@dataclass(frozen=True, kw_only=True)
class LoanContractSet(ChainEvent):
    event_name: ClassVar[str] = "LoanContractSet"
    loan_contract: str


@dataclass(frozen=True, kw_only=True)
class Lockup(ChainEvent):
    event_name: ClassVar[str] = "Lockup"
    preimage_hash: bytes
    amount: int
    claim_address: str
    refund_address: str
    timelock: int


@dataclass(frozen=True, kw_only=True)
class Claim(ChainEvent):
    event_name: ClassVar[str] = "Claim"
    preimage_hash: bytes
    preimage: bytes


@dataclass(frozen=True, kw_only=True)
class Refund(ChainEvent):
    event_name: ClassVar[str] = "Refund"
    preimage_hash: bytes


EVENT_CLASSES: dict[str, type[ChainEvent]] = {
    cls.event_name: cls
    for cls in (
        ParametersUpdated,
        LoanRequested,
        LoanRequestCancelled,
        LenderHashCommitted,
        LoanOffered,
        LoanActivated,
        LoanOfferWithdrawn,
        RepaymentAttempted,
        RepaymentAccepted,
        RepaymentWithdrawn,
        LoanDefaulted,
        OwnershipTransferStarted,
        OwnershipTransferred,
        LoanContractSet,
        Lockup,
        Claim,
        Refund,
    )
}


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


# ---------------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class _EventSpec:
    cls: type[ChainEvent]
    indexed: tuple[tuple[str, str], ...]  # (field, abi type)
    plain: tuple[tuple[str, str], ...]


class EventDecoder:
    """Decodes raw logs (as returned by `eth_getLogs` or in a receipt) into the dataclasses above."""

    def __init__(self, abis: Iterable[Sequence[Mapping[str, Any]]]):
        self._specs: dict[bytes, _EventSpec] = {}
        for abi in abis:
            for entry in abi:
                if entry.get("type") != "event" or entry.get("anonymous"):
                    continue
                cls = EVENT_CLASSES.get(entry["name"])
                if cls is None:
                    continue
                inputs = entry.get("inputs", [])
                indexed = tuple((snake_case(i["name"]), collapse_if_tuple(dict(i))) for i in inputs if i["indexed"])
                plain = tuple((snake_case(i["name"]), collapse_if_tuple(dict(i))) for i in inputs if not i["indexed"])
                expected = {f.name for f in fields(cls)} - {f.name for f in fields(ChainEvent)}
                got = {name for name, _ in indexed + plain}
                if got != expected:
                    raise EventDecodingError(
                        f"event {entry['name']} in the ABI has arguments {sorted(got)}, expected {sorted(expected)}"
                    )
                self._specs[bytes(event_abi_to_log_topic(dict(entry)))] = _EventSpec(cls, indexed, plain)

    @classmethod
    def from_artifacts(cls, artifacts: Artifacts | None = None) -> EventDecoder:
        artifacts = artifacts or load_artifacts()
        return cls([artifacts.loan.abi, artifacts.ether_swap.abi])

    @property
    def topics(self) -> list[bytes]:
        return list(self._specs)

    def decode(self, log: Mapping[str, Any]) -> ChainEvent:
        topics = [bytes(HexBytes(t)) for t in log.get("topics", [])]
        if not topics or topics[0] not in self._specs:
            raise EventDecodingError(
                f"log {_hex(log.get('transactionHash'))}:{_int(log.get('logIndex'))} "
                f"from {log.get('address')} "
                f"has an unknown topic {('0x' + topics[0].hex()) if topics else '(none)'}"
            )
        spec = self._specs[topics[0]]
        if len(topics) - 1 != len(spec.indexed):
            raise EventDecodingError(f"{spec.cls.event_name}: expected {len(spec.indexed)} indexed topics")
        values: dict[str, Any] = {}
        try:
            for (name, abi_type), topic in zip(spec.indexed, topics[1:], strict=True):
                (values[name],) = abi_decode([abi_type], topic)
            plain = abi_decode([t for _, t in spec.plain], bytes(HexBytes(log.get("data", b""))))
        except (DecodingError, ValueError) as exc:
            raise EventDecodingError(f"{spec.cls.event_name}: undecodable log ({exc})") from None
        for (name, _), value in zip(spec.plain, plain, strict=True):
            values[name] = value
        for name, abi_type in spec.indexed + spec.plain:
            if abi_type == "address":
                values[name] = to_checksum_address(values[name])
            elif abi_type.startswith("bytes"):
                values[name] = bytes(values[name])
        return spec.cls(
            address=to_checksum_address(log["address"]),
            block_number=_int(log["blockNumber"]),
            block_hash=bytes(HexBytes(log["blockHash"])),
            transaction_hash=bytes(HexBytes(log["transactionHash"])),
            transaction_index=_int(log["transactionIndex"]),
            log_index=_int(log["logIndex"]),
            **values,
        )

    def decode_receipt(self, receipt: Mapping[str, Any], addresses: Iterable[str] | None = None) -> list[ChainEvent]:
        """The events in a receipt (only those of `addresses` when given)."""
        wanted = {a.lower() for a in addresses} if addresses is not None else None
        return [self.decode(log) for log in receipt["logs"] if wanted is None or str(log["address"]).lower() in wanted]


def _int(value: Any) -> int:
    if isinstance(value, str):
        return int(value, 16)
    return int(value)


def _hex(value: Any) -> str:
    return "0x" + bytes(HexBytes(value)).hex() if value is not None else "?"


@functools.cache
def default_decoder() -> EventDecoder:
    return EventDecoder.from_artifacts()


# ------------------------------------------------------------------------------------------------ fetching


@dataclass(frozen=True)
class EventChunk:
    """The events of [from_block, to_block] and the chain's last block of the range (`last_block`: number,
    hash, parent hash), which is what a watcher stores as its cursor to notice a reorg on the next scan."""

    from_block: int
    to_block: int
    events: tuple[ChainEvent, ...]
    last_block: BlockRef


class ReorgDuringScan(EvmError):
    """The chain kept changing under a chunk while it was being read; scan again later (or with more
    confirmations)."""


def iter_event_chunks(
    w3: Web3,
    addresses: Sequence[str],
    from_block: int,
    to_block: int,
    *,
    chunk_size: int = 1000,
    decoder: EventDecoder | None = None,
) -> Iterator[EventChunk]:
    """Scan [from_block, to_block] (inclusive) in chunks, yielding each chunk's events in (block, log index)
    order. A watcher commits its cursor after each chunk. If the node refuses a range (too many results, range
    limit), the chunk is halved and retried, and the scan goes on with the smaller size; a single block that
    still fails raises `NodeUnavailable`."""
    as_uint(from_block, "from_block")
    as_uint(to_block, "to_block")
    if from_block > to_block:
        raise InvalidArgument(f"from_block {from_block} is after to_block {to_block}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidArgument(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not addresses:
        raise InvalidArgument("at least one contract address is required")
    checksummed = [to_checksum_address(a) for a in addresses]
    decoder = decoder or default_decoder()
    start = from_block
    size = chunk_size
    reorg_retries = 0
    while start <= to_block:
        end = min(start + size - 1, to_block)
        try:
            logs = _raw_logs(w3, checksummed, start, end)
        except (Web3RPCError, OSError) as exc:
            if end > start:
                size = max(1, (end - start + 1) // 2)
                continue
            raise NodeUnavailable(f"eth_getLogs failed for block {start}: {exc}") from exc
        events = sorted(
            (decoder.decode(log) for log in logs if not log.get("removed", False)), key=lambda e: e.position
        )
        last_block = get_block_ref(w3, end)
        if any(e.block_number == end and e.block_hash != last_block.hash for e in events):
            # The logs and the block header come from different branches: a reorg happened between the calls.
            reorg_retries += 1
            if reorg_retries > 3:
                raise ReorgDuringScan(f"block {end} keeps changing while it is scanned")
            continue
        reorg_retries = 0
        yield EventChunk(start, end, tuple(events), last_block)
        start = end + 1  # keep a size the node accepted: it will most likely refuse a larger one again


def _raw_logs(w3: Web3, addresses: Sequence[str], from_block: int, to_block: int) -> list[Mapping[str, Any]]:
    """``eth_getLogs`` without web3's result formatting: the decoder reads the raw answer directly (formatting
    10,000 logs took longer than scanning, decoding and storing them together)."""
    params = {"address": list(addresses), "fromBlock": hex(from_block), "toBlock": hex(to_block)}
    response = w3.provider.make_request("eth_getLogs", [params])  # type: ignore[arg-type]
    if response.get("error"):
        raise Web3RPCError(f"eth_getLogs failed: {response['error']}")
    return response["result"]


def fetch_events(
    w3: Web3,
    addresses: Sequence[str],
    from_block: int,
    to_block: int,
    chunk_size: int = 1000,
    *,
    decoder: EventDecoder | None = None,
) -> list[ChainEvent]:
    """All events of `addresses` in [from_block, to_block], ordered by (block number, log index)."""
    events: list[ChainEvent] = []
    for chunk in iter_event_chunks(w3, addresses, from_block, to_block, chunk_size=chunk_size, decoder=decoder):
        events.extend(chunk.events)
    return events


# -------------------------------------------------------------------------------------- cursor, reorgs


@dataclass(frozen=True)
class BlockRef:
    """What a watcher stores for its cursor: a reorg shows as a stored hash that the chain no longer has."""

    number: int
    hash: bytes
    parent_hash: bytes


def get_block_ref(w3: Web3, block: int | str = "latest") -> BlockRef:
    data = w3.eth.get_block(block)
    return BlockRef(number=int(data["number"]), hash=bytes(data["hash"]), parent_hash=bytes(data["parentHash"]))


def confirmed_block_number(w3: Web3, confirmations: int) -> int | None:
    """The newest block with at least `confirmations` confirmations (the head itself has 1), or None if the
    chain is not that long yet. Only events up to this block are final."""
    if isinstance(confirmations, bool) or not isinstance(confirmations, int) or confirmations < 1:
        raise InvalidArgument(f"confirmations must be a positive integer, got {confirmations!r}")
    head = int(w3.eth.block_number)
    confirmed = head - confirmations + 1
    return confirmed if confirmed >= 0 else None


def first_reorged_block(w3: Web3, stored: Iterable[BlockRef]) -> BlockRef | None:
    """The lowest stored block whose hash the chain no longer has at that height (rewind to before it),
    or None when every stored block is still canonical."""
    for ref in sorted(stored, key=lambda r: r.number):
        try:
            current = get_block_ref(w3, ref.number)
        except BlockNotFound:  # the chain is now shorter than the stored block: a reorg too
            return ref
        if current.hash != ref.hash:
            return ref
    return None
