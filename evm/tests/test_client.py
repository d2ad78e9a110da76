"""The typed client end to end against anvil and the real artifacts: every exit of a loan, the browser-wallet
path (prepared transaction signed by an eth-account key and sent raw), decoded reverts, legacy transactions."""

from __future__ import annotations

import dataclasses
import json

import pytest
from eth_account import Account
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3

from evm.client import (
    ZERO_ADDRESS,
    LoanContractClient,
    LoanStatus,
    PreparedTransaction,
    as_address,
    rootstock_checksum_address,
    wait_for_receipt,
)
from evm.errors import BorrowerStepRefused, ContractRevert, InvalidArgument, RpcError, TransactionFailed
from evm.testing import gas_cost, new_secret

pytestmark = pytest.mark.integration

AMOUNT = 2 * 10**16  # 0.02 rBTC
FEE = 10**15  # default processing fee


def balance(w3, address) -> int:
    return int(w3.eth.get_balance(address))


def held(w3, deployment) -> tuple[int, int]:
    """(loan contract balance, EtherSwap balance)."""
    return balance(w3, deployment.loan_address), balance(w3, deployment.ether_swap_address)


def test_happy_path_to_repaid_moves_exact_amounts(w3, deployment, loan_client, lender, borrower, loan_flow):
    params = loan_client.parameters()
    repayment = params.repayment_amount(AMOUNT)
    bond = params.bond(AMOUNT)
    borrower_start, lender_start = balance(w3, borrower.address), balance(w3, lender.address)
    first_block = w3.eth.block_number + 1

    loan_id, p_b = loan_flow.request(AMOUNT)
    assert loan_id == 1 and loan_client.loan_count() == 1
    loan = loan_client.get_loan(loan_id)
    assert loan.status is LoanStatus.REQUESTED
    assert (loan.amount, loan.processing_fee, loan.repayment_amount) == (AMOUNT, FEE, repayment)
    assert loan.borrower == borrower.address and loan.params == params and loan.parameters_version == 1
    assert loan_client.locked_balance() == FEE and held(w3, deployment) == (FEE, 0)

    p_l = loan_flow.commit(loan_id)
    offer_receipt = loan_flow.offer(loan_id)
    loan = loan_client.get_loan(loan_id)
    assert loan.status is LoanStatus.OFFERED and loan.bond == bond and loan.lender == lender.address
    assert loan.offer_deadline_block == offer_receipt["blockNumber"] + params.offer_window_blocks
    assert held(w3, deployment) == (FEE + bond, AMOUNT)
    assert loan_client.swap_exists(
        preimage_hash=loan.borrower_hash,
        amount=AMOUNT,
        claim_address=borrower.address,
        refund_address=lender.address,
        timelock=loan.offer_deadline_block,
    )

    accept_receipt = loan_flow.accept(loan_id, p_b)
    loan = loan_client.get_loan(loan_id)
    assert loan.status is LoanStatus.ACTIVE and loan.activation_block == accept_receipt["blockNumber"]
    assert loan.repayment_deadline_block == accept_receipt["blockNumber"] + params.loan_duration_blocks
    assert held(w3, deployment) == (bond, 0)  # amount and fee went to the borrower

    repay_receipt = loan_flow.repay(loan_id)
    loan = loan_client.get_loan(loan_id)
    assert loan.status is LoanStatus.REPAYMENT_IN_PROGRESS
    assert loan.acceptance_deadline_block == repay_receipt["blockNumber"] + params.repayment_window_blocks
    assert held(w3, deployment) == (bond, repayment)

    lender_before_accept = balance(w3, lender.address)
    receipt = loan_client.send(loan_client.accept_loan_repayment(loan_id, p_l), lender)
    assert loan_client.get_loan(loan_id).status is LoanStatus.REPAID
    assert held(w3, deployment) == (0, 0) and loan_client.locked_balance() == 0
    assert balance(w3, lender.address) == lender_before_accept + repayment + bond - gas_cost(receipt)

    # Net over the whole loan: the borrower paid the interest and gas, nothing else.
    borrower_gas = sum(gas_cost(w3.eth.get_transaction_receipt(h)) for h in _sent_by(w3, borrower.address, first_block))
    assert balance(w3, borrower.address) == borrower_start + AMOUNT - repayment - borrower_gas
    lender_gas = sum(gas_cost(w3.eth.get_transaction_receipt(h)) for h in _sent_by(w3, lender.address, first_block))
    assert balance(w3, lender.address) == lender_start - AMOUNT + repayment - lender_gas


