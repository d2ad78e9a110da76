"""Test helpers for the contract suite: artifacts, deployment, transactions with exact gas accounting, reverts.

Everything here talks to a real anvil node through web3; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import Any

from eth_abi import encode
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError

CONTRACTS_DIR = Path(__file__).resolve().parent.parent
# CONTRACTS_BUILD_DIR lets the suite run against artifacts compiled elsewhere (e.g. a deliberately broken mutant,
# to see the tests fail); by default the committed artifacts.
BUILD_DIR = Path(os.environ.get("CONTRACTS_BUILD_DIR") or CONTRACTS_DIR / "build")

# Gas for transactions we expect to revert (sent without estimation so that they are mined in a known block).
REVERT_GAS = 1_500_000


class Status(IntEnum):
    NONE = 0
    REQUESTED = 1
    OFFERED = 2
    ACTIVE = 3
    REPAYMENT_IN_PROGRESS = 4
    REPAID = 5
    CANCELLED = 6
    OFFER_EXPIRED = 7
    DEFAULTED = 8
    REPAYMENT_REFUNDED = 9


TERMINAL = {Status.REPAID, Status.CANCELLED, Status.OFFER_EXPIRED, Status.DEFAULTED, Status.REPAYMENT_REFUNDED}


@dataclass(frozen=True)
class Params:
    """Mirror of BtcCollateralLoan.Parameters, field for field and in order."""

    offer_window_blocks: int = 1000
    request_to_offer_allowance_blocks: int = 100
    escrow_timelock_btc_blocks: int = 100
    loan_duration_blocks: int = 540_000
    repayment_window_blocks: int = 1500
    collateral_timelock_btc_blocks: int = 30_000
    evm_blocks_per_btc_block: int = 20
    safety_btc_blocks: int = 6
    processing_fee_wei: int = 10**15
    bond_percent: int = 10
    origination_fee_bps: int = 100
    interest_bps: int = 500
    blocks_per_year: int = 1_051_200
    min_amount_wei: int = 5 * 10**15
    max_amount_wei: int = 100 * 10**18
    min_collateral_ratio_bps: int = 10_000
    drift_margin_bps: int = 1_000
    accept_cutoff_blocks: int = 250
    lender_btc_pubkey: bytes = bytes.fromhex("64b4b84f42da9bdb84f7eda2de12524516686e73849645627fb7a034c79c81c8")

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)

    def with_(self, **changes: Any) -> Params:
        return replace(self, **changes)

    def repayment_for(self, amount: int) -> int:
        return amount + amount * self.interest_bps * self.loan_duration_blocks // (10000 * self.blocks_per_year)

    def bond_for(self, amount: int) -> int:
        return amount * self.bond_percent // 100


DEFAULT_PARAMS = Params()
# Short windows so that every deadline can be reached with anvil_mine in a few milliseconds.
# Ordering rules with m = 1.1: 1*20 = 20 > (10 + 5) * 1.1 = 16.5; 10*20 = 200 > (40 + 12) * 1.1 + 6*20 = 177.2;
# accept cutoff 2 in [1, t_B - 1].
FAST_PARAMS = Params(
    offer_window_blocks=10,
    request_to_offer_allowance_blocks=5,
    escrow_timelock_btc_blocks=1,
    loan_duration_blocks=40,
    repayment_window_blocks=12,
    collateral_timelock_btc_blocks=10,
    accept_cutoff_blocks=2,
)


def load_artifact(name: str, subdir: str = "") -> dict:
    return json.loads((BUILD_DIR / subdir / f"{name}.json").read_text())


def error_selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def encode_error(abi: list[dict], name: str, *args: Any) -> str:
    """The exact revert data of custom error `name(args)` as 0x-hex, built from the ABI."""
    matches = [item for item in abi if item["type"] == "error" and item["name"] == name]
    assert len(matches) == 1, f"error {name} not in ABI"
    types = [inp["type"] for inp in matches[0]["inputs"]]
    data = error_selector(f"{name}({','.join(types)})") + encode(types, list(args))
    return "0x" + data.hex()


def new_preimage() -> tuple[bytes, bytes]:
    preimage = secrets.token_bytes(32)
    return preimage, hashlib.sha256(preimage).digest()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass
class Chain:
    """A web3 connection with snapshot/mine helpers and a per-account ledger of gas spent."""

    w3: Web3
    gas_spent: dict[str, int] = field(default_factory=dict)

    # ---------------------------------------------------------------- blocks
    @property
    def block(self) -> int:
        return self.w3.eth.block_number

    def mine(self, blocks: int) -> None:
        if blocks <= 0:
            return
        response = self.w3.provider.make_request("anvil_mine", [hex(blocks)])
        assert "error" not in response, response

    def mine_until_next_is(self, block_number: int) -> None:
        """Mine empty blocks so that the next transaction is included in block `block_number`."""
        current = self.block
        assert block_number > current, f"block {block_number} is already mined (at {current})"
        self.mine(block_number - current - 1)
        assert self.block == block_number - 1

    def snapshot(self) -> str:
        response = self.w3.provider.make_request("evm_snapshot", [])
        assert "error" not in response, response
        return response["result"]

    def revert_to(self, snapshot_id: str) -> None:
        response = self.w3.provider.make_request("evm_revert", [snapshot_id])
        assert response.get("result") is True, response

    # ---------------------------------------------------------------- money
    def balance(self, address: str) -> int:
        return self.w3.eth.get_balance(address)

    def balances(self, *addresses: str) -> dict[str, int]:
        return {a: self.balance(a) for a in addresses}

    def spent(self, address: str) -> int:
        return self.gas_spent.get(address, 0)

    def net_changes(self, before: dict[str, int], spent_before: dict[str, int]) -> dict[str, int]:
        """Balance change of each account since `before`, gas excluded (added back exactly from receipts)."""
        return {a: self.balance(a) - before[a] + self.spent(a) - spent_before.get(a, 0) for a in before}

    def wait(self, tx_hash: Any) -> Any:
        """The receipt, polled every 5 ms (anvil may answer null right after sending; web3's default poll is 100 ms)."""
        return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.005)

    def _charge(self, sender: str, receipt: Any) -> None:
        cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
        self.gas_spent[sender] = self.gas_spent.get(sender, 0) + cost

    # ---------------------------------------------------------------- transactions
    def transact(self, call: Any, sender: str, value: int = 0) -> Any:
        """Send a contract call that must succeed; returns the receipt."""
        # Estimate against the block the transaction will be mined in ('pending'), not the latest one, so that a
        # call that becomes valid exactly at the next block is not refused by the estimate.
        gas = call.estimate_gas({"from": sender, "value": value}, block_identifier="pending")
        tx_hash = call.transact({"from": sender, "value": value, "gas": gas + gas // 5})
        receipt = self.wait(tx_hash)
        self._charge(sender, receipt)
        assert receipt["status"] == 1, f"transaction reverted: {receipt}"
        return receipt

    def revert_data(self, call: Any, sender: str, value: int = 0) -> str:
        """Revert data of `call` if it were mined in the next block (eth_call on 'pending')."""
        try:
            call.call({"from": sender, "value": value}, block_identifier="pending")
        except (ContractCustomError, ContractPanicError) as exc:
            return exc.data if isinstance(exc.data, str) else "0x" + bytes(exc.data).hex()
        except ContractLogicError as exc:
            return exc.data if isinstance(exc.data, str) else str(exc.data)
        raise AssertionError("call did not revert")

    def expect_revert(self, call: Any, sender: str, expected_data: str, value: int = 0) -> Any:
        """Assert that `call` reverts with exactly `expected_data` in the next block, then mine it in that block
        (without gas estimation) and assert the mined transaction failed too. Returns the failed receipt."""
        assert self.revert_data(call, sender, value).lower() == expected_data.lower()
        next_block = self.block + 1
        tx = call.build_transaction({"from": sender, "value": value, "gas": REVERT_GAS})
        tx.pop("nonce", None)
        tx_hash = self.w3.eth.send_transaction(tx)
        receipt = self.wait(tx_hash)
        self._charge(sender, receipt)
        assert receipt["status"] == 0
        assert receipt["blockNumber"] == next_block
        return receipt


@dataclass
class Deployment:
    chain: Chain
    swap: Contract
    loan: Contract
    params: Params
    owner: str

    @property
    def w3(self) -> Web3:
        return self.chain.w3

    def err(self, name: str, *args: Any) -> str:
        abi = self.loan.abi if any(i.get("name") == name for i in self.loan.abi) else self.swap.abi
        return encode_error(abi, name, *args)

    def swap_err(self, name: str, *args: Any) -> str:
        return encode_error(self.swap.abi, name, *args)

    def loan_struct(self, loan_id: int) -> dict:
        return as_dict(self.loan.functions.getLoan(loan_id).call(block_identifier="latest"))

    def parameters(self) -> dict:
        return as_dict(self.loan.functions.parameters().call())

    def version(self) -> int:
        """The parameters version in force (what a borrower is shown now)."""
        return self.loan.functions.parametersVersion().call()

    def status(self, loan_id: int) -> Status:
        return Status(self.loan_struct(loan_id)["status"])

    def held(self) -> tuple[int, int]:
        """(wei held by the loan contract, wei held by EtherSwap)."""
        return self.chain.balance(self.loan.address), self.chain.balance(self.swap.address)


def as_dict(value: Any) -> Any:
    """Named tuples (decode_tuples=True) to plain dicts, recursively."""
    if hasattr(value, "_asdict"):
        return {k: as_dict(v) for k, v in value._asdict().items()}
    return value


def deploy(chain: Chain, owner: str, params: Params = DEFAULT_PARAMS) -> Deployment:
    w3 = chain.w3
    swap_art = load_artifact("EtherSwap")
    loan_art = load_artifact("BtcCollateralLoan")
    swap_factory = w3.eth.contract(abi=swap_art["abi"], bytecode=swap_art["bytecode"])
    swap_receipt = chain.transact(swap_factory.constructor(), owner)
    swap = w3.eth.contract(address=swap_receipt["contractAddress"], abi=swap_art["abi"], decode_tuples=True)
    loan_factory = w3.eth.contract(abi=loan_art["abi"], bytecode=loan_art["bytecode"])
    loan_receipt = chain.transact(loan_factory.constructor(swap.address, params.as_tuple()), owner)
    loan = w3.eth.contract(address=loan_receipt["contractAddress"], abi=loan_art["abi"], decode_tuples=True)
    chain.transact(swap.functions.setLoanContract(loan.address), owner)
    return Deployment(chain=chain, swap=swap, loan=loan, params=params, owner=owner)


ESCROW_TXID = bytes.fromhex("aa" * 32)
BORROWER_XONLY = bytes.fromhex("274903288d231552de4c2c270d1c3f71fe5c78315374830c3b12a6654ee03afa")


@dataclass
class LoanFlow:
    """Drives one loan through its transitions with fresh 32-byte preimages; every step must succeed."""

    dep: Deployment
    borrower: str
    amount: int
    loan_id: int = 0
    p_b: bytes = b""
    h_b: bytes = b""
    p_l: bytes = b""
    h_l: bytes = b""
    receipts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.p_b:
            self.p_b, self.h_b = new_preimage()
        if not self.p_l:
            self.p_l, self.h_l = new_preimage()

    @property
    def fns(self) -> Any:
        return self.dep.loan.functions

    @property
    def chain(self) -> Chain:
        return self.dep.chain

    def request(self, fee: int | None = None) -> LoanFlow:
        """Request under the parameters in force (the version it shows is the one in force now)."""
        fee = self.dep.parameters()["processingFeeWei"] if fee is None else fee
        version = self.dep.version()
        call = self.fns.requestLoan(self.amount, BORROWER_XONLY, self.h_b, ESCROW_TXID, 1, 2_000_000, version)
        self.receipts["request"] = self.chain.transact(call, self.borrower, fee)
        self.loan_id = self.dep.loan.functions.loanCount().call()
        return self

    def commit(self) -> LoanFlow:
        self.receipts["commit"] = self.chain.transact(self.fns.commitLenderHash(self.loan_id, self.h_l), self.dep.owner)
        return self

    def offer(self, sender: str | None = None) -> LoanFlow:
        loan = self.dep.loan_struct(self.loan_id)
        value = loan["amount"] + loan["amount"] * loan["params"]["bondPercent"] // 100
        self.receipts["offer"] = self.chain.transact(
            self.fns.extendLoanOffer(self.loan_id), sender or self.dep.owner, value
        )
        return self

    def accept(self) -> LoanFlow:
        self.receipts["accept"] = self.chain.transact(self.fns.acceptLoanOffer(self.loan_id, self.p_b), self.borrower)
        return self

    def repay(self, payer: str | None = None) -> LoanFlow:
        value = self.dep.loan_struct(self.loan_id)["repaymentAmount"]
        self.receipts["repay"] = self.chain.transact(
            self.fns.attemptRepayment(self.loan_id), payer or self.borrower, value
        )
        return self

    def accept_repayment(self) -> LoanFlow:
        self.receipts["accept_repayment"] = self.chain.transact(
            self.fns.acceptLoanRepayment(self.loan_id, self.p_l), self.dep.owner
        )
        return self

    def to_active(self) -> LoanFlow:
        return self.request().commit().offer().accept()

    def to_repayment(self, payer: str | None = None) -> LoanFlow:
        return self.to_active().repay(payer)

    def block_of(self, step: str) -> int:
        return self.receipts[step]["blockNumber"]
