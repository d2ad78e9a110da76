"""Address encoding and validation for one explicit network.

* Legacy P2PKH / P2SH: Base58Check with the network's BIP-13 version byte.
* SegWit v0 (P2WPKH, P2WSH): bech32 (BIP-173); SegWit v1 P2TR: bech32m (BIP-350). The bech32 codec is Pieter
  Wuille's reference implementation shipped in ``bitcoinutils.bech32`` (pure functions, no global state).

``address_to_script_pubkey`` accepts only the standard payout types (P2PKH, P2SH, P2WPKH, P2WSH, P2TR) of the
given network and raises ``InvalidAddressError`` naming the problem (other network, bad checksum, unsupported
witness version...). Addresses are never derived from x-only keys for payouts (protocol flaw 10).
"""

from __future__ import annotations

from bitcoinutils import bech32

from bitcoin.encoding import b58check_decode, b58check_encode
from bitcoin.errors import InvalidAddressError
from bitcoin.networks import NETWORKS, Network, get_network

P2PKH = "p2pkh"
P2SH = "p2sh"
P2WPKH = "p2wpkh"
P2WSH = "p2wsh"
P2TR = "p2tr"


def encode_segwit_address(network: Network | str, witness_version: int, program: bytes) -> str:
    """Bech32 (v0) or bech32m (v1+) address of a witness program on ``network``."""
    net = get_network(network)
    address = bech32.encode(net.bech32_hrp, witness_version, list(program))
    if address is None:
        raise InvalidAddressError(f"cannot encode witness v{witness_version} program of {len(program)} bytes")
    return address


def script_pubkey_type(script_pubkey: bytes) -> str | None:
    """Name of the standard output type of ``script_pubkey`` or None if it is none of the five."""
    spk = bytes(script_pubkey)
    if len(spk) == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac":
        return P2PKH
    if len(spk) == 23 and spk[:2] == b"\xa9\x14" and spk[22] == 0x87:
        return P2SH
    if len(spk) == 22 and spk[:2] == b"\x00\x14":
        return P2WPKH
    if len(spk) == 34 and spk[:2] == b"\x00\x20":
        return P2WSH
    if len(spk) == 34 and spk[:2] == b"\x51\x20":
        return P2TR
    return None


def script_pubkey_to_address(script_pubkey: bytes, network: Network | str) -> str:
    """Address of a standard ``script_pubkey`` on ``network``."""
    net = get_network(network)
    kind = script_pubkey_type(script_pubkey)
    spk = bytes(script_pubkey)
    if kind == P2PKH:
        return b58check_encode(bytes([net.p2pkh_version]) + spk[3:23])
    if kind == P2SH:
        return b58check_encode(bytes([net.p2sh_version]) + spk[2:22])
    if kind in (P2WPKH, P2WSH):
        return encode_segwit_address(net, 0, spk[2:])
    if kind == P2TR:
        return encode_segwit_address(net, 1, spk[2:])
    raise InvalidAddressError(f"script {spk.hex()} is not a standard address type")


def _decode_base58(address: str, net: Network) -> bytes:
    try:
        payload = b58check_decode(address)
    except ValueError as error:
        raise InvalidAddressError(f"invalid address {address!r}: {error}") from None
    if len(payload) != 21:
        raise InvalidAddressError(f"invalid address {address!r}: wrong base58 payload length")
    version, body = payload[0], payload[1:]
    if version == net.p2pkh_version:
        return b"\x76\xa9\x14" + body + b"\x88\xac"
    if version == net.p2sh_version:
        return b"\xa9\x14" + body + b"\x87"
    others = sorted({n.name for n in NETWORKS.values() if version in (n.p2pkh_version, n.p2sh_version)})
    if others:
        raise InvalidAddressError(f"address {address!r} is for {'/'.join(others)}, not {net.name}")
    raise InvalidAddressError(f"invalid address {address!r}: unknown version byte 0x{version:02x}")


def _decode_segwit(address: str, net: Network) -> bytes:
    hrp, _data, _spec = bech32.bech32_decode(address)
    if hrp is None:
        raise InvalidAddressError(f"invalid address {address!r}: bad bech32/bech32m encoding or checksum")
    if hrp != net.bech32_hrp:
        others = sorted(n.name for n in NETWORKS.values() if n.bech32_hrp == hrp)
        where = "/".join(others) if others else f"unknown prefix {hrp!r}"
        raise InvalidAddressError(f"address {address!r} is for {where}, not {net.name}")
    version, program = bech32.decode(hrp, address)
    if version is None:
        raise InvalidAddressError(
            f"invalid address {address!r}: not a valid segwit address (wrong checksum variant or program)"
        )
    program_bytes = bytes(program)
    if version == 0:
        return b"\x00" + bytes([len(program_bytes)]) + program_bytes
    if version == 1 and len(program_bytes) == 32:
        return b"\x51\x20" + program_bytes
    raise InvalidAddressError(
        f"address {address!r} uses witness v{version} with a {len(program_bytes)}-byte program; "
        "only P2PKH, P2SH, P2WPKH, P2WSH and P2TR payouts are accepted"
    )


def address_to_script_pubkey(address: str, network: Network | str) -> bytes:
    """Validate a payout ``address`` for ``network`` and return its scriptPubKey."""
    net = get_network(network)
    if not isinstance(address, str) or not address.strip():
        raise InvalidAddressError("address must be a non-empty string")
    text = address.strip()
    hrp, _data, _spec = bech32.bech32_decode(text)
    if hrp is not None or any(text.lower().startswith(n.bech32_hrp + "1") for n in NETWORKS.values()):
        return _decode_segwit(text, net)
    return _decode_base58(text, net)


def validate_address(address: str, network: Network | str) -> str:
    """Return ``address`` normalised (bech32 lower-cased) if it is a standard payout on ``network``."""
    spk = address_to_script_pubkey(address, network)
    return script_pubkey_to_address(spk, network)
