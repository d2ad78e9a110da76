"""The borrower's offline tool: ``python -m bitcoin COMMAND``.

Runs without Django, settings or a database, and never touches the network. Everything about a loan comes from
its *loan file* (``bitcoin.loan.LoanFacts`` as JSON, part of the recovery kit):

* ``addresses``: the escrow and collateral addresses and descriptors (from a loan file or from the six facts)
* ``preimage``: a fresh pB and hB
* ``build-tx1`` / ``build-exit`` / ``build-release``: the unsigned PSBT of TX_1, TX_exit or TX_release;
  ``build-release --lender-preimage`` records pL in it (PSBT_IN_SHA256) once the lender revealed it
* ``sign``: checks the PSBT is one of this loan's TX_1, TX_exit or TX_release paying exactly what the loan says
  (PROTOCOL.md attack 16), prints what it signs (inputs, outputs, amounts, fee) on stderr, then signs. Without
  a loan file it signs only with ``--unchecked``, after printing the same summary.
* ``ladders``: TX_release and TX_exit built and signed at several fee rates (pre-signed, so the key can go)
* ``finalize``: the raw transaction of a fully signed PSBT (TX_exit; TX_release with pL), checked again
* ``verify``: with a loan file, the lender's full TX_1 pre-signature verification; without one it checks the
  signatures only and says so.

Output is JSON on stdout (a PSBT as base64). On any error it prints one line on stderr, ``error: <message>`` or
``error: refused (<reason code>): <message>``, and exits with status 1 (2 for usage errors); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import NoReturn

from bitcoin.addresses import script_pubkey_to_address
from bitcoin.descriptors import loan_output_descriptors
from bitcoin.encoding import sha256
from bitcoin.errors import BitcoinProtocolError, PresignatureError, PsbtError
from bitcoin.keys import PrivateKey, parse_private_key, verify_schnorr
from bitcoin.loan import LoanFacts
from bitcoin.networks import NETWORKS
from bitcoin.presignature import check_borrower_transaction, verify_borrower_presignature
from bitcoin.psbt import Psbt, create_psbt, sign_psbt
from bitcoin.scripts import (
    TwoLeafTaprootOutput,
    collateral_output,
    control_block_commits,
    escrow_output,
    parse_hash32,
    tap_leaf_hash,
)
from bitcoin.transactions import (
    SIGHASH_DEFAULT,
    PreparedSpend,
    build_exit,
    build_release,
    build_tx1,
    finalize,
    taproot_sighash,
)

EXIT_FAILURE = 1
EXIT_USAGE = 2

#: (argument name, type, help) of the six facts ``addresses`` takes without a loan file.
_OUTPUT_FACTS: tuple[tuple[str, type, str], ...] = (
    ("borrower_pubkey", str, "xB, 64 hex characters"),
    ("lender_pubkey", str, "xL, 64 hex characters"),
    ("borrower_hash", str, "hB = SHA256(pB), 64 hex characters"),
    ("lender_hash", str, "hL = SHA256(pL), 64 hex characters"),
    ("escrow_timelock", int, "t_0 in blocks (1..65535)"),
    ("collateral_timelock", int, "t_1 in blocks (1..65535)"),
)
#: A ladder's default fee rates (sat/vB): the cheapest that meets the fee estimate of the day is broadcast.
DEFAULT_LADDER_FEE_RATES = "1,2,5,10,20,50"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line instead of usage text plus a message."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}", EXIT_USAGE)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _decimal(rate: Fraction) -> str:
    return str((Decimal(rate.numerator) / rate.denominator).quantize(Decimal("0.001")))


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise CliError(f"cannot read {what} {path!r}: {error}") from None


def _load_facts(path: str) -> LoanFacts:
    return LoanFacts.from_json(_read(path, "loan file"))


def _load_psbt(path: str) -> Psbt:
    try:
        return Psbt.load(_read(path, "PSBT file"))
    except PsbtError as error:
        raise PresignatureError("malformed_psbt", str(error)) from None


def _load_key(path: str, network: str | None) -> PrivateKey:
    try:
        text = _read(path, "key file").decode("ascii")
    except UnicodeDecodeError:
        raise CliError(f"key file {path!r} is not text") from None
    return parse_private_key(text, network)


def _write_or_return(result: dict[str, object], output: str | None, psbt: Psbt) -> dict[str, object] | str:
    """The PSBT on stdout, or written to ``output`` with the JSON result on stdout."""
    encoded = psbt.to_base64()
    if not output:
        return encoded
    try:
        with open(output, "w", encoding="ascii") as handle:
            handle.write(encoded + "\n")
    except OSError as error:
        raise CliError(f"cannot write {output!r}: {error}") from None
    return {**result, "output": output}


# -- what a transaction does, for the person about to sign it ------------------------------------------------


def _describe(psbt: Psbt, network: str | None, prepared: PreparedSpend | None, facts: LoanFacts | None) -> dict:
    """Inputs, outputs (address, sats, whose), fee and fee rate of the PSBT's transaction."""
    tx = psbt.unsigned_tx
    spent = [prepared.prevout] if prepared is not None else [psbt.witness_utxo(i) for i in range(len(tx.inputs))]
    owners: dict[bytes, str] = {}
    if facts is not None:
        owners[facts.borrower_payout_script] = "your payout address"
        owners[facts.lender_payout_script] = "the lender's payout address"
        owners[facts.escrow.script_pubkey] = "the loan's escrow"
        if facts.lender_hash is not None:
            owners[facts.collateral.script_pubkey] = "the loan's collateral output"

    def address(script: bytes) -> str:
        try:
            return script_pubkey_to_address(script, network) if network else script.hex()
        except BitcoinProtocolError:
            return script.hex()

    inputs = [
        {
            "outpoint": str(txin.outpoint),
            "sats": None if spent[index] is None else spent[index].value,
            "spends": owners.get(spent[index].script_pubkey, "unknown") if spent[index] is not None else "unknown",
        }
        for index, txin in enumerate(tx.inputs)
    ]
    outputs = [
        {"address": address(out.script_pubkey), "sats": out.value, "pays": owners.get(out.script_pubkey, "unknown")}
        for out in tx.outputs
    ]
    summary: dict[str, object] = {"inputs": inputs, "outputs": outputs}
    if prepared is not None:
        summary.update(
            transaction=prepared.kind.value,
            fee_sats=prepared.fee_sats,
            fee_rate_sat_vb=_decimal(prepared.fee_rate),
        )
    elif all(out is not None for out in spent):
        summary["fee_sats"] = sum(out.value for out in spent) - sum(out.value for out in tx.outputs)  # type: ignore[union-attr]
    return summary


