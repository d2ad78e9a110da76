"""Protocol parameters: append-only versions; every loan keeps its own copy."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Max

from evm.parameters import ProtocolParameters as OnChainParameters

from ..models import PARAMETER_FIELDS, ProtocolParameters, User
from ..permissions import can_set_parameters, require


def protocol_parameters_create(*, actor: User, note: str = "", **values: Any) -> ProtocolParameters:
    """Append a new version of the protocol parameters. Existing loans keep their own snapshot."""
    require(can_set_parameters(actor), "only an operator or the lender may set protocol parameters")
    with transaction.atomic():
        # Lock the newest version so two concurrent writers cannot take the same number.
        list(ProtocolParameters.objects.select_for_update().order_by("-version")[:1])
        version = (ProtocolParameters.objects.aggregate(v=Max("version"))["v"] or 0) + 1
        parameters = ProtocolParameters(version=version, created_by=actor, note=note, **values)
        parameters.full_clean()
        parameters.save()
    return parameters


def protocol_parameters_matching(parameters: OnChainParameters) -> ProtocolParameters:
    """The newest stored version equal to `parameters`, or a new version holding them."""
    values = {name: getattr(parameters, name) for name in PARAMETER_FIELDS}
    values["lender_btc_pubkey"] = parameters.lender_btc_pubkey.hex()
    with transaction.atomic():
        list(ProtocolParameters.objects.select_for_update().order_by("-version")[:1])
        existing = ProtocolParameters.objects.filter(**values).order_by("-version").first()
        if existing is not None:
            return existing
        version = (ProtocolParameters.objects.aggregate(v=Max("version"))["v"] or 0) + 1
        created = ProtocolParameters(version=version, note="read from the contract", **values)
        created.full_clean()
        created.save()
    return created
