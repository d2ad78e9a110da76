"""`manage.py deploy_contracts --lender-btc-pubkey <x-only hex>`: deploy, link and record both contracts.

The deployer key comes from the environment (`EVM_DEPLOYER_PRIVATE_KEY`), never from the command line (it would
land in the shell history and the process list). Only on the development chain (31337) may it default to anvil's
public test account 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from evm.connection import connect
from evm.deploy import Deployment, deploy_contracts, deployer_account, load_deployment
from evm.errors import EvmError
from evm.parameters import ProtocolParameters, as_bytes32

DEPLOYER_KEY_ENV = "EVM_DEPLOYER_PRIVATE_KEY"


def deploy_from_settings(*, lender_btc_pubkey: bytes, output: Path | None = None) -> Deployment:
    """Deploy with the configured node and chain, PROTOCOL.md's default parameters (ratio from
    EVM_BLOCKS_PER_BTC_BLOCK) and `lender_btc_pubkey`; write the record to `output` (default
    EVM_DEPLOYMENT_FILE). Raises `evm.errors.EvmError` subclasses on failure (nothing is written then)."""
    w3 = connect(settings.EVM_RPC_URL, expected_chain_id=settings.EVM_CHAIN_ID, timeout=settings.EVM_RPC_TIMEOUT)
    account = deployer_account(os.environ.get(DEPLOYER_KEY_ENV), settings.EVM_CHAIN_ID)
    parameters = ProtocolParameters(
        lender_btc_pubkey=lender_btc_pubkey,
        evm_blocks_per_btc_block=settings.EVM_BLOCKS_PER_BTC_BLOCK,
    ).validate()
    deployment = deploy_contracts(w3, account, parameters)
    deployment.write(Path(output or settings.EVM_DEPLOYMENT_FILE))
    return deployment


def live_deployment(path: Path) -> Deployment | None:
    """The deployment recorded at `path` if its contracts exist on the configured chain, else None (no file,
    another chain, or a development chain that was reset). An unreadable record is an error: look at it first."""
    if not path.exists():
        return None
    recorded = load_deployment(path)
    if recorded.chain_id != settings.EVM_CHAIN_ID:
        return None
    w3 = connect(settings.EVM_RPC_URL, expected_chain_id=settings.EVM_CHAIN_ID, timeout=settings.EVM_RPC_TIMEOUT)
    return recorded if w3.eth.get_code(recorded.loan_address) else None


def parse_x_only_key(value: str) -> bytes:
    key = as_bytes32(value.strip(), "--lender-btc-pubkey")
    if key == bytes(32):
        raise CommandError("--lender-btc-pubkey must not be zero")
    return key


class Command(BaseCommand):
    help = "Deploy EtherSwap and BtcCollateralLoan, link them and write the deployment record (JSON)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--lender-btc-pubkey",
            required=True,
            help="the lender's BIP-340 x-only Bitcoin public key, 32 bytes as 64 hex characters",
        )
        parser.add_argument(
            "--output",
            type=Path,
            default=None,
            help="where to write the deployment JSON (default: settings.EVM_DEPLOYMENT_FILE)",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="deploy a new pair even though the recorded one is live on this chain (loans in the old "
            "contracts stay there)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            lender_key = parse_x_only_key(options["lender_btc_pubkey"])
        except EvmError as exc:
            raise CommandError(str(exc)) from None
        output = Path(options["output"] or settings.EVM_DEPLOYMENT_FILE)
        try:
            live = None if options["replace"] else live_deployment(output)
        except EvmError as exc:
            raise CommandError(f"cannot check the recorded deployment {output}: {exc}") from None
        if live is not None:
            raise CommandError(
                f"contracts are already deployed on chain {live.chain_id} (BtcCollateralLoan {live.loan_address}, "
                f"recorded in {output}); pass --replace to deploy a new pair"
            )
        try:
            deployment = self.deploy(lender_btc_pubkey=lender_key, output=output)
        except EvmError as exc:
            raise CommandError(f"deployment failed: {exc}") from None
        self.stdout.write(json.dumps(deployment.to_json_dict(), indent=2, sort_keys=True))
        self.stdout.write(self.style.SUCCESS(f"deployment written to {output}"))

    def deploy(self, *, lender_btc_pubkey: bytes, output: Path) -> Deployment:
        """The hook to extend (e.g. to also record the deployment in the database)."""
        return deploy_from_settings(lender_btc_pubkey=lender_btc_pubkey, output=output)
