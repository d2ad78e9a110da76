from django.apps import AppConfig


class BitcoinConfig(AppConfig):
    """Only for the management commands (`btcnode`); the package itself never imports Django."""

    name = "bitcoin"
    verbose_name = "Bitcoin"
