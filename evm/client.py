"""Typed client of `BtcCollateralLoan` (and the linked `EtherSwap`).

Two ways to make a call, one preparation:

- `LoanContractClient.<call>(…)` validates the arguments, computes the exact `value` from the chain
  (processing fee, amount + bond, repayment amount) and returns a `PreparedTransaction`: `to`, hex `data`,
  integer `value`, `chain_id`, optional `gas`. A browser wallet signs it (`as_wallet_request(sender)` gives the EIP-1193
  `eth_sendTransaction` parameters). With `sender=` the call is dry-run first (`eth_call`), so a call that
  would revert raises `ContractRevert` with the decoded reason before anybody pays gas.
- `send(prepared, account)` signs it with a server-held key (the lender's automation): dry run, gas estimate,
  nonce, legacy (type 0, `gasPrice`) on Rootstock or EIP-1559 elsewhere, wait for the receipt, and raise
  `ContractRevert` if it was mined but reverted.

Reads return dataclasses: `get_loan(id) -> Loan` (status as `LoanStatus`, bytes32 as `bytes`), `parameters()`,
`loan_count()`, `locked_balance()`.

The borrower's side binds the terms B was shown (PROTOCOL.md): `request_loan` names the parameters version, and
`accept_loan_offer` (and, given `terms=`, `attempt_repayment`, `withdraw_repayment_attempt`, `cancel_request`) first
checks the loan's snapshot against `evm.terms.BorrowerTerms`, and the accept cutoff from the loan's own parameters,
refusing with `BorrowerStepRefused(reason)` before anything is signed or sent.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from hashlib import sha256
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import is_address, is_checksum_address, keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.logs import DISCARD
from web3.types import TxReceipt

from .artifacts import Artifacts, load_artifacts
from .connection import LEGACY_ONLY_CHAIN_IDS as ROOTSTOCK_CHAIN_IDS
from .connection import uses_legacy_transactions
from .errors import (
    BorrowerStepRefused,
    ContractRevert,
    InvalidArgument,
    NodeUnavailable,
    RevertDecoder,
    RpcError,
    TransactionFailed,
    revert_data_from_exception,
    revert_data_from_rpc_error,
)
from .nonces import PROCESS_NONCES, NonceAllocator
from .parameters import FIELDS, UINT32, UINT64, ProtocolParameters, as_bytes32, as_uint
from .terms import BorrowerTerms, check_loan_terms

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
GAS_MARGIN_PERCENT = 20  # added to eth_estimateGas: state can move between estimate and inclusion
DEFAULT_RECEIPT_TIMEOUT = 180.0  # seconds; Rootstock blocks come every ~30 s
ACCEPT_PREIMAGE_HEX_CHARS = 64  # the last ABI word of acceptLoanOffer's calldata: pB


class LoanStatus(enum.IntEnum):
    """`BtcCollateralLoan.LoanStatus`, same order (the ABI encodes it as uint8)."""

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

    @property
    def solidity_name(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))

    def __str__(self) -> str:
        return self.solidity_name

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        LoanStatus.REPAID,
        LoanStatus.CANCELLED,
        LoanStatus.OFFER_EXPIRED,
        LoanStatus.DEFAULTED,
        LoanStatus.REPAYMENT_REFUNDED,
    }
)


def revert_decoder(artifacts: Artifacts | None = None) -> RevertDecoder:
    """Decoder for both contracts' errors (plus OpenZeppelin and Solidity built-ins)."""
    artifacts = artifacts or load_artifacts()
    return RevertDecoder.from_abis(artifacts.ether_swap.abi, artifacts.loan.abi, enum_types={"current": LoanStatus})


# ---------------------------------------------------------------------------------------------------- values


def rootstock_checksum_address(address: str, chain_id: int) -> str:
    """EIP-1191 checksum (EIP-55 with the chain id mixed into the hash), as Rootstock wallets display it."""
    body = address.lower().removeprefix("0x")
    digest = keccak(text=f"{chain_id}0x{body}").hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(body))


def as_address(value: Any, what: str = "address") -> str:
    """A checksummed (EIP-55) address. All-lowercase (or all-uppercase) hex is accepted; mixed case must carry a
    valid checksum, EIP-55 or Rootstock's EIP-1191 (chain 30 or 31): a wrong one usually means a typo."""
    if not isinstance(value, str) or not is_address(value):
        raise InvalidArgument(f"{what} must be a 20-byte hex address, got {value!r}")
    body = value[2:] if value.startswith(("0x", "0X")) else value
    mixed_case = body != body.lower() and body != body.upper()
    if mixed_case and not (
        is_checksum_address(value)
        or any(value == rootstock_checksum_address(value, chain) for chain in ROOTSTOCK_CHAIN_IDS)
    ):
        raise InvalidArgument(f"{what} {value} has an invalid EIP-55 (or Rootstock EIP-1191) checksum")
    return to_checksum_address(value)


def as_loan_id(value: Any) -> int:
    loan_id = as_uint(value, "loan id")
    if loan_id == 0:
        raise InvalidArgument("loan id must be positive (loan ids start at 1)")
    return loan_id


