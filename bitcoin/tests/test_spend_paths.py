"""Every spend path of both loan outputs, built with the protocol library and accepted (or refused exactly one
block early) by Bitcoin Core's consensus code in the embedded regtest node."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bitcoin.addresses import address_to_script_pubkey
from bitcoin.keys import PrivateKey
from bitcoin.loan import LoanFacts
from bitcoin.regtest.address import encode_segwit
from bitcoin.rpc import BitcoinRPC, RPCError, btc_to_sats
from bitcoin.testing import FundedOutput
from bitcoin.transactions import (
    OutPoint,
    PreparedSpend,
    build_capture,
    build_exit,
    build_release,
    build_tx1,
    finalize_capture,
    finalize_exit,
    finalize_release,
    finalize_tx1,
)

pytestmark = pytest.mark.integration

T_0 = 3
T_1 = 5
ESCROW_SATS = 150_000
LOAN_SATS = 100_000
FEE_BPS = 100
FEE_RATE = 2
B_PAYOUT = encode_segwit("bcrt", 1, hashlib.sha256(b"borrower payout").digest())
L_PAYOUT = encode_segwit("bcrt", 0, hashlib.sha256(b"lender payout").digest()[:20])


@dataclass(frozen=True)
class Parties:
    borrower: PrivateKey
    lender: PrivateKey


def key_with_parity(odd: bool) -> PrivateKey:
    while True:
        key = PrivateKey.generate()
        if key.has_odd_y == odd:
            return key


PARTIES = {
    "test-vector-even-y": lambda: Parties(
        PrivateKey.from_wif("cNwW6ne3j9jUDWC3qFG5Bw3jzWvSZjZ2vgyP5LsTVj4WrJkJqjuz"),
        PrivateKey.from_wif("cMrC8dGmStj3pz7mbY3vjwhXYcQwkcaWwV4QFCTF25WwVW1TCDkJ"),
    ),
    "odd-y": lambda: Parties(key_with_parity(True), key_with_parity(True)),
    "mixed-y": lambda: Parties(key_with_parity(False), key_with_parity(True)),
}


@dataclass
class Loan:
    parties: Parties
    facts: LoanFacts  # without the escrow until a test funds it
    p_b: bytes
    p_l: bytes

    def funded(self, escrow: FundedOutput) -> LoanFacts:
        return self.facts.with_escrow(OutPoint(escrow.txid, escrow.vout), escrow.sats)


@pytest.fixture(params=sorted(PARTIES))
def loan(request: pytest.FixtureRequest) -> Loan:
    parties = PARTIES[request.param]()
    p_b, p_l = secrets.token_bytes(32), secrets.token_bytes(32)  # fresh preimages for every loan
    facts = LoanFacts(
        network="regtest",
        borrower_btc_pubkey=parties.borrower.xonly_pubkey,
        lender_btc_pubkey=parties.lender.xonly_pubkey,
        borrower_hash=hashlib.sha256(p_b).digest(),
        lender_hash=hashlib.sha256(p_l).digest(),
        escrow_timelock_btc_blocks=T_0,
        collateral_timelock_btc_blocks=T_1,
        escrow_outpoint=None,
        escrow_sats=None,
        loan_amount_sats=LOAN_SATS,
        min_collateral_ratio_bps=10_000,
        collateral_cap_sats=LOAN_SATS * 11 // 10,
        origination_fee_bps=FEE_BPS,
        lender_payout_address=L_PAYOUT,
        borrower_payout_address=B_PAYOUT,
        min_fee_rate_sat_vb=1,
        max_fee_rate_sat_vb=10,
    )
    return Loan(parties, facts, p_b, p_l)


def confirmations(rpc: BitcoinRPC, txid: str, vout: int) -> int:
    return int(rpc.gettxout(txid, vout, include_mempool=False)["confirmations"])


def assert_not_final_then_accepted(
    rpc: BitcoinRPC, tx_hex: str, spent: tuple[str, int], timelock: int, mine: Callable[..., list[str]]
) -> str:
    """Refused with `non-BIP68-final` at timelock-1 confirmations of `spent`, accepted at exactly timelock."""
    assert confirmations(rpc, *spent) == timelock - 1
    with pytest.raises(RPCError) as info:
        rpc.sendrawtransaction(tx_hex)
    assert info.value.code == -26
    assert info.value.message.startswith("non-BIP68-final")
    assert rpc.testmempoolaccept([tx_hex])[0]["reject-reason"] == "non-BIP68-final"
    mine(1)
    assert confirmations(rpc, *spent) == timelock
    txid = rpc.sendrawtransaction(tx_hex)
    mine(1)
    assert rpc.getrawtransaction(txid, True)["confirmations"] == 1
    assert rpc.gettxout(*spent) is None
    return txid


def lock_collateral(
    rpc: BitcoinRPC, loan: Loan, fund: Callable[..., FundedOutput], mine: Callable[..., list[str]]
) -> tuple[PreparedSpend, str]:
    """Fund the escrow, then broadcast and confirm TX_1 (sigB, sigL, pB); return (prepared TX_1, its txid)."""
    escrow = fund(loan.facts.escrow.script_pubkey, ESCROW_SATS)
    prepared = build_tx1(loan.funded(escrow), fee_rate_sat_vb=FEE_RATE)
    tx1 = finalize_tx1(
        prepared,
        borrower_signature=prepared.sign(loan.parties.borrower),
        lender_signature=prepared.sign(loan.parties.lender),
        borrower_preimage=loan.p_b,
    )
    txid = rpc.sendrawtransaction(tx1.hex())
    assert txid == tx1.txid
    mine(1)
    confirmed = rpc.getrawtransaction(txid, True)
    assert confirmed["confirmations"] == 1
    fee_out, collateral_out, change_out = confirmed["vout"]
    assert btc_to_sats(fee_out["value"]) == LOAN_SATS * FEE_BPS // 10_000
    assert fee_out["scriptPubKey"]["hex"] == address_to_script_pubkey(L_PAYOUT, "regtest").hex()
    assert collateral_out["scriptPubKey"]["hex"] == loan.facts.collateral.script_pubkey.hex()
    assert btc_to_sats(collateral_out["value"]) == LOAN_SATS  # exactly the required collateral
    assert change_out["scriptPubKey"]["address"] == B_PAYOUT
    assert (
        btc_to_sats(change_out["value"]) == ESCROW_SATS - LOAN_SATS * FEE_BPS // 10_000 - LOAN_SATS - prepared.fee_sats
    )
    assert rpc.gettxout(escrow.txid, escrow.vout) is None
    return prepared, txid


def test_tx1_then_release_with_lender_preimage(
    btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput], btc_mine: Callable[..., list[str]], loan: Loan
) -> None:
    prepared_tx1, tx1_txid = lock_collateral(btc_rpc, loan, btc_fund, btc_mine)
    collateral_sats = prepared_tx1.tx.outputs[1].value
    prepared = build_release(loan.facts, tx1_txid=tx1_txid, fee_rate_sat_vb=FEE_RATE)
    release = finalize_release(
        prepared, borrower_signature=prepared.sign(loan.parties.borrower), lender_preimage=loan.p_l
    )
    # No timelock on the release: valid at once, with one confirmation of TX_1.
    txid = btc_rpc.sendrawtransaction(release.hex())
    btc_mine(1)
    confirmed = btc_rpc.getrawtransaction(txid, True)
    assert confirmed["confirmations"] == 1
    assert btc_to_sats(confirmed["vout"][0]["value"]) == collateral_sats - prepared.fee_sats
    assert confirmed["vout"][0]["scriptPubKey"]["address"] == B_PAYOUT
    assert btc_rpc.gettxout(tx1_txid, 1) is None


def test_tx_exit_at_exactly_t0_confirmations(
    btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput], btc_mine: Callable[..., list[str]], loan: Loan
) -> None:
    escrow = btc_fund(loan.facts.escrow.script_pubkey, ESCROW_SATS)
    prepared = build_exit(loan.funded(escrow), fee_rate_sat_vb=FEE_RATE)
    exit_tx = finalize_exit(prepared, borrower_signature=prepared.sign(loan.parties.borrower))
    btc_mine(T_0 - 2)
    txid = assert_not_final_then_accepted(btc_rpc, exit_tx.hex(), (escrow.txid, escrow.vout), T_0, btc_mine)
    assert btc_to_sats(btc_rpc.gettxout(txid, 0)["value"]) == ESCROW_SATS - prepared.fee_sats


def test_tx_capture_at_exactly_t1_confirmations(
    btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput], btc_mine: Callable[..., list[str]], loan: Loan
) -> None:
    _, tx1_txid = lock_collateral(btc_rpc, loan, btc_fund, btc_mine)
    prepared = build_capture(loan.facts, tx1_txid=tx1_txid, fee_rate_sat_vb=FEE_RATE)
    capture = finalize_capture(prepared, lender_signature=prepared.sign(loan.parties.lender))
    btc_mine(T_1 - 2)
    txid = assert_not_final_then_accepted(btc_rpc, capture.hex(), (tx1_txid, 1), T_1, btc_mine)
    assert btc_rpc.gettxout(txid, 0)["scriptPubKey"]["address"] == L_PAYOUT


def test_escrow_hashlock_leaf_needs_both_signatures_and_pb(
    btc_rpc: BitcoinRPC, btc_fund: Callable[..., FundedOutput], loan: Loan
) -> None:
    """The only other way to spend the escrow's leaf 1: every incomplete witness is refused by consensus."""
    escrow = btc_fund(loan.facts.escrow.script_pubkey, ESCROW_SATS)
    prepared = build_tx1(loan.funded(escrow), fee_rate_sat_vb=FEE_RATE)
    sig_b, sig_l = prepared.sign(loan.parties.borrower), prepared.sign(loan.parties.lender)
    incomplete = (
        [sig_b, sig_l, loan.p_l],
        [sig_b, b"", loan.p_b],
        [b"", sig_l, loan.p_b],
        [sig_l, sig_b, loan.p_b],
        [sig_b, sig_l, loan.p_b + b"\x00"],  # a 33-byte "preimage": the hashlock checks the size
    )
    for items in incomplete:
        raw = prepared.tx.with_witness(0, [*items, prepared.leaf_script, prepared.control_block]).hex()
        [result] = btc_rpc.testmempoolaccept([raw])
        assert result["allowed"] is False
        assert result["reject-reason"].startswith("mandatory-script-verify-flag-failed (")
    good = finalize_tx1(prepared, borrower_signature=sig_b, lender_signature=sig_l, borrower_preimage=loan.p_b)
    assert btc_rpc.testmempoolaccept([good.hex()])[0]["allowed"] is True
