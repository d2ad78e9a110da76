"""Offline command line tool: ``python -m bitcoin {addresses,preimage,sign,verify}``.

Runs without Django, settings or a database, and never touches the network. Output is JSON on stdout (the
signed PSBT is printed as base64, or written with ``--output``). On any error it prints one line,
``error: <message>``, on stderr and exits with status 1 (2 for usage errors); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import NoReturn

from bitcoin.descriptors import loan_output_descriptors
from bitcoin.encoding import sha256
from bitcoin.errors import BitcoinProtocolError, PresignatureError
from bitcoin.keys import parse_private_key
from bitcoin.networks import NETWORKS, get_network
from bitcoin.psbt import Psbt, sign_psbt
from bitcoin.scripts import TwoLeafTaprootOutput, control_block_commits, loan_outputs, tap_leaf_hash
from bitcoin.transactions import OutPoint, taproot_sighash

EXIT_FAILURE = 1
EXIT_USAGE = 2

_LOAN_EXPECTATIONS = (
    "network",
    "borrower_pubkey",
    "lender_pubkey",
    "borrower_hash",
    "lender_hash",
    "escrow_timelock",
    "collateral_timelock",
    "escrow_outpoint",
    "escrow_value",
    "loan_amount",
    "origination_fee_bps",
    "lender_payout_address",
    "min_fee_rate",
    "max_fee_rate",
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
    added = sign_psbt(psbt, key)
    if added == 0:
        raise CliError(f"key {key.xonly_pubkey.hex()} does not appear in any leaf script of this PSBT")
    encoded = psbt.to_base64()
    if args.output:
        try:
            with open(args.output, "w", encoding="ascii") as handle:
                handle.write(encoded + "\n")
        except OSError as error:
            raise CliError(f"cannot write {args.output!r}: {error}") from None
        return {"signatures_added": added, "output": args.output, "pubkey": key.xonly_pubkey.hex()}
    return encoded


def _check_psbt_signatures(psbt: Psbt) -> list[dict[str, object]]:
    """Verify every tap script signature against its leaf and the PSBT's own witness UTXOs."""
    from bitcoin.keys import verify_schnorr

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
            sighash = taproot_sighash(psbt.unsigned_tx, index, spent_outputs, 0, leaf_hash)
            if not verify_schnorr(xonly, sighash, signature):
                raise CliError(f"input {index}: signature of {xonly.hex()} is invalid")
            results.append({"input": index, "pubkey": xonly.hex(), "leaf_hash": leaf_hash.hex(), "valid": True})
    if not results:
        raise CliError("the PSBT carries no tap script signature")
    return results


def _cmd_verify(args: argparse.Namespace) -> dict[str, object]:
    psbt = _load_psbt(args.psbt)
    given = [name for name in _LOAN_EXPECTATIONS if getattr(args, name) is not None]
    if not given or given == ["network"]:
        return {"valid": True, "signatures": _check_psbt_signatures(psbt)}
    missing = [name for name in _LOAN_EXPECTATIONS if getattr(args, name) is None]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise CliError(f"checking against a loan needs every expectation; missing {flags}")
    from bitcoin.presignature import verify_borrower_presignature

    verified = verify_borrower_presignature(
        network=args.network,
        borrower_pubkey=args.borrower_pubkey,
        lender_pubkey=args.lender_pubkey,
        borrower_hash=args.borrower_hash,
        lender_hash=args.lender_hash,
        escrow_timelock=args.escrow_timelock,
        collateral_timelock=args.collateral_timelock,
        escrow_outpoint=OutPoint.parse(args.escrow_outpoint),
        escrow_value_sats=args.escrow_value,
        loan_amount_sats=args.loan_amount,
        origination_fee_bps=args.origination_fee_bps,
        lender_payout_address=args.lender_payout_address,
        min_fee_rate_sat_vb=args.min_fee_rate,
        max_fee_rate_sat_vb=args.max_fee_rate,
        psbt=psbt,
    )
    return {
        "valid": True,
        "txid": verified.transaction.txid,
        "borrower_signature": verified.borrower_signature.hex(),
        "origination_fee_sats": verified.origination_fee_sats,
        "collateral_sats": verified.collateral_sats,
        "miner_fee_sats": verified.miner_fee_sats,
        "fee_rate_sat_vb": str(
            (Decimal(verified.fee_rate_sat_vb.numerator) / verified.fee_rate_sat_vb.denominator).quantize(
                Decimal("0.001")
            )
        ),
    }


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m bitcoin``."""
    parser = _Parser(prog="python -m bitcoin", description="Offline tools for the BTC-collateral loan protocol.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    networks = sorted(NETWORKS)

    addresses = commands.add_parser("addresses", help="derive the escrow and collateral addresses of a loan")
    addresses.add_argument("--network", required=True, choices=networks)
    addresses.add_argument("--borrower-pubkey", required=True, help="xB, 64 hex characters")
    addresses.add_argument("--lender-pubkey", required=True, help="xL, 64 hex characters")
    addresses.add_argument("--borrower-hash", required=True, help="hB = SHA256(pB), 64 hex characters")
    addresses.add_argument("--lender-hash", required=True, help="hL = SHA256(pL), 64 hex characters")
    addresses.add_argument("--escrow-timelock", required=True, type=int, help="t_0 in blocks (1..65535)")
    addresses.add_argument("--collateral-timelock", required=True, type=int, help="t_1 in blocks (1..65535)")
    addresses.set_defaults(handler=_cmd_addresses)

    preimage = commands.add_parser("preimage", help="print a fresh 32-byte preimage and its SHA-256")
    preimage.set_defaults(handler=_cmd_preimage)

    sign = commands.add_parser("sign", help="add your tapscript signatures to a PSBT")
    sign.add_argument("--psbt", required=True, help="PSBT file (base64, hex or binary)")
    sign.add_argument("--key-file", required=True, help="file holding the private key as WIF or 64 hex characters")
    sign.add_argument("--network", choices=networks, help="refuse a WIF of another network")
    sign.add_argument("--output", help="write the signed PSBT here instead of printing it")
    sign.set_defaults(handler=_cmd_sign)

    verify = commands.add_parser("verify", help="check a signed PSBT (and, optionally, it against a loan)")
    verify.add_argument("--psbt", required=True, help="PSBT file (base64, hex or binary)")
    verify.add_argument("--network", choices=networks)
    verify.add_argument("--borrower-pubkey")
    verify.add_argument("--lender-pubkey")
    verify.add_argument("--borrower-hash")
    verify.add_argument("--lender-hash")
    verify.add_argument("--escrow-timelock", type=int)
    verify.add_argument("--collateral-timelock", type=int)
    verify.add_argument("--escrow-outpoint", help="TXID:VOUT of the escrow UTXO")
    verify.add_argument("--escrow-value", type=int, help="escrow value in sats, as seen on chain")
    verify.add_argument("--loan-amount", type=int, help="loan amount in sats")
    verify.add_argument("--origination-fee-bps", type=int)
    verify.add_argument("--lender-payout-address")
    verify.add_argument("--min-fee-rate", help="sat/vB, decimal")
    verify.add_argument("--max-fee-rate", help="sat/vB, decimal")
    verify.set_defaults(handler=_cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "network", None):
            get_network(args.network)
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