def as_preimage(value: Any, what: str, expected_hash: bytes | None = None) -> bytes:
    preimage = as_bytes32(value, what)
    if expected_hash is not None and sha256(preimage).digest() != expected_hash:
        raise InvalidArgument(f"{what} does not hash (SHA-256) to 0x{expected_hash.hex()}")
    return preimage


# ------------------------------------------------------------------------------------------ data classes


@dataclass(frozen=True)
class PreparedTransaction:
    """A contract call ready to sign. `to` is None only for a contract creation. Money is integer wei."""

    to: str | None
    data: str  # 0x-prefixed hex
    value: int
    chain_id: int
    gas: int | None = None
    method: str = ""  # e.g. "acceptLoanOffer(3)", for logs and screens

    def __post_init__(self) -> None:
        if self.to is not None:
            object.__setattr__(self, "to", as_address(self.to, "to"))
        if not isinstance(self.data, str) or not self.data.startswith("0x"):
            raise InvalidArgument("data must be 0x-prefixed hex")
        try:
            bytes.fromhex(self.data[2:])
        except ValueError:
            raise InvalidArgument(f"data is not hex: {self.data[:20]!r}…") from None
        as_uint(self.value, "value")
        as_uint(self.chain_id, "chain id")
        if self.gas is not None:
            as_uint(self.gas, "gas", UINT64)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable (wei as an exact integer; note that JavaScript's JSON.parse loses integers above
        2**53, so a browser should use `as_wallet_request` or read `value` as a string)."""
        return {
            "to": self.to,
            "data": self.data,
            "value": self.value,
            "value_str": str(self.value),
            "chain_id": self.chain_id,
            "gas": self.gas,
            "method": self.method,
        }

    def as_wallet_request(self, sender: str) -> dict[str, str]:
        """Parameters for EIP-1193 `eth_sendTransaction` (quantities as hex strings, exact for any amount).
        On Rootstock it asks for a legacy (type 0) transaction, which is all Rootstock accepts."""
        request = {
            "from": as_address(sender, "sender"),
            "data": self.data,
            "value": hex(self.value),
            "chainId": hex(self.chain_id),
        }
        if self.to is not None:
            request["to"] = self.to
        if self.gas is not None:
            request["gas"] = hex(self.gas)
        if uses_legacy_transactions(self.chain_id):
            request["type"] = "0x0"
        return request


@dataclass(frozen=True)
class Loan:
    """`BtcCollateralLoan.Loan` plus its id. Block numbers are 0 until the step happened."""

    loan_id: int
    borrower: str
    lender: str
    status: LoanStatus
    amount: int
    bond: int
    processing_fee: int
    repayment_amount: int
    borrower_btc_pubkey: bytes
    lender_btc_pubkey: bytes
    borrower_hash: bytes
    lender_hash: bytes
    escrow_txid: bytes
    escrow_vout: int
    escrow_sats: int
    request_block: int
    offer_block: int
    activation_block: int
    repayment_block: int
    parameters_version: int
    params: ProtocolParameters

    @classmethod
    def from_abi(cls, loan_id: int, raw: Sequence[Any]) -> Loan:
        (
            borrower,
            lender,
            status,
            amount,
            bond,
            processing_fee,
            repayment_amount,
            borrower_btc_pubkey,
            lender_btc_pubkey,
            borrower_hash,
            lender_hash,
            escrow_txid,
            escrow_vout,
            escrow_sats,
            request_block,
            offer_block,
            activation_block,
            repayment_block,
            parameters_version,
            params,
        ) = raw
        return cls(
            loan_id=loan_id,
            borrower=to_checksum_address(borrower),
            lender=to_checksum_address(lender),
            status=LoanStatus(status),
            amount=amount,
            bond=bond,
            processing_fee=processing_fee,
            repayment_amount=repayment_amount,
            borrower_btc_pubkey=bytes(borrower_btc_pubkey),
            lender_btc_pubkey=bytes(lender_btc_pubkey),
            borrower_hash=bytes(borrower_hash),
            lender_hash=bytes(lender_hash),
            escrow_txid=bytes(escrow_txid),
            escrow_vout=escrow_vout,
            escrow_sats=escrow_sats,
            request_block=request_block,
            offer_block=offer_block,
            activation_block=activation_block,
            repayment_block=repayment_block,
            parameters_version=parameters_version,
            params=ProtocolParameters.from_abi(params),
        )

    @property
    def offer_deadline_block(self) -> int | None:
        """B may accept while block < this; L may withdraw the offer from it on."""
        return self.params.offer_deadline(self.offer_block) if self.offer_block else None

    @property
    def repayment_deadline_block(self) -> int | None:
        """Repayment is possible while block < this; L may mark the default from it on."""
        return self.params.repayment_deadline(self.activation_block) if self.activation_block else None

    @property
    def acceptance_deadline_block(self) -> int | None:
        """L may accept the repayment while block < this; B may withdraw it from it on."""
        return self.params.acceptance_deadline(self.repayment_block) if self.repayment_block else None

    @property
    def last_accept_start_block(self) -> int | None:
        """B's client may start an accept while the block it would be mined in (head + 1) is ≤ this: the offer
        deadline minus the loan's own accept cutoff (PROTOCOL.md lifecycle step 6)."""
        return self.params.last_accept_start_block(self.offer_block) if self.offer_block else None


# ---------------------------------------------------------------------------------------------- sending