def _print_summary(summary: dict, checked: bool) -> None:
    what = summary.get("transaction", "an unchecked transaction")
    lines = [f"signing {what}" + ("" if checked else " WITHOUT checking it against a loan")]
    for item in summary["inputs"]:
        lines.append(f"  input  {item['outpoint']}  {item['sats']} sat  ({item['spends']})")
    for item in summary["outputs"]:
        lines.append(f"  output {item['address']}  {item['sats']} sat  ({item['pays']})")
    if "fee_sats" in summary:
        rate = f" ({summary['fee_rate_sat_vb']} sat/vB)" if "fee_rate_sat_vb" in summary else ""
        lines.append(f"  miner fee {summary['fee_sats']} sat{rate}")
    print("\n".join(lines), file=sys.stderr)


# -- commands ----------------------------------------------------------------------------------------------------


def _output_json(output: TwoLeafTaprootOutput, network: str) -> dict[str, object]:
    descriptors = loan_output_descriptors(output)
    return {
        "address": output.address(network),
        "script_pubkey": output.script_pubkey.hex(),
        "output_key": output.output_key.hex(),
        "internal_key": output.internal_key.hex(),
        "merkle_root": output.merkle_root.hex(),
        "leaves": [leaf.hex() for leaf in output.leaves],
        "leaf_hashes": [leaf_hash.hex() for leaf_hash in output.leaf_hashes],
        "control_blocks": [output.control_block(index).hex() for index in (0, 1)],
        "descriptor": descriptors.tree_descriptor,
        "watch_descriptor": descriptors.watch_descriptor,
    }


def _cmd_addresses(args: argparse.Namespace) -> dict[str, object]:
    if args.loan:
        facts = _load_facts(args.loan)
        network, escrow = facts.network, facts.escrow
        collateral = facts.collateral if facts.lender_hash is not None else None
    else:
        missing = [_flag(name) for name, _, _ in _OUTPUT_FACTS if getattr(args, name) is None]
        if args.network is None:
            missing.insert(0, "--network")
        if missing:
            raise CliError(f"give --loan FILE, or every fact: missing {', '.join(missing)}")
        network = args.network
        escrow = escrow_output(
            borrower_pubkey=args.borrower_pubkey,
            lender_pubkey=args.lender_pubkey,
            borrower_hash=args.borrower_hash,
            escrow_timelock=args.escrow_timelock,
        )
        collateral = collateral_output(
            borrower_pubkey=args.borrower_pubkey,
            lender_pubkey=args.lender_pubkey,
            lender_hash=args.lender_hash,
            collateral_timelock=args.collateral_timelock,
        )
    result: dict[str, object] = {"network": network, "escrow": _output_json(escrow, network)}
    result["escrow_address"] = escrow.address(network)
    result["escrow_descriptor"] = loan_output_descriptors(escrow).tree_descriptor
    if collateral is not None:
        result["collateral"] = _output_json(collateral, network)
        result["collateral_address"] = collateral.address(network)
        result["collateral_descriptor"] = loan_output_descriptors(collateral).tree_descriptor
    return result