def _sent_by(w3, address, from_block):
    hashes = []
    for number in range(from_block, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] == address:
                hashes.append(tx["hash"])
    return hashes


def test_cancel_request_refunds_the_fee(w3, deployment, loan_client, borrower, stranger, loan_flow):
    loan_id, _ = loan_flow.request(AMOUNT)
    before = balance(w3, borrower.address)

    with pytest.raises(ContractRevert) as refused:
        loan_client.cancel_request(loan_id, sender=stranger.address)
    assert refused.value.error_name == "NotBorrower"
    assert refused.value.error_args == {"loanId": loan_id, "caller": stranger.address}
    assert str(refused.value) == f"NotBorrower: {stranger.address} is not the borrower of loan {loan_id}"

    receipt = loan_client.send(loan_client.cancel_request(loan_id), borrower)
    assert loan_client.get_loan(loan_id).status is LoanStatus.CANCELLED
    assert balance(w3, borrower.address) == before + FEE - gas_cost(receipt)
    assert held(w3, deployment) == (0, 0)

    with pytest.raises(ContractRevert, match=rf"^WrongStatus: loan {loan_id} is Cancelled$") as again:
        loan_client.send(loan_client.cancel_request(loan_id), borrower)
    assert again.value.error_args["current"] is LoanStatus.CANCELLED


def test_offer_withdrawn_after_the_deadline_returns_amount_and_bond(
    w3, deployment, loan_client, lender, loan_flow, evm_mine
):
    loan_id, _, _ = loan_flow.offered(AMOUNT)
    loan = loan_client.get_loan(loan_id)
    deadline = loan.offer_deadline_block

    evm_mine(deadline - w3.eth.block_number - 2)  # the dry run is evaluated at the next block
    with pytest.raises(ContractRevert) as early:
        loan_client.send(loan_client.withdraw_loan_offer(loan_id), lender)
    assert early.value.error_name == "TooEarly"
    assert early.value.error_args == {"loanId": loan_id, "opensAtBlock": deadline}
    assert str(early.value) == f"TooEarly: loan {loan_id} opens at block {deadline}"

    evm_mine(1)
    before = balance(w3, lender.address)
    receipt = loan_client.send(loan_client.withdraw_loan_offer(loan_id), lender)
    assert receipt["blockNumber"] == deadline  # exactly at the deadline: the lender's side
    assert loan_client.get_loan(loan_id).status is LoanStatus.OFFER_EXPIRED
    # The borrower let the offer lapse: the anti-spam processing fee goes to the lender with amount and bond.
    assert balance(w3, lender.address) == before + AMOUNT + loan.bond + FEE - gas_cost(receipt)
    assert held(w3, deployment) == (0, 0) and loan_client.locked_balance() == 0


def test_a_late_accept_is_refused_before_anything_reveals_the_preimage(
    w3, deployment, loan_client, borrower, loan_flow, evm_mine
):
    loan_id, p_b, _ = loan_flow.offered(AMOUNT)
    terms = loan_flow.terms[loan_id]
    loan = loan_client.get_loan(loan_id)
    deadline, cutoff = loan.offer_deadline_block, loan.params.accept_cutoff_blocks
    assert loan.last_accept_start_block == deadline - cutoff == loan.offer_block + 750
    nonce = w3.eth.get_transaction_count(borrower.address)

    # The accept would be mined in head + 1. With head + 1 = deadline - cutoff, exactly `cutoff` blocks are left
    # (deadline - cutoff .. deadline - 1): still allowed. One block later only cutoff - 1 are: refused.
    evm_mine(loan.last_accept_start_block - 1 - w3.eth.block_number)
    assert loan_client.accept_loan_offer(loan_id, p_b, terms=terms, sender=borrower.address).gas
    evm_mine(1)
    with pytest.raises(BorrowerStepRefused) as refused:
        loan_client.accept_loan_offer(loan_id, p_b, terms=terms, sender=borrower.address)
    assert refused.value.reason == "accept_cutoff"
    assert f"closes at block {deadline}: an accept sent now could be mined in 249 blocks at most" in str(refused.value)

    # The head is one block before the deadline: a dry run at "latest" would pass, but the transaction would be
    # mined at the deadline and revert. The dry run simulates the pending block, so even an accept built without the
    # client's checks is refused before it is sent.
    evm_mine(deadline - 1 - w3.eth.block_number)
    forced = PreparedTransaction(
        to=deployment.loan_address,
        data=loan_client.loan.encode_abi("acceptLoanOffer", args=[loan_id, p_b]),
        value=0,
        chain_id=31337,
    )
    with pytest.raises(ContractRevert, match=rf"^TooLate: loan {loan_id} closed at block {deadline}$"):
        loan_client.send(forced, borrower)
    assert w3.eth.get_transaction_count(borrower.address) == nonce  # nothing was broadcast: pB stays secret
    assert loan_client.get_loan(loan_id).status is LoanStatus.OFFERED


