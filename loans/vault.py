"""Secrets at rest: the lender's private keys and every lender preimage pL, encrypted with Fernet (MultiFernet).

What is stored is ciphertext only (``SealedField``: ``fernet:<key id>:<token>``); nothing here ever returns a
plaintext without an explicit ``unseal(...).reveal()``, and nothing prints one:

- ``Secret`` wraps plaintext bytes. Its ``repr``/``str``/``format`` are redacted, it compares in constant time, it
  refuses to be pickled (so it never lands in a cache or a django-q2 task) and ``reveal()`` is the one way out.
- ``Sealed`` is a ciphertext with the id of the vault key that made it (a fingerprint, not the key); its ``repr``
  shows the key id only.
- ``SealedField`` stores a ``Sealed`` and refuses anything else: a plaintext cannot be saved by mistake.

Keys (Fernet keys, newest first; the newest encrypts, every one decrypts, see ``manage.py rotate_vault_keys``):

- ``LOAN_VAULT_KEYS_FILE``: a file holding the keys, one a line (``#`` comments); wins when set (a Docker secret).
- ``LOAN_VAULT_KEYS``: the keys, comma-separated.
- Neither: only when ``LOAN_VAULT_DEV_KEYS_ALLOWED`` (DEBUG or pytest), a key generated once into
  ``LOAN_VAULT_DEV_KEYS_FILE`` (``VAR_DIR/vault.keys``, mode 0600, never in the repository). Otherwise every use
  raises ``ImproperlyConfigured``: the web and worker entry points refuse to start (``require_keys``) and
  ``manage.py check --deploy`` fails (``loans.E007``).

Fernet authenticates but binds no context, so the code that unseals checks the plaintext against the row's public
part (the key's public key or address, sha256(pL) = hL): a ciphertext copied into another row is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.views.decorators.debug import sensitive_variables

SCHEME = "fernet"
REDACTED = "<redacted>"


class VaultError(Exception):
    """A ciphertext that no configured key opens (or that was tampered with). Never carries a plaintext."""


# ------------------------------------------------------------------------------------------------ values


class Secret:
    """Plaintext bytes that never show: redacted repr/str/format, constant-time equality, no pickling."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray):
            raise TypeError("a Secret holds bytes")
        self._value = bytes(value)

    def reveal(self) -> bytes:
        """The plaintext. Use it, do not keep it, never log it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        raise TypeError("a Secret is never pickled (caches, task queues): pass the row's id and unseal there")


@dataclass(frozen=True, slots=True)
class Sealed:
    """A Fernet token and the id of the vault key that encrypted it. Not secret, but shown as its key id only."""

    key_id: str
    token: str

    def __post_init__(self) -> None:
        if not (len(self.key_id) == 12 and all(c in "0123456789abcdef" for c in self.key_id)):
            raise ValueError("a vault key id is 12 lowercase hex characters")
        if not self.token or ":" in self.token:
            raise ValueError("not a Fernet token")

    @classmethod
    def parse(cls, text: str) -> Sealed:
        scheme, sep, rest = text.partition(":")
        key_id, sep2, token = rest.partition(":")
        if scheme != SCHEME or not sep or not sep2:
            raise ValueError("not a sealed value (expected fernet:<key id>:<token>)")
        return cls(key_id, token)

    def __str__(self) -> str:
        return f"{SCHEME}:{self.key_id}:{self.token}"

    def __repr__(self) -> str:
        return f"Sealed(key_id={self.key_id!r})"


# ------------------------------------------------------------------------------------------------ keys


def key_id(key: str | bytes) -> str:
    """A Fernet key's fingerprint (12 hex characters of a domain-separated SHA-256): safe to show and store."""
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(b"loans.vault key id\x00" + raw.strip()).hexdigest()[:12]


def _parse_keys(text: str, separator: str) -> list[str]:
    keys = []
    for item in text.split(separator):
        item = item.strip()
        if item and not item.startswith("#"):
            keys.append(item)
    return keys


