"""The lender's secrets: each loan's preimage pL and the lender's private keys, sealed at rest (``loans.vault``).

- ``lender_hash_commit_prepare``: pL made here (``secrets.token_bytes(32)``), sealed, hL = sha256(pL) on the loan
  in clear; the same hL on every later call. The lender (or an operator) then commits hL on chain.
- ``lender_preimage_reveal``: pL, for the code that accepts a repayment, and only once the loan is in repayment
  (revealing pL earlier would let the borrower release the collateral without repaying).
- ``lender_key_store``, ``lender_evm_account``, ``lender_bitcoin_key``: the lender's keys in, and out only to the
  worker that signs.

Nothing here logs, returns in a message or raises with a plaintext; functions holding one are marked
``sensitive_variables`` so Django's error reports hide their locals. Every plaintext is checked against its row's
public part when unsealed (sha256(pL) = hL, the key's public key or address), so a ciphertext copied into another
row is refused.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field

from django.db import transaction
from django.views.decorators.debug import sensitive_variables
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from bitcoin.errors import InvalidKeyError
from bitcoin.keys import PrivateKey

from .. import vault
from ..errors import LoanServiceError
from ..models import LenderKey, LenderPreimage, Loan, User
from ..permissions import can_manage_lender_keys, can_prepare_lender_hash, is_lender, require
from .transitions import loan_fields_update

logger = logging.getLogger(__name__)

PREIMAGE_BYTES = 32
# pL leaves the vault only for acceptRepayment, which publishes it anyway.
REVEAL_STATUSES = frozenset({Loan.Status.REPAYMENT_IN_PROGRESS, Loan.Status.REPAID})


# ------------------------------------------------------------------------------------------------ pL


@sensitive_variables("preimage")
def lender_hash_commit_prepare(*, loan: Loan, actor: User) -> bytes:
    """hL for ``loan`` (32 bytes): pL is made and sealed on the first call, later calls return the same hL.

    Only the lender (the loan's own, once it names one) or an operator; the loan must be Requested (the contract
    takes hL between the request and the offer). Refusals (``PermissionDenied``, ``LoanServiceError``) change
    nothing.
    """
    require(can_prepare_lender_hash(actor, loan), "only the lender or an operator prepares the lender's hash")
    with transaction.atomic():
        locked = Loan.objects.select_for_update().get(pk=loan.pk)
        require(can_prepare_lender_hash(actor, locked), "only the lender or an operator prepares the lender's hash")
        if LenderPreimage.objects.filter(loan=locked).exists():
            return bytes.fromhex(locked.lender_hash)
        if locked.lender_hash is not None:
            raise LoanServiceError(
                f"loan {locked.pk} already has hL {locked.lender_hash}, made elsewhere: its pL is not ours",
                code="lender_hash_elsewhere",
            )
        if locked.status != Loan.Status.REQUESTED:
            raise LoanServiceError(
                f"loan {locked.pk} is {locked.status}: hL is committed to a requested loan", code="wrong_state"
            )
        preimage = secrets.token_bytes(PREIMAGE_BYTES)
        lender_hash = hashlib.sha256(preimage).hexdigest()
        LenderPreimage.objects.create(loan=locked, preimage=vault.seal(vault.Secret(preimage)), created_by=actor)
        loan_fields_update(
            loan_id=locked.pk, cause=f"lender hash prepared by {actor.pk}", changes={"lender_hash": lender_hash}
        )
    loan.lender_hash = lender_hash
    return bytes.fromhex(lender_hash)


@sensitive_variables("plaintext")
def lender_preimage_reveal(*, loan: Loan) -> bytes:
    """pL of ``loan`` (32 bytes), for the code that accepts its repayment; never logged.

    Refused (``LoanServiceError``) unless the loan is in repayment (or repaid: pL is public then), unless pL was
    made here, and if the sealed value does not hash to the loan's hL.
    """
    row = LenderPreimage.objects.select_related("loan").filter(loan_id=loan.pk).first()
    if row is None:
        raise LoanServiceError(f"loan {loan.pk} has no lender preimage made here", code="no_lender_preimage")
    if row.loan.status not in REVEAL_STATUSES:
        raise LoanServiceError(
            f"loan {loan.pk} is {row.loan.status}: pL is revealed only to accept a repayment",
            code="lender_preimage_not_due",
        )
    plaintext = vault.unseal(row.preimage).reveal()
    if row.loan.lender_hash is None or hashlib.sha256(plaintext).hexdigest() != row.loan.lender_hash:
        raise LoanServiceError(
            f"the sealed preimage of loan {loan.pk} does not hash to its hL", code="lender_secret_mismatch"
        )
    return plaintext


# ------------------------------------------------------------------------------------------------ keys


@sensitive_variables("private_key", "raw", "key")
def _public_id(kind: str, private_key: vault.Secret) -> str:
    raw = private_key.reveal()
    if kind == LenderKey.Kind.BITCOIN:
        try:
            return PrivateKey(raw).xonly_pubkey.hex()
        except InvalidKeyError:
            raise LoanServiceError("not a Bitcoin private key (32 bytes, 1 <= d < n)", code="invalid_key") from None
    if kind == LenderKey.Kind.EVM:
        if len(raw) != 32:
            raise LoanServiceError("not an EVM private key (32 bytes)", code="invalid_key")
        try:
            key = Account.from_key(raw)
        except (ValueError, TypeError):
            raise LoanServiceError("not an EVM private key", code="invalid_key") from None
        return to_checksum_address(key.address)
    raise LoanServiceError(f"unknown key kind {kind!r}", code="invalid_key")


@sensitive_variables("private_key")
def lender_key_store(*, lender: User, kind: str, private_key: vault.Secret, actor: User | None) -> LenderKey:
    """Seal and store one of ``lender``'s private keys; the same key again returns its row unchanged.

    ``actor`` is the user doing it (the lender or an operator), or None for the server's own command line
    (``manage.py lender_key_import``: whoever runs it already holds the vault keys).
    """
    if actor is not None:
        require(can_manage_lender_keys(actor, lender), "only the lender or an operator stores the lender's keys")
    if not is_lender(lender):
        raise LoanServiceError(f"user {lender.pk} is not an active lender", code="not_a_lender")
    if not isinstance(private_key, vault.Secret):
        raise TypeError("pass the private key as a loans.vault.Secret")
    public_id = _public_id(kind, private_key)
    with transaction.atomic():
        existing = LenderKey.objects.select_for_update().filter(kind=kind, public_id=public_id).first()
        if existing is not None:
            if existing.lender_id != lender.pk:
                raise LoanServiceError(f"{kind} key {public_id} belongs to another user", code="key_exists")
            return existing
        row = LenderKey.objects.create(
            lender=lender, kind=kind, public_id=public_id, private_key=vault.seal(private_key)
        )
    logger.info("stored the lender's %s key %s (vault key %s)", kind, public_id, row.private_key.key_id)
    return row


@sensitive_variables("secret")
def _unsealed(kind: str, public_id: str) -> vault.Secret:
    row = LenderKey.objects.filter(kind=kind, public_id=public_id).first()
    if row is None:
        raise LoanServiceError(f"no stored {kind} key {public_id}", code="no_lender_key")
    secret = vault.unseal(row.private_key)
    if _public_id(kind, secret) != public_id:
        raise LoanServiceError(f"the sealed {kind} key {public_id} is another key", code="lender_secret_mismatch")
    return secret


def lender_evm_account(*, address: str) -> LocalAccount:
    """The lender's EVM account for ``address``, to sign with (``evm.client.send``) in the worker; never log it."""
    if not is_address(address):
        raise LoanServiceError(f"{address!r} is not an EVM address", code="invalid_key")
    return Account.from_key(_unsealed(LenderKey.Kind.EVM, to_checksum_address(address)).reveal())