#: `send(on_signed=...)`: called with (nonce, tx hash, signed transaction bytes) before the node gets them.
OnSigned = Callable[[int, bytes, bytes], None]


def wait_for_receipt(
    w3: Web3, tx_hash: bytes, *, timeout: float = DEFAULT_RECEIPT_TIMEOUT, poll_interval: float = 0.01
) -> TxReceipt:
    """Poll until the transaction is mined. Some nodes (anvil) answer `null` for a moment after sending."""
    deadline = time.monotonic() + timeout
    interval = poll_interval
    while True:
        try:
            receipt = w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            receipt = None
        if receipt is not None:
            return receipt
        if time.monotonic() >= deadline:
            raise TransactionFailed(
                f"transaction 0x{bytes(tx_hash).hex()} was not mined within {timeout:.0f}s; it may still be "
                "pending: do not resend blindly, look it up first",
                tx_hash=bytes(tx_hash),
            )
        time.sleep(interval)
        interval = min(interval * 2, 2.0)


def _call_object(prepared: PreparedTransaction, sender: str) -> dict[str, Any]:
    call: dict[str, Any] = {
        "from": as_address(sender, "sender"),
        "data": prepared.data,
        "value": hex(prepared.value),
    }
    if prepared.to is not None:
        call["to"] = prepared.to
    return call


def _simulate(w3: Web3, method: str, call: dict[str, Any], block: int | str | None, decoder: RevertDecoder) -> Any:
    """Run eth_call / eth_estimateGas; a revert becomes `ContractRevert`. "pending" simulates the block the
    transaction would go into (with "latest", `block.number` is one less, so a deadline check would be off by
    one). A node that does not take "pending" is asked about "latest"; eth_estimateGas is finally asked without
    a block (its block parameter is optional, and some nodes refuse it)."""
    block_id = hex(block) if isinstance(block, int) else block
    response = _rpc(w3, method, [call] if block_id is None else [call, block_id])
    error = response.get("error")
    if error is None:
        return response.get("result")
    data = revert_data_from_rpc_error(error)
    if data is not None:
        raise decoder.decode(data)
    if block_id == "pending":
        return _simulate(w3, method, call, "latest", decoder)
    if block_id == "latest" and method == "eth_estimateGas":
        return _simulate(w3, method, call, None, decoder)
    raise RpcError(method, error)


def dry_run(
    w3: Web3, prepared: PreparedTransaction, sender: str, decoder: RevertDecoder, block: int | str = "pending"
) -> bytes:
    """`eth_call` the transaction from `sender`: its return data, or `ContractRevert` with the reason."""
    result = _simulate(w3, "eth_call", _call_object(prepared, sender), block, decoder)
    return bytes(HexBytes(result or "0x"))


def estimate_gas(w3: Web3, prepared: PreparedTransaction, sender: str, decoder: RevertDecoder) -> int:
    """eth_estimateGas plus a margin; a revert raises `ContractRevert`."""
    result = _simulate(w3, "eth_estimateGas", _call_object(prepared, sender), "pending", decoder)
    estimate = int(result, 16)
    return estimate + estimate * GAS_MARGIN_PERCENT // 100


def _rpc(w3: Web3, method: str, params: list[Any]) -> dict[str, Any]:
    try:
        response = w3.provider.make_request(method, params)
    except OSError as exc:
        raise NodeUnavailable(f"{method} failed: {exc}") from exc
    if not isinstance(response, dict):
        raise NodeUnavailable(f"{method}: the node answered {response!r}")
    return response


# A lost nonce race (another sender took the nonce first): safe to re-sign with a fresh nonce.
_NONCE_RACE_MARKERS = ("nonce too low", "replacement transaction underpriced")
# The node already has this exact signed transaction: it is ours, re-signing with a new nonce would pay twice.
_ALREADY_KNOWN_MARKERS = ("already known", "known transaction", "already imported")


