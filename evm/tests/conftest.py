"""Until the root conftest lists `pytest_plugins = ["evm.testing"]`, load the EVM fixtures for these tests."""


def pytest_configure(config):
    if not config.pluginmanager.has_plugin("evm.testing"):
        config.pluginmanager.import_plugin("evm.testing")
