"""Shared known-answer data for the protocol-library tests (the PROTOCOL.md regtest vector and helpers)."""

from __future__ import annotations

from dataclasses import replace

from bitcoin.keys import PrivateKey
from bitcoin.loan import LoanFacts
from bitcoin.scripts import TwoLeafTaprootOutput, parse_hash32, push_data
from bitcoin.transactions import OutPoint

BORROWER_WIF = "cNwW6ne3j9jUDWC3qFG5Bw3jzWvSZjZ2vgyP5LsTVj4WrJkJqjuz"
LENDER_WIF = "cMrC8dGmStj3pz7mbY3vjwhXYcQwkcaWwV4QFCTF25WwVW1TCDkJ"
BORROWER_XONLY = "274903288d231552de4c2c270d1c3f71fe5c78315374830c3b12a6654ee03afa"
LENDER_XONLY = "64b4b84f42da9bdb84f7eda2de12524516686e73849645627fb7a034c79c81c8"
BORROWER_PREIMAGE = bytes.fromhex("0e0ed04e19fa04ec6b29e6ccfd6f7384a22e1a92b81563064d8c74f354d41f05")
BORROWER_HASH = "114810e3c12909f2fb9cbf59c11ee5c9d107556476685f7e14205eab094d4927"
LENDER_PREIMAGE = bytes.fromhex("38f9fa6b463f6e37f2cf7286f1f3bbf2e1fe33296f95629d9c343511f9bd35d5")
LENDER_HASH = "646e58c6fbea3ac4750a2279d4b711fed954e3cb48319c630570e3143e4553e3"
ESCROW_TIMELOCK = 100
COLLATERAL_TIMELOCK = 30000
# PROTOCOL.md's test vector: the miniscript outputs with internal key H.
ESCROW_ADDRESS_REGTEST = "bcrt1p0xslj88f6q8ce86hknpq3dl57x9yx6nkxc2zs43lgz4qfd9wcmrqdlsfa7"
COLLATERAL_ADDRESS_REGTEST = "bcrt1p6ck4ksy8k9xz66jlv2vxygfng43eyhyxqv0s693c7m40jgqdmdpsvfvraq"
ESCROW_DESCRIPTOR_CHECKSUM = "23008dls"
COLLATERAL_DESCRIPTOR_CHECKSUM = "xy52rjcv"

# The reference implementation's layout (compatibility only: PROTOCOL.md keeps its addresses so a test can show
# the leaves and tree are built the way the reference built them). Never used for an output the platform makes.
REFERENCE_INTERNAL_KEY = bytes.fromhex("50929b74c1a04954b78b4b60c595c211f8b853e6e84bfa2be95712a7b0dd59e6")
REFERENCE_COLLATERAL_TIMELOCK = 27150
REFERENCE_ESCROW_ADDRESS = "bcrt1pjffezpv29u3dgm3vxv8mv3pwxmy24n5y8d030795tzuce63ugc0q6ln2hx"
REFERENCE_COLLATERAL_ADDRESS = "bcrt1phkdwj39yyhczxdfrp7x3mv3c2uvqvu2fc4mc5epdfq9hn99q2mhqqup8eg"

#: BIP-340 test vector 3's secret key: its public key has odd Y, so signing must negate it.
ODD_Y_SECRET = "0B432B2677937381AEF05BB02A66ECD012773062CF3FA2549E44F58ED2401710"

#: Standard regtest payout addresses (BIP-173 program reused for the segwit one).
REGTEST_P2WPKH = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
REGTEST_P2TR = "bcrt1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqc8gma6"

ESCROW_OUTPOINT = OutPoint("a1" * 32, 1)


def borrower_key() -> PrivateKey:
    """B's key from the PROTOCOL.md vector."""
    return PrivateKey.from_wif(BORROWER_WIF, "regtest")


def lender_key() -> PrivateKey:
    """L's key from the PROTOCOL.md vector."""
    return PrivateKey.from_wif(LENDER_WIF, "regtest")


def vector_facts(
    borrower: PrivateKey | None = None,
    lender: PrivateKey | None = None,
    **overrides: object,
) -> LoanFacts:
    """LoanFacts of the PROTOCOL.md vector: a 0.01 BTC loan, 100 % collateral, a 1.2 % bigger escrow.

    The cap (repayment + bond in sats) is the default parameters' 10 % bond plus interest; ``overrides``
    replace any fact (``escrow_outpoint=None, escrow_sats=None`` for a loan whose escrow is not funded yet).
    """
    facts = LoanFacts(
        network="regtest",
        borrower_btc_pubkey=(borrower or borrower_key()).xonly_pubkey,
        lender_btc_pubkey=(lender or lender_key()).xonly_pubkey,
        borrower_hash=BORROWER_HASH,
        lender_hash=LENDER_HASH,
        escrow_timelock_btc_blocks=ESCROW_TIMELOCK,
        collateral_timelock_btc_blocks=COLLATERAL_TIMELOCK,
        escrow_outpoint=ESCROW_OUTPOINT,
        escrow_sats=1_200_000,
        loan_amount_sats=1_000_000,
        min_collateral_ratio_bps=10_000,
        collateral_cap_sats=1_125_684,
        origination_fee_bps=100,
        lender_payout_address=REGTEST_P2WPKH,
        borrower_payout_address=REGTEST_P2TR,
        min_fee_rate_sat_vb=1,
        max_fee_rate_sat_vb=100,
    )
    return replace(facts, **overrides) if overrides else facts


def reference_outputs(collateral_timelock: int = REFERENCE_COLLATERAL_TIMELOCK) -> tuple[TwoLeafTaprootOutput, ...]:
    """The reference implementation's escrow and collateral outputs of the vector (raw leaves, its key)."""
    xb, xl = bytes.fromhex(BORROWER_XONLY), bytes.fromhex(LENDER_XONLY)
    hb, hl = parse_hash32(BORROWER_HASH), parse_hash32(LENDER_HASH)
    op_csv_drop, op_checksig, op_sha256, op_equalverify = b"\xb2\x75", b"\xac", b"\xa8", b"\x88"

    def number(n: int) -> bytes:
        return push_data(n.to_bytes((n.bit_length() + 8) // 8, "little"))

    escrow = TwoLeafTaprootOutput(
        leaves=(
            number(ESCROW_TIMELOCK) + op_csv_drop + push_data(xb) + op_checksig,
            op_sha256
            + push_data(hb)
            + op_equalverify
            + push_data(xl)
            + op_checksig
            + push_data(xb)
            + b"\xba\x52\x9d\x51",  # OP_CHECKSIGADD OP_2 OP_NUMEQUALVERIFY OP_TRUE
        ),
        internal_key=REFERENCE_INTERNAL_KEY,
    )
    collateral = TwoLeafTaprootOutput(
        leaves=(
            number(collateral_timelock) + op_csv_drop + push_data(xl) + op_checksig,
            op_sha256 + push_data(hl) + op_equalverify + push_data(xb) + op_checksig,
        ),
        internal_key=REFERENCE_INTERNAL_KEY,
    )
    return escrow, collateral
