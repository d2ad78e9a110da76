"""Every contract call of both parties, checked here before anything is signed: prepared for the caller's wallet,
or (the lender's calls, ``send=True``) signed and sent with the lender's stored EVM key.

Each service checks, before it prepares anything: who may act (``loans.permissions``), the loan's state ON THE
CONTRACT (``getLoan``, not only the row, which lags the watcher), the deadline from the loan's own parameters
against the chain's head (a call sent now is mined in head + 1 at the earliest, as ``eth_call`` on "pending"
simulates), and its inputs; then it prepares the call with the sender's dry run and gas estimate. A refusal is a
``LoanServiceError`` with one of the action's codes (``<ACTION>_CODES``; ``PermissionDenied`` for a caller who may
not act) and changes nothing: no ``EvmTransaction`` row, no ``LenderPreimage`` row.

The result is an ``EvmCall``: ``prepared`` (``evm.client.PreparedTransaction``: ``to``, ``data``, ``value`` in wei,
``chain_id``, ``gas``, ``method``), the ``EvmTransaction`` the server sent (``send=True``) or None, ``needs`` (what
the wallet must add: ``"borrower_preimage"`` for the accept, whose calldata stops before pB, which the server
never sees before it is on chain) and ``sender`` (the account that must sign). ``EvmTransaction`` rows never move a
loan: the watcher's final ``EvmEvent`` rows do.

``evm_transaction_report`` records a transaction a party's wallet sent, with its receipt as read at once.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound, Web3Exception

from evm.client import (
    ACCEPT_PREIMAGE_HEX_CHARS,
    LoanContractClient,
    LoanStatus,
    OnSigned,
    PreparedTransaction,
)
from evm.client import (
    Loan as ChainLoan,
)
from evm.errors import (
    BorrowerStepRefused,
    ChainIdMismatch,
    ContractRevert,
    InvalidArgument,
    NodeUnavailable,
    RpcError,
    TransactionFailed,
)
from evm.events import default_decoder
from evm.terms import TERMS_REFUSAL_REASONS, BorrowerTerms

from ..chains import loan_contract_client
from ..errors import LoanServiceError
from ..escrow import ESCROW_PROBLEMS, ROOM_PROBLEMS, escrow_check
from ..models import BorrowerSignature, EvmTransaction, Loan, User
from ..permissions import can_prepare_lender_hash, is_lender, is_loan_borrower, is_operator, require
from . import lender_secrets
from .borrower_actions import on_chain_parameters
from .operators import new_loans_paused

# ------------------------------------------------------------------------------------------------ codes

_NODE = ("evm_node_unavailable", "contract_would_revert")
_CHAIN_STATE = ("not_on_chain", "wrong_state")
_BORROWER = ("no_evm_address", *_NODE, *_CHAIN_STATE)
_TERMS = TERMS_REFUSAL_REASONS  # the loan's snapshot is not what the borrower asked for (evm.terms)
_LENDER = ("no_evm_address", "not_contract_owner", "no_lender_key", "contract_reverted", *_NODE, *_CHAIN_STATE)

LOAN_REQUEST_CODES: tuple[str, ...] = (
    *_BORROWER,
    "escrow_not_confirmed",
    "new_loans_paused",
    "wrong_parameters_version",
    "wrong_parameters",
)
LOAN_OFFER_ACCEPT_CODES: tuple[str, ...] = (*_BORROWER, *_TERMS, "not_offered", "accept_cutoff")
LOAN_REPAYMENT_CODES: tuple[str, ...] = (*_BORROWER, *_TERMS, "too_late")
LOAN_REQUEST_CANCEL_CODES: tuple[str, ...] = (*_BORROWER, *_TERMS)
LOAN_REPAYMENT_WITHDRAW_CODES: tuple[str, ...] = (*_BORROWER, *_TERMS, "too_early")
LENDER_HASH_COMMIT_CODES: tuple[str, ...] = (
    *_LENDER,
    "lender_hash_committed",
    "lender_hash_elsewhere",
    *(problem for problem in ESCROW_PROBLEMS if problem not in ROOM_PROBLEMS),
)
LOAN_OFFER_EXTEND_CODES: tuple[str, ...] = (*_LENDER, "lender_hash_missing", "presignature_missing", *ESCROW_PROBLEMS)
LOAN_REPAYMENT_ACCEPT_CODES: tuple[str, ...] = (
    *_LENDER,
    "server_key_required",
    "too_late",
    "no_lender_preimage",
    "lender_preimage_not_due",
    "lender_secret_mismatch",
)
LOAN_OFFER_WITHDRAW_CODES: tuple[str, ...] = (*_LENDER, "too_early")
LOAN_DEFAULT_MARK_CODES: tuple[str, ...] = (*_LENDER, "too_early")
EVM_TRANSACTION_REPORT_CODES: tuple[str, ...] = (
    "invalid_tx_hash",
    "unknown_transaction",
    "not_this_contract",
    "not_this_loan",
    "not_your_transaction",
    "evm_node_unavailable",
)
EVM_CALL_CODES: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            *LOAN_REQUEST_CODES,
            *LOAN_OFFER_ACCEPT_CODES,
            *LOAN_REPAYMENT_CODES,
            *LOAN_REQUEST_CANCEL_CODES,
            *LOAN_REPAYMENT_WITHDRAW_CODES,
            *LENDER_HASH_COMMIT_CODES,
            *LOAN_OFFER_EXTEND_CODES,
            *LOAN_REPAYMENT_ACCEPT_CODES,
            *LOAN_OFFER_WITHDRAW_CODES,
            *LOAN_DEFAULT_MARK_CODES,
            *EVM_TRANSACTION_REPORT_CODES,
        )
    )
)

BORROWER_PREIMAGE = "borrower_preimage"  # EvmCall.needs of the accept: the wallet appends pB (32 bytes, hex)


@dataclass(frozen=True)
class EvmCall:
    """A prepared contract call; ``transaction`` when the server sent it; ``needs`` what the wallet must add first;
    ``sender`` the account that signs it (the wallet's ``from``)."""

    prepared: PreparedTransaction
    transaction: EvmTransaction | None = None
    needs: str | None = None
    sender: str = ""


def _refuse(code: str, message: str) -> LoanServiceError:
    return LoanServiceError(message, code=code)


@contextmanager
def _chain_errors() -> Iterator[None]:
    """The node's and the client's refusals as the service's codes."""
    try:
        yield
    except BorrowerStepRefused as refused:
        raise _refuse(refused.reason, str(refused.args[0])) from None
    except ContractRevert as revert:
        raise _refuse("contract_would_revert", f"the contract would refuse this call: {revert}") from None
    except (NodeUnavailable, RpcError, ChainIdMismatch, OSError, Web3Exception) as error:
        raise _refuse("evm_node_unavailable", f"the EVM node could not be asked: {error}") from None


@dataclass(frozen=True)
class _Chain:
    client: LoanContractClient
    head: int
    loan: ChainLoan

    @property
    def next_block(self) -> int:
        return self.head + 1


def _chain(loan: Loan) -> _Chain:
    """The loan as the contract holds it and the head, read at one block."""
    if loan.contract_loan_id is None:
        raise _refuse("not_on_chain", f"loan {loan.pk} is not on the contract yet (it is a {loan.status})")
    with _chain_errors():
        client = loan_contract_client(deployment=loan.deployment)
        head = int(client.w3.eth.block_number)
        onchain = client.get_loan(loan.contract_loan_id, block=head)
    return _Chain(client, head, onchain)


def _require_status(chain: _Chain, loan: Loan, *allowed: LoanStatus) -> None:
    if chain.loan.status not in allowed:
        names = " or ".join(str(status) for status in allowed)
        raise _refuse("wrong_state", f"loan {loan.pk} is {chain.loan.status} on the contract, not {names}")


def _too_early(chain: _Chain, deadline: int | None, what: str) -> None:
    """From ``deadline`` on only: the block a call sent now is mined in must be at least ``deadline``."""
    if deadline is None or chain.next_block < deadline:
        raise _refuse(
            "too_early", f"{what} opens at block {deadline}; a call sent now is mined in block {chain.next_block}+"
        )


def _too_late(chain: _Chain, deadline: int | None, what: str) -> None:
    """Before ``deadline`` only."""
    if deadline is None or chain.next_block >= deadline:
        raise _refuse(
            "too_late", f"{what} closed at block {deadline}; a call sent now is mined in block {chain.next_block}+"
        )


# ------------------------------------------------------------------------------------------------ borrower


def _borrower_address(loan: Loan, actor: User, what: str) -> str:
    require(is_loan_borrower(actor, loan), f"only the loan's borrower {what}")
    if not actor.evm_address:
        raise _refuse("no_evm_address", "your account has no EVM address: sign in with your wallet first")
    return to_checksum_address(actor.evm_address)


def _borrower_terms(loan: Loan, borrower: str, *, parameters_version: int) -> BorrowerTerms:
    """What the borrower asked for, from the loan row (the request's values and the snapshot they were shown).

    ``parameters_version`` is the contract's number for the values of the loan's snapshot: the desk numbers its
    own ``ProtocolParameters`` versions, which need not be the contract's, so the binding is to the values (every
    one is compared) under the number the contract gives them."""
    if loan.escrow_txid is None or loan.escrow_vout is None or loan.escrow_sats is None:
        raise _refuse("escrow_not_confirmed", f"loan {loan.pk} names no escrow output yet")
    return BorrowerTerms(
        borrower=borrower,
        amount_wei=loan.amount_wei,
        borrower_btc_pubkey=bytes.fromhex(loan.borrower_btc_pubkey),
        borrower_hash=bytes.fromhex(loan.borrower_hash),
        escrow_txid=bytes.fromhex(loan.escrow_txid),
        escrow_vout=loan.escrow_vout,
        escrow_sats=loan.escrow_sats,
        parameters_version=parameters_version,
        parameters=on_chain_parameters(loan),  # type: ignore[arg-type]  # the loan's snapshot of every field
    )


def loan_request_prepare(*, loan: Loan, actor: User) -> EvmCall:
    """``requestLoan`` for a draft whose escrow is confirmed, with the loan's own parameters version and values
    (``wrong_parameters_version`` when another version is in force: make a new draft). Value: the processing fee."""
    sender = _borrower_address(loan, actor, "requests its loan")
    loan.refresh_from_db()
    if loan.status != Loan.Status.DRAFT or loan.contract_loan_id is not None:
        raise _refuse("wrong_state", f"loan {loan.pk} is {loan.status}: only a draft is requested")
    if loan.bitcoin_status != Loan.BitcoinStatus.ESCROW_CONFIRMED or loan.escrow_txid is None:
        raise _refuse("escrow_not_confirmed", f"loan {loan.pk}'s escrow is {loan.bitcoin_status}: fund it first")
    paused = new_loans_paused(deployment=loan.deployment)
    if paused is not None:
        raise _refuse("new_loans_paused", f"the desk is not taking new loans for now: {paused.paused_reason}")
    with _chain_errors():
        client = loan_contract_client(deployment=loan.deployment)
        block = int(client.w3.eth.block_number)
        in_force = client.parameters(block=block)
        version = client.parameters_version(block=block)
    if in_force != on_chain_parameters(loan):
        raise _refuse(
            "wrong_parameters_version",
            f"the contract's parameters in force (version {version}) are not the ones loan {loan.pk} was drafted "
            "with: make a new draft with the terms in force",
        )
    terms = _borrower_terms(loan, sender, parameters_version=version)
    with _chain_errors():
        prepared = client.request_loan_with_terms(terms, sender=sender)
    return EvmCall(prepared=prepared, sender=sender)


def loan_offer_accept_prepare(*, loan: Loan, actor: User) -> EvmCall:
    """``acceptLoanOffer`` WITHOUT the preimage: ``prepared.data`` stops before pB's word and ``needs`` is
    ``"borrower_preimage"`` (the wallet appends pB as 64 hex characters and signs at once). Every check of
    ``LoanContractClient.accept_loan_offer`` first: the contract's snapshot against the loan row's terms, Offered
    (``not_offered``), and the loan's accept cutoff for head + 1 (``accept_cutoff``)."""
    sender = _borrower_address(loan, actor, "accepts its offer")
    chain = _chain(loan)
    terms = _borrower_terms(loan, sender, parameters_version=chain.loan.parameters_version)
    with _chain_errors():
        prepared = chain.client.accept_loan_offer_template(loan.contract_loan_id, terms=terms)
    return EvmCall(prepared=prepared, needs=BORROWER_PREIMAGE, sender=sender)


def loan_repayment_prepare(*, loan: Loan, actor: User) -> EvmCall:
    """``attemptRepayment`` while Active and before activation + t_D; value: the loan's repayment amount (the
    terms checked: the amount the borrower agreed to)."""
    sender = _borrower_address(loan, actor, "repays its loan")
    chain = _chain(loan)
    _require_status(chain, loan, LoanStatus.ACTIVE)
    _too_late(chain, chain.loan.repayment_deadline_block, "the repayment")
    terms = _borrower_terms(loan, sender, parameters_version=chain.loan.parameters_version)
    with _chain_errors():
        prepared = chain.client.attempt_repayment(loan.contract_loan_id, terms=terms, sender=sender)
    return EvmCall(prepared=prepared, sender=sender)


def loan_request_cancel_prepare(*, loan: Loan, actor: User) -> EvmCall:
    """``cancelRequest`` while Requested (the processing fee comes back)."""
    sender = _borrower_address(loan, actor, "cancels its request")
    chain = _chain(loan)
    _require_status(chain, loan, LoanStatus.REQUESTED)
    terms = _borrower_terms(loan, sender, parameters_version=chain.loan.parameters_version)
    with _chain_errors():
        prepared = chain.client.cancel_request(loan.contract_loan_id, terms=terms, sender=sender)
    return EvmCall(prepared=prepared, sender=sender)


def loan_repayment_withdraw_prepare(*, loan: Loan, actor: User) -> EvmCall:
    """``withdrawRepaymentAttempt`` while RepaymentInProgress, from the acceptance deadline on (repayment + bond
    back to the borrower)."""
    sender = _borrower_address(loan, actor, "withdraws its repayment")
    chain = _chain(loan)
    _require_status(chain, loan, LoanStatus.REPAYMENT_IN_PROGRESS)
    _too_early(chain, chain.loan.acceptance_deadline_block, "withdrawing the repayment")
    terms = _borrower_terms(loan, sender, parameters_version=chain.loan.parameters_version)
    with _chain_errors():
        prepared = chain.client.withdraw_repayment_attempt(loan.contract_loan_id, terms=terms, sender=sender)
    return EvmCall(prepared=prepared, sender=sender)


# ------------------------------------------------------------------------------------------------ lender


def _lender_sender(loan: Loan, actor: User, chain: _Chain, *, send: bool) -> str:
    """The contract's owner, who signs the lender's calls: the caller's own wallet, or the server's key."""
    with _chain_errors():
        owner = chain.client.owner()
    if not send:
        if not actor.evm_address:
            raise _refuse("no_evm_address", "your account has no EVM address: sign in with the owner's wallet")
        if to_checksum_address(actor.evm_address) != owner:
            raise _refuse(
                "not_contract_owner",
                f"the lender's calls are signed by the contract's owner {owner}, not by {actor.evm_address}",
            )
    return owner


def _require_lender(loan: Loan, actor: User) -> None:
    require(is_lender(actor) or is_operator(actor), "only the lender or an operator makes the lender's calls")
    require(can_prepare_lender_hash(actor, loan), "this loan has another lender")


def _lender_call(
    *,
    loan: Loan,
    actor: User,
    send: bool,
    check: Callable[[_Chain], None],
    prepare: Callable[[_Chain, str], PreparedTransaction],
    on_signed: OnSigned | None = None,
) -> EvmCall:
    """The lender's calls: role, the contract's state (``check``), the sender; then prepare, and send if asked."""
    _require_lender(loan, actor)
    chain = _chain(loan)
    check(chain)
    sender = _lender_sender(loan, actor, chain, send=send)
    account = lender_secrets.lender_evm_account(address=sender) if send else None
    with _chain_errors():
        prepared = prepare(chain, sender)
    if account is None:
        return EvmCall(prepared=prepared, sender=sender)
    transaction = _send(chain, loan, actor, prepared, account, on_signed)
    return EvmCall(prepared=prepared, transaction=transaction, sender=sender)


def _function_name(prepared: PreparedTransaction) -> str:
    return prepared.method.split("(", 1)[0] or "call"


def _send(
    chain: _Chain, loan: Loan, actor: User, prepared: PreparedTransaction, account, on_signed: OnSigned | None = None
) -> EvmTransaction:
    """Sign and send with the server's key (outside any transaction of ours: the nonce lease commits on its own)
    and record the transaction with its receipt. ``on_signed`` (the automation's record, see
    ``evm.client.send``) runs between signing and sending."""
    try:
        receipt = chain.client.send(prepared, account, on_signed=on_signed)
    except ContractRevert as revert:
        if revert.tx_hash is None:
            raise _refuse("contract_would_revert", f"the contract would refuse this call: {revert}") from None
        _record(chain, loan, actor, prepared, revert.tx_hash, sender=account.address, source=_SERVER)
        raise _refuse("contract_reverted", f"the transaction was mined but reverted: {revert}") from None
    except TransactionFailed as failed:
        if failed.tx_hash is None:
            raise _refuse("evm_node_unavailable", f"the node refused the transaction: {failed}") from None
        return _record(chain, loan, actor, prepared, failed.tx_hash, sender=account.address, source=_SERVER)
    except (NodeUnavailable, RpcError, OSError, Web3Exception) as error:
        raise _refuse("evm_node_unavailable", f"the EVM node could not be asked: {error}") from None
    return _record(
        chain, loan, actor, prepared, bytes(receipt["transactionHash"]), sender=account.address, source=_SERVER
    )


_SERVER = EvmTransaction.Source.SERVER_KEY


def _receipt_fields(client: LoanContractClient, tx_hash: bytes) -> dict[str, Any]:
    """Status, block and the loan contract's decoded events, from the receipt if there is one yet."""
    try:
        receipt = client.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    except TransactionNotFound:
        receipt = None
    if receipt is None:
        return {"status": EvmTransaction.Status.PENDING, "block_number": None, "events": []}
    events = default_decoder().decode_receipt(receipt, addresses=[client.loan_address])
    return {
        "status": EvmTransaction.Status.MINED if receipt["status"] == 1 else EvmTransaction.Status.REVERTED,
        "block_number": int(receipt["blockNumber"]),
        "events": [{"name": e.event_name, "log_index": e.log_index, "args": e.json_arguments()} for e in events],
    }


def _record(
    chain: _Chain, loan: Loan, actor: User, prepared: PreparedTransaction, tx_hash: bytes, *, sender: str, source: str
) -> EvmTransaction:
    fields = _receipt_fields(chain.client, tx_hash)
    try:
        nonce = int(chain.client.w3.eth.get_transaction(HexBytes(tx_hash))["nonce"])
    except TransactionNotFound:
        nonce = None
    row, _ = EvmTransaction.objects.update_or_create(
        chain_id=chain.client.chain_id,
        tx_hash=bytes(tx_hash).hex(),
        defaults=fields,
        create_defaults={
            **fields,
            "loan": loan,
            "function": _function_name(prepared),
            "sender": to_checksum_address(sender),
            "nonce": nonce,
            "source": source,
            "reported_by": actor,
        },
    )
    return row


def lender_hash_commit(*, loan: Loan, actor: User, send: bool = False, on_signed: OnSigned | None = None) -> EvmCall:
    """``commitLenderHash`` while Requested, once the escrow check passes (room for the offer is checked at the
    offer): pL made and sealed here (``lender_secrets.lender_hash_commit_prepare``), hL committed. The call is
    dry-run with a stand-in hash before pL is made, so a refusal leaves no preimage behind."""

    def check(chain: _Chain) -> None:
        _require_status(chain, loan, LoanStatus.REQUESTED)
        if chain.loan.lender_hash != bytes(32):
            raise _refuse("lender_hash_committed", f"loan {loan.pk} already has hL on the contract")
        if loan.lender_hash is not None and not _made_here(loan):
            raise _refuse("lender_hash_elsewhere", f"loan {loan.pk} has an hL made elsewhere: its pL is not ours")
        _require_escrow(loan, ignore=ROOM_PROBLEMS)

    def prepare(chain: _Chain, sender: str) -> PreparedTransaction:
        probe = chain.client.commit_lender_hash(loan.contract_loan_id, b"\x01" * 32, sender=sender)
        lender_hash = lender_secrets.lender_hash_commit_prepare(loan=loan, actor=actor)
        return replace(chain.client.commit_lender_hash(loan.contract_loan_id, lender_hash), gas=probe.gas)

    return _lender_call(loan=loan, actor=actor, send=send, check=check, prepare=prepare, on_signed=on_signed)


def _made_here(loan: Loan) -> bool:
    from ..models import LenderPreimage

    return LenderPreimage.objects.filter(loan_id=loan.pk).exists()


def _require_escrow(loan: Loan, *, ignore: tuple[str, ...] = ()) -> None:
    checked = escrow_check(loan=loan)
    problems = checked.problems_except(*ignore)
    if problems:
        raise _refuse(
            problems[0],
            f"loan {loan.pk}'s escrow fails the check: {', '.join(problems)} "
            f"({checked.confirmations} confirmations, {checked.min_btc_blocks_left_for_offer} blocks of t_0 needed)",
        )


def loan_offer_extend(*, loan: Loan, actor: User, send: bool = False, on_signed: OnSigned | None = None) -> EvmCall:
    """``extendLoanOffer`` while Requested with hL on the contract and a verified TX_1 pre-signature stored, once
    the escrow check passes with room for the offer (PROTOCOL.md step 5). Value: amount + bond."""

    def check(chain: _Chain) -> None:
        _require_status(chain, loan, LoanStatus.REQUESTED)
        if chain.loan.lender_hash == bytes(32):
            raise _refuse("lender_hash_missing", f"loan {loan.pk} has no hL on the contract: commit it first")
        signed = BorrowerSignature.objects.filter(
            loan_id=loan.pk, kind=BorrowerSignature.Kind.TX_1, verified_at__isnull=False
        ).exists()
        if not signed:
            raise _refuse("presignature_missing", f"loan {loan.pk} has no verified TX_1 pre-signature")
        _require_escrow(loan)

    def prepare(chain: _Chain, sender: str) -> PreparedTransaction:
        return chain.client.extend_loan_offer(loan.contract_loan_id, sender=sender)

    return _lender_call(loan=loan, actor=actor, send=send, check=check, prepare=prepare, on_signed=on_signed)


class _Hush(logging.Filter):
    """Drops web3's own records (its DEBUG lines print requests and responses whole) in a thread that is handling
    pL before the watcher has seen it on chain: the calldata, the dry run and the receipt all hold it."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "on", False)


_HUSH = _Hush()
for _name in (
    "web3.providers.HTTPProvider",
    "web3.providers.base.JSONBaseProvider",
    "web3.providers.base.BaseProvider",
    "web3.manager.RequestManager",
    "web3._utils.http_session_manager.HTTPSessionManager",
    "web3.providers.IPCProvider",
    "web3.providers.WebSocketProvider",
    "web3.providers.PersistentConnectionProvider",
):
    logging.getLogger(_name).addFilter(_HUSH)


@contextmanager
def _hushed() -> Iterator[None]:
    _HUSH.local.on = True
    try:
        yield
    finally:
        _HUSH.local.on = False


def loan_repayment_accept(*, loan: Loan, actor: User, send: bool = False, on_signed: OnSigned | None = None) -> EvmCall:
    """``acceptLoanRepayment(pL)`` while RepaymentInProgress and before the acceptance deadline, sent with the
    lender's stored key only (``send=True``; wallet mode is refused, ``server_key_required``: an unrevealed pL is
    never returned). pL leaves the vault here (``lender_secrets.lender_preimage_reveal``) for the signer; the
    returned ``prepared.data`` stops before pL's word."""

    def check(chain: _Chain) -> None:
        _require_status(chain, loan, LoanStatus.REPAYMENT_IN_PROGRESS)
        _too_late(chain, chain.loan.acceptance_deadline_block, "accepting the repayment")

    def prepare(chain: _Chain, sender: str) -> PreparedTransaction:
        preimage = lender_secrets.lender_preimage_reveal(loan=loan)
        return chain.client.accept_loan_repayment(loan.contract_loan_id, preimage, sender=sender)

    _require_lender(loan, actor)
    if not send:
        raise _refuse(
            "server_key_required",
            "pL never leaves the server before it is on chain: the repayment is accepted with the lender's stored "
            "key (send), not prepared for a wallet",
        )
    with _hushed():  # pL is in the calldata, the dry run and the receipt: no web3 debug line may print them
        call = _lender_call(loan=loan, actor=actor, send=send, check=check, prepare=prepare, on_signed=on_signed)
    # Sent: what is returned no longer holds pL (the watcher records it once the event is final).
    return replace(call, prepared=replace(call.prepared, data=call.prepared.data[:-ACCEPT_PREIMAGE_HEX_CHARS]))


