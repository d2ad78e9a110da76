"""Keys and BIP-340 Schnorr signatures on secp256k1.

* Private keys come as WIF (Base58Check, compressed flag required) or 64 hex characters; they must lie in
  [1, n-1].
* Public keys are BIP-340 x-only keys: 32 bytes, the X coordinate of a point with even Y. Parsing checks that
  the X coordinate is below the field size and lifts to a curve point (libsecp256k1's
  ``secp256k1_xonly_pubkey_parse``).
* Signing uses libsecp256k1 through coincurve (``secp256k1_schnorrsig_sign32`` over a keypair), which negates
  the secret internally when the full public key has odd Y, exactly as BIP-340 requires. Never sign with the
  raw secret in your own arithmetic.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import coincurve

from bitcoin.encoding import b58check_decode, b58check_encode
from bitcoin.errors import InvalidKeyError
from bitcoin.networks import NETWORKS, Network, get_network

#: Order of the secp256k1 group.
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
#: Size of the secp256k1 base field.
FIELD_SIZE = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F


def _hex_to_bytes(text: str, what: str, size: int) -> bytes:
    """Decode ``size`` bytes of hex (no ``0x`` prefix) or raise ``InvalidKeyError`` naming ``what``."""
    if not isinstance(text, str):
        raise InvalidKeyError(f"{what} must be a hex string")
    cleaned = text.strip()
    if len(cleaned) != 2 * size:
        raise InvalidKeyError(f"{what} must be {2 * size} hex characters, got {len(cleaned)}")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise InvalidKeyError(f"{what} is not valid hex") from None


def parse_xonly_pubkey(value: str | bytes) -> bytes:
    """Validate a BIP-340 x-only public key (32 bytes or 64 hex characters) and return its 32 bytes.

    Raises ``InvalidKeyError`` for a wrong length, an X coordinate >= the field size, or an X with no
    curve point.
    """
    raw = value if isinstance(value, bytes | bytearray) else _hex_to_bytes(value, "x-only public key", 32)
    raw = bytes(raw)
    if len(raw) != 32:
        raise InvalidKeyError(f"x-only public key must be 32 bytes, got {len(raw)}")
    if int.from_bytes(raw, "big") >= FIELD_SIZE:
        raise InvalidKeyError("x-only public key is not below the field size")
    try:
        coincurve.PublicKeyXOnly(raw)
    except ValueError:
        raise InvalidKeyError(f"x-only public key {raw.hex()} is not the X coordinate of a curve point") from None
    return raw


def verify_schnorr(xonly_pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """BIP-340 check of a 64-byte ``signature`` over a 32-byte ``message``; False for any bad input."""
    if len(signature) != 64 or len(message) != 32:
        return False
    try:
        key = coincurve.PublicKeyXOnly(parse_xonly_pubkey(xonly_pubkey))
    except InvalidKeyError:
        return False
    return key.verify(signature, message)


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A secp256k1 secret scalar with its BIP-340 x-only public key.

    ``has_odd_y`` tells whether d·G has odd Y; BIP-340 signing then uses n - d, which libsecp256k1
    does itself.
    The repr never shows the secret.
    """

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != 32:
            raise InvalidKeyError("private key must be exactly 32 bytes")
        scalar = int.from_bytes(self.secret, "big")
        if not 1 <= scalar < CURVE_ORDER:
            raise InvalidKeyError("private key is out of range (must be 1 <= d < n)")

    @classmethod
    def generate(cls) -> PrivateKey:
        """A fresh random key from ``secrets``."""
        while True:
            candidate = secrets.token_bytes(32)
            if 1 <= int.from_bytes(candidate, "big") < CURVE_ORDER:
                return cls(candidate)

    @classmethod
    def from_hex(cls, text: str) -> PrivateKey:
        """Parse 64 hex characters."""
        return cls(_hex_to_bytes(text, "private key", 32))

    @classmethod
    def from_wif(cls, wif: str, network: Network | str | None = None) -> PrivateKey:
        """Parse a compressed-key WIF; if ``network`` is given, the WIF version byte must match it."""
        return parse_wif(wif, network)[0]

    @property
    def xonly_pubkey(self) -> bytes:
        """The 32-byte BIP-340 public key (X of d·G)."""
        return coincurve.PublicKeyXOnly.from_secret(self.secret).format()

    @property
    def has_odd_y(self) -> bool:
        """True if d·G has odd Y (its x-only key stands for -d·G)."""
        return coincurve.PublicKeyXOnly.from_secret(self.secret).parity

    def sign_schnorr(self, message: bytes, aux_randomness: bytes | None = None) -> bytes:
        """BIP-340 signature of a 32-byte message. ``aux_randomness`` defaults to 32 fresh random bytes."""
        if len(message) != 32:
            raise ValueError("BIP-340 signs exactly 32-byte messages")
        aux = secrets.token_bytes(32) if aux_randomness is None else aux_randomness
        if len(aux) != 32:
            raise ValueError("auxiliary randomness must be 32 bytes")
        return coincurve.PrivateKey(self.secret).sign_schnorr(message, aux)

    def to_wif(self, network: Network | str) -> str:
        """Encode as a compressed-key WIF for ``network``."""
        return b58check_encode(bytes([get_network(network).wif_version]) + self.secret + b"\x01")


def parse_wif(wif: str, network: Network | str | None = None) -> tuple[PrivateKey, list[Network]]:
    """Decode a WIF and return the key and the networks whose version byte it carries.

    Only compressed-key WIFs are accepted (taproot keys are never uncompressed). If ``network`` is given and
    the WIF belongs to another network, ``InvalidKeyError`` is raised.
    """
    if not isinstance(wif, str):
        raise InvalidKeyError("WIF must be a string")
    try:
        payload = b58check_decode(wif.strip())
    except ValueError as error:
        raise InvalidKeyError(f"invalid WIF: {error}") from None
    if len(payload) == 33:
        raise InvalidKeyError("uncompressed-key WIF is not supported; export a compressed key")
    if len(payload) != 34 or payload[-1] != 0x01:
        raise InvalidKeyError("invalid WIF: wrong payload length or compression flag")
    version = payload[0]
    matches = [net for net in NETWORKS.values() if net.wif_version == version]
    if not matches:
        raise InvalidKeyError(f"invalid WIF: unknown version byte 0x{version:02x}")
    if network is not None:
        expected = get_network(network)
        if expected.wif_version != version:
            raise InvalidKeyError(f"WIF key is not for {expected.name}")
    return PrivateKey(payload[1:33]), matches


def parse_private_key(text: str, network: Network | str | None = None) -> PrivateKey:
    """Parse a private key given as WIF or 64 hex characters (the CLI's key files)."""
    if not isinstance(text, str):
        raise InvalidKeyError("private key must be text (WIF or hex)")
    cleaned = text.strip()
    if len(cleaned) == 64 and all(char in "0123456789abcdefABCDEF" for char in cleaned):
        return PrivateKey.from_hex(cleaned)
    return PrivateKey.from_wif(cleaned, network)