def _cmd_preimage(_args: argparse.Namespace) -> dict[str, object]:
    preimage = secrets.token_bytes(32)
    return {"preimage": preimage.hex(), "hash": sha256(preimage).hex()}


def _cmd_build_tx1(args: argparse.Namespace) -> dict[str, object] | str:
    prepared = build_tx1(_load_facts(args.loan), fee_rate_sat_vb=args.fee_rate)
    return _write_or_return({"txid": prepared.tx.txid}, args.output, create_psbt(prepared))


def _cmd_build_exit(args: argparse.Namespace) -> dict[str, object] | str:
    prepared = build_exit(_load_facts(args.loan), fee_rate_sat_vb=args.fee_rate)
    return _write_or_return({"txid": prepared.tx.txid}, args.output, create_psbt(prepared))


def _lender_preimage(facts: LoanFacts, text: str) -> bytes:
    preimage = parse_hash32(text, "lender preimage pL")
    if sha256(preimage) != facts.lender_hash:
        raise CliError("the lender preimage does not hash to the loan's hL")
    return preimage


def _cmd_build_release(args: argparse.Namespace) -> dict[str, object] | str:
    facts = _load_facts(args.loan)
    prepared = build_release(facts, tx1_txid=args.tx1_txid, fee_rate_sat_vb=args.fee_rate)
    psbt = create_psbt(prepared)
    if args.lender_preimage:
        psbt.add_sha256_preimage(0, _lender_preimage(facts, args.lender_preimage))
    return _write_or_return({"txid": prepared.tx.txid}, args.output, psbt)


def _signed_psbt(prepared: PreparedSpend, key: PrivateKey, source: Psbt | None = None) -> Psbt:
    """A fresh PSBT of ``prepared`` (nothing of an uploaded one believed) with ``key``'s signature, keeping the
    uploaded PSBT's other signatures that verify for this exact transaction and its preimages."""
    psbt = create_psbt(prepared)
    if source is not None:
        for (xonly, leaf_hash), signature in source.tap_script_sigs(0).items():
            ours = leaf_hash == prepared.leaf_hash and xonly in prepared.signers and xonly != key.xonly_pubkey
            if ours and prepared.verify_signature(xonly, signature):
                psbt.add_tap_script_sig(0, xonly, leaf_hash, signature)
        for preimage in source.sha256_preimages(0).values():
            psbt.add_sha256_preimage(0, preimage)
    psbt.add_tap_script_sig(0, key.xonly_pubkey, prepared.leaf_hash, prepared.sign(key))
    return psbt


def _cmd_sign(args: argparse.Namespace) -> dict[str, object] | str:
    psbt = _load_psbt(args.psbt)
    if args.loan:
        facts = _load_facts(args.loan)
        key = _load_key(args.key_file, facts.network)
        if key.xonly_pubkey != facts.borrower_btc_pubkey:
            raise CliError(f"key {key.xonly_pubkey.hex()} is not the loan's borrower key")
        prepared = check_borrower_transaction(facts, psbt.unsigned_tx, psbt.witness_utxo(0), args.tx1_txid)
        summary = _describe(psbt, facts.network, prepared, facts)
        _print_summary(summary, checked=True)
        signed = _signed_psbt(prepared, key, psbt)
        return _write_or_return({"checked_against_loan": True, "summary": summary}, args.output, signed)
    key = _load_key(args.key_file, args.network)
    summary = _describe(psbt, args.network, None, None)
    _print_summary(summary, checked=False)
    if not args.unchecked:
        raise CliError(
            "refusing to sign without the loan file (--loan): a transaction checked against nothing can pay anyone; "
            "--unchecked signs it anyway, only if you checked every output above yourself"
        )
    if sign_psbt(psbt, key) == 0:
        raise CliError(f"key {key.xonly_pubkey.hex()} does not appear in any leaf script of this PSBT")
    return _write_or_return({"checked_against_loan": False, "summary": summary}, args.output, psbt)


