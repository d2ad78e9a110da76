"""Every endpoint of /api/v1/ in one table, and the world the API's cross-cutting tests run in.

``ENDPOINTS`` maps each (url name, method) to the status each role gets, against a loan owned by "the owner" in a
state where the action is allowed for its rightful actor; ``api_endpoints()`` lists what ``loans/api/urls.py``
actually routes, so a new endpoint without a row fails ``test_api_authorization``. ``World`` holds the five
roles, the owner's loan and the requests' bodies; ``world`` is its fixture (no chain node: the settings point the
node clients at a closed port, so an endpoint that needs a node answers its documented refusal).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.urls import URLPattern, URLResolver, get_resolver, reverse
from eth_account import Account
from eth_account.messages import encode_defunct
from rest_framework.test import APIClient
from siwe import SiweMessage

from bitcoin.psbt import create_psbt, sign_psbt
from bitcoin.tests.loan_vectors import (
    BORROWER_HASH,
    BORROWER_XONLY,
    ESCROW_OUTPOINT,
    LENDER_HASH,
    LENDER_XONLY,
    REGTEST_P2TR,
    REGTEST_P2WPKH,
    borrower_key,
)
from bitcoin.transactions import build_tx1
from loans.facts import loan_facts
from loans.models import ContractDeployment, Loan, User
from loans.services.accounts import api_token_issue, siwe_nonce_issue

from .caches import use_own_cache
from .factories import evm_address, hex32, make_loan, make_parameters, make_user

API_PREFIX = "api/v1/"
ROLES = ("anonymous", "other_borrower", "owner", "lender", "operator")
CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard: nothing listens, a connection is refused at once
HOST = "testserver"

# The error code each refusal status carries when the table names no other.
STATUS_CODES = {401: "not_authenticated", 403: "permission_denied", 404: "not_found"}


def _statuses(anonymous: int, other_borrower: int, owner: int, lender: int, operator: int) -> dict[str, int]:
    return dict(zip(ROLES, (anonymous, other_borrower, owner, lender, operator), strict=True))


# The usual shapes: a read of the owner's loan, an action of the loan's borrower, a public endpoint.
LOAN_READ = _statuses(401, 404, 200, 200, 200)
BORROWER_ACTION = _statuses(401, 404, 201, 403, 403)  # lender and operators see the loan, may not act for B
PUBLIC_READ = _statuses(200, 200, 200, 200, 200)


# ------------------------------------------------------------------------------------------------ world


@dataclass
class World:
    """The five roles (users; ``anonymous`` is None), bearer tokens for the four signed in, the owner's loan."""

    people: dict[str, User | None]
    loan: Loan
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, role: str) -> str | None:
        user = self.people[role]
        if user is None:
            return None
        if role not in self.tokens:
            self.tokens[role], _ = api_token_issue(user=user)
        return self.tokens[role]

    def client(self, role: str) -> APIClient:
        client = APIClient()
        token = self.token(role)
        if token is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client


def vector_loan(owner: User) -> Loan:
    """A requested loan with hL and a confirmed escrow (PROTOCOL.md's vector): TX_1's pre-signature is due."""
    parameters = make_parameters(lender_btc_pubkey=LENDER_XONLY, escrow_timelock_btc_blocks=100)
    return make_loan(
        parameters=parameters,
        deployment=ContractDeployment.objects.create(
            chain_id=31337,
            loan_contract_address=evm_address(),
            ether_swap_address=evm_address(),
            block_number=1,
            block_hash=hex32(),
            parameters=parameters,
        ),  # not make_deployment: it makes a parameters version of its own, newer, with a random (bad) key
        borrower=owner,
        borrower_btc_pubkey=BORROWER_XONLY,
        borrower_hash=BORROWER_HASH,
        lender_hash=LENDER_HASH,
        amount_wei=10**16,  # 1,000,000 sat
        escrow_txid=ESCROW_OUTPOINT.txid,
        escrow_vout=ESCROW_OUTPOINT.vout,
        escrow_sats=1_200_000,
        borrower_payout_address=REGTEST_P2TR,
        lender_payout_address=REGTEST_P2WPKH,
        contract_loan_id=1,
        status=Loan.Status.REQUESTED,
        bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED,
    )


