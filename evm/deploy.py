"""Deploy and link both contracts, and record the deployment (addresses, chain, block, transactions).

`deploy_contracts(w3, account, parameters) -> Deployment` does the work; `manage.py deploy_contracts` reads
the settings and the key, calls it and writes `Deployment.to_json_dict()` to `settings.EVM_DEPLOYMENT_FILE`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3

from .anvil import DEV_CHAIN_ID, DEV_MNEMONIC
from .artifacts import Artifacts, load_artifacts
from .client import PreparedTransaction, revert_decoder, send
from .errors import EvmError, InvalidArgument
from .parameters import ProtocolParameters

DEPLOYMENT_FORMAT_VERSION = 1


class DeploymentError(EvmError):
    """The deployment did not produce a sound, linked pair of contracts."""


def dev_accounts(count: int = 10) -> list[LocalAccount]:
    """anvil's accounts from Foundry's public test mnemonic (m/44'/60'/0'/0/i). Never for real funds."""
    Account.enable_unaudited_hdwallet_features()
    return [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)]


def deployer_account(private_key: str | None, chain_id: int) -> LocalAccount:
    """The deployer: the given key, or, only on the development chain (31337), anvil's account 0."""
    if private_key:
        try:
            return Account.from_key(private_key.strip())
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"the deployer private key is not a valid 32-byte hex key: {exc}") from None
    if chain_id != DEV_CHAIN_ID:
        raise InvalidArgument(
            "no deployer key: set EVM_DEPLOYER_PRIVATE_KEY; only the development chain "
            f"({DEV_CHAIN_ID}) may use "
            f"anvil's public test account, and this is chain {chain_id}"
        )
    return dev_accounts(1)[0]


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    ether_swap_address: str
    loan_address: str
    deployer: str
    block_number: int  # the block of the first deployment transaction: scan events from here
    block_hash: bytes
    ether_swap_tx_hash: bytes
    loan_tx_hash: bytes
    link_tx_hash: bytes
    parameters: ProtocolParameters
    ether_swap_bytecode_sha256: str = ""
    loan_bytecode_sha256: str = ""

    @property
    def addresses(self) -> list[str]:
        """Both contract addresses, for `fetch_events`."""
        return [self.loan_address, self.ether_swap_address]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "format": DEPLOYMENT_FORMAT_VERSION,
            "chain_id": self.chain_id,
            "contracts": {
                "BtcCollateralLoan": {
                    "address": self.loan_address,
                    "tx_hash": "0x" + self.loan_tx_hash.hex(),
                    "bytecode_sha256": self.loan_bytecode_sha256,
                },
                "EtherSwap": {
                    "address": self.ether_swap_address,
                    "tx_hash": "0x" + self.ether_swap_tx_hash.hex(),
                    "bytecode_sha256": self.ether_swap_bytecode_sha256,
                },
            },
            "link_tx_hash": "0x" + self.link_tx_hash.hex(),
            "deployer": self.deployer,
            "block_number": self.block_number,
            "block_hash": "0x" + self.block_hash.hex(),
            "parameters": self.parameters.to_json_dict(),
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Deployment:
        try:
            if data.get("format") != DEPLOYMENT_FORMAT_VERSION:
                raise InvalidArgument(f"unknown deployment file format {data.get('format')!r}")
            loan = data["contracts"]["BtcCollateralLoan"]
            swap = data["contracts"]["EtherSwap"]
            return cls(
                chain_id=int(data["chain_id"]),
                ether_swap_address=to_checksum_address(swap["address"]),
                loan_address=to_checksum_address(loan["address"]),
                deployer=to_checksum_address(data["deployer"]),
                block_number=int(data["block_number"]),
                block_hash=bytes.fromhex(data["block_hash"].removeprefix("0x")),
                ether_swap_tx_hash=bytes.fromhex(swap["tx_hash"].removeprefix("0x")),
                loan_tx_hash=bytes.fromhex(loan["tx_hash"].removeprefix("0x")),
                link_tx_hash=bytes.fromhex(data["link_tx_hash"].removeprefix("0x")),
                parameters=ProtocolParameters.from_json_dict(data["parameters"]),
                ether_swap_bytecode_sha256=swap.get("bytecode_sha256", ""),
                loan_bytecode_sha256=loan.get("bytecode_sha256", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            raise InvalidArgument(f"malformed deployment record: {exc!r}") from None

    def write(self, path: Path) -> None:
        """Write the JSON atomically (a reader never sees half a file), creating the directory."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.to_json_dict(), handle, indent=2, sort_keys=True)
                handle.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_deployment(path: Path) -> Deployment:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgument(f"no deployment file at {path}: run `manage.py deploy_contracts`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"deployment file {path} is unreadable: {exc}") from None
    return Deployment.from_json_dict(data)


def _creation(w3: Web3, artifact, chain_id: int, args: list[Any]) -> PreparedTransaction:
    contract = w3.eth.contract(abi=list(artifact.abi), bytecode=artifact.bytecode)
    data = contract.constructor(*args).data_in_transaction
    return PreparedTransaction(to=None, data=data, value=0, chain_id=chain_id, method=f"deploy {artifact.name}")


def deploy_contracts(
    w3: Web3,
    account: LocalAccount,
    parameters: ProtocolParameters,
    *,
    artifacts: Artifacts | None = None,
    legacy: bool | None = None,
    gas_price: int | None = None,
) -> Deployment:
    """Deploy EtherSwap, then BtcCollateralLoan(etherSwap, parameters), then link them; verify the link.

    Parameters are validated first with the contract's rules, so a bad set fails before any gas is spent.
    """
    parameters.validate()
    artifacts = artifacts or load_artifacts()
    decoder = revert_decoder(artifacts)
    chain_id = int(w3.eth.chain_id)

    def _send(prepared: PreparedTransaction):
        return send(w3, prepared, account, decoder=decoder, legacy=legacy, gas_price=gas_price)

    swap_receipt = _send(_creation(w3, artifacts.ether_swap, chain_id, []))
    swap_address = to_checksum_address(swap_receipt["contractAddress"])
    loan_receipt = _send(_creation(w3, artifacts.loan, chain_id, [swap_address, parameters.to_abi()]))
    loan_address = to_checksum_address(loan_receipt["contractAddress"])

    swap = w3.eth.contract(address=swap_address, abi=list(artifacts.ether_swap.abi))
    link = PreparedTransaction(
        to=swap_address,
        data=swap.encode_abi("setLoanContract", args=[loan_address]),
        value=0,
        chain_id=chain_id,
        method="setLoanContract",
    )
    link_receipt = _send(link)

    loan = w3.eth.contract(address=loan_address, abi=list(artifacts.loan.abi))
    linked = to_checksum_address(swap.functions.loanContract().call())
    if linked != loan_address:
        raise DeploymentError(f"EtherSwap {swap_address} is linked to {linked}, not to {loan_address}")
    if to_checksum_address(loan.functions.etherSwap().call()) != swap_address:
        raise DeploymentError(f"BtcCollateralLoan {loan_address} does not point at EtherSwap {swap_address}")
    if to_checksum_address(loan.functions.owner().call()) != account.address:
        raise DeploymentError(f"BtcCollateralLoan {loan_address} is not owned by the deployer {account.address}")
    on_chain = ProtocolParameters.from_abi(loan.functions.parameters().call())
    if on_chain != parameters:
        raise DeploymentError("the deployed parameters differ from the requested ones")

    return Deployment(
        chain_id=chain_id,
        ether_swap_address=swap_address,
        loan_address=loan_address,
        deployer=account.address,
        block_number=int(swap_receipt["blockNumber"]),
        block_hash=bytes(swap_receipt["blockHash"]),
        ether_swap_tx_hash=bytes(swap_receipt["transactionHash"]),
        loan_tx_hash=bytes(loan_receipt["transactionHash"]),
        link_tx_hash=bytes(link_receipt["transactionHash"]),
        parameters=parameters,
        ether_swap_bytecode_sha256=artifacts.ether_swap.bytecode_sha256,
        loan_bytecode_sha256=artifacts.loan.bytecode_sha256,
    )
