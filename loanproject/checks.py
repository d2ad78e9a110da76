"""System checks: the process is configured for one Bitcoin network and one EVM chain, consistently.

`manage.py check` (and every `runserver`, `migrate`, worker start) runs these; `--deploy` adds the production ones.
"""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from bitcoin.errors import FeeError
from bitcoin.loan import parse_fee_rate_text
from bitcoin.networks import NETWORKS

BITCOIN_NETWORKS = tuple(NETWORKS)  # mainnet, testnet, signet, regtest
ROOTSTOCK_MAINNET, ROOTSTOCK_TESTNET, ANVIL = 30, 31, 31337


@register(Tags.compatibility)
def check_chain_configuration(app_configs=None, **kwargs):
    errors = []
    network = settings.BITCOIN_NETWORK
    if network not in BITCOIN_NETWORKS:
        errors.append(
            Error(
                f"BITCOIN_NETWORK is {network!r}",
                hint=f"Use one of {', '.join(BITCOIN_NETWORKS)}.",
                id="loans.E001",
            )
        )
    chain_id = settings.EVM_CHAIN_ID
    if chain_id <= 0:
        errors.append(Error(f"EVM_CHAIN_ID is {chain_id}", hint="Use a positive chain id.", id="loans.E002"))
    # Real money on one chain must never meet test coins on the other.
    if network == "mainnet" and chain_id != ROOTSTOCK_MAINNET:
        errors.append(
            Error(
                f"Bitcoin mainnet with EVM chain id {chain_id}",
                hint="Mainnet bitcoin lends against Rootstock mainnet (chain id 30) only.",
                id="loans.E003",
            )
        )
    if chain_id == ROOTSTOCK_MAINNET and network != "mainnet":
        errors.append(
            Error(
                f"Rootstock mainnet with Bitcoin {network}",
                hint="Rootstock mainnet (chain id 30) lends against Bitcoin mainnet only.",
                id="loans.E004",
            )
        )
    for name in ("BITCOIN_CONFIRMATIONS", "EVM_CONFIRMATIONS", "EVM_BLOCKS_PER_BTC_BLOCK"):
        if getattr(settings, name) < 1:
            errors.append(Error(f"{name} must be at least 1", id="loans.E005"))
    try:
        low = parse_fee_rate_text(settings.BITCOIN_MIN_FEE_RATE_SAT_VB, "BITCOIN_MIN_FEE_RATE_SAT_VB")
        high = parse_fee_rate_text(settings.BITCOIN_MAX_FEE_RATE_SAT_VB, "BITCOIN_MAX_FEE_RATE_SAT_VB")
        if low > high:
            raise FeeError("BITCOIN_MIN_FEE_RATE_SAT_VB is above BITCOIN_MAX_FEE_RATE_SAT_VB")
    except FeeError as error:
        errors.append(Error(str(error), hint="Fee rates are decimal sat/vB, 0 < min <= max.", id="loans.E006"))
    return errors


@register(Tags.security, deploy=True)
def check_production_chain_settings(app_configs=None, **kwargs):
    warnings = []
    if settings.BITCOIN_NETWORK == "mainnet" and settings.BITCOIN_CONFIRMATIONS < 3:
        warnings.append(
            Warning("BITCOIN_CONFIRMATIONS below 3 on mainnet", hint="Reorgs of 1-2 blocks happen.", id="loans.W001")
        )
    if settings.EVM_CHAIN_ID == ROOTSTOCK_MAINNET and settings.EVM_CONFIRMATIONS < 6:
        warnings.append(Warning("EVM_CONFIRMATIONS below 6 on Rootstock mainnet", id="loans.W002"))
    return warnings


@register(Tags.security, deploy=True)
def check_vault_key_present(app_configs=None, **kwargs):
    """No vault key with DEBUG off: `check --deploy` fails, and the web and worker entry points refuse to start
    (`loans.vault.require_keys`). Deploy-only so that makemigrations and the CI's checks need no key."""
    if settings.LOAN_VAULT_KEYS_FILE or settings.LOAN_VAULT_KEYS or settings.LOAN_VAULT_DEV_KEYS_ALLOWED:
        return []
    return [
        Error(
            "no vault key: the lender's keys and preimages cannot be encrypted at rest",
            hint="Set LOAN_VAULT_KEYS_FILE (one Fernet key a line, newest first) or LOAN_VAULT_KEYS "
            '(comma-separated); make one with: python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"',
            id="loans.E007",
        )
    ]


@register(Tags.security)
def check_vault_keys(app_configs=None, **kwargs):
    """Configured vault keys are Fernet keys, and their file is not readable by others. Never prints a key."""
    from django.core.exceptions import ImproperlyConfigured

    from loans import vault

    if not (settings.LOAN_VAULT_KEYS_FILE or settings.LOAN_VAULT_KEYS):
        return []  # the development key (generated on first use) or none (E007)
    try:
        vault.keyring()
    except ImproperlyConfigured as error:
        return [Error(str(error), id="loans.E008")]
    if settings.LOAN_VAULT_KEYS_FILE and not vault.check_keys_file_mode(settings.LOAN_VAULT_KEYS_FILE):
        return [
            Warning(
                f"the vault keys file {settings.LOAN_VAULT_KEYS_FILE} is readable by other users",
                hint="chmod 600 it (or 400), owned by the user the app runs as.",
                id="loans.W003",
            )
        ]
    return []
