"""Offline command line tool: ``python -m bitcoin {addresses,preimage,build-tx1,sign,verify}``.

Runs without Django, settings or a database, and never touches the network. Output is JSON on stdout (a PSBT
is printed as base64, or written with ``--output``). On any error it prints one line, ``error: <message>``,
on stderr and exits with status 1 (2 for usage errors); never a traceback.

``sign`` and ``verify`` accept the loan's facts (``--network --borrower-pubkey ... --max-fee-rate``); given
them, ``sign`` refuses to sign a TX_1 that is not exactly what the loan allows, and ``verify`` runs the
lender's full pre-signature verification.
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

from bitcoin.descriptors import loan_output_descriptors
from bitcoin.encoding import sha256
from bitcoin.errors import BitcoinProtocolError, PresignatureError
from bitcoin.keys import parse_private_key, verify_schnorr
from bitcoin.networks import NETWORKS
from bitcoin.psbt import Psbt, create_psbt, sign_psbt
from bitcoin.scripts import (
    NUMS_INTERNAL_KEY,
    OP_2,
    OP_CHECKSIGADD,
    OP_NUMEQUALVERIFY,
    OP_TRUE,
    REFERENCE_INTERNAL_KEY,
    TwoLeafTaprootOutput,
    control_block_commits,
    loan_outputs,
    tap_leaf_hash,
)
from bitcoin.transactions import SIGHASH_DEFAULT, OutPoint, build_tx1, taproot_sighash

EXIT_FAILURE = 1
EXIT_USAGE = 2

#: (argument name, type, help) of the loan facts shared by build-tx1, sign and verify.
_LOAN_FACTS: tuple[tuple[str, type, str], ...] = (
    ("borrower_pubkey", str, "xB, 64 hex characters"),
    ("lender_pubkey", str, "xL, 64 hex characters"),
    ("borrower_hash", str, "hB = SHA256(pB), 64 hex characters"),
    ("lender_hash", str, "hL = SHA256(pL), 64 hex characters"),
    ("escrow_timelock", int, "t_0 in blocks (1..65535)"),
    ("collateral_timelock", int, "t_1 in blocks (1..65535)"),
    ("escrow_outpoint", str, "TXID:VOUT of the escrow UTXO"),
    ("escrow_value", int, "escrow value in sats, as seen on chain"),
    ("loan_amount", int, "loan amount in sats"),
    ("origination_fee_bps", int, "origination fee in basis points of the amount"),
    ("lender_payout_address", str, "L's payout address for the origination fee"),
)
_FEE_BOUNDS: tuple[tuple[str, type, str], ...] = (
    ("min_fee_rate", str, "lowest acceptable TX_1 fee rate, sat/vB (decimal)"),
    ("max_fee_rate", str, "highest acceptable TX_1 fee rate, sat/vB (decimal)"),
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line instead of usage text plus a message."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}", EXIT_USAGE)


#: How escrow leaf 1 (the 2-of-2 collateral lock) ends: `<xB> OP_CHECKSIGADD OP_2 OP_NUMEQUALVERIFY OP_TRUE`.
COLLATERAL_LOCK_LEAF_SUFFIX = bytes([OP_CHECKSIGADD, OP_2, OP_NUMEQUALVERIFY, OP_TRUE])


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_arguments(parser: argparse.ArgumentParser, specs: tuple[tuple[str, type, str], ...], required: bool) -> None:
    for name, kind, help_text in specs:
        parser.add_argument(_flag(name), dest=name, type=kind, required=required, help=help_text)


def _loan_facts(args: argparse.Namespace, with_fee_bounds: bool) -> dict[str, object] | None:
    """The loan facts given on the command line as keyword arguments, None if none were given."""
    specs = _LOAN_FACTS + (_FEE_BOUNDS if with_fee_bounds else ())
    given = [name for name, _, _ in specs if getattr(args, name, None) is not None]
    if not given:
        return None
    missing = [_flag(name) for name, _, _ in specs if getattr(args, name, None) is None]
    if args.network is None:
        missing.insert(0, "--network")
    if missing:
        raise CliError(f"checking against a loan needs every fact; missing {', '.join(missing)}")
    facts: dict[str, object] = {
        "network": args.network,
        "borrower_pubkey": args.borrower_pubkey,
        "lender_pubkey": args.lender_pubkey,
        "borrower_hash": args.borrower_hash,
        "lender_hash": args.lender_hash,
        "escrow_timelock": args.escrow_timelock,
        "collateral_timelock": args.collateral_timelock,
        "escrow_outpoint": OutPoint.parse(args.escrow_outpoint),
        "escrow_value_sats": args.escrow_value,
        "loan_amount_sats": args.loan_amount,
        "origination_fee_bps": args.origination_fee_bps,
        "lender_payout_address": args.lender_payout_address,
    }
    if with_fee_bounds:
        facts["min_fee_rate_sat_vb"] = args.min_fee_rate
        facts["max_fee_rate_sat_vb"] = args.max_fee_rate
    return facts


def _decimal(rate: Fraction) -> str:
    return str((Decimal(rate.numerator) / rate.denominator).quantize(Decimal("0.001")))


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
    scripts = loan_outputs(
        internal_key=REFERENCE_INTERNAL_KEY if args.reference_internal_key else NUMS_INTERNAL_KEY,
        borrower_pubkey=args.borrower_pubkey,
        lender_pubkey=args.lender_pubkey,
        borrower_hash=args.borrower_hash,
        lender_hash=args.lender_hash,
        escrow_timelock=args.escrow_timelock,
        collateral_timelock=args.collateral_timelock,
    )
    escrow = _output_json(scripts.escrow, args.network)
    collateral = _output_json(scripts.collateral, args.network)
    return {
        "network": args.network,
        "escrow_address": escrow["address"],
        "collateral_address": collateral["address"],
        "escrow_descriptor": escrow["descriptor"],
        "collateral_descriptor": collateral["descriptor"],
        "escrow_watch_descriptor": escrow["watch_descriptor"],
        "collateral_watch_descriptor": collateral["watch_descriptor"],
        "escrow": escrow,
        "collateral": collateral,
    }


def _cmd_preimage(_args: argparse.Namespace) -> dict[str, object]:
    preimage = secrets.token_bytes(32)
    return {"preimage": preimage.hex(), "hash": sha256(preimage).hex()}


def _cmd_build_tx1(args: argparse.Namespace) -> str:
    facts = _loan_facts(args, with_fee_bounds=False)
    if facts is None:  # unreachable: every fact is a required argument of this command
        raise CliError("build-tx1 needs the loan's facts")
    prepared = build_tx1(
        scripts=loan_outputs(
            borrower_pubkey=args.borrower_pubkey,
            lender_pubkey=args.lender_pubkey,
            borrower_hash=args.borrower_hash,
            lender_hash=args.lender_hash,
            escrow_timelock=args.escrow_timelock,
            collateral_timelock=args.collateral_timelock,
        ),
        escrow_outpoint=facts["escrow_outpoint"],  # type: ignore[arg-type]
        escrow_value_sats=args.escrow_value,
        loan_amount_sats=args.loan_amount,
        origination_fee_bps=args.origination_fee_bps,
        lender_payout_address=args.lender_payout_address,
        network=args.network,
        fee_rate_sat_vb=args.fee_rate,
    )
    return create_psbt(prepared).to_base64()


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read {what} {path!r}: {error}") from None


def _load_psbt(path: str) -> Psbt:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CliError(f"cannot read PSBT file {path!r}: {error}") from None
    return Psbt.load(data)


def _cmd_sign(args: argparse.Namespace) -> dict[str, object] | str:
    psbt = _load_psbt(args.psbt)
    key = parse_private_key(_read_text(args.key_file, "key file"), args.network)
    facts = _loan_facts(args, with_fee_bounds=True)
    checked = None
    if facts is None and not args.unchecked and _locks_collateral(psbt):
        # Signing TX_1 blind would let whoever built the PSBT send the collateral anywhere once pB is public.
        raise CliError(
            "this PSBT spends an escrow's collateral lock: give every loan fact (--borrower-pubkey ... "
            "--max-fee-rate) so its outputs are checked before you sign, or --unchecked if you checked them yourself"
        )
    if facts is not None:
        from bitcoin.presignature import check_tx1_transaction

        if len(psbt.inputs) != 1:
            raise CliError("a TX_1 PSBT has exactly one input")
        checked = check_tx1_transaction(
            **facts,  # type: ignore[arg-type]
            transaction=psbt.unsigned_tx,
            claimed_prevout=psbt.witness_utxo(0),
        )
    added = sign_psbt(psbt, key)
    if added == 0:
        raise CliError(f"key {key.xonly_pubkey.hex()} does not appear in any leaf script of this PSBT")
    encoded = psbt.to_base64()
    if not args.output:
        return encoded
    try:
        with open(args.output, "w", encoding="ascii") as handle:
            handle.write(encoded + "\n")
    except OSError as error:
        raise CliError(f"cannot write {args.output!r}: {error}") from None
    summary: dict[str, object] = {"signatures_added": added, "output": args.output, "pubkey": key.xonly_pubkey.hex()}
    if checked is not None:
        summary.update(
            checked_against_loan=True,
            collateral_sats=checked.tx.outputs[1].value,
            origination_fee_sats=checked.tx.outputs[0].value,
            miner_fee_sats=checked.fee_sats,
            fee_rate_sat_vb=_decimal(checked.fee_rate),
        )
    return summary


def _locks_collateral(psbt: Psbt) -> bool:
    """True if any input offers the escrow's 2-of-2 collateral-lock leaf (the leaf TX_1 spends)."""
    return any(
        script.endswith(COLLATERAL_LOCK_LEAF_SUFFIX)
        for index in range(len(psbt.inputs))
        for _control, script, _version in psbt.tap_leaf_scripts(index)
    )


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
            results.append({"input": index, "pubkey": xonly.hex(), "leaf_hash": leaf_hash.hex(), "valid": True})
    if not results:
        raise CliError("the PSBT carries no tap script signature")
    return results