def lender_bitcoin_key(*, xonly_pubkey: str) -> PrivateKey:
    """The lender's Bitcoin key for the x-only ``xonly_pubkey`` (a loan's ``lender_btc_pubkey``), to sign with."""
    return PrivateKey(_unsealed(LenderKey.Kind.BITCOIN, xonly_pubkey.lower()).reveal())


# ------------------------------------------------------------------------------------------------ rotation


@dataclass
class RotationCount:
    """What ``vault_keys_rotate`` did to one sealed column."""

    column: str
    rotated: int = 0
    current: int = 0
    failed: list[int] = field(default_factory=list)  # primary keys no configured vault key opens

    def __str__(self) -> str:
        text = f"{self.column}: {self.rotated} re-encrypted, {self.current} already under the newest key"
        if self.failed:
            text += f", {len(self.failed)} that no configured key opens (ids {', '.join(map(str, self.failed))})"
        return text


def vault_keys_rotate(*, batch_size: int = 200) -> list[RotationCount]:
    """Re-encrypt every sealed value under the newest vault key (``MultiFernet.rotate``), in batches of locked
    rows; values already under it are left alone, so a second run changes nothing. A value no configured key
    opens is left as it is and reported (keep its old key configured until it is rotated)."""
    newest = vault.keyring().newest_id
    counts = []
    for model, name in vault.sealed_fields():
        count = RotationCount(f"{model.__name__}.{name}")
        ids = list(model.objects.filter(**{f"{name}__isnull": False}).order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(ids), batch_size):
            with transaction.atomic():
                rows = model.objects.select_for_update().filter(pk__in=ids[start : start + batch_size])
                for row in rows.only("pk", name).order_by("pk"):
                    sealed = getattr(row, name)
                    if sealed.key_id == newest:
                        count.current += 1
                        continue
                    try:
                        resealed = vault.reseal(sealed)
                    except vault.VaultError:
                        count.failed.append(row.pk)
                        continue
                    model.objects.filter(pk=row.pk).update(**{name: resealed})
                    count.rotated += 1
        logger.info("vault rotation to key %s: %s", newest, count)
        counts.append(count)
    return counts


__all__ = [
    "RotationCount",
    "lender_bitcoin_key",
    "lender_evm_account",
    "lender_hash_commit_prepare",
    "lender_key_store",
    "lender_preimage_reveal",
    "vault_keys_rotate",
]