def desk_settings(settings) -> None:
    """Regtest, the fee bounds, the lender's payout address, this test's own rate-limit counters, no node."""
    use_own_cache(settings)
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB = "1"
    settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "500"
    settings.LENDER_BTC_PAYOUT_ADDRESS = REGTEST_P2WPKH
    settings.BITCOIN_RPC_URL = CLOSED_PORT_URL
    settings.EVM_RPC_URL = CLOSED_PORT_URL
    settings.BITCOIN_RPC_TIMEOUT = 2
    settings.EVM_RPC_TIMEOUT = 2


def make_world() -> World:
    owner = make_user(User.Role.BORROWER)
    people = {
        "anonymous": None,
        "other_borrower": make_user(User.Role.BORROWER),
        "owner": owner,
        "lender": make_user(User.Role.LENDER),
        "operator": make_user(User.Role.OPERATOR),
    }
    return World(people=people, loan=vector_loan(owner))


# ------------------------------------------------------------------------------------------------ bodies


def loan_create_body(world: World, **overrides) -> dict:
    """A new loan the desk accepts (another hB than the owner's loan; the fee rate given, so no node is asked)."""
    return {
        "amount_wei": str(10**16),
        "borrower_btc_pubkey": BORROWER_XONLY,
        "borrower_hash": hashlib.sha256(os.urandom(32)).hexdigest(),
        "borrower_payout_address": REGTEST_P2TR,
        "fee_rate_sat_vb": "2",
        **overrides,
    }


def signed_tx1_psbt(loan: Loan) -> str:
    """TX_1 of ``loan`` at 2 sat/vB, signed by the vector's borrower key, as base64."""
    psbt = create_psbt(build_tx1(loan_facts(loan=loan), fee_rate_sat_vb=2))
    sign_psbt(psbt, borrower_key())
    return psbt.to_base64()


def presignature_body(world: World) -> dict:
    return {"psbt": signed_tx1_psbt(world.loan)}


def siwe_text(address: str, nonce: str, **overrides) -> str:
    now = datetime.now(UTC)

    def iso(moment: datetime) -> str:
        return moment.isoformat(timespec="seconds").replace("+00:00", "Z")

    fields = {
        "domain": HOST,
        "address": address,
        "statement": "Sign in to the loan desk.",
        "uri": f"http://{HOST}/",
        "version": "1",
        "chain_id": 31337,
        "nonce": nonce,
        "issued_at": iso(now),
        "expiration_time": iso(now + timedelta(minutes=5)),
        **overrides,
    }
    return SiweMessage(**{name: value for name, value in fields.items() if value is not None}).prepare_message()


def siwe_signature(account, text: str) -> str:
    return "0x" + Account.sign_message(encode_defunct(text=text), account.key).signature.hex().removeprefix("0x")


def siwe_body(world: World, **overrides) -> dict:
    """A fresh account's valid sign-in (a first sign-in makes a borrower)."""
    account = Account.create()
    text = siwe_text(account.address, siwe_nonce_issue().nonce, **overrides)
    return {"message": text, "signature": siwe_signature(account, text)}


# ------------------------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Endpoint:
    """One (url name, method): each role's status, the body that lets the rightful actor succeed, and why."""

    expect: dict[str, int]
    body: Callable[[World], dict] | None = None
    codes: dict[str, str] = field(default_factory=dict)  # role -> error code, where not STATUS_CODES' own
    note: str = ""
    kwargs: Callable[[World], dict] | None = None  # the URL's arguments; default: pk is the owner's loan
    setup: Callable[[World], None] | None = None  # brings the world to where the action is allowed


def _user(role: str) -> Callable[[World], dict]:
    return lambda world: {"pk": world.people[role].pk}


def _deployment(world: World) -> dict:
    return {"pk": world.loan.deployment_id}


def _evm_call(name: str) -> Callable[[World], dict]:
    return lambda world: {"pk": world.loan.pk, "name": name}


def _broadcast(world: World) -> dict:
    from loans.models import BitcoinBroadcast

    row = BitcoinBroadcast.objects.create(
        loan=world.loan, kind="tx_exit", txid="ab" * 32, raw_hex="00", requested_by=world.people["owner"]
    )
    return {"pk": row.pk}