def test_default_after_the_loan_duration(w3, deployment, loan_client, lender, loan_flow, evm_mine):
    short = loan_client.parameters().replace(loan_duration_blocks=300)
    loan_client.send(loan_client.update_parameters(short), lender)
    assert loan_client.parameters_version() == 2
    loan_id, _, _ = loan_flow.active(AMOUNT)
    loan = loan_client.get_loan(loan_id)
    assert loan.params == short and loan.parameters_version == 2
    due = loan.repayment_deadline_block

    evm_mine(due - w3.eth.block_number - 2)
    with pytest.raises(ContractRevert, match=rf"^TooEarly: loan {loan_id} opens at block {due}$"):
        loan_client.send(loan_client.mark_as_defaulted(loan_id), lender)
    evm_mine(1)
    before = balance(w3, lender.address)
    receipt = loan_client.send(loan_client.mark_as_defaulted(loan_id), lender)
    assert receipt["blockNumber"] == due
    assert loan_client.get_loan(loan_id).status is LoanStatus.DEFAULTED
    assert balance(w3, lender.address) == before + loan.bond - gas_cost(receipt)
    assert held(w3, deployment) == (0, 0)

    with pytest.raises(ContractRevert, match=rf"^WrongStatus: loan {loan_id} is Defaulted$"):
        loan_client.attempt_repayment(loan_id, sender=loan_flow.borrower.address)


def test_repayment_refunded_when_the_lender_does_not_accept(
    w3, deployment, loan_client, lender, borrower, loan_flow, evm_mine
):
    loan_id, _, p_l = loan_flow.active(AMOUNT)
    loan_flow.repay(loan_id)
    loan = loan_client.get_loan(loan_id)
    deadline = loan.acceptance_deadline_block

    with pytest.raises(ContractRevert, match=rf"^TooEarly: loan {loan_id} opens at block {deadline}$"):
        loan_client.withdraw_repayment_attempt(loan_id, sender=borrower.address)
    evm_mine(deadline - w3.eth.block_number - 1)
    with pytest.raises(ContractRevert, match=rf"^TooLate: loan {loan_id} closed at block {deadline}$"):
        loan_client.send(loan_client.accept_loan_repayment(loan_id, p_l), lender)

    before = balance(w3, borrower.address)
    receipt = loan_client.send(loan_client.withdraw_repayment_attempt(loan_id), borrower)
    assert receipt["blockNumber"] == deadline
    assert loan_client.get_loan(loan_id).status is LoanStatus.REPAYMENT_REFUNDED
    assert balance(w3, borrower.address) == before + loan.repayment_amount + loan.bond - gas_cost(receipt)
    assert held(w3, deployment) == (0, 0)


