"""Revert decoding: every kind of revert data, from hand-encoded bytes (selector = keccak(signature)[:4])."""

from __future__ import annotations

import pickle

import pytest
from eth_abi import encode
from eth_utils import keccak
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

from evm.client import LoanStatus, revert_decoder
from evm.errors import (
    ContractRevert,
    revert_data_from_exception,
    revert_data_from_rpc_error,
)

ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def revert(signature: str, types: list[str], values: list) -> bytes:
    return keccak(text=signature)[:4] + encode(types, values)


@pytest.fixture(scope="module")
def decoder():
    return revert_decoder()


@pytest.mark.parametrize(
    ("signature", "types", "values", "name", "args", "message"),
    [
        ("TooLate(uint256,uint256)", ["uint256", "uint256"], [3, 1234], "TooLate",
         {"loanId": 3, "closedAtBlock": 1234}, "TooLate: loan 3 closed at block 1234"),
        ("TooEarly(uint256,uint256)", ["uint256", "uint256"], [4, 99], "TooEarly",
         {"loanId": 4, "opensAtBlock": 99}, "TooEarly: loan 4 opens at block 99"),
        ("WrongStatus(uint256,uint8)", ["uint256", "uint8"], [2, 4], "WrongStatus",
         {"loanId": 2, "current": LoanStatus.REPAYMENT_IN_PROGRESS}, "WrongStatus: loan 2 is RepaymentInProgress"),
        ("NotBorrower(uint256,address)", ["uint256", "address"], [5, ADDRESS.lower()], "NotBorrower",
         {"loanId": 5, "caller": ADDRESS}, f"NotBorrower: {ADDRESS} is not the borrower of loan 5"),
        ("WrongValue(uint256,uint256)", ["uint256", "uint256"], [10**18, 1], "WrongValue",
         {"expected": 10**18, "sent": 1}, f"WrongValue: expected {10**18} wei, sent 1 wei"),
        ("AmountOutOfBounds(uint256,uint256,uint256)", ["uint256"] * 3, [1, 2, 3], "AmountOutOfBounds",
         {"amount": 1, "min": 2, "max": 3}, "AmountOutOfBounds: amount 1 wei is outside [2, 3] wei"),
        ("ZeroValue(string)", ["string"], ["lenderHash"], "ZeroValue", {"field": "lenderHash"},
         "ZeroValue: lenderHash must not be zero"),
        ("HashAlreadyUsed(bytes32)", ["bytes32"], [b"\x01" * 32], "HashAlreadyUsed", {"hash": b"\x01" * 32},
         "HashAlreadyUsed: hash 0x" + "01" * 32 + " was already used"),
        ("WrongPreimage()", [], [], "WrongPreimage", {},
         "WrongPreimage: the preimage does not hash to the stored hash"),
        ("InvalidParameters(string)", ["string"], ["bondPercent must not exceed 100"], "InvalidParameters",
         {"reason": "bondPercent must not exceed 100"}, "InvalidParameters: bondPercent must not exceed 100"),
        ("PayoutFailed(address,uint256)", ["address", "uint256"], [ADDRESS, 7], "PayoutFailed",
         {"to": ADDRESS, "amount": 7}, f"PayoutFailed: paying 7 wei to {ADDRESS} failed"),
        ("UnknownLoan(uint256)", ["uint256"], [9], "UnknownLoan", {"loanId": 9}, "UnknownLoan: no loan 9"),
        # EtherSwap
        ("NotLoanContract(address)", ["address"], [ADDRESS], "NotLoanContract", {"caller": ADDRESS},
         f"NotLoanContract: {ADDRESS} is not the linked loan contract"),
        ("SwapNotFound(bytes32)", ["bytes32"], [b"\x02" * 32], "SwapNotFound", {"swapHash": b"\x02" * 32},
         "SwapNotFound: no swap 0x" + "02" * 32),
        ("TimelockNotReached(uint256)", ["uint256"], [77], "TimelockNotReached", {"timelock": 77},
         "TimelockNotReached: the refund opens at block 77"),
        ("AlreadyLinked()", [], [], "AlreadyLinked", {}, "AlreadyLinked: the loan contract is already linked"),
        # OpenZeppelin and Solidity
        ("OwnableUnauthorizedAccount(address)", ["address"], [ADDRESS], "OwnableUnauthorizedAccount",
         {"account": ADDRESS}, f"OwnableUnauthorizedAccount: {ADDRESS} is not the owner"),
        ("ReentrancyGuardReentrantCall()", [], [], "ReentrancyGuardReentrantCall", {},
         "ReentrancyGuardReentrantCall: reentrant call"),
        ("Error(string)", ["string"], ["nope"], "Error", {"reason": "nope"}, "Error: nope"),
        ("Panic(uint256)", ["uint256"], [0x11], "Panic", {"code": 0x11},
         "Panic: 0x11 arithmetic overflow or underflow"),
    ],
)  # fmt: skip
def test_known_errors_decode_to_readable_messages(decoder, signature, types, values, name, args, message):
    data = revert(signature, types, values)
    result = decoder.decode(data)
    assert isinstance(result, ContractRevert)
    assert (result.error_name, result.error_args, result.message, str(result)) == (name, args, message, message)
    assert result.data == data
    assert decoder.decode("0x" + data.hex()).error_args == args  # hex in, same result


