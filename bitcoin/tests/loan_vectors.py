"""Shared known-answer data for the protocol-library tests (the PROTOCOL.md regtest vector and helpers)."""

from __future__ import annotations

from bitcoin.keys import PrivateKey
from bitcoin.scripts import NUMS_INTERNAL_KEY, LoanScripts, loan_outputs
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
COLLATERAL_TIMELOCK = 27150
ESCROW_ADDRESS_REGTEST = "bcrt1pjffezpv29u3dgm3vxv8mv3pwxmy24n5y8d030795tzuce63ugc0q6ln2hx"
COLLATERAL_ADDRESS_REGTEST = "bcrt1phkdwj39yyhczxdfrp7x3mv3c2uvqvu2fc4mc5epdfq9hn99q2mhqqup8eg"

#: BIP-340 test vector 3's secret key: its public key has odd Y, so signing must negate it.
ODD_Y_SECRET = "0B432B2677937381AEF05BB02A66ECD012773062CF3FA2549E44F58ED2401710"

#: Standard regtest payout addresses of every type (BIP-173 program reused for the segwit ones).
REGTEST_P2WPKH = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"

ESCROW_OUTPOINT = OutPoint("a1" * 32, 1)


def borrower_key() -> PrivateKey:
    """B's key from the PROTOCOL.md vector."""
    return PrivateKey.from_wif(BORROWER_WIF, "regtest")


def lender_key() -> PrivateKey:
    """L's key from the PROTOCOL.md vector."""
    return PrivateKey.from_wif(LENDER_WIF, "regtest")


def vector_scripts(
    borrower: PrivateKey | None = None,
    lender: PrivateKey | None = None,
    escrow_timelock: int = ESCROW_TIMELOCK,
    collateral_timelock: int = COLLATERAL_TIMELOCK,
    internal_key: bytes = NUMS_INTERNAL_KEY,
) -> LoanScripts:
    """LoanScripts of the vector (optionally with other keys or timelocks).

    PROTOCOL.md's addresses come out with ``internal_key=REFERENCE_INTERNAL_KEY``; the platform uses BIP-341's H.
    """
    return loan_outputs(
        internal_key=internal_key,
        borrower_pubkey=(borrower or borrower_key()).xonly_pubkey,
        lender_pubkey=(lender or lender_key()).xonly_pubkey,
        borrower_hash=BORROWER_HASH,
        lender_hash=LENDER_HASH,
        escrow_timelock=escrow_timelock,
        collateral_timelock=collateral_timelock,
    )