def loan_offer_withdraw(*, loan: Loan, actor: User, send: bool = False, on_signed: OnSigned | None = None) -> EvmCall:
    """``withdrawLoanOffer`` while Offered, from the offer deadline on."""

    def check(chain: _Chain) -> None:
        _require_status(chain, loan, LoanStatus.OFFERED)
        _too_early(chain, chain.loan.offer_deadline_block, "withdrawing the offer")

    def prepare(chain: _Chain, sender: str) -> PreparedTransaction:
        return chain.client.withdraw_loan_offer(loan.contract_loan_id, sender=sender)

    return _lender_call(loan=loan, actor=actor, send=send, check=check, prepare=prepare, on_signed=on_signed)


def loan_default_mark(*, loan: Loan, actor: User, send: bool = False, on_signed: OnSigned | None = None) -> EvmCall:
    """``markAsDefaulted`` while Active, from activation + t_D on."""

    def check(chain: _Chain) -> None:
        _require_status(chain, loan, LoanStatus.ACTIVE)
        _too_early(chain, chain.loan.repayment_deadline_block, "marking the default")

    def prepare(chain: _Chain, sender: str) -> PreparedTransaction:
        return chain.client.mark_as_defaulted(loan.contract_loan_id, sender=sender)

    return _lender_call(loan=loan, actor=actor, send=send, check=check, prepare=prepare, on_signed=on_signed)


