"""The process refuses a configuration that would mix networks or make no sense."""

import pytest
from django.core.checks import run_checks


def check_ids(**kwargs) -> set[str]:
    return {message.id for message in run_checks(**kwargs) if message.id.startswith("loans.")}


def test_development_defaults_pass(settings):
    settings.BITCOIN_NETWORK, settings.EVM_CHAIN_ID = "regtest", 31337
    assert check_ids() == set()


@pytest.mark.parametrize(
    "network, chain_id, expected",
    [
        ("regnet", 31337, {"loans.E001"}),
        ("mainnet", 31, {"loans.E003"}),
        ("testnet", 30, {"loans.E004"}),
        ("regtest", 0, {"loans.E002"}),
        ("mainnet", 30, set()),
        ("testnet", 31, set()),
    ],
)
def test_network_and_chain_must_match(settings, network, chain_id, expected):
    settings.BITCOIN_NETWORK, settings.EVM_CHAIN_ID = network, chain_id
    assert check_ids() == expected


def test_deploy_checks_want_confirmations_on_mainnet(settings):
    settings.BITCOIN_NETWORK, settings.EVM_CHAIN_ID = "mainnet", 30
    settings.BITCOIN_CONFIRMATIONS, settings.EVM_CONFIRMATIONS = 1, 1
    assert {"loans.W001", "loans.W002"} <= check_ids(include_deployment_checks=True)
    settings.BITCOIN_CONFIRMATIONS, settings.EVM_CONFIRMATIONS = 6, 12
    assert not {"loans.W001", "loans.W002"} & check_ids(include_deployment_checks=True)


def test_zero_confirmations_are_refused(settings):
    settings.EVM_CONFIRMATIONS = 0
    assert "loans.E005" in check_ids()


@pytest.mark.parametrize(("low", "high"), [("0", "10"), ("2", "1"), ("1.0e", "5"), ("1", "20000")])
def test_fee_rate_bounds_must_make_sense(settings, low, high):
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB, settings.BITCOIN_MAX_FEE_RATE_SAT_VB = low, high
    assert "loans.E006" in check_ids()
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB, settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "1", "1"
    assert "loans.E006" not in check_ids()