def test_browser_wallet_path_signs_prepared_transactions_and_sends_them_raw(w3, deployment, loan_client, borrower):
    """What the frontend does: take the JSON, let the wallet sign, broadcast. Here eth-account is the wallet."""
    _, h_b = new_secret()
    prepared = loan_client.request_loan(
        amount=AMOUNT,
        borrower_btc_pubkey=new_secret()[1],
        borrower_hash=h_b.hex(),  # hex strings are accepted too
        escrow_txid="0x" + new_secret()[1].hex(),
        escrow_vout=0,
        escrow_sats=2_100_000,
        parameters_version=1,
        sender=borrower.address,
    )
    assert prepared.gas is not None and prepared.value == FEE and prepared.chain_id == 31337
    document = json.loads(json.dumps(prepared.as_dict()))
    assert document["value"] == FEE and document["value_str"] == str(FEE) and document["to"] == deployment.loan_address
    wallet = prepared.as_wallet_request(borrower.address.lower())
    assert wallet == {
        "from": borrower.address,
        "to": deployment.loan_address,
        "data": prepared.data,
        "value": hex(FEE),
        "chainId": hex(31337),
        "gas": hex(prepared.gas),
    }

    def wallet_send(tx: PreparedTransaction, *, legacy: bool):
        fields = {
            "to": tx.to,
            "data": tx.data,
            "value": tx.value,
            "chainId": tx.chain_id,
            "gas": tx.gas,
            "nonce": w3.eth.get_transaction_count(borrower.address),
        }
        if legacy:
            fields["gasPrice"] = w3.eth.gas_price
        else:
            fields["maxFeePerGas"] = 2 * w3.eth.get_block("latest")["baseFeePerGas"] + 10**9
            fields["maxPriorityFeePerGas"] = 10**9
        signed = Account.sign_transaction(fields, borrower.key)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        return wait_for_receipt(w3, tx_hash)

    receipt = wallet_send(prepared, legacy=False)
    assert receipt["status"] == 1 and receipt["type"] == 2
    loan_id = loan_client.loan_id_from_receipt(receipt)
    assert loan_client.get_loan(loan_id).borrower_hash == h_b
    assert not loan_client.hash_used(h_b)  # a request reserves nothing (a front-run copy cannot block it)

    cancel = loan_client.cancel_request(loan_id, sender=borrower.address)
    receipt = wallet_send(cancel, legacy=True)  # what a Rootstock wallet sends
    assert receipt["status"] == 1 and receipt["type"] == 0
    assert loan_client.get_loan(loan_id).status is LoanStatus.CANCELLED
    assert not loan_client.hash_used(h_b)  # free for a new request with the same escrow


def test_rootstock_wallet_request_asks_for_a_legacy_transaction():
    prepared = PreparedTransaction(
        to="0x5fbdb2315678afecb367f032d93f642f64180aa3", data="0x01", value=10**20, chain_id=30
    )
    request = prepared.as_wallet_request("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266")
    assert request["type"] == "0x0" and request["value"] == hex(10**20) and "gas" not in request
    assert request["to"] == "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def test_server_key_sends_legacy_transactions_when_asked(w3, deployment, loan_client, lender, loan_flow):
    legacy_client = LoanContractClient(w3, deployment.loan_address, deployment.ether_swap_address, legacy=True)
    loan_id, _ = loan_flow.request(AMOUNT)
    _, h_l = new_secret()
    receipt = legacy_client.send(legacy_client.commit_lender_hash(loan_id, h_l), lender, gas_price=3 * 10**9)
    tx = w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["type"] == 0 and tx["gasPrice"] == 3 * 10**9 and receipt["effectiveGasPrice"] == 3 * 10**9
    assert loan_client.get_loan(loan_id).lender_hash == h_l
    # The default on the development chain is EIP-1559.
    h_b = loan_client.get_loan(loan_id).borrower_hash
    assert not loan_client.hash_used(h_b)
    receipt = loan_client.send(loan_client.extend_loan_offer(loan_id), lender)
    assert w3.eth.get_transaction(receipt["transactionHash"])["type"] == 2
    assert loan_client.hash_used(h_b)  # the offer reserved hB