# ------------------------------------------------------------------------------------------------ reports

_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


def evm_transaction_report(*, loan: Loan, actor: User, tx_hash: str) -> EvmTransaction:
    """Record a transaction the caller's wallet sent for ``loan`` (its borrower, the lender or an operator): it
    must exist, call the deployment's loan contract about this loan and, for the borrower, come from their
    address. The receipt is read at once (none yet: pending); the same hash again updates the row. It never moves
    the loan (the watcher does, once the event is final)."""
    borrower = is_loan_borrower(actor, loan)
    require(borrower or is_lender(actor) or is_operator(actor), "only the loan's parties report its transactions")
    if not isinstance(tx_hash, str) or not _TX_HASH.match(tx_hash):
        raise _refuse("invalid_tx_hash", "a transaction hash is 0x and 64 hex characters")
    raw_hash = bytes.fromhex(tx_hash[2:])
    with _chain_errors():
        client = loan_contract_client(deployment=loan.deployment)
        try:
            tx = client.w3.eth.get_transaction(HexBytes(raw_hash))
        except TransactionNotFound:
            tx = None
    if tx is None:
        raise _refuse("unknown_transaction", f"the EVM node knows no transaction {tx_hash}")
    to = tx.get("to")
    if to is None or to_checksum_address(to) != client.loan_address:
        raise _refuse("not_this_contract", f"transaction {tx_hash} is not a call of the loan contract")
    sender = to_checksum_address(tx["from"])
    if borrower and (not actor.evm_address or to_checksum_address(actor.evm_address) != sender):
        raise _refuse("not_your_transaction", f"transaction {tx_hash} was sent by {sender}, not by your wallet")
    function, arguments = _decoded_input(client, tx)
    contract_loan_id = arguments.get("loanId")
    if contract_loan_id is not None and contract_loan_id != loan.contract_loan_id:
        raise _refuse("not_this_loan", f"transaction {tx_hash} is about contract loan {contract_loan_id}")
    if contract_loan_id is None and function != "requestLoan":
        raise _refuse("not_this_loan", f"transaction {tx_hash} ({function}) is not about one loan")
    existing = EvmTransaction.objects.filter(chain_id=client.chain_id, tx_hash=raw_hash.hex()).first()
    if existing is not None and existing.loan_id != loan.pk:
        raise _refuse("not_this_loan", f"transaction {tx_hash} is recorded for another loan")
    with _chain_errors():
        fields = _receipt_fields(client, raw_hash)
    row, _ = EvmTransaction.objects.update_or_create(
        chain_id=client.chain_id,
        tx_hash=raw_hash.hex(),
        defaults=fields,
        create_defaults={
            **fields,
            "loan": loan,
            "function": function,
            "sender": sender,
            "nonce": int(tx["nonce"]),
            "source": EvmTransaction.Source.WALLET,
            "reported_by": actor,
        },
    )
    return row