def _paused(world: World) -> None:
    from loans.services.operators import new_loans_pause

    new_loans_pause(deployment=world.loan.deployment, actor=world.people["operator"], reason="maintenance")


def _owner_alert(world: World) -> dict:
    from loans.models import Alert

    row = Alert.objects.create(
        recipient=world.people["owner"], loan=world.loan, kind="repayment_due", key=f"test:{uuid.uuid4().hex}",
        subject="Repay", body="Repay before block 10.",
    )  # fmt: skip
    return {"pk": row.pk}


def _reason(world: World) -> dict:
    return {"reason": "the desk's decision"}


# Lender-or-operator Bitcoin actions: the borrower may not; the lender's is the state refusal of this loan.
LENDER_ACTION = _statuses(401, 404, 403, 409, 409)
OPERATOR_ONLY = _statuses(401, 403, 403, 403, 200)


ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("loan-list", "GET"): Endpoint(_statuses(401, 200, 200, 200, 200), note="each sees what they may"),
    ("loan-list", "POST"): Endpoint(
        _statuses(401, 201, 201, 403, 403), body=loan_create_body, note="any active borrower creates a loan"
    ),
    ("loan-detail", "GET"): Endpoint(LOAN_READ),
    ("loan-timeline", "GET"): Endpoint(LOAN_READ),
    ("loan-presignature", "POST"): Endpoint(BORROWER_ACTION, body=presignature_body),
    ("parameters", "GET"): Endpoint(_statuses(401, 200, 200, 200, 200)),
    # Sign-in is for anyone: a bearer token is ignored there (authentication_classes = []).
    ("auth-nonce", "POST"): Endpoint(_statuses(201, 201, 201, 201, 201)),
    ("auth-siwe", "POST"): Endpoint(_statuses(200, 200, 200, 200, 200), body=siwe_body),
    ("auth-logout", "POST"): Endpoint(_statuses(401, 204, 204, 204, 204), note="revokes the token it came with"),
    ("loan-file", "GET"): Endpoint(LOAN_READ),
    # -- the contract calls and wallet transactions (loans/api/evm_views.py). Every call reads the contract's state
    # first: with no EVM node here the rightful actor's answer is 503 evm_node_unavailable.
    ("loan-evm-call", "POST"): Endpoint(
        _statuses(401, 404, 503, 403, 403),
        body=lambda world: {},
        kwargs=_evm_call("cancel-request"),
        codes={"owner": "evm_node_unavailable"},
        note="a borrower's call; the lender's and operators' refused before the node is asked",
    ),
    ("loan-evm-transactions", "POST"): Endpoint(
        _statuses(401, 404, 503, 503, 503),
        body=lambda world: {"tx_hash": "0x" + "ab" * 32},
        codes={role: "evm_node_unavailable" for role in ("owner", "lender", "operator")},
        note="the borrower, the lender or an operator reports; the receipt is read from the node (none here)",
    ),
    ("lender-queue", "GET"): Endpoint(_statuses(401, 403, 403, 200, 200)),
    # -- the Bitcoin actions (loans/api/bitcoin_views.py)
    ("loan-ladders", "POST"): Endpoint(
        _statuses(401, 404, 422, 403, 403),
        body=lambda world: {"release": [], "exit": []},
        codes={"owner": "ladder_empty"},
        note="the owner's gets past the permission check to the input check: a real rung spends a pre-signed "
        "TX_1 (test_bitcoin_actions.py uploads them)",
    ),
    ("loan-release-psbt", "GET"): Endpoint(
        _statuses(401, 404, 409, 403, 403),
        codes={"owner": "lender_preimage_unknown"},
        note="the owner's: pL is not public on a requested loan (needs a repaid loan on both chains)",
    ),
    ("loan-exit-psbt", "GET"): Endpoint(
        _statuses(401, 404, 409, 403, 403),
        codes={"owner": "escrow_not_confirmed"},
        note="the owner's: the escrow's height is not followed here (t_0 counts from it; needs the watcher)",
    ),
    ("loan-bitcoin-broadcasts", "POST"): Endpoint(
        _statuses(401, 404, 422, 422, 422),
        body=lambda world: {"transaction": "00"},
        codes={role: "malformed_transaction" for role in ("owner", "lender", "operator")},
        note="anyone who sees the loan may hand over one of its transactions; this one is no transaction",
    ),
    ("loan-collateral-lock", "POST"): Endpoint(
        LENDER_ACTION,
        body=lambda world: {},
        codes={"lender": "borrower_preimage_unknown", "operator": "borrower_preimage_unknown"},
        note="the lender's: pB is not public on a requested loan (TX_1 is completed with it)",
    ),
    ("loan-collateral-capture", "POST"): Endpoint(
        LENDER_ACTION,
        body=lambda world: {},
        codes={"lender": "wrong_state", "operator": "wrong_state"},
        note="the lender's: a requested loan has nothing to capture",
    ),
    ("bitcoin-broadcast-retry", "POST"): Endpoint(
        _statuses(401, 404, 403, 403, 200),
        body=lambda world: {},
        kwargs=_broadcast,
        note="of the owner's loan; the node is unreachable: 200, its error on the row",
    ),
    # -- the operators' actions (loans/api/operator_views.py)
    ("operator-lender-role", "POST"): Endpoint(OPERATOR_ONLY, body=_reason, kwargs=_user("other_borrower")),
    ("operator-lender-role", "DELETE"): Endpoint(OPERATOR_ONLY, body=_reason, kwargs=_user("lender")),
    ("operator-deployment-pause", "POST"): Endpoint(OPERATOR_ONLY, body=_reason, kwargs=_deployment),
    ("operator-deployment-resume", "POST"): Endpoint(
        OPERATOR_ONLY, body=lambda world: {}, kwargs=_deployment, setup=_paused
    ),
    ("operator-action-list", "GET"): Endpoint(OPERATOR_ONLY),
    # -- each person's own alerts (loans/api/alert_views.py): everyone signed in lists their own; the owner's alert is
    # the owner's alone to mark read (anyone else: 404, as no such alert)
    ("alert-list", "GET"): Endpoint(_statuses(401, 200, 200, 200, 200), note="each lists their own"),
    ("alert-read", "POST"): Endpoint(_statuses(401, 404, 200, 404, 404), body=lambda world: {}, kwargs=_owner_alert),
    ("schema", "GET"): Endpoint(PUBLIC_READ),
    ("docs", "GET"): Endpoint(PUBLIC_READ),
}