def test_wrong_caller_wrong_value_and_wrong_preimage_are_decoded_and_change_nothing(
    w3, deployment, loan_client, lender, borrower, stranger, loan_flow
):
    loan_id, _ = loan_flow.request(AMOUNT)
    _, h_l = new_secret()
    state = (balance(w3, stranger.address), w3.eth.get_transaction_count(stranger.address), held(w3, deployment))

    with pytest.raises(ContractRevert) as not_owner:
        loan_client.send(loan_client.commit_lender_hash(loan_id, h_l), stranger)
    assert not_owner.value.error_name == "OwnableUnauthorizedAccount"
    assert str(not_owner.value) == f"OwnableUnauthorizedAccount: {stranger.address} is not the owner"

    loan_client.send(loan_client.commit_lender_hash(loan_id, h_l), lender)
    offer = loan_client.extend_loan_offer(loan_id)
    short = dataclasses.replace(offer, value=offer.value - 1)
    with pytest.raises(ContractRevert) as wrong_value:
        loan_client.send(short, lender)
    assert wrong_value.value.error_name == "WrongValue"
    assert wrong_value.value.error_args == {"expected": offer.value, "sent": offer.value - 1}
    assert str(wrong_value.value) == f"WrongValue: expected {offer.value} wei, sent {offer.value - 1} wei"

    with pytest.raises(ContractRevert, match=r"^LenderHashAlreadySet: loan 1 already has a lender hash$"):
        loan_client.send(loan_client.commit_lender_hash(loan_id, new_secret()[1]), lender)

    # The client refuses a wrong preimage before anything leaves the server (a reverted accept still leaks it).
    loan_client.send(offer, lender)
    with pytest.raises(InvalidArgument, match="does not hash"):
        loan_client.accept_loan_offer(loan_id, new_secret()[0], terms=loan_flow.terms[loan_id])
    # ... and the contract would refuse it too.
    forged = PreparedTransaction(
        to=deployment.loan_address,
        data=loan_client.loan.encode_abi("acceptLoanOffer", args=[loan_id, new_secret()[0]]),
        value=0,
        chain_id=31337,
    )
    with pytest.raises(ContractRevert, match=r"^WrongPreimage: "):
        loan_client.send(forged, borrower)

    assert (
        balance(w3, stranger.address),
        w3.eth.get_transaction_count(stranger.address),
    ) == state[:2]
    assert loan_client.get_loan(loan_id).status is LoanStatus.OFFERED


def test_a_mined_revert_raises_with_the_decoded_reason_and_the_tx_hash(w3, deployment, loan_client, stranger):
    prepared = dataclasses.replace(loan_client.cancel_request(7), gas=200_000)
    before = balance(w3, stranger.address)
    with pytest.raises(ContractRevert) as reverted:
        loan_client.send(prepared, stranger, check=False)
    assert reverted.value.error_name == "UnknownLoan" and reverted.value.error_args == {"loanId": 7}
    assert reverted.value.tx_hash is not None
    receipt = w3.eth.get_transaction_receipt(HexBytes(reverted.value.tx_hash))
    assert receipt["status"] == 0
    assert balance(w3, stranger.address) == before - gas_cost(receipt)  # gas was spent, nothing else