def _fee_rates(text: str) -> list[str]:
    rates = [item.strip() for item in text.split(",") if item.strip()]
    if not rates:
        raise CliError("--fee-rates needs at least one rate")
    return rates


def _cmd_ladders(args: argparse.Namespace) -> dict[str, object]:
    facts = _load_facts(args.loan)
    key = _load_key(args.key_file, facts.network)
    if key.xonly_pubkey != facts.borrower_btc_pubkey:
        raise CliError(f"key {key.xonly_pubkey.hex()} is not the loan's borrower key")
    release, exits = [], []
    for rate in _fee_rates(args.fee_rates):
        prepared = build_release(facts, tx1_txid=args.tx1_txid, fee_rate_sat_vb=rate)
        signed = _signed_psbt(check_borrower_transaction(facts, prepared.tx, None, args.tx1_txid), key)
        release.append({"fee_rate_sat_vb": rate, "fee_sats": prepared.fee_sats, "psbt": signed.to_base64()})
        prepared = build_exit(facts, fee_rate_sat_vb=rate)
        signature = check_borrower_transaction(facts, prepared.tx).sign(key)
        exit_tx = finalize(prepared, signatures=[signature])
        exits.append({"fee_rate_sat_vb": rate, "fee_sats": prepared.fee_sats, "tx_hex": exit_tx.hex()})
    return {"tx1_txid": args.tx1_txid, "release": release, "exit": exits}


def _cmd_finalize(args: argparse.Namespace) -> dict[str, object]:
    facts = _load_facts(args.loan)
    psbt = _load_psbt(args.psbt)
    prepared = check_borrower_transaction(facts, psbt.unsigned_tx, psbt.witness_utxo(0))
    signatures = psbt.tap_script_sigs(0)
    try:
        ordered = [signatures[(signer, prepared.leaf_hash)] for signer in prepared.signers]
    except KeyError as missing:
        raise CliError(f"the PSBT lacks the signature of {missing.args[0][0].hex()}") from None
    preimage = None
    if prepared.preimage_hash is not None:
        preimage = psbt.sha256_preimages(0).get(prepared.preimage_hash)
        if args.lender_preimage:
            preimage = _lender_preimage(facts, args.lender_preimage)
        if preimage is None:
            raise CliError(f"{prepared.kind.value} needs the preimage of {prepared.preimage_hash.hex()}")
    tx = finalize(prepared, signatures=ordered, preimage=preimage)
    return {"transaction": prepared.kind.value, "txid": tx.txid, "tx_hex": tx.hex()}


def _check_psbt_signatures(psbt: Psbt) -> list[dict[str, object]]:
    """Verify every tap script signature against its leaf and the PSBT's own witness UTXOs."""
    spent_outputs = psbt.spent_outputs()
    results: list[dict[str, object]] = []
    for index in range(len(psbt.inputs)):
        leaves = {
            tap_leaf_hash(script, version): (control, script)
            for control, script, version in psbt.tap_leaf_scripts(index)
        }
        for (xonly, leaf_hash), signature in psbt.tap_script_sigs(index).items():
            if leaf_hash not in leaves:
                raise CliError(f"input {index}: signature for unknown leaf {leaf_hash.hex()}")
            control, script = leaves[leaf_hash]
            if not control_block_commits(control, script, spent_outputs[index].script_pubkey):
                raise CliError(f"input {index}: leaf {leaf_hash.hex()} is not committed to by the witness UTXO")
            if b"\x20" + xonly not in script:
                raise CliError(f"input {index}: key {xonly.hex()} is not in leaf {leaf_hash.hex()}")
            if len(signature) != 64:
                raise CliError(f"input {index}: only 64-byte SIGHASH_DEFAULT signatures are accepted")
            sighash = taproot_sighash(psbt.unsigned_tx, index, spent_outputs, SIGHASH_DEFAULT, leaf_hash)
            if not verify_schnorr(xonly, sighash, signature):
                raise CliError(f"input {index}: signature of {xonly.hex()} is invalid")
            results.append({"input": index, "pubkey": xonly.hex(), "leaf_hash": leaf_hash.hex()})
    if not results:
        raise CliError("the PSBT carries no tap script signature")
    return results