def send(
    w3: Web3,
    prepared: PreparedTransaction,
    account: LocalAccount,
    *,
    decoder: RevertDecoder | None = None,
    legacy: bool | None = None,
    gas_price: int | None = None,
    check: bool = True,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
    nonces: NonceAllocator | None = None,
    on_signed: OnSigned | None = None,
) -> TxReceipt:
    """Sign `prepared` with `account`, send it and wait for the receipt.

    - `check` (default): dry-run first, so a revert raises `ContractRevert` without spending gas.
    - `legacy`: type 0 with `gasPrice` (default: on Rootstock, chain ids 30/31); otherwise EIP-1559.
    - Nonce: from `nonces` (`evm.nonces`), under a lease on the sender held until the node has the transaction:
      by default a per-process lock and the node's pending count (one sending process); with several processes
      pass a shared allocator (`loans.nonces.DatabaseNonceAllocator`). A lost race ("nonce too low") is
      re-signed with a higher nonce; "already known" is never re-signed (that would pay twice).
    - `on_signed(nonce, tx_hash, signed_tx)`: called after signing and before the node is given the transaction
      (still under the nonce lease), e.g. to record the signed transaction durably so a process that dies next
      sends that very transaction again (`submit_signed`) instead of signing a second one. If it raises, nothing is
      sent and the nonce stays free. A lost nonce race re-signs, so it may be called again with a higher nonce
      (the earlier transaction can then never be mined: its nonce is another's).
    - Raises `ContractRevert` (with `tx_hash`) when the transaction was mined but reverted.
    """
    decoder = decoder or revert_decoder()
    chain_id = int(w3.eth.chain_id)
    if prepared.chain_id != chain_id:
        raise InvalidArgument(
            f"the transaction is for chain id {prepared.chain_id} but the node serves {chain_id}: refusing to sign"
        )
    if legacy is None:
        legacy = uses_legacy_transactions(chain_id)
    sender = account.address
    if check:
        dry_run(w3, prepared, sender, decoder)
    gas = prepared.gas if prepared.gas is not None else estimate_gas(w3, prepared, sender, decoder)
    tx: dict[str, Any] = {"chainId": chain_id, "data": prepared.data, "value": prepared.value, "gas": gas}
    if prepared.to is not None:
        tx["to"] = prepared.to
    if legacy:
        tx["gasPrice"] = gas_price if gas_price is not None else int(w3.eth.gas_price)
    else:
        if gas_price is not None:
            raise InvalidArgument("gas_price is for legacy transactions; EIP-1559 fees come from the node")
        base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)
        priority = int(w3.eth.max_priority_fee)
        tx["type"] = 2
        tx["maxPriorityFeePerGas"] = priority
        tx["maxFeePerGas"] = 2 * base_fee + priority

    tx_hash = _sign_and_submit(w3, tx, account, nonces or PROCESS_NONCES, on_signed)
    receipt = wait_for_receipt(w3, tx_hash, timeout=timeout)
    if receipt["status"] != 1:
        raise _explain_failure(w3, prepared, sender, decoder, receipt, tx_hash, gas)
    return receipt


def _submit(w3: Web3, signed_tx: bytes) -> bytes:
    """Hand a signed transaction to the node (the one place that does)."""
    return bytes(w3.eth.send_raw_transaction(signed_tx))


def _sign_and_submit(
    w3: Web3,
    tx: dict[str, Any],
    account: LocalAccount,
    nonces: NonceAllocator,
    on_signed: OnSigned | None = None,
) -> bytes:
    attempts = 3
    with nonces.lease(w3, int(tx["chainId"]), account.address) as lease:
        for attempt in range(attempts):
            nonce = tx["nonce"] = lease.next_nonce()
            signed = account.sign_transaction(tx)
            if on_signed is not None:
                on_signed(nonce, bytes(signed.hash), bytes(signed.raw_transaction))
            try:
                tx_hash = _submit(w3, bytes(signed.raw_transaction))
            except Web3RPCError as exc:
                message = str(exc).lower()
                if any(marker in message for marker in _ALREADY_KNOWN_MARKERS):
                    lease.accepted(nonce, bytes(signed.hash))
                    return bytes(signed.hash)
                if attempt + 1 < attempts and any(marker in message for marker in _NONCE_RACE_MARKERS):
                    lease.taken(nonce)
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise TransactionFailed(f"the node refused the transaction: {exc}") from exc
            lease.accepted(nonce, tx_hash)
            return tx_hash
    raise AssertionError("unreachable")  # pragma: no cover


class SubmitOutcome(enum.Enum):
    """What the node said to a signed transaction handed to it again (`submit_signed`)."""

    ACCEPTED = "accepted"  # in the node's pool now (or already was)
    NONCE_USED = "nonce_used"  # its nonce is taken by another transaction of the sender: it can never be mined


def submit_signed(w3: Web3, signed_tx: bytes) -> SubmitOutcome:
    """Give the node a transaction signed earlier (the same bytes, never re-signed). "Already known" is
    `ACCEPTED`; "nonce too low" `NONCE_USED` (look the hash up first: a mined transaction also reads so);
    any other refusal raises `TransactionFailed`, an unreachable node `NodeUnavailable`."""
    try:
        _submit(w3, bytes(signed_tx))
    except Web3RPCError as exc:
        message = str(exc).lower()
        if any(marker in message for marker in _ALREADY_KNOWN_MARKERS):
            return SubmitOutcome.ACCEPTED
        if any(marker in message for marker in _NONCE_RACE_MARKERS):
            return SubmitOutcome.NONCE_USED
        raise TransactionFailed(f"the node refused the transaction: {exc}") from exc
    except OSError as exc:
        raise NodeUnavailable(f"eth_sendRawTransaction failed: {exc}") from exc
    return SubmitOutcome.ACCEPTED


def _explain_failure(
    w3: Web3,
    prepared: PreparedTransaction,
    sender: str,
    decoder: RevertDecoder,
    receipt: TxReceipt,
    tx_hash: bytes,
    gas_limit: int,
) -> Exception:
    """Replay a reverted transaction to recover the revert reason: on the state before its block, then on the
    current state (a replay runs with a different block number, so a deadline revert may show on the second)."""
    block_number = int(receipt["blockNumber"])
    for block in (block_number - 1, "latest"):
        try:
            dry_run(w3, prepared, sender, decoder, block=block)
        except ContractRevert as revert:
            return revert.with_tx_hash(tx_hash)
        except (NodeUnavailable, RpcError):
            continue  # e.g. the node pruned that state
    return TransactionFailed(
        f"transaction 0x{tx_hash.hex()} ({prepared.method or 'call'}) failed in block {block_number} "
        f"(gas used {receipt['gasUsed']} of {gas_limit}); replaying it does not revert: out of gas?",
        tx_hash=tx_hash,
    )


