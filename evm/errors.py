"""Exceptions of the EVM layer and decoding of revert data into readable, typed errors.

A revert carries ABI-encoded data whose first 4 bytes are the selector of the error (keccak256 of its
canonical signature). `RevertDecoder` knows every custom error of both contracts (taken from their ABIs), OpenZeppelin's
errors, Solidity's built-in `Error(string)` and `Panic(uint256)`, and turns the data into a `ContractRevert`
with the error's name, its arguments by name and a message a person can read ("TooLate: loan 3 closed at block 1234").
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_checksum_address
from eth_utils.abi import collapse_if_tuple


class EvmError(Exception):
    """Base class of every error raised by `evm`."""


class InvalidArgument(EvmError, ValueError):
    """A caller passed a value that cannot be encoded or makes no sense (nothing was sent)."""


class BorrowerStepRefused(InvalidArgument):
    """The borrower's client refused a step before anything was signed or sent (no preimage revealed, no coin moved).

    `reason` is a stable machine-readable code (for example ``"wrong_borrower_hash"`` or ``"accept_cutoff"``; the
    list is `evm.terms.REFUSAL_REASONS`), `fields` names the parameters that differ for ``"wrong_parameters"``;
    the message explains it to a person.
    """

    def __init__(self, reason: str, message: str, *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.fields = tuple(fields)

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"

    def __reduce__(self):  # picklable with its keyword argument (django-q stores task failures)
        return (_rebuild_refusal, (self.reason, self.args[0], self.fields))


def _rebuild_refusal(reason: str, message: str, fields: tuple[str, ...]) -> BorrowerStepRefused:
    return BorrowerStepRefused(reason, message, fields=fields)


class ArtifactError(EvmError):
    """A contract artifact is missing, unreadable or lacks part of the fixed interface."""


class ChainIdMismatch(EvmError):
    """The node serves a different chain than the one this application is configured for."""

    def __init__(self, expected: int, actual: int, url: str = "") -> None:
        self.expected = expected
        self.actual = actual
        where = f" at {url}" if url else ""
        super().__init__(
            f"the EVM node{where} serves chain id {actual}, but chain id {expected} is configured: refusing to use it"
        )


class NodeUnavailable(EvmError):
    """The node could not be reached or answered with something that is not JSON-RPC."""


class RpcError(EvmError):
    """The node answered a call with a JSON-RPC error that is not a revert (e.g. insufficient funds)."""

    def __init__(self, method: str, error: object) -> None:
        self.method = method
        self.error = error
        message = error.get("message", error) if isinstance(error, dict) else error
        super().__init__(f"{method} failed: {message}")


class TransactionFailed(EvmError):
    """A transaction was not mined in time, or failed without revert data we could decode."""

    def __init__(self, message: str, *, tx_hash: bytes | None = None) -> None:
        self.tx_hash = tx_hash
        super().__init__(message)


class ContractRevert(EvmError):
    """A contract call reverted (found by a dry run, or by a mined transaction with status 0).

    `error_name` is the Solidity error's name ("TooLate", "Error" for `require` strings, "Panic", or
    "Unknown"),
    `error_args` its decoded arguments by name (addresses checksummed, bytes32 as `bytes`, `LoanStatus` as the
    enum), `message` the readable sentence. (`BaseException.args` is reserved by Python, hence `error_args`.)
    """

    def __init__(
        self,
        error_name: str,
        args: Mapping[str, Any],
        message: str,
        *,
        data: bytes = b"",
        tx_hash: bytes | None = None,
    ) -> None:
        self.error_name = error_name
        self.error_args = dict(args)
        self.message = message
        self.data = bytes(data)
        self.tx_hash = tx_hash
        super().__init__(message)

    def __reduce__(self):  # keep the exception picklable (django-q stores task failures)
        return (
            _rebuild_revert,
            (self.error_name, self.error_args, self.message, self.data, self.tx_hash),
        )

    def with_tx_hash(self, tx_hash: bytes) -> ContractRevert:
        return ContractRevert(self.error_name, self.error_args, self.message, data=self.data, tx_hash=tx_hash)


def _rebuild_revert(name, args, message, data, tx_hash) -> ContractRevert:
    return ContractRevert(name, args, message, data=data, tx_hash=tx_hash)


# Solidity's built-in errors and the OpenZeppelin errors the loan contract inherits. They are usually in the
# contract ABI as well; listing them here keeps decoding working for a minimal ABI.
BUILTIN_ERROR_ABI: list[dict[str, Any]] = [
    {"type": "error", "name": "Error", "inputs": [{"name": "reason", "type": "string"}]},
    {"type": "error", "name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]},
    {
        "type": "error",
        "name": "OwnableUnauthorizedAccount",
        "inputs": [{"name": "account", "type": "address"}],
    },
    {"type": "error", "name": "OwnableInvalidOwner", "inputs": [{"name": "owner", "type": "address"}]},
    {"type": "error", "name": "ReentrancyGuardReentrantCall", "inputs": []},
]

PANIC_REASONS = {
    0x00: "generic compiler panic",
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "invalid storage byte array encoding",
    0x31: "pop on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialised function",
}


def _fmt(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, enum.Enum):
        return str(value)  # LoanStatus prints its Solidity name
    return str(value)


# One sentence per error; `{name}` placeholders are the error's argument names.
MESSAGE_TEMPLATES: dict[str, str] = {
    # BtcCollateralLoan
    "UnknownLoan": "no loan {loanId}",
    "WrongStatus": "loan {loanId} is {current}",
    "NotBorrower": "{caller} is not the borrower of loan {loanId}",
    "WrongValue": "expected {expected} wei, sent {sent} wei",
    "AmountOutOfBounds": "amount {amount} wei is outside [{min}, {max}] wei",
    "ZeroValue": "{field} must not be zero",
    "HashAlreadyUsed": "hash {hash} was already used",
    "LenderHashAlreadySet": "loan {loanId} already has a lender hash",
    "LenderHashNotSet": "loan {loanId} has no lender hash yet",
    "TooEarly": "loan {loanId} opens at block {opensAtBlock}",
    "TooLate": "loan {loanId} closed at block {closedAtBlock}",
    "WrongPreimage": "the preimage does not hash to the stored hash",
    "InvalidParameters": "{reason}",
    "PayoutFailed": "paying {amount} wei to {to} failed",
    "RenounceOwnershipDisabled": "the owner cannot renounce ownership while loans may need the lender",
    "ParametersVersionMismatch": "the request was made for parameters version {shown}, but version {inForce} is in "
    "force",
    # EtherSwap
    "NotLoanContract": "{caller} is not the linked loan contract",
    "SwapNotFound": "no swap {swapHash}",
    "SwapExists": "swap {swapHash} already exists",
    "TimelockNotReached": "the refund opens at block {timelock}",
    "ZeroAmount": "the amount must not be zero",
    "AlreadyLinked": "the loan contract is already linked",
    "NotDeployer": "{caller} is not the deployer",
    "ZeroAddress": "the address must not be zero",
    # OpenZeppelin and Solidity
    "OwnableUnauthorizedAccount": "{account} is not the owner",
    "OwnableInvalidOwner": "{owner} cannot be the owner",
    "ReentrancyGuardReentrantCall": "reentrant call",
    "Error": "{reason}",
}


class RevertDecoder:
    """Decodes revert data for a set of ABIs. Build one per process (it is immutable) with `from_abis`."""

    def __init__(self, error_abis: Iterable[Mapping[str, Any]], enum_types: Mapping[str, type[enum.IntEnum]]):
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        self._enum_types = dict(enum_types)
        for entry in [*BUILTIN_ERROR_ABI, *error_abis]:
            if entry.get("type") != "error":
                continue
            types = [collapse_if_tuple(dict(i)) for i in entry.get("inputs", [])]
            names = [i.get("name") or f"arg{n}" for n, i in enumerate(entry.get("inputs", []))]
            signature = f"{entry['name']}({','.join(types)})"
            self._errors[keccak(text=signature)[:4]] = (entry["name"], types, names)

    @classmethod
    def from_abis(
        cls, *abis: Sequence[Mapping[str, Any]], enum_types: Mapping[str, type[enum.IntEnum]] | None = None
    ) -> RevertDecoder:
        """`enum_types` maps an error argument name (e.g. "current") to the IntEnum its uint8 stands for."""
        return cls([e for abi in abis for e in abi if e.get("type") == "error"], enum_types or {})

    @property
    def selectors(self) -> dict[bytes, str]:
        return {selector: name for selector, (name, _, _) in self._errors.items()}

    def decode(self, data: bytes | str | None, *, tx_hash: bytes | None = None) -> ContractRevert:
        raw = _to_bytes(data)
        if not raw:
            return ContractRevert("Unknown", {}, "the call reverted without a reason", data=raw, tx_hash=tx_hash)
        known = self._errors.get(raw[:4])
        if known is None:
            return ContractRevert(
                "Unknown",
                {},
                f"the call reverted with unknown error data 0x{raw.hex()}",
                data=raw,
                tx_hash=tx_hash,
            )
        name, types, names = known
        try:
            values = abi_decode(types, raw[4:], strict=False)
        except (DecodingError, ValueError, OverflowError) as exc:
            return ContractRevert(
                name,
                {},
                f"{name}: undecodable arguments 0x{raw[4:].hex()} ({exc})",
                data=raw,
                tx_hash=tx_hash,
            )
        args: dict[str, Any] = {}
        for arg_name, arg_type, value in zip(names, types, values, strict=True):
            if arg_type == "address":
                value = to_checksum_address(value)
            elif arg_name in self._enum_types:
                with contextlib.suppress(ValueError):
                    value = self._enum_types[arg_name](value)
            args[arg_name] = value
        return ContractRevert(name, args, format_revert_message(name, args), data=raw, tx_hash=tx_hash)


def format_revert_message(name: str, args: Mapping[str, Any]) -> str:
    if name == "Panic":
        code = int(args.get("code", 0))
        return f"Panic: 0x{code:02x} {PANIC_REASONS.get(code, 'unknown panic code')}"
    template = MESSAGE_TEMPLATES.get(name)
    if template is not None:
        try:
            return f"{name}: " + template.format(**{k: _fmt(v) for k, v in args.items()})
        except (KeyError, IndexError):
            pass  # an ABI whose argument names differ from ours: fall back to the generic form
    rendered = ", ".join(f"{k}={_fmt(v)}" for k, v in args.items())
    return f"{name}({rendered})"


def _to_bytes(data: bytes | str | None) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    text = data.strip()
    if text.startswith(("0x", "0X")):
        text = text[2:]
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def revert_data_from_rpc_error(error: Any) -> bytes | None:
    """The revert data inside a JSON-RPC error object, whatever shape the node uses.

    geth/anvil: `{"code": 3, "message": "execution reverted...", "data": "0x…"}`; some nodes nest it
    (`"data": {"data": "0x…"}` or `{"originalError": {"data": …}}`); Rootstock puts the hex in `data` as well.
    Returns None when the error is not a revert (e.g. an RPC failure), b"" for a revert without data.
    """
    if not isinstance(error, Mapping):
        return None
    data = error.get("data")
    found = _find_hex(data)
    if found is not None:
        return found
    message = str(error.get("message", "")).lower()
    if "revert" in message:
        return b""
    return None


def _find_hex(value: Any) -> bytes | None:
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return None
    if isinstance(value, Mapping):
        for key in ("data", "originalError", "result"):
            if key in value:
                found = _find_hex(value[key])
                if found is not None:
                    return found
    return None


def revert_data_from_exception(exc: BaseException) -> bytes | None:
    """Revert data carried by a web3 exception (ContractCustomError, ContractLogicError, Web3RPCError)."""
    from web3.exceptions import ContractLogicError, Web3RPCError

    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, Mapping):
            return _find_hex(data) or b""
        return _to_bytes(data) if isinstance(data, str | bytes) else b""
    if isinstance(exc, Web3RPCError) and isinstance(exc.rpc_response, Mapping):
        return revert_data_from_rpc_error(exc.rpc_response.get("error"))
    return None