def _read_keys_file(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot read the vault keys file {path}: {exc.strerror}") from None
    return _parse_keys(text, "\n")


def _dev_keys(path: Path) -> list[str]:
    """The development key: generated once (mode 0600) and then reused; two processes racing get the same one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".vault-keys-")  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write("# Development vault key (loans.vault). Never use it with real money.\n")
                handle.write(Fernet.generate_key().decode() + "\n")
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(temporary, path)  # atomic, and never replaces an existing key
        finally:
            os.unlink(temporary)
    return _read_keys_file(path)


def configured_keys() -> tuple[str, ...]:
    """The vault keys, newest first, from the settings (see the module docstring). Raises ImproperlyConfigured."""
    keys_file = getattr(settings, "LOAN_VAULT_KEYS_FILE", "")
    if keys_file:
        keys = _read_keys_file(Path(keys_file))
        source = f"LOAN_VAULT_KEYS_FILE ({keys_file})"
    elif getattr(settings, "LOAN_VAULT_KEYS", ""):
        keys = _parse_keys(settings.LOAN_VAULT_KEYS, ",")
        source = "LOAN_VAULT_KEYS"
    elif getattr(settings, "LOAN_VAULT_DEV_KEYS_ALLOWED", False):
        keys = _dev_keys(Path(settings.LOAN_VAULT_DEV_KEYS_FILE))
        source = f"the development key file {settings.LOAN_VAULT_DEV_KEYS_FILE}"
    else:
        raise ImproperlyConfigured(
            "no vault key: set LOAN_VAULT_KEYS_FILE or LOAN_VAULT_KEYS (Fernet keys, newest first) when DEBUG is off"
        )
    if not keys:
        raise ImproperlyConfigured(f"{source} holds no vault key")
    return tuple(keys)


def require_keys() -> None:
    """Refuse to start (``ImproperlyConfigured``) without a usable vault key: the web and worker entry points call
    it, so a production process never runs without one (the development key is fine with DEBUG or pytest)."""
    if getattr(settings, "LOAN_VAULT_DEV_KEYS_ALLOWED", False) and not (
        getattr(settings, "LOAN_VAULT_KEYS_FILE", "") or getattr(settings, "LOAN_VAULT_KEYS", "")
    ):
        return
    keyring()


@dataclass(frozen=True)
class Keyring:
    ids: tuple[str, ...]  # newest first
    fernets: dict[str, Fernet]
    multi: MultiFernet

    @property
    def newest_id(self) -> str:
        return self.ids[0]


@lru_cache(maxsize=8)
def _keyring(keys: tuple[str, ...]) -> Keyring:
    fernets: dict[str, Fernet] = {}
    for position, key in enumerate(keys, start=1):
        try:
            fernets[key_id(key)] = Fernet(key.encode())
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"vault key {position} (newest first) is not a Fernet key (32 url-safe base64 bytes)"
            ) from None
    ids = tuple(key_id(key) for key in keys)
    return Keyring(ids=ids, fernets=fernets, multi=MultiFernet([fernets[i] for i in ids]))


def keyring() -> Keyring:
    """The configured keys (cached per configuration, so a changed setting or keys file takes effect)."""
    return _keyring(configured_keys())


def check_keys_file_mode(path: str | os.PathLike) -> bool:
    """True when only its owner may read the keys file."""
    return not (os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))


# ------------------------------------------------------------------------------------------------ seal / unseal


@sensitive_variables("secret")
def seal(secret: Secret) -> Sealed:
    """Encrypt under the newest vault key."""
    if not isinstance(secret, Secret):
        raise TypeError("seal() takes a Secret (wrap the bytes: the wrapper keeps them out of logs)")
    ring = keyring()
    return Sealed(ring.newest_id, ring.fernets[ring.newest_id].encrypt(secret.reveal()).decode())


@sensitive_variables("plaintext")
def unseal(sealed: Sealed) -> Secret:
    """Decrypt with the key that sealed it (any configured key, newest first, if its id is unknown)."""
    if not isinstance(sealed, Sealed):
        raise TypeError("unseal() takes a Sealed value")
    ring = keyring()
    fernet = ring.fernets.get(sealed.key_id)
    try:
        plaintext = (fernet or ring.multi).decrypt(sealed.token.encode())
    except InvalidToken:
        if fernet is None:
            raise VaultError(f"no configured vault key opens this value (sealed with key {sealed.key_id})") from None
        raise VaultError(f"the value sealed with key {sealed.key_id} does not authenticate (tampered?)") from None
    return Secret(plaintext)


def reseal(sealed: Sealed) -> Sealed:
    """The same plaintext under the newest key (``MultiFernet.rotate``); unchanged if it is there already."""
    ring = keyring()
    if sealed.key_id == ring.newest_id:
        return sealed
    try:
        token = ring.multi.rotate(sealed.token.encode())
    except InvalidToken:
        raise VaultError(f"no configured vault key opens this value (sealed with key {sealed.key_id})") from None
    return Sealed(ring.newest_id, token.decode())


# ------------------------------------------------------------------------------------------------ model field


class SealedField(models.TextField):
    """A column of ciphertext (``fernet:<key id>:<token>``), a ``Sealed`` in Python. Saving anything but a
    ``Sealed`` raises ``TypeError``: there is no path from a plaintext to this column except ``seal()``."""

    description = "Fernet ciphertext (loans.vault)"

    def __init__(self, *args, **kwargs):
        kwargs["editable"] = False
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("editable", None)
        return name, path, args, kwargs

    def from_db_value(self, value, expression, connection):
        return None if value is None else Sealed.parse(value)

    def to_python(self, value):
        if value is None or isinstance(value, Sealed):
            return value
        if isinstance(value, str):
            try:
                return Sealed.parse(value)
            except ValueError:
                raise ValidationError("not a sealed value", code="invalid") from None
        raise ValidationError("a sealed field holds ciphertext only", code="invalid")

    def get_prep_value(self, value):
        if value is None or hasattr(value, "as_sql"):
            return value
        if not isinstance(value, Sealed):
            raise TypeError(
                f"{self.model.__name__}.{self.name} stores ciphertext only: pass loans.vault.seal(Secret(...))"
            )
        return str(value)

    def value_to_string(self, obj):
        value = self.value_from_object(obj)
        return None if value is None else str(value)


def sealed_fields() -> list[tuple[type[models.Model], str]]:
    """Every (model, field name) holding sealed values, for the rotation command."""
    from django.apps import apps

    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, SealedField)
    ]
