"""Bitcoin network parameters used for address and key encoding.

Each network is an immutable value passed explicitly to every function that encodes or decodes an address or
a WIF key; there is no global "current network" (unlike ``bitcoinutils.setup``), so code serving several
networks in one process cannot leak one network's setting into another.

Address prefixes follow BIP-13 (base58 P2PKH/P2SH version bytes), BIP-173/BIP-350 (bech32/bech32m HRPs)
and the WIF version bytes of Bitcoin Core's ``chainparams.cpp``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitcoin.errors import InvalidNetworkError


@dataclass(frozen=True, slots=True)
class Network:
    """Encoding parameters of one Bitcoin network."""

    name: str
    bech32_hrp: str
    p2pkh_version: int
    p2sh_version: int
    wif_version: int


MAINNET = Network(name="mainnet", bech32_hrp="bc", p2pkh_version=0x00, p2sh_version=0x05, wif_version=0x80)
TESTNET = Network(name="testnet", bech32_hrp="tb", p2pkh_version=0x6F, p2sh_version=0xC4, wif_version=0xEF)
SIGNET = Network(name="signet", bech32_hrp="tb", p2pkh_version=0x6F, p2sh_version=0xC4, wif_version=0xEF)
REGTEST = Network(name="regtest", bech32_hrp="bcrt", p2pkh_version=0x6F, p2sh_version=0xC4, wif_version=0xEF)

NETWORKS: dict[str, Network] = {network.name: network for network in (MAINNET, TESTNET, SIGNET, REGTEST)}

# Names Bitcoin Core's ``getblockchaininfo`` reports as ``chain``, mapped to ours.
_ALIASES = {"main": "mainnet", "test": "testnet", "testnet3": "testnet", "testnet4": "testnet"}


def get_network(name: str | Network) -> Network:
    """The network called ``name`` (``mainnet``, ``testnet``, ``signet``, ``regtest`` or Core's aliases)."""
    if isinstance(name, Network):
        return name
    if not isinstance(name, str):
        raise InvalidNetworkError(f"network must be a name, got {type(name).__name__}")
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    try:
        return NETWORKS[key]
    except KeyError:
        raise InvalidNetworkError(f"unknown network {name!r}; expected one of {', '.join(sorted(NETWORKS))}") from None