def _cmd_verify(args: argparse.Namespace) -> dict[str, object]:
    psbt = _load_psbt(args.psbt)
    facts = _loan_facts(args, with_fee_bounds=True)
    if facts is None:
        return {"valid": True, "signatures": _check_psbt_signatures(psbt)}
    from bitcoin.presignature import verify_borrower_presignature

    verified = verify_borrower_presignature(**facts, psbt=psbt)  # type: ignore[arg-type]
    return {
        "valid": True,
        "txid": verified.transaction.txid,
        "borrower_signature": verified.borrower_signature.hex(),
        "origination_fee_sats": verified.origination_fee_sats,
        "collateral_sats": verified.collateral_sats,
        "miner_fee_sats": verified.miner_fee_sats,
        "fee_rate_sat_vb": _decimal(verified.fee_rate_sat_vb),
    }


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m bitcoin``."""
    parser = _Parser(prog="python -m bitcoin", description="Offline tools for the BTC-collateral loan protocol.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    networks = sorted(NETWORKS)

    addresses = commands.add_parser("addresses", help="derive the escrow and collateral addresses of a loan")
    addresses.add_argument("--network", required=True, choices=networks)
    _add_arguments(addresses, _LOAN_FACTS[:6], required=True)
    addresses.add_argument(
        "--reference-internal-key",
        action="store_true",
        help="use the internal key PROTOCOL.md prints (to reproduce its test vector), not BIP-341's H; "
        "never for real outputs",
    )
    addresses.set_defaults(handler=_cmd_addresses)

    preimage = commands.add_parser("preimage", help="print a fresh 32-byte preimage and its SHA-256")
    preimage.set_defaults(handler=_cmd_preimage)

    build = commands.add_parser("build-tx1", help="print the unsigned TX_1 PSBT (base64) of a loan")
    build.add_argument("--network", required=True, choices=networks)
    _add_arguments(build, _LOAN_FACTS, required=True)
    build.add_argument("--fee-rate", required=True, help="target fee rate, sat/vB (decimal)")
    build.set_defaults(handler=_cmd_build_tx1)

    sign = commands.add_parser("sign", help="add your tapscript signatures to a PSBT")
    sign.add_argument("--psbt", required=True, help="PSBT file (base64, hex or binary)")
    sign.add_argument("--key-file", required=True, help="file holding the private key as WIF or 64 hex characters")
    sign.add_argument("--network", choices=networks, help="refuse a WIF of another network")
    sign.add_argument("--output", help="write the signed PSBT here instead of printing it")
    sign.add_argument(
        "--unchecked",
        action="store_true",
        help="sign a collateral lock (TX_1) without the loan facts; only if you verified its outputs yourself",
    )
    _add_arguments(sign, _LOAN_FACTS + _FEE_BOUNDS, required=False)
    sign.set_defaults(handler=_cmd_sign)

    verify = commands.add_parser("verify", help="check a signed PSBT (and, optionally, it against a loan)")
    verify.add_argument("--psbt", required=True, help="PSBT file (base64, hex or binary)")
    verify.add_argument("--network", choices=networks)
    _add_arguments(verify, _LOAN_FACTS + _FEE_BOUNDS, required=False)
    verify.set_defaults(handler=_cmd_verify)
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
