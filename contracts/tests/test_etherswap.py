"""EtherSwap on its own: linking, the loan-contract-only guard, lock/claim/refund semantics and their events.

A standalone vault is linked to an externally owned account that plays the loan contract, so each rule of the
vault is exercised directly; the linked production pair is checked at the end."""

from __future__ import annotations

import pytest
from eth_abi.packed import encode_packed
from eth_utils import keccak
from web3.logs import DISCARD

from contracts.tests.helpers import encode_error, load_artifact, new_preimage, sha256

pytestmark = pytest.mark.integration

ZERO = "0x" + "00" * 20


@pytest.fixture
def vault(isolated, people):
    chain = isolated
    art = load_artifact("EtherSwap")
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    receipt = chain.transact(factory.constructor(), people.lender)
    return chain.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])


def err(vault, name, *args):
    return encode_error(vault.abi, name, *args)


def test_link_once_by_deployer(vault, people, isolated):
    chain, f = isolated, vault.functions
    assert f.deployer().call() == people.lender
    assert f.loanContract().call() == ZERO
    chain.expect_revert(f.setLoanContract(people.stranger), people.stranger, err(vault, "NotDeployer", people.stranger))
    chain.expect_revert(f.setLoanContract(ZERO), people.lender, err(vault, "ZeroAddress"))
    receipt = chain.transact(f.setLoanContract(people.stranger), people.lender)
    (event,) = vault.events.LoanContractSet().process_receipt(receipt)
    assert event["args"]["loanContract"] == people.stranger
    assert f.loanContract().call() == people.stranger
    chain.expect_revert(f.setLoanContract(people.payer), people.lender, err(vault, "AlreadyLinked"))
    assert f.loanContract().call() == people.stranger


def test_unlinked_vault_refuses_everyone(vault, people, isolated):
    f = vault.functions
    _, h = new_preimage()
    for who in (people.lender, people.stranger):
        e = err(vault, "NotLoanContract", who)
        isolated.expect_revert(f.lock(h, people.borrower, people.lender, 10), who, e, 1)
        isolated.expect_revert(f.claim(h, 1, people.borrower, people.lender, 10), who, e)
        isolated.expect_revert(f.refund(h, 1, people.borrower, people.lender, 0), who, e)


def test_hash_values_is_keccak_of_packed_values(vault, people):
    _, h = new_preimage()
    expected = keccak(
        encode_packed(
            ["bytes32", "uint256", "address", "address", "uint256"], [h, 12345, people.borrower, people.lender, 77]
        )
    )
    assert vault.functions.hashValues(h, 12345, people.borrower, people.lender, 77).call() == expected


def test_lock_claim_with_non_utf8_preimage(vault, people, isolated):
    chain, f = isolated, vault.functions
    operator = people.stranger
    chain.transact(f.setLoanContract(operator), people.lender)
    preimage = bytes([0xFF, 0xFE, 0x00, 0x80]) + bytes(range(0xC0, 0xDC))  # not UTF-8, contains NUL
    assert len(preimage) == 32
    h = sha256(preimage)
    amount, timelock = 123_456_789, chain.block + 50
    chain.expect_revert(f.lock(h, people.borrower, people.payer, timelock), operator, err(vault, "ZeroAmount"))
    receipt = chain.transact(f.lock(h, people.borrower, people.payer, timelock), operator, amount)
    (lockup,) = vault.events.Lockup().process_receipt(receipt)
    assert dict(lockup["args"]) == {
        "preimageHash": h,
        "amount": amount,
        "claimAddress": people.borrower,
        "refundAddress": people.payer,
        "timelock": timelock,
    }
    swap_hash = f.hashValues(h, amount, people.borrower, people.payer, timelock).call()
    assert f.swaps(swap_hash).call()
    assert chain.balance(vault.address) == amount
    chain.expect_revert(
        f.lock(h, people.borrower, people.payer, timelock), operator, err(vault, "SwapExists", swap_hash), amount
    )

    # A wrong preimage identifies a different (absent) lock.
    wrong = bytes(32)
    wrong_hash = f.hashValues(sha256(wrong), amount, people.borrower, people.payer, timelock).call()
    chain.expect_revert(
        f.claim(wrong, amount, people.borrower, people.payer, timelock),
        operator,
        err(vault, "SwapNotFound", wrong_hash),
    )
    # Wrong terms (amount) with the right preimage: absent too.
    other_hash = f.hashValues(h, amount - 1, people.borrower, people.payer, timelock).call()
    chain.expect_revert(
        f.claim(preimage, amount - 1, people.borrower, people.payer, timelock),
        operator,
        err(vault, "SwapNotFound", other_hash),
    )

    before = chain.balance(people.borrower)
    receipt = chain.transact(f.claim(preimage, amount, people.borrower, people.payer, timelock), operator)
    (claim,) = vault.events.Claim().process_receipt(receipt, errors=DISCARD)
    assert dict(claim["args"]) == {"preimageHash": h, "preimage": preimage}
    assert chain.balance(people.borrower) == before + amount
    assert chain.balance(vault.address) == 0
    assert not f.swaps(swap_hash).call()
    chain.expect_revert(
        f.claim(preimage, amount, people.borrower, people.payer, timelock),
        operator,
        err(vault, "SwapNotFound", swap_hash),
    )


def test_refund_opens_exactly_at_the_timelock(vault, people, isolated):
    chain, f = isolated, vault.functions
    operator = people.stranger
    chain.transact(f.setLoanContract(operator), people.lender)
    preimage, h = new_preimage()
    amount = 10**18
    timelock = chain.block + 1 + 20
    chain.transact(f.lock(h, people.borrower, people.payer, timelock), operator, amount)
    swap_hash = f.hashValues(h, amount, people.borrower, people.payer, timelock).call()
    chain.mine_until_next_is(timelock - 1)
    receipt = chain.expect_revert(
        f.refund(h, amount, people.borrower, people.payer, timelock),
        operator,
        err(vault, "TimelockNotReached", timelock),
    )
    assert receipt["blockNumber"] == timelock - 1
    before = chain.balance(people.payer)
    receipt = chain.transact(f.refund(h, amount, people.borrower, people.payer, timelock), operator)
    assert receipt["blockNumber"] == timelock
    (refund,) = vault.events.Refund().process_receipt(receipt)
    assert refund["args"]["preimageHash"] == h
    assert chain.balance(people.payer) == before + amount
    assert not f.swaps(swap_hash).call()
    chain.expect_revert(
        f.claim(preimage, amount, people.borrower, people.payer, timelock),
        operator,
        err(vault, "SwapNotFound", swap_hash),
    )
    chain.expect_revert(
        f.refund(h, amount, people.borrower, people.payer, timelock), operator, err(vault, "SwapNotFound", swap_hash)
    )


def test_linked_vault_refuses_direct_calls(fast, people):
    """In the production pair only the loan contract may operate the vault, even its deployer may not."""
    f = fast.swap.functions
    assert f.loanContract().call() == fast.loan.address
    assert fast.loan.functions.etherSwap().call() == fast.swap.address
    _, h = new_preimage()
    for who in (people.lender, people.borrower):
        e = fast.swap_err("NotLoanContract", who)
        fast.chain.expect_revert(f.lock(h, people.borrower, people.lender, 10), who, e, 1)
        fast.chain.expect_revert(f.claim(h, 1, people.borrower, people.lender, 10), who, e)
        fast.chain.expect_revert(f.refund(h, 1, people.borrower, people.lender, 0), who, e)
    fast.chain.expect_revert(f.setLoanContract(people.lender), people.lender, fast.swap_err("AlreadyLinked"))
