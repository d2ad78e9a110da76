"""Exceptions raised by the pure Bitcoin protocol library.

Every error is a ``ValueError`` subclass with a message that names the bad input, so callers (views, the CLI,
services) can show it as is. Nothing in ``bitcoin/`` returns a half-built object after raising.
"""

from __future__ import annotations


class BitcoinProtocolError(ValueError):
    """Base class of every error raised by the protocol library."""


class InvalidKeyError(BitcoinProtocolError):
    """A private or public key is malformed, out of range or not a point on secp256k1."""


class InvalidAddressError(BitcoinProtocolError):
    """An address cannot be decoded, is not a standard type, or belongs to another network."""


class InvalidNetworkError(BitcoinProtocolError):
    """An unknown network name."""


class InvalidParameterError(BitcoinProtocolError):
    """A protocol parameter (timelock, hash, preimage, amount, outpoint) is out of its allowed range."""


class DustError(BitcoinProtocolError):
    """An output would be below the dust threshold of its script type."""


class FeeError(BitcoinProtocolError):
    """The fee left for the miner is below the target rate, or the rate itself is invalid."""


class TransactionError(BitcoinProtocolError):
    """A transaction cannot be built, parsed or finalized as requested."""


class DescriptorError(BitcoinProtocolError):
    """An output descriptor is malformed or has a wrong checksum."""


class PsbtError(BitcoinProtocolError):
    """A PSBT (BIP-174/BIP-371) is malformed or lacks what the operation needs."""


class PresignatureError(BitcoinProtocolError):
    """The borrower's TX_1 pre-signature was refused.

    ``reason`` is a stable machine-readable code (for example ``"wrong_outpoint"``); the message explains it.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"