def test_reads_decode_reverts_and_return_typed_values(w3, deployment, loan_client, lender_btc_pubkey):
    with pytest.raises(ContractRevert, match=r"^UnknownLoan: no loan 1$"):
        loan_client.get_loan(1)
    params = loan_client.parameters()
    assert params.lender_btc_pubkey == lender_btc_pubkey and params == deployment.parameters
    assert loan_client.owner() == deployment.deployer
    assert loan_client.linked_loan_contract() == deployment.loan_address
    assert (loan_client.loan_count(), loan_client.locked_balance(), loan_client.parameters_version()) == (0, 0, 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"amount": 10**15}, "outside"),
        ({"amount": 1.5e16}, "must be an integer"),
        ({"amount": True}, "must be an integer"),
        ({"amount": -1}, "between 0"),
        ({"borrower_hash": b"\x01" * 31}, "exactly 32 bytes"),
        ({"borrower_hash": "zz" * 32}, "32 bytes of hex"),
        ({"borrower_hash": bytes(32)}, "must not be zero"),
        ({"escrow_vout": 2**32}, "escrow_vout must be between"),
        ({"escrow_sats": 0}, "escrow_sats must be positive"),
        (
            {"sender": "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266"},
            r"invalid EIP-55 \(or Rootstock EIP-1191\) checksum",
        ),
        ({"sender": "0x1234"}, "20-byte hex address"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_sent(w3, deployment, loan_client, borrower, changes, message):
    arguments = {
        "amount": AMOUNT,
        "borrower_btc_pubkey": b"\x02" * 32,
        "borrower_hash": b"\x03" * 32,
        "escrow_txid": b"\x04" * 32,
        "escrow_vout": 0,
        "escrow_sats": 1,
        "parameters_version": 1,
        "sender": borrower.address,
    } | changes
    with pytest.raises(InvalidArgument, match=message):
        loan_client.request_loan(**arguments)
    assert loan_client.loan_count() == 0


def test_loan_ids_and_preparation_arguments_are_validated(deployment, loan_client, lender):
    with pytest.raises(InvalidArgument, match="loan id must be positive"):
        loan_client.cancel_request(0)
    with pytest.raises(InvalidArgument, match="loan id must be an integer"):
        loan_client.mark_as_defaulted("1")
    with pytest.raises(InvalidArgument, match="lender_hash must not be zero"):
        loan_client.commit_lender_hash(1, bytes(32))
    with pytest.raises(InvalidArgument, match="t_0 \\* ratio"):
        loan_client.update_parameters(loan_client.parameters().replace(offer_window_blocks=5000))


def test_a_client_for_a_deployment_on_another_chain_is_refused(w3, deployment):
    elsewhere = dataclasses.replace(deployment, chain_id=30)
    with pytest.raises(InvalidArgument, match="the deployment is on chain 30, but the node serves chain 31337"):
        LoanContractClient.from_deployment(w3, elsewhere)


def test_send_refuses_a_transaction_for_another_chain(w3, deployment, loan_client, borrower):
    prepared = dataclasses.replace(loan_client.cancel_request(1), chain_id=30)
    nonce = w3.eth.get_transaction_count(borrower.address)
    with pytest.raises(InvalidArgument, match="chain id 30 but the node serves 31337"):
        loan_client.send(prepared, borrower)
    assert w3.eth.get_transaction_count(borrower.address) == nonce


def test_wait_for_receipt_times_out_clearly(w3, deployment):
    with pytest.raises(TransactionFailed, match="was not mined within"):
        wait_for_receipt(w3, b"\x11" * 32, timeout=0.2)


def test_concurrent_sends_from_one_key_get_distinct_nonces(w3, deployment, loan_client, lender, loan_flow):
    """The lender's automation may settle several loans at once from one process."""
    from concurrent.futures import ThreadPoolExecutor

    loan_ids = [loan_flow.request(AMOUNT)[0] for _ in range(6)]
    hashes = {loan_id: new_secret()[1] for loan_id in loan_ids}
    start_nonce = w3.eth.get_transaction_count(lender.address)
    with ThreadPoolExecutor(max_workers=6) as pool:
        receipts = list(
            pool.map(lambda i: loan_client.send(loan_client.commit_lender_hash(i, hashes[i]), lender), loan_ids)
        )
    nonces = sorted(w3.eth.get_transaction(r["transactionHash"])["nonce"] for r in receipts)
    assert nonces == list(range(start_nonce, start_nonce + 6))
    assert all(loan_client.get_loan(i).lender_hash == hashes[i] for i in loan_ids)


def test_a_transaction_that_ran_out_of_gas_is_reported_as_such(w3, deployment, loan_client, borrower, loan_flow):
    loan_id, _ = loan_flow.request(AMOUNT)
    starved = dataclasses.replace(loan_client.cancel_request(loan_id), gas=25_000)
    with pytest.raises(TransactionFailed, match=r"gas used \d+ of 25000\); replaying it does not revert") as failed:
        loan_client.send(starved, borrower, check=False)
    assert w3.eth.get_transaction_receipt(HexBytes(failed.value.tx_hash))["status"] == 0
    assert loan_client.get_loan(loan_id).status is LoanStatus.REQUESTED  # nothing changed but the gas


def test_rootstock_eip1191_checksums_are_accepted_and_normalised():
    # EIP-1191's test vectors for chain 30 (Rootstock mainnet)
    for rsk in (
        "0x5aaEB6053f3e94c9b9a09f33669435E7ef1bEAeD",
        "0xFb6916095cA1Df60bb79ce92cE3EA74c37c5d359",
        "0xDBF03B407c01E7CD3cBea99509D93F8Dddc8C6FB",
    ):
        assert rootstock_checksum_address(rsk.lower(), 30) == rsk
        eip55 = to_checksum_address(rsk)
        assert eip55 != rsk and as_address(rsk) == eip55 == as_address(eip55) == as_address(rsk.lower())
    # A typo (one letter's case flipped) fails both checksums.
    with pytest.raises(InvalidArgument, match=r"invalid EIP-55 \(or Rootstock EIP-1191\) checksum"):
        as_address("0x5aaEB6053f3e94c9b9a09f33669435E7ef1bEAED")


def test_prepared_transactions_refuse_malformed_fields():
    base = {"to": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "data": "0x00", "value": 0, "chain_id": 31}
    for changes, message in (
        ({"data": "00"}, "0x-prefixed"),
        ({"data": "0xzz"}, "not hex"),
        ({"value": 1.0}, "value must be an integer"),
        ({"value": -1}, "value must be between"),
        ({"to": "0x5fbDB2315678afecb367f032d93F642f64180aa3"}, r"invalid EIP-55 \(or Rootstock EIP-1191\) checksum"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            PreparedTransaction(**(base | changes))


def test_an_account_without_funds_gets_a_clear_error_and_nothing_is_sent(w3, deployment, loan_client):
    empty = Account.create()
    prepared = loan_client.request_loan(
        amount=AMOUNT,
        borrower_btc_pubkey=b"\x02" * 32,
        borrower_hash=new_secret()[1],
        escrow_txid=b"\x04" * 32,
        escrow_vout=0,
        escrow_sats=1,
        parameters_version=1,
    )
    with pytest.raises(RpcError, match=r"^eth_call failed: Insufficient funds"):
        loan_client.send(prepared, empty)
    assert loan_client.loan_count() == 0 and w3.eth.get_transaction_count(empty.address) == 0


class NoPendingProvider(HTTPProvider):
    """A real node behind a provider that, like some nodes, knows no "pending" block and takes no block
    parameter for eth_estimateGas."""

    def __init__(self, url: str):
        super().__init__(url)
        self.refused: list[str] = []

    def make_request(self, method, params):
        if (method == "eth_call" and params[1] == "pending") or (method == "eth_estimateGas" and len(params) > 1):
            self.refused.append(method)
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "invalid params"}}
        return super().make_request(method, params)


def test_nodes_without_pending_simulation_still_get_dry_runs(anvil, deployment, borrower, stranger, loan_flow):
    provider = NoPendingProvider(anvil.url)
    client = LoanContractClient.from_deployment(Web3(provider), deployment)
    loan_id, _ = loan_flow.request(AMOUNT)
    with pytest.raises(ContractRevert, match=rf"^NotBorrower: {stranger.address} is not the borrower"):
        client.cancel_request(loan_id, sender=stranger.address)
    receipt = client.send(client.cancel_request(loan_id), borrower)
    assert receipt["status"] == 1 and client.get_loan(loan_id).status is LoanStatus.CANCELLED
    assert {"eth_call", "eth_estimateGas"} <= set(provider.refused)


def test_two_step_ownership_transfer(w3, deployment, loan_client, lender, stranger, loan_flow):
    from evm.events import OwnershipTransferred, OwnershipTransferStarted, fetch_events

    loan_id, _ = loan_flow.request(AMOUNT)
    start = w3.eth.block_number + 1
    loan_client.send(loan_client.transfer_ownership(stranger.address.lower()), lender)
    assert loan_client.pending_owner() == stranger.address and loan_client.owner() == lender.address
    with pytest.raises(ContractRevert, match="OwnableUnauthorizedAccount"):
        loan_client.accept_ownership(sender=lender.address)
    loan_client.send(loan_client.accept_ownership(), stranger)
    assert loan_client.owner() == stranger.address and loan_client.pending_owner() == ZERO_ADDRESS

    events = fetch_events(w3, [deployment.loan_address], start, w3.eth.block_number)
    assert [(type(e), e.previous_owner, e.new_owner) for e in events] == [
        (OwnershipTransferStarted, lender.address, stranger.address),
        (OwnershipTransferred, lender.address, stranger.address),
    ]
    _, h_l = new_secret()
    with pytest.raises(ContractRevert, match=rf"^OwnableUnauthorizedAccount: {lender.address} is not the owner$"):
        loan_client.commit_lender_hash(loan_id, h_l, sender=lender.address)
    loan_client.send(loan_client.commit_lender_hash(loan_id, h_l), stranger)
    assert loan_client.hash_used(h_l) and not loan_client.hash_used(new_secret()[1])