def _decoded_input(client: LoanContractClient, tx: Any) -> tuple[str, dict[str, Any]]:
    try:
        function, arguments = client.loan.decode_function_input(tx["input"])
    except (ValueError, InvalidArgument):
        raise _refuse("not_this_contract", "the transaction calls no function of the loan contract") from None
    return function.fn_name, dict(arguments)


__all__ = [
    "BORROWER_PREIMAGE",
    "EVM_CALL_CODES",
    "EVM_TRANSACTION_REPORT_CODES",
    "LENDER_HASH_COMMIT_CODES",
    "LOAN_DEFAULT_MARK_CODES",
    "LOAN_OFFER_ACCEPT_CODES",
    "LOAN_OFFER_EXTEND_CODES",
    "LOAN_OFFER_WITHDRAW_CODES",
    "LOAN_REPAYMENT_ACCEPT_CODES",
    "LOAN_REPAYMENT_CODES",
    "LOAN_REPAYMENT_WITHDRAW_CODES",
    "LOAN_REQUEST_CANCEL_CODES",
    "LOAN_REQUEST_CODES",
    "EvmCall",
    "evm_transaction_report",
    "lender_hash_commit",
    "loan_default_mark",
    "loan_offer_accept_prepare",
    "loan_offer_extend",
    "loan_offer_withdraw",
    "loan_repayment_accept",
    "loan_repayment_prepare",
    "loan_repayment_withdraw_prepare",
    "loan_request_cancel_prepare",
    "loan_request_prepare",
]