def check_accept_offer(loan: Loan, *, next_block: int) -> None:
    """B's accept may start for `loan` in `next_block` (the head + 1): the loan is Offered (``not_offered``) and at
    least the loan's own `accept_cutoff_blocks` are left in its offer window (``accept_cutoff``); else
    `BorrowerStepRefused`. A reverted accept still publishes pB: this runs before anything is signed."""
    if loan.status is not LoanStatus.OFFERED:
        raise BorrowerStepRefused(
            "not_offered", f"loan {loan.loan_id} is {loan.status}, not Offered: an accept would reveal pB and fail"
        )
    if not loan.params.may_start_accept(loan.offer_block, next_block):
        blocks_left = loan.params.accept_blocks_left(loan.offer_block, next_block)
        raise BorrowerStepRefused(
            "accept_cutoff",
            f"the offer for loan {loan.loan_id} closes at block {loan.offer_deadline_block}: an accept sent now "
            f"could be mined in {max(blocks_left, 0)} blocks at most (blocks {next_block}..), fewer than the "
            f"loan's accept cutoff of {loan.params.accept_cutoff_blocks} (the last block to start one was "
            f"{loan.last_accept_start_block}); a late accept reveals the preimage and may still fail",
        )


# ------------------------------------------------------------------------------------------------ client