def test_every_error_of_both_abis_has_a_selector_and_a_sentence(decoder):
    from evm.artifacts import load_artifacts
    from evm.errors import MESSAGE_TEMPLATES

    artifacts = load_artifacts()
    names = {e["name"] for a in (artifacts.loan, artifacts.ether_swap) for e in a.entries("error")}
    assert names <= set(decoder.selectors.values())
    assert names <= set(MESSAGE_TEMPLATES), names - set(MESSAGE_TEMPLATES)


def test_unknown_empty_and_garbled_data(decoder):
    assert decoder.decode(b"").message == "the call reverted without a reason"
    assert decoder.decode(None).error_name == "Unknown"
    unknown = decoder.decode(bytes.fromhex("deadbeef01"))
    assert (unknown.error_name, unknown.message) == (
        "Unknown",
        "the call reverted with unknown error data 0xdeadbeef01",
    )
    garbled = decoder.decode(keccak(text="TooLate(uint256,uint256)")[:4] + b"\x01")
    assert garbled.error_name == "TooLate" and "undecodable arguments" in garbled.message
    out_of_range = decoder.decode(revert("WrongStatus(uint256,uint8)", ["uint256", "uint8"], [1, 200]))
    assert out_of_range.error_args["current"] == 200  # not a LoanStatus: kept as the number
    assert decoder.decode(revert("Panic(uint256)", ["uint256"], [0x99])).message == "Panic: 0x99 unknown panic code"


def test_reverts_survive_pickling(decoder):
    original = decoder.decode(revert("TooLate(uint256,uint256)", ["uint256", "uint256"], [3, 1234]))
    copy = pickle.loads(pickle.dumps(original.with_tx_hash(b"\x05" * 32)))  # noqa: S301 - our own bytes
    assert (copy.error_name, copy.error_args, copy.message, copy.tx_hash) == (
        "TooLate",
        {"loanId": 3, "closedAtBlock": 1234},
        "TooLate: loan 3 closed at block 1234",
        b"\x05" * 32,
    )


def test_revert_data_is_found_in_node_errors_and_web3_exceptions():
    data = revert("UnknownLoan(uint256)", ["uint256"], [1])
    hexed = "0x" + data.hex()
    assert revert_data_from_rpc_error({"code": 3, "message": "execution reverted", "data": hexed}) == data
    assert revert_data_from_rpc_error({"code": -32000, "message": "x", "data": {"data": hexed}}) == data
    assert revert_data_from_rpc_error({"code": -32015, "message": "VM execution error: revert"}) == b""
    assert revert_data_from_rpc_error({"code": -32000, "message": "header not found"}) is None
    assert revert_from_exceptions(hexed, data)


def revert_from_exceptions(hexed: str, data: bytes) -> bool:
    assert revert_data_from_exception(ContractCustomError(hexed, data=hexed)) == data
    assert revert_data_from_exception(ContractLogicError("execution reverted", data=None)) == b""
    rpc_error = Web3RPCError("boom", rpc_response={"error": {"code": 3, "message": "reverted", "data": hexed}})
    assert revert_data_from_exception(rpc_error) == data
    assert revert_data_from_exception(ValueError("unrelated")) is None
    return True