# ------------------------------------------------------------------------------------------------ routes


@dataclass(frozen=True)
class Route:
    name: str  # without the "api:" namespace
    route: str  # e.g. "api/v1/loans/<int:pk>/"
    methods: tuple[str, ...]
    view_class: type


def _walk(patterns, prefix: str, namespace: str) -> Iterator[tuple[str, str, URLPattern]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = ":".join(part for part in (namespace, pattern.namespace) if part)
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        else:
            yield namespace, prefix + str(pattern.pattern), pattern


def api_routes() -> list[Route]:
    """Every pattern routed under /api/v1/, with the HTTP methods its view answers (OPTIONS and HEAD aside)."""
    routes = []
    for namespace, route, pattern in _walk(get_resolver().url_patterns, "", ""):
        if not route.startswith(API_PREFIX):
            continue
        view_class = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
        assert namespace == "api" and pattern.name, f"{route}: every API route is named in the api namespace"
        assert view_class is not None, f"{route}: not a class-based view"
        methods = tuple(
            method.upper()
            for method in view_class.http_method_names
            if method not in ("options", "head") and hasattr(view_class, method)
        )
        routes.append(Route(pattern.name, route, methods, view_class))
    return routes


def api_endpoints() -> set[tuple[str, str]]:
    return {(route.name, method) for route in api_routes() for method in route.methods}


def url_for(name: str, world: World, kwargs: dict | None = None) -> str:
    """The URL of ``name``; by default a ``pk`` in its route is the owner's loan."""
    if kwargs is None:
        (route,) = [route for route in api_routes() if route.name == name]
        kwargs = {"pk": world.loan.pk} if "<int:pk>" in route.route else {}
    return reverse(f"api:{name}", kwargs=kwargs)


def row_counts() -> dict[str, int]:
    """The number of rows of every model of the loans app (and the auth tables it writes)."""
    from django.apps import apps

    return {model._meta.label: model.objects.count() for model in apps.get_app_config("loans").get_models()}