@dataclass
class LoanContractClient:
    """Calls and reads of one deployment. Build it with a `Web3` from `evm.connection.connect`."""

    w3: Web3
    loan_address: str
    ether_swap_address: str | None = None
    artifacts: Artifacts = field(default_factory=load_artifacts)
    legacy: bool | None = None  # None: legacy on Rootstock only
    nonces: NonceAllocator | None = None  # None: evm.nonces.PROCESS_NONCES (one sending process)

    def __post_init__(self) -> None:
        self.loan_address = as_address(self.loan_address, "loan contract address")
        if self.ether_swap_address is not None:
            self.ether_swap_address = as_address(self.ether_swap_address, "EtherSwap address")
        self.loan = self.w3.eth.contract(address=self.loan_address, abi=list(self.artifacts.loan.abi))
        self.decoder = revert_decoder(self.artifacts)

    @classmethod
    def from_deployment(cls, w3: Web3, deployment, **kwargs: Any) -> LoanContractClient:
        """For an `evm.deploy.Deployment`; refuses a node on another chain than the deployment's."""
        actual = int(w3.eth.chain_id)
        if actual != deployment.chain_id:
            raise InvalidArgument(
                f"the deployment is on chain {deployment.chain_id}, but the node serves chain {actual}"
            )
        return cls(w3, deployment.loan_address, deployment.ether_swap_address, **kwargs)

    @cached_property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    @cached_property
    def ether_swap(self):
        address = self.ether_swap_address or self._read(self.loan.functions.etherSwap())
        return self.w3.eth.contract(address=as_address(address), abi=list(self.artifacts.ether_swap.abi))

    # -- reads ----------------------------------------------------------------------------------------------

    def _read(self, call, block: int | str = "latest") -> Any:
        try:
            return call.call(block_identifier=block)
        except ContractLogicError as exc:
            raise self.decoder.decode(revert_data_from_exception(exc)) from None
        except OSError as exc:
            raise NodeUnavailable(f"reading {call.fn_name} failed: {exc}") from exc

    def get_loan(self, loan_id: int, *, block: int | str = "latest") -> Loan:
        loan_id = as_loan_id(loan_id)
        return Loan.from_abi(loan_id, self._read(self.loan.functions.getLoan(loan_id), block))

    def parameters(self, *, block: int | str = "latest") -> ProtocolParameters:
        """The parameters new requests get (existing loans keep their `Loan.params`)."""
        return ProtocolParameters.from_abi(self._read(self.loan.functions.parameters(), block))

    def parameters_version(self, *, block: int | str = "latest") -> int:
        return int(self._read(self.loan.functions.parametersVersion(), block))

    def loan_count(self) -> int:
        return int(self._read(self.loan.functions.loanCount()))

    def locked_balance(self) -> int:
        """Wei the loan contract holds for loans (processing fees and bonds)."""
        return int(self._read(self.loan.functions.lockedBalance()))

    def owner(self) -> str:
        return to_checksum_address(self._read(self.loan.functions.owner()))

    def pending_owner(self) -> str:
        """The account a two-step ownership transfer waits for (the zero address when none)."""
        return to_checksum_address(self._read(self.loan.functions.pendingOwner()))

    def hash_used(self, hash_: bytes | str) -> bool:
        """Whether a hash is reserved: a lender hash from its commit on, a borrower hash from the offer made under it
        on (a request alone reserves nothing). Reserved hashes are refused by `requestLoan`, `commitLenderHash` and
        `extendLoanOffer`, for good: a preimage backs money in one loan only."""
        return bool(self._read(self.loan.functions.hashUsed(as_bytes32(hash_, "hash"))))

    def linked_loan_contract(self) -> str:
        """EtherSwap's `loanContract()` (must equal `loan_address` for a sound deployment)."""
        return to_checksum_address(self._read(self.ether_swap.functions.loanContract()))

    def swap_exists(
        self, *, preimage_hash: bytes, amount: int, claim_address: str, refund_address: str, timelock: int
    ) -> bool:
        """Whether EtherSwap holds this exact lock (the money of an offer or a repayment)."""
        swap_hash = self._read(
            self.ether_swap.functions.hashValues(
                as_bytes32(preimage_hash, "preimage hash"),
                as_uint(amount, "amount"),
                as_address(claim_address, "claim address"),
                as_address(refund_address, "refund address"),
                as_uint(timelock, "timelock"),
            )
        )
        return bool(self._read(self.ether_swap.functions.swaps(swap_hash)))

    # -- preparing calls ------------------------------------------------------------------------------------

    def _prepare(
        self, fn_name: str, args: list[Any], value: int, sender: str | None, label: str
    ) -> PreparedTransaction:
        data = self.loan.encode_abi(fn_name, args=args)
        prepared = PreparedTransaction(
            to=self.loan_address, data=data, value=value, chain_id=self.chain_id, method=label
        )
        if sender is not None:
            dry_run(self.w3, prepared, sender, self.decoder)
            gas = estimate_gas(self.w3, prepared, sender, self.decoder)
            prepared = PreparedTransaction(
                to=prepared.to, data=data, value=value, chain_id=self.chain_id, gas=gas, method=label
            )
        return prepared

    def request_loan(
        self,
        *,
        amount: int,
        borrower_btc_pubkey: bytes | str,
        borrower_hash: bytes | str,
        escrow_txid: bytes | str,
        escrow_vout: int,
        escrow_sats: int,
        parameters_version: int,
        parameters: ProtocolParameters | None = None,
        sender: str | None = None,
    ) -> PreparedTransaction:
        """Borrower. `parameters_version` is the version B was shown; the contract refuses the request
        (`ParametersVersionMismatch`) if another one is in force when it is mined, and this refuses it locally
        (`BorrowerStepRefused`, reason ``wrong_parameters_version``) if another one is in force now. `parameters`,
        when given, are the values B was shown: they must be that version's values (``wrong_parameters``).
        `value` is that version's processing fee. `escrow_txid` is stored as given (32 bytes): pass the txid in
        the byte order it is displayed (`bytes.fromhex(txid_hex)`), and read it back the same way."""
        shown_version = as_uint(parameters_version, "parameters_version")
        block = int(self.w3.eth.block_number)  # both reads from one block: a version and its own values
        in_force = int(self._read(self.loan.functions.parametersVersion(), block))
        if shown_version != in_force:
            raise BorrowerStepRefused(
                "wrong_parameters_version",
                f"the borrower was shown parameters version {shown_version}, but version {in_force} is in force: "
                "show the borrower the new terms first",
            )
        params = self.parameters(block=block)
        if parameters is not None and parameters != params:
            differing = tuple(name for name, _, _, _ in FIELDS if getattr(parameters, name) != getattr(params, name))
            raise BorrowerStepRefused(
                "wrong_parameters",
                f"the values shown as parameters version {shown_version} are not that version's: "
                f"{', '.join(differing)} differ",
                fields=differing,
            )
        params.check_amount(as_uint(amount, "amount"))
        pubkey = as_bytes32(borrower_btc_pubkey, "borrower_btc_pubkey")
        hash_b = as_bytes32(borrower_hash, "borrower_hash")
        txid = as_bytes32(escrow_txid, "escrow_txid")
        for value, what in (
            (pubkey, "borrower_btc_pubkey"),
            (hash_b, "borrower_hash"),
            (txid, "escrow_txid"),
        ):
            if value == bytes(32):
                raise InvalidArgument(f"{what} must not be zero")
        vout = as_uint(escrow_vout, "escrow_vout", UINT32)
        sats = as_uint(escrow_sats, "escrow_sats", UINT64)
        if sats == 0:
            raise InvalidArgument("escrow_sats must be positive")
        return self._prepare(
            "requestLoan",
            [amount, pubkey, hash_b, txid, vout, sats, shown_version],
            params.processing_fee_wei,
            sender,
            f"requestLoan({amount})",
        )

    def request_loan_with_terms(self, terms: BorrowerTerms, *, sender: str | None = None) -> PreparedTransaction:
        """`request_loan` for the terms B was shown (keep `terms` for the later steps). With `sender`, it must be
        `terms.borrower`."""
        if sender is not None and as_address(sender, "sender") != terms.borrower:
            raise InvalidArgument(f"the terms are for borrower {terms.borrower}, not for sender {sender}")
        return self.request_loan(
            amount=terms.amount_wei,
            borrower_btc_pubkey=terms.borrower_btc_pubkey,
            borrower_hash=terms.borrower_hash,
            escrow_txid=terms.escrow_txid,
            escrow_vout=terms.escrow_vout,
            escrow_sats=terms.escrow_sats,
            parameters_version=terms.parameters_version,
            parameters=terms.parameters,
            sender=sender,
        )

    def borrower_terms(
        self,
        *,
        borrower: str,
        amount: int,
        borrower_btc_pubkey: bytes | str,
        borrower_hash: bytes | str,
        escrow_txid: bytes | str,
        escrow_vout: int,
        escrow_sats: int,
    ) -> BorrowerTerms:
        """Terms for a new request under the parameters in force now (version and values read from one block):
        what the borrower is about to be shown. Show `terms.parameters`, then request with
        `request_loan_with_terms`."""
        block = int(self.w3.eth.block_number)
        return BorrowerTerms(
            borrower=borrower,
            amount_wei=amount,
            borrower_btc_pubkey=borrower_btc_pubkey,
            borrower_hash=borrower_hash,
            escrow_txid=escrow_txid,
            escrow_vout=escrow_vout,
            escrow_sats=escrow_sats,
            parameters_version=int(self._read(self.loan.functions.parametersVersion(), block)),
            parameters=self.parameters(block=block),
        )

    def _borrower_loan(self, loan_id: int, terms: BorrowerTerms | None, *, block: int | str = "latest") -> Loan:
        """The loan's snapshot, checked against the borrower's terms when there are any."""
        loan = self.get_loan(loan_id, block=block)
        if terms is not None:
            check_loan_terms(loan, terms)
        return loan

    def cancel_request(
        self, loan_id: int, *, terms: BorrowerTerms | None = None, sender: str | None = None
    ) -> PreparedTransaction:
        """Borrower, while Requested: the processing fee goes back. With `terms`, the loan must be the one they
        describe (a wrong loan id is refused with `BorrowerStepRefused`); without, any of the sender's loans."""
        loan_id = as_loan_id(loan_id)
        if terms is not None:
            self._borrower_loan(loan_id, terms)
        return self._prepare("cancelRequest", [loan_id], 0, sender, f"cancelRequest({loan_id})")

    def commit_lender_hash(
        self, loan_id: int, lender_hash: bytes | str, *, sender: str | None = None
    ) -> PreparedTransaction:
        """Lender, while Requested."""
        loan_id = as_loan_id(loan_id)
        hash_l = as_bytes32(lender_hash, "lender_hash")
        if hash_l == bytes(32):
            raise InvalidArgument("lender_hash must not be zero")
        return self._prepare("commitLenderHash", [loan_id, hash_l], 0, sender, f"commitLenderHash({loan_id})")

    def extend_loan_offer(self, loan_id: int, *, sender: str | None = None) -> PreparedTransaction:
        """Lender, while Requested with hL set. `value` = amount + bond (the loan's parameters)."""
        loan = self.get_loan(loan_id)
        value = loan.params.offer_value(loan.amount)
        return self._prepare("extendLoanOffer", [loan.loan_id], value, sender, f"extendLoanOffer({loan.loan_id})")

    def accept_loan_offer(
        self,
        loan_id: int,
        borrower_preimage: bytes | str,
        *,
        terms: BorrowerTerms,
        sender: str | None = None,
    ) -> PreparedTransaction:
        """Borrower, while Offered and before the offer deadline.

        A reverted accept still publishes pB (the lender could then lock the escrow into TX_1 without paying), so
        this refuses locally, before anything is signed (`BorrowerStepRefused`, see `evm.terms`): a loan whose
        snapshot is not what `terms` asked for, a loan that is not Offered (``not_offered``), an offer with fewer
        than the loan's own `accept_cutoff_blocks` blocks left (``accept_cutoff``; counted from the block the
        accept would be mined in, head + 1, see `ProtocolParameters.accept_blocks_left`), and a preimage whose
        SHA-256 is not the stored hB (`InvalidArgument`). The loan and the head are read at one block. Sign and
        send the result at once: the cutoff was checked for the next block, not for whenever it is signed.
        """
        head = int(self.w3.eth.block_number)
        loan = self._borrower_loan(loan_id, terms, block=head)
        preimage = as_preimage(borrower_preimage, "borrower_preimage", loan.borrower_hash)
        check_accept_offer(loan, next_block=head + 1)
        return self._prepare("acceptLoanOffer", [loan.loan_id, preimage], 0, sender, f"acceptLoanOffer({loan.loan_id})")

    def accept_offer_checked(self, loan_id: int, *, terms: BorrowerTerms) -> tuple[Loan, int]:
        """Every check `accept_loan_offer` makes except the preimage's, at one block: (the loan, the head).
        Raises `BorrowerStepRefused` (the terms' reasons, ``not_offered``, ``accept_cutoff``)."""
        head = int(self.w3.eth.block_number)
        loan = self._borrower_loan(loan_id, terms, block=head)
        check_accept_offer(loan, next_block=head + 1)
        return loan, head

    def accept_loan_offer_template(self, loan_id: int, *, terms: BorrowerTerms) -> PreparedTransaction:
        """`acceptLoanOffer` for a wallet that holds pB and the server does not: the same checks as
        `accept_loan_offer`, and `data` ends before the preimage word (`ACCEPT_PREIMAGE_HEX_CHARS` hex characters
        short): the wallet appends pB, 32 bytes as 64 hex characters, and signs at once (the cutoff was checked for
        the next block). No dry run and no gas estimate: both need pB."""
        loan, _ = self.accept_offer_checked(loan_id, terms=terms)
        data = self.loan.encode_abi("acceptLoanOffer", args=[loan.loan_id, bytes(32)])
        return PreparedTransaction(
            to=self.loan_address,
            data=data[:-ACCEPT_PREIMAGE_HEX_CHARS],
            value=0,
            chain_id=self.chain_id,
            method=f"acceptLoanOffer({loan.loan_id})",
        )

    def withdraw_loan_offer(self, loan_id: int, *, sender: str | None = None) -> PreparedTransaction:
        """Lender, while Offered, from the offer deadline on: amount, bond and the processing fee to the lender."""
        loan_id = as_loan_id(loan_id)
        return self._prepare("withdrawLoanOffer", [loan_id], 0, sender, f"withdrawLoanOffer({loan_id})")

    def attempt_repayment(
        self, loan_id: int, *, terms: BorrowerTerms | None = None, sender: str | None = None
    ) -> PreparedTransaction:
        """Anyone, while Active and before the repayment deadline. `value` = the loan's repayment amount. The
        borrower's app passes `terms`: the loan must be the one they describe, repaying what B agreed to
        (`BorrowerStepRefused` otherwise, before any coin moves); a third party without terms pays what the
        chain says."""
        loan = self._borrower_loan(loan_id, terms)
        return self._prepare(
            "attemptRepayment",
            [loan.loan_id],
            loan.repayment_amount,
            sender,
            f"attemptRepayment({loan.loan_id})",
        )

    def accept_loan_repayment(
        self, loan_id: int, lender_preimage: bytes | str, *, sender: str | None = None
    ) -> PreparedTransaction:
        """Lender, while RepaymentInProgress and before the acceptance deadline; checks SHA-256(pL) = hL."""
        loan = self.get_loan(loan_id)
        preimage = as_preimage(lender_preimage, "lender_preimage", loan.lender_hash)
        return self._prepare(
            "acceptLoanRepayment", [loan.loan_id, preimage], 0, sender, f"acceptLoanRepayment({loan.loan_id})"
        )

    def withdraw_repayment_attempt(
        self, loan_id: int, *, terms: BorrowerTerms | None = None, sender: str | None = None
    ) -> PreparedTransaction:
        """Borrower, while RepaymentInProgress, from the acceptance deadline on: repayment + bond to B. With
        `terms`, the loan must be the one they describe."""
        loan_id = as_loan_id(loan_id)
        if terms is not None:
            self._borrower_loan(loan_id, terms)
        return self._prepare("withdrawRepaymentAttempt", [loan_id], 0, sender, f"withdrawRepaymentAttempt({loan_id})")

    def mark_as_defaulted(self, loan_id: int, *, sender: str | None = None) -> PreparedTransaction:
        """Lender, while Active, from the repayment deadline on: the bond back to L."""
        loan_id = as_loan_id(loan_id)
        return self._prepare("markAsDefaulted", [loan_id], 0, sender, f"markAsDefaulted({loan_id})")

    def update_parameters(self, parameters: ProtocolParameters, *, sender: str | None = None) -> PreparedTransaction:
        """Owner. Checked with the contract's rules first (`InvalidParameters` names every broken one)."""
        parameters.validate()
        return self._prepare("updateParameters", [parameters.to_abi()], 0, sender, "updateParameters")

    def transfer_ownership(self, new_owner: str, *, sender: str | None = None) -> PreparedTransaction:
        """Owner: start handing the lender role to `new_owner` (who must `accept_ownership`). The owner-only
        calls of loans in flight pass to the new owner (who then needs the lender's preimages); their payouts
        still go to each loan's recorded `lender`."""
        address = as_address(new_owner, "new owner")
        return self._prepare("transferOwnership", [address], 0, sender, f"transferOwnership({address})")

    def accept_ownership(self, *, sender: str | None = None) -> PreparedTransaction:
        """The pending owner completes the transfer."""
        return self._prepare("acceptOwnership", [], 0, sender, "acceptOwnership")

    # -- sending with a server-held key ---------------------------------------------------------------------

    def send(
        self,
        prepared: PreparedTransaction,
        account: LocalAccount,
        *,
        check: bool = True,
        gas_price: int | None = None,
        timeout: float = DEFAULT_RECEIPT_TIMEOUT,
        on_signed: OnSigned | None = None,
    ) -> TxReceipt:
        """See `evm.client.send`; uses this client's decoder, legacy setting and nonce allocator."""
        return send(
            self.w3,
            prepared,
            account,
            decoder=self.decoder,
            legacy=self.legacy,
            gas_price=gas_price,
            check=check,
            timeout=timeout,
            nonces=self.nonces,
            on_signed=on_signed,
        )

    def loan_id_from_receipt(self, receipt: TxReceipt) -> int:
        """The id of the loan a `requestLoan` receipt created (from its LoanRequested log)."""
        events = self.loan.events.LoanRequested().process_receipt(receipt, errors=DISCARD)
        if len(events) != 1:
            raise InvalidArgument(f"expected one LoanRequested event in the receipt, found {len(events)}")
        return int(events[0]["args"]["loanId"])


__all__: Sequence[str] = (
    "ACCEPT_PREIMAGE_HEX_CHARS",
    "FINAL_STATUSES",
    "BorrowerTerms",
    "Loan",
    "LoanContractClient",
    "LoanStatus",
    "OnSigned",
    "PreparedTransaction",
    "SubmitOutcome",
    "as_address",
    "check_accept_offer",
    "dry_run",
    "estimate_gas",
    "revert_decoder",
    "send",
    "submit_signed",
    "wait_for_receipt",
)