def _cmd_verify(args: argparse.Namespace) -> dict[str, object]:
    psbt = _load_psbt(args.psbt)
    if not args.loan:
        return {
            "checked_against_loan": False,
            "signatures_valid": True,
            "signatures": _check_psbt_signatures(psbt),
            "warning": "only the signatures were checked, against the PSBT's own claims; nothing says this "
            "transaction pays what a loan allows (give --loan FILE for that)",
        }
    verified = verify_borrower_presignature(_load_facts(args.loan), psbt=psbt)
    return {
        "checked_against_loan": True,
        "valid": True,
        "txid": verified.transaction.txid,
        "borrower_signature": verified.borrower_signature.hex(),
        "origination_fee_sats": verified.origination_fee_sats,
        "collateral_sats": verified.collateral_sats,
        "change_sats": verified.change_sats,
        "miner_fee_sats": verified.miner_fee_sats,
        "fee_rate_sat_vb": _decimal(verified.fee_rate_sat_vb),
    }


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m bitcoin``."""
    parser = _Parser(prog="python -m bitcoin", description="The borrower's offline tool for BTC-collateral loans.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    networks = sorted(NETWORKS)

    def command(name: str, help_text: str, handler: object, *, loan: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        if loan:
            sub.add_argument("--loan", required=True, help="the loan file (JSON) from your recovery kit")
        sub.set_defaults(handler=handler)
        return sub

    addresses = command("addresses", "the escrow and collateral addresses and descriptors", _cmd_addresses, loan=False)
    addresses.add_argument("--loan", help="the loan file (JSON); or give the six facts below")
    addresses.add_argument("--network", choices=networks)
    for name, kind, help_text in _OUTPUT_FACTS:
        addresses.add_argument(_flag(name), dest=name, type=kind, help=help_text)

    command("preimage", "a fresh 32-byte preimage and its SHA-256", _cmd_preimage, loan=False)

    for name, help_text, handler in (
        ("build-tx1", "the unsigned TX_1 (collateral lock) PSBT", _cmd_build_tx1),
        ("build-exit", "the unsigned TX_exit (escrow back after t_0) PSBT", _cmd_build_exit),
        ("build-release", "the unsigned TX_release (collateral back with pL) PSBT", _cmd_build_release),
    ):
        sub = command(name, help_text, handler)
        sub.add_argument("--fee-rate", required=True, help="target fee rate, sat/vB (decimal)")
        sub.add_argument("--output", help="write the PSBT here (JSON summary on stdout) instead of printing it")
        if name == "build-release":
            sub.add_argument("--tx1-txid", required=True, help="txid of the loan's TX_1")
            sub.add_argument("--lender-preimage", help="pL, once public: recorded in the PSBT")

    sign = command("sign", "check a PSBT against the loan, show what it pays, and sign it", _cmd_sign, loan=False)
    sign.add_argument("--psbt", required=True, help="PSBT file (base64, hex or binary)")
    sign.add_argument("--key-file", required=True, help="file holding the private key as WIF or 64 hex characters")
    sign.add_argument("--loan", help="the loan file (JSON): the transaction must be one of this loan's")
    sign.add_argument("--tx1-txid", help="with --loan: a TX_release must spend this TX_1")
    sign.add_argument("--network", choices=networks, help="without --loan: refuse a WIF of another network")
    sign.add_argument("--output", help="write the signed PSBT here instead of printing it")
    sign.add_argument(
        "--unchecked",
        action="store_true",
        help="sign without a loan file; only if you checked every output of the summary yourself",
    )

    ladders = command("ladders", "pre-signed TX_release and TX_exit at several fee rates", _cmd_ladders)
    ladders.add_argument("--key-file", required=True, help="file holding the borrower's private key")
    ladders.add_argument("--tx1-txid", required=True, help="txid of the loan's TX_1 (fixed once B signed it)")
    ladders.add_argument("--fee-rates", default=DEFAULT_LADDER_FEE_RATES, help="comma-separated sat/vB")

    final = command("finalize", "the raw transaction of a fully signed PSBT of the loan", _cmd_finalize)
    final.add_argument("--psbt", required=True, help="PSBT file (base64, hex or binary)")
    final.add_argument("--lender-preimage", help="pL, for a TX_release whose PSBT does not carry it")

    verify = command("verify", "check a signed TX_1 PSBT against the loan", _cmd_verify, loan=False)
    verify.add_argument("--psbt", required=True, help="PSBT file (base64, hex or binary)")
    verify.add_argument("--loan", help="the loan file (JSON); without it only the signatures are checked")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    try:
        args = build_parser().parse_args(argv)
        result = args.handler(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.status
    except PresignatureError as error:
        print(f"error: refused ({error.reason}): {error.args[0]}", file=sys.stderr)
        return EXIT_FAILURE
    except BitcoinProtocolError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if isinstance(result, str):
        print(result)
    else:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0
