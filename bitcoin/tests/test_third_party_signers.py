"""The loan's PSBTs signed by other wallets' code (embit, BDK), checked by our verifier, finalized by our library
and accepted by Bitcoin Core's rules in the regtest node.

PROTOCOL.md promises that every loan output is a standard descriptor that wallets import and sign, and that B's
pre-signature may come from any BIP-174/BIP-371 wallet. Here the borrower's loan file is the only source of
facts: the escrow is funded on the chain (``btc_fund``), the loan file records its outpoint and value, and from it
our code builds TX_1, TX_exit and TX_release. Then

* embit signs them with the loan's descriptor holding B's private key in place of xB;
* BDK signs them with a wallet that holds only the loan's descriptor, B's WIF in place of xB
  (``tr(H,{and_v(v:pk(<B's WIF>),older(t_0)),and_v(v:sha256(hB),multi_a(2,xL,<B's WIF>))})``);

our verifier (``verify_borrower_presignature`` for TX_1, ``check_borrower_transaction`` plus the signature check for
the sweeps) accepts their signatures, L signs TX_1 with our library, ``finalize_*`` assembles the witnesses, and the
node accepts each transaction: TX_1 and then TX_release at once, TX_exit exactly t_0 blocks after the escrow.

The offline tests show why our PSBT carries PSBT_IN_TAP_BIP32_DERIVATION (xB with the leaf hash): a BDK wallet
that holds B's key but not the loan's descriptor signs the loan's leaf only because of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bdkpython as bdk
import pytest
from embit.descriptor import Descriptor as EmbitDescriptor
from embit.ec import PrivateKey as EmbitPrivateKey
from embit.networks import NETWORKS as EMBIT_NETWORKS
from embit.psbt import PSBT as EmbitPsbt

from bitcoin.consensus import verify_input
from bitcoin.errors import TransactionError
from bitcoin.keys import PrivateKey, verify_schnorr
from bitcoin.loan import LoanFacts
from bitcoin.presignature import check_borrower_transaction, verify_borrower_presignature
from bitcoin.psbt import PSBT_IN_TAP_BIP32_DERIVATION, Psbt, create_psbt
from bitcoin.rpc import BitcoinRPC, RPCError, btc_to_sats
from bitcoin.scripts import HASHLOCK_LEAF, TIMELOCK_LEAF
from bitcoin.testing import FundedOutput
from bitcoin.tests.loan_vectors import (
    BORROWER_PREIMAGE,
    BORROWER_WIF,
    COLLATERAL_ADDRESS_REGTEST,
    COLLATERAL_DESCRIPTOR_CHECKSUM,
    ESCROW_ADDRESS_REGTEST,
    ESCROW_DESCRIPTOR_CHECKSUM,
    LENDER_PREIMAGE,
    LENDER_WIF,
    ODD_Y_SECRET,
    vector_facts,
)
from bitcoin.transactions import (
    SIGHASH_DEFAULT,
    OutPoint,
    PreparedSpend,
    SpendKind,
    Transaction,
    build_exit,
    build_release,
    build_tx1,
    finalize_exit,
    finalize_release,
    finalize_tx1,
    taproot_sighash,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
T_0 = 3
T_1 = 10
ESCROW_SATS = 1_200_000
FEE_RATE = 2

#: Sign, but leave the PSBT unfinalized, so the signatures stay in PSBT_IN_TAP_SCRIPT_SIG for our verifier.
BDK_SIGN_ONLY = bdk.SignOptions(
    trust_witness_utxo=True,
    assume_height=None,
    allow_all_sighashes=False,
    try_finalize=False,
    sign_with_tap_internal_key=False,
    allow_grinding=True,
)


# -- the parties -------------------------------------------------------------------------------------------------


def _odd_y_key(seed: bytes) -> PrivateKey:
    """A deterministic key whose public key has odd Y (BIP-340 signing must negate it)."""
    counter = 0
    while True:
        key = PrivateKey.from_hex(hashlib.sha256(seed + bytes([counter])).hexdigest())
        if key.has_odd_y:
            return key
        counter += 1


@dataclass(frozen=True)
class Parties:
    borrower: PrivateKey
    lender: PrivateKey


PARTIES: dict[str, Callable[[], Parties]] = {
    "vector-even-y": lambda: Parties(PrivateKey.from_wif(BORROWER_WIF), PrivateKey.from_wif(LENDER_WIF)),
    "odd-y": lambda: Parties(PrivateKey.from_hex(ODD_Y_SECRET), _odd_y_key(b"lender")),
}


def test_the_odd_y_parties_have_odd_y() -> None:
    parties = PARTIES["odd-y"]()
    assert parties.borrower.has_odd_y and parties.lender.has_odd_y
    vector = PARTIES["vector-even-y"]()
    assert not vector.borrower.has_odd_y and not vector.lender.has_odd_y


# -- the third-party signers ---------------------------------------------------------------------------------------


def _private_descriptor(loan_file: dict, output: str, borrower: PrivateKey) -> str:
    """The loan file's descriptor of ``output`` (escrow or collateral) with B's WIF in place of xB, no checksum."""
    public = loan_file[f"{output}_descriptor"]
    body, _, _checksum = public.rpartition("#")
    xonly = borrower.xonly_pubkey.hex()
    assert xonly in body
    return body.replace(xonly, borrower.to_wif("regtest"))


def _bdk_loan_wallet(loan_file: dict, output: str, borrower: PrivateKey) -> bdk.Wallet:
    """A BDK wallet that holds only the loan's descriptor, B's private key in place of xB."""
    descriptor = bdk.Descriptor(_private_descriptor(loan_file, output, borrower), bdk.NetworkKind.TEST)
    wallet = bdk.Wallet.create_single(descriptor, bdk.Network.REGTEST, bdk.Persister.new_in_memory())
    # With the private key in it, the wallet still derives the loan's address.
    assert str(wallet.peek_address(bdk.KeychainKind.EXTERNAL, 0).address) == loan_file[f"{output}_address"]
    return wallet


def sign_with_bdk(psbt: Psbt, loan_file: dict, output: str, borrower: PrivateKey) -> Psbt:
    wallet = _bdk_loan_wallet(loan_file, output, borrower)
    foreign = bdk.Psbt(psbt.to_base64())
    assert wallet.sign(foreign, BDK_SIGN_ONLY) is False  # signed, not finalized
    return Psbt.from_base64(foreign.serialize())


def sign_with_embit(psbt: Psbt, loan_file: dict, output: str, borrower: PrivateKey) -> Psbt:
    descriptor = EmbitDescriptor.from_string(_private_descriptor(loan_file, output, borrower))
    assert descriptor.script_pubkey().address(EMBIT_NETWORKS["regtest"]) == loan_file[f"{output}_address"]
    foreign = EmbitPsbt.from_string(psbt.to_base64())
    assert foreign.sign_with(descriptor) >= 1
    # The same as signing with the bare key (the PSBT names only the leaf being spent).
    assert EmbitPsbt.from_string(psbt.to_base64()).sign_with(EmbitPrivateKey.from_wif(borrower.to_wif("regtest"))) == 1
    return Psbt.from_base64(foreign.to_string())


SIGNERS: dict[str, Callable[[Psbt, dict, str, PrivateKey], Psbt]] = {"embit": sign_with_embit, "bdk": sign_with_bdk}


def _borrower_signature(signed: Psbt, prepared: PreparedSpend, borrower: PrivateKey) -> bytes:
    """B's signature for the spent leaf, which must verify over exactly ``prepared``.

    BDK's loan-descriptor wallet also signs the escrow's *other* leaf with xB (its descriptor names xB in both);
    such a signature is useless (TX_1's nSequence disables leaf 0's CSV; leaf 1 needs sigL and pB and this
    transaction pays B anyway) and our code never uses it: it takes the one keyed by the spent leaf.
    """
    signatures = signed.tap_script_sigs(0)
    assert {xonly for xonly, _leaf in signatures} == {borrower.xonly_pubkey}
    signature = signatures[(borrower.xonly_pubkey, prepared.leaf_hash)]
    assert len(signature) == 64  # SIGHASH_DEFAULT
    assert prepared.verify_signature(borrower.xonly_pubkey, signature)
    return signature


# -- the loan, from its loan file ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loan:
    parties: Parties
    facts: LoanFacts
    loan_file: dict


def _fund_loan(tmp_path: Path, parties: Parties, fund: Callable[..., FundedOutput]) -> Loan:
    """Write the loan file before the escrow exists, fund the escrow address it shows, record the escrow in it,
    and read the facts back from the file (the borrower's recovery kit)."""
    unfunded = vector_facts(
        parties.borrower,
        parties.lender,
        escrow_timelock_btc_blocks=T_0,
        collateral_timelock_btc_blocks=T_1,
        escrow_outpoint=None,
        escrow_sats=None,
    )
    path = tmp_path / "loan.json"
    path.write_text(unfunded.to_json())
    escrow_address = json.loads(path.read_text())["escrow_address"]
    escrow = fund(escrow_address, ESCROW_SATS)
    assert escrow.script_pubkey == unfunded.escrow.script_pubkey
    path.write_text(unfunded.with_escrow(OutPoint(escrow.txid, escrow.vout), escrow.sats).to_json())
    facts = LoanFacts.from_json(path.read_text())
    assert facts.escrow_outpoint == OutPoint(escrow.txid, escrow.vout)
    assert facts.escrow_sats == ESCROW_SATS
    return Loan(parties, facts, json.loads(path.read_text()))


def _confirmations(rpc: BitcoinRPC, txid: str, vout: int) -> int:
    return int(rpc.gettxout(txid, vout, include_mempool=False)["confirmations"])


@pytest.mark.integration
@pytest.mark.parametrize("parties_name", sorted(PARTIES))
@pytest.mark.parametrize("signer_name", sorted(SIGNERS))
def test_tx1_then_tx_release_signed_by_a_third_party_wallet(
    tmp_path: Path,
    btc_rpc: BitcoinRPC,
    btc_fund: Callable[..., FundedOutput],
    btc_mine: Callable[..., list[str]],
    signer_name: str,
    parties_name: str,
) -> None:
    sign = SIGNERS[signer_name]
    loan = _fund_loan(tmp_path, PARTIES[parties_name](), btc_fund)
    facts, borrower = loan.facts, loan.parties.borrower

    # TX_1: B's wallet signs; L verifies everything, co-signs with our library and completes it with pB.
    tx1 = build_tx1(facts, fee_rate_sat_vb=FEE_RATE)
    signed_tx1 = sign(create_psbt(tx1), loan.loan_file, "escrow", borrower)
    _borrower_signature(signed_tx1, tx1, borrower)
    verified = verify_borrower_presignature(facts, psbt=signed_tx1.to_base64())
    assert verified.transaction == tx1.tx
    assert verified.prepared.leaf_hash == facts.escrow.leaf_hash(HASHLOCK_LEAF)
    tx1_final = finalize_tx1(
        verified.prepared,
        borrower_signature=verified.borrower_signature,
        lender_signature=verified.prepared.sign(loan.parties.lender),
        borrower_preimage=BORROWER_PREIMAGE,
    )
    assert btc_rpc.sendrawtransaction(tx1_final.hex()) == tx1.tx.txid
    btc_mine(1)
    confirmed = btc_rpc.getrawtransaction(tx1.tx.txid, True)
    assert confirmed["confirmations"] == 1
    fee_out, collateral_out, change_out = confirmed["vout"]
    assert btc_to_sats(fee_out["value"]) == facts.origination_fee_sats
    assert fee_out["scriptPubKey"]["address"] == facts.lender_payout_address
    assert btc_to_sats(collateral_out["value"]) == facts.collateral_sats
    assert collateral_out["scriptPubKey"]["address"] == loan.loan_file["collateral_address"]
    assert btc_to_sats(change_out["value"]) == ESCROW_SATS - facts.origination_fee_sats - facts.collateral_sats - (
        tx1.fee_sats
    )
    assert change_out["scriptPubKey"]["address"] == facts.borrower_payout_address

    # TX_release (pre-signed by B's wallet before TX_1 was even broadcast: its txid was fixed), completed with pL.
    release = build_release(facts, tx1_txid=tx1.tx.txid, fee_rate_sat_vb=FEE_RATE)
    signed_release = sign(create_psbt(release), loan.loan_file, "collateral", borrower)
    checked = check_borrower_transaction(facts, signed_release.unsigned_tx, signed_release.witness_utxo(0), tx1.tx.txid)
    assert checked.kind is SpendKind.TX_RELEASE
    signature = _borrower_signature(signed_release, checked, borrower)
    release_final = finalize_release(checked, borrower_signature=signature, lender_preimage=LENDER_PREIMAGE)
    verify_input(release_final, 0, [checked.prevout])
    assert btc_rpc.sendrawtransaction(release_final.hex()) == release.tx.txid
    btc_mine(1)
    assert btc_rpc.getrawtransaction(release.tx.txid, True)["confirmations"] == 1
    payout = btc_rpc.gettxout(release.tx.txid, 0)
    assert payout["scriptPubKey"]["address"] == facts.borrower_payout_address
    assert btc_to_sats(payout["value"]) == facts.collateral_sats - release.fee_sats
    assert btc_rpc.gettxout(tx1.tx.txid, 1) is None


@pytest.mark.integration
@pytest.mark.parametrize("parties_name", sorted(PARTIES))
@pytest.mark.parametrize("signer_name", sorted(SIGNERS))
def test_tx_exit_signed_by_a_third_party_wallet(
    tmp_path: Path,
    btc_rpc: BitcoinRPC,
    btc_fund: Callable[..., FundedOutput],
    btc_mine: Callable[..., list[str]],
    signer_name: str,
    parties_name: str,
) -> None:
    loan = _fund_loan(tmp_path, PARTIES[parties_name](), btc_fund)
    facts, borrower = loan.facts, loan.parties.borrower
    escrow = facts.escrow_outpoint
    assert escrow is not None

    prepared = build_exit(facts, fee_rate_sat_vb=FEE_RATE)
    signed = SIGNERS[signer_name](create_psbt(prepared), loan.loan_file, "escrow", borrower)
    checked = check_borrower_transaction(facts, signed.unsigned_tx, signed.witness_utxo(0))
    assert checked.kind is SpendKind.TX_EXIT
    assert checked.leaf_hash == facts.escrow.leaf_hash(TIMELOCK_LEAF)
    exit_tx = finalize_exit(checked, borrower_signature=_borrower_signature(signed, checked, borrower))

    # Not before t_0 confirmations of the escrow (BIP-68 via the leaf's OP_CSV and nSequence = t_0) ...
    assert _confirmations(btc_rpc, escrow.txid, escrow.vout) == 1
    btc_mine(T_0 - 2)
    assert _confirmations(btc_rpc, escrow.txid, escrow.vout) == T_0 - 1
    with pytest.raises(RPCError) as info:
        btc_rpc.sendrawtransaction(exit_tx.hex())
    assert info.value.message.startswith("non-BIP68-final")
    # ... and exactly then.
    btc_mine(1)
    assert btc_rpc.sendrawtransaction(exit_tx.hex()) == prepared.tx.txid
    btc_mine(1)
    assert btc_rpc.getrawtransaction(prepared.tx.txid, True)["confirmations"] == 1
    payout = btc_rpc.gettxout(prepared.tx.txid, 0)
    assert payout["scriptPubKey"]["address"] == facts.borrower_payout_address
    assert btc_to_sats(payout["value"]) == ESCROW_SATS - prepared.fee_sats
    assert btc_rpc.gettxout(escrow.txid, escrow.vout) is None


@pytest.mark.integration
def test_bdk_finalizes_the_sweeps_itself_and_the_node_agrees(
    tmp_path: Path,
    btc_rpc: BitcoinRPC,
    btc_fund: Callable[..., FundedOutput],
    btc_mine: Callable[..., list[str]],
) -> None:
    """With pL recorded in the PSBT (PSBT_IN_SHA256), BDK's own finalizer completes TX_release, and TX_exit
    without help; both are the transactions our library would have made (same txid), valid on the node."""
    loan = _fund_loan(tmp_path, PARTIES["odd-y"](), btc_fund)
    facts, borrower = loan.facts, loan.parties.borrower
    tx1 = build_tx1(facts, fee_rate_sat_vb=FEE_RATE)
    tx1_final = finalize_tx1(
        tx1,
        borrower_signature=tx1.sign(borrower),
        lender_signature=tx1.sign(loan.parties.lender),
        borrower_preimage=BORROWER_PREIMAGE,
    )
    btc_rpc.sendrawtransaction(tx1_final.hex())
    btc_mine(1)

    release = build_release(facts, tx1_txid=tx1.tx.txid, fee_rate_sat_vb=FEE_RATE)
    psbt = create_psbt(release)
    psbt.add_sha256_preimage(0, LENDER_PREIMAGE)
    foreign = bdk.Psbt(psbt.to_base64())
    assert _bdk_loan_wallet(loan.loan_file, "collateral", borrower).sign(foreign) is True  # finalized
    release_tx = Transaction.parse(bytes(foreign.extract_tx().serialize()))
    assert release_tx.txid == release.tx.txid
    assert release_tx.inputs[0].witness[1:] == (LENDER_PREIMAGE, release.leaf_script, release.control_block)
    verify_input(release_tx, 0, [release.prevout])
    [accepted] = btc_rpc.testmempoolaccept([release_tx.hex()])
    assert accepted["allowed"] is True, accepted

    # A second escrow of the same loan (same script): TX_exit finalized by BDK, mined after t_0.
    second = btc_fund(facts.escrow.script_pubkey, ESCROW_SATS)
    exit_facts = facts.with_escrow(OutPoint(second.txid, second.vout), second.sats)
    prepared = build_exit(exit_facts, fee_rate_sat_vb=FEE_RATE)
    foreign = bdk.Psbt(create_psbt(prepared).to_base64())
    assert _bdk_loan_wallet(loan.loan_file, "escrow", borrower).sign(foreign) is True
    exit_tx = Transaction.parse(bytes(foreign.extract_tx().serialize()))
    assert exit_tx.txid == prepared.tx.txid
    assert exit_tx.inputs[0].witness[1:] == (prepared.leaf_script, prepared.control_block)
    verify_input(exit_tx, 0, [prepared.prevout])
    btc_mine(T_0 - 1)
    assert btc_rpc.sendrawtransaction(release_tx.hex()) == release.tx.txid
    assert btc_rpc.sendrawtransaction(exit_tx.hex()) == prepared.tx.txid
    btc_mine(1)
    assert btc_rpc.getrawtransaction(release.tx.txid, True)["confirmations"] == 1
    assert btc_rpc.getrawtransaction(prepared.tx.txid, True)["confirmations"] == 1


# -- offline: why the PSBT names xB with the leaf hash, and BDK reads our descriptors ------------------------------


def _key_only_wallet(borrower: PrivateKey) -> bdk.Wallet:
    """A BDK wallet that holds B's key but knows nothing of the loan (as a plain or hardware wallet would)."""
    descriptor = bdk.Descriptor(f"tr({borrower.to_wif('regtest')})", bdk.NetworkKind.TEST)
    return bdk.Wallet.create_single(descriptor, bdk.Network.REGTEST, bdk.Persister.new_in_memory())


def _without_tap_derivations(psbt: Psbt) -> Psbt:
    stripped = Psbt.parse(psbt.serialize())
    stripped.inputs[0] = {
        key: value for key, value in stripped.inputs[0].items() if key[0] != PSBT_IN_TAP_BIP32_DERIVATION
    }
    assert stripped.tap_key_leaf_hashes(0) == {}
    return stripped


def _sweeps_and_tx1(facts: LoanFacts) -> list[PreparedSpend]:
    tx1 = build_tx1(facts, fee_rate_sat_vb=FEE_RATE)
    return [
        tx1,
        build_exit(facts, fee_rate_sat_vb=FEE_RATE),
        build_release(facts, tx1_txid=tx1.tx.txid, fee_rate_sat_vb=FEE_RATE),
    ]


@pytest.mark.parametrize("parties_name", sorted(PARTIES))
def test_bdk_signs_the_loans_leaf_only_when_the_psbt_names_xb_with_it(parties_name: str) -> None:
    parties = PARTIES[parties_name]()
    facts = vector_facts(parties.borrower, parties.lender)
    wallet = _key_only_wallet(parties.borrower)
    for prepared in _sweeps_and_tx1(facts):
        ours = create_psbt(prepared)
        assert ours.tap_key_leaf_hashes(0)[parties.borrower.xonly_pubkey] == [prepared.leaf_hash]
        foreign = bdk.Psbt(ours.to_base64())
        wallet.sign(foreign, BDK_SIGN_ONLY)
        signed = Psbt.from_base64(foreign.serialize())
        assert set(signed.tap_script_sigs(0)) == {(parties.borrower.xonly_pubkey, prepared.leaf_hash)}
        _borrower_signature(signed, prepared, parties.borrower)

        # The same PSBT without PSBT_IN_TAP_BIP32_DERIVATION: BDK does not find the leaf and signs nothing.
        stripped = _without_tap_derivations(ours)
        foreign = bdk.Psbt(stripped.to_base64())
        assert wallet.sign(foreign, BDK_SIGN_ONLY) is False
        unchanged = Psbt.from_base64(foreign.serialize())
        assert unchanged.tap_script_sigs(0) == {}
        # (BDK rewrites TX_1's PSBT_OUT_TAP_TREE with the two depth-1 leaves in hash order: the same tree.)
        assert (unchanged.unsigned_tx, unchanged.inputs) == (stripped.unsigned_tx, stripped.inputs)


def test_a_bdk_wallet_holding_the_loans_descriptor_needs_no_derivation_field() -> None:
    """The loan-descriptor wallet recognises the escrow's script and fills the key origins in itself: the field
    is for wallets that hold B's key but not the loan's descriptor (previous test). It also signs the escrow's
    other leaf with xB, which our verifier and finalizer ignore (``_borrower_signature``)."""
    parties = PARTIES["vector-even-y"]()
    facts = vector_facts()
    loan_file = facts.to_json_dict()
    tx1, exit_, release = _sweeps_and_tx1(facts)
    for prepared, output in ((tx1, "escrow"), (exit_, "escrow"), (release, "collateral")):
        stripped = _without_tap_derivations(create_psbt(prepared))
        signed = sign_with_bdk(stripped, loan_file, output, parties.borrower)
        _borrower_signature(signed, prepared, parties.borrower)
        expected_leaves = set(prepared.tree.leaf_hashes) if output == "escrow" else {prepared.leaf_hash}
        assert {leaf for _xonly, leaf in signed.tap_script_sigs(0)} == expected_leaves
    signed_tx1 = sign_with_bdk(create_psbt(tx1), loan_file, "escrow", parties.borrower)
    verified = verify_borrower_presignature(facts, psbt=signed_tx1.to_base64())
    assert verified.prepared.leaf_hash == facts.escrow.leaf_hash(HASHLOCK_LEAF)
    # The extra signature (xB over TX_1 for the escape leaf) spends nothing: TX_1's nSequence 0xfffffffd has
    # BIP-68's disable flag set, so the leaf's OP_CHECKSEQUENCEVERIFY fails (Bitcoin Core's interpreter).
    escape = facts.escrow.leaf_hash(TIMELOCK_LEAF)
    escape_signature = signed_tx1.tap_script_sigs(0)[(parties.borrower.xonly_pubkey, escape)]
    escape_sighash = taproot_sighash(tx1.tx, 0, [tx1.prevout], SIGHASH_DEFAULT, escape)
    assert verify_schnorr(parties.borrower.xonly_pubkey, escape_sighash, escape_signature)  # a valid signature
    escape_tx = tx1.tx.with_witness(
        0, [escape_signature, facts.escrow.leaf_script(TIMELOCK_LEAF), facts.escrow.control_block(TIMELOCK_LEAF)]
    )
    with pytest.raises(TransactionError, match="does not satisfy"):
        verify_input(escape_tx, 0, [tx1.prevout])


def test_bdk_and_embit_derive_the_protocol_vector_from_the_descriptors_we_print(tmp_path: Path) -> None:
    """``python -m bitcoin addresses`` prints the descriptors; BDK's and embit's miniscript derive PROTOCOL.md's
    addresses from them, and BDK computes the same checksums."""
    loan = tmp_path / "loan.json"
    loan.write_text(vector_facts().to_json())
    result = subprocess.run(
        [sys.executable, "-m", "bitcoin", "addresses", "--loan", str(loan)],
        cwd=REPO_ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    printed = json.loads(result.stdout)
    for name, address, checksum in (
        ("escrow", ESCROW_ADDRESS_REGTEST, ESCROW_DESCRIPTOR_CHECKSUM),
        ("collateral", COLLATERAL_ADDRESS_REGTEST, COLLATERAL_DESCRIPTOR_CHECKSUM),
    ):
        text = printed[f"{name}_descriptor"]
        assert text.endswith(f"#{checksum}")
        wallet = bdk.Wallet.create_single(
            bdk.Descriptor(text, bdk.NetworkKind.TEST), bdk.Network.REGTEST, bdk.Persister.new_in_memory()
        )
        assert str(wallet.peek_address(bdk.KeychainKind.EXTERNAL, 0).address) == address
        assert wallet.descriptor_checksum(bdk.KeychainKind.EXTERNAL) == checksum
        assert wallet.public_descriptor(bdk.KeychainKind.EXTERNAL) == text
        embit_descriptor = EmbitDescriptor.from_string(text.rpartition("#")[0])
        assert embit_descriptor.script_pubkey().address(EMBIT_NETWORKS["regtest"]) == address
        assert printed[name]["script_pubkey"] == embit_descriptor.script_pubkey().data.hex()
        # A descriptor whose checksum does not match is refused by BDK, so the checksum is BIP-380's.
        with pytest.raises(bdk.DescriptorError):
            bdk.Descriptor(text[:-1] + ("q" if text[-1] != "q" else "p"), bdk.NetworkKind.TEST)
