from django.apps import AppConfig


class EvmConfig(AppConfig):
    """Only for the management commands (`deploy_contracts`); the package itself never imports the ORM."""

    name = "evm"
    verbose_name = "EVM"
