"""`manage.py deploy_contracts`: evm's deployment command, plus the record in the database.

It takes precedence over `evm`'s command of the same name (loans comes first in INSTALLED_APPS), so the contracts,
the JSON file and the `ContractDeployment` row (with its parameters version) are always made together.
"""

from pathlib import Path

from evm.deploy import Deployment
from evm.management.commands.deploy_contracts import Command as EvmDeployCommand
from loans.services import contract_deployment_record


class Command(EvmDeployCommand):
    def deploy(self, *, lender_btc_pubkey: bytes, output: Path) -> Deployment:
        deployment = super().deploy(lender_btc_pubkey=lender_btc_pubkey, output=output)
        record = contract_deployment_record(deployment=deployment)
        self.stdout.write(f"recorded as deployment {record.pk} with parameters v{record.parameters.version}")
        return deployment
