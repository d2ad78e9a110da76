"""Latency of the loan pages and the API list under load, and their queries per request (plain script; prints
figures).

    python benchmarks/bench_desk_load.py [--loans 10000] [--users 50] [--seconds 60] [--borrowers 20]
    python benchmarks/bench_desk_load.py --queries [--sizes 100,1000,10000]

* Load (the default): ``--loans`` loans in PostgreSQL (bulk-inserted: ``--borrowers`` borrowers, every status and
  Bitcoin status, deadlines around the chains' heads), the app served as production serves it (daphne
  ``loanproject.asgi:application``, one process, ``DJANGO_DEBUG=0``) against anvil and the embedded regtest node,
  each followed once by the watchers (the pages read the followed heads; the queue asks the Bitcoin node about the
  escrows of its page, the first 50 requests; a draft's page asks it for a fee estimate). Then locust, headless,
  with ``--users`` clients asking without pause for ``--seconds``: a borrower's own loan page
  (``/borrower/loans/<id>/``, signed in by session), the lender's queue (``/lender/queue/``) and desk
  (``/lender/``), and ``GET /api/v1/loans/`` with a bearer token (the lender's: every loan, and a borrower's: their
  own; a page of 50 either way). Prints requests, median, p95, p99 (ms) and failures per endpoint.
* ``--queries``: the SQL queries of each of those requests and of the API's queue (``GET /api/v1/lender/queue/``,
  the lender's token) (Django's test client, ``CaptureQueriesContext``), the same user seeing the same page, at each
  of ``--sizes`` loans. Exits 1 if a count changes with the number of loans (the desk and the queue included).

The database is a throwaway one on ``DATABASE_URL``'s server (a database of its own, migrated, dropped at the end;
the load needs PostgreSQL, since daphne runs in another process). Static files are served from the source tree
(``STATIC_COLLECTED=0``): no page asks for them here, only HTML and JSON are measured. daphne runs without
persistent database connections (``desk_server_settings.py``: with production's 60 s it leaks a connection per
request thread and exhausts the PostgreSQL server the benchmark shares).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loanproject.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-desk-throwaway-key")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("STATIC_COLLECTED", "0")

# Every tenth loan is a request waiting in the lender's queue; the rest spread over the other states.
STATUS_CYCLE = [
    ("draft", "none"),
    ("requested", "escrow_confirmed"),
    ("offered", "escrow_confirmed"),
    ("active", "collateral_locked"),
    ("active", "collateral_locked"),
    ("repayment_in_progress", "collateral_locked"),
    ("repaid", "released"),
    ("repaid", "released"),
    ("cancelled", "exited"),
    ("offer_expired", "exited"),
    ("defaulted", "captured"),
    ("repayment_refunded", "collateral_locked"),
]
CLOSED = {"repaid", "cancelled", "offer_expired", "defaulted"}
# The locust tasks (desk_locustfile.py), one run each (against a server of its own), the slowest last.
ENDPOINTS = ["api_loan_list_borrower", "api_loan_list_lender", "borrower_loan_page", "lender_desk", "lender_queue"]


def throwaway_database() -> Callable[[], None]:
    """Set Django up on a database of the benchmark's own; returns the function that drops it."""
    import django
    from django.conf import settings

    django.setup()
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = ""
    else:
        database.setdefault("TEST", {})["NAME"] = f"bench_desk_{os.getpid()}"
    from django.test.utils import setup_databases, teardown_databases

    config = setup_databases(verbosity=0, interactive=False, serialized_aliases=set())
    return lambda: teardown_databases(config, verbosity=0)


def database_url() -> str:
    """DATABASE_URL of the throwaway database, for the daphne process."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if "postgresql" not in db["ENGINE"]:
        raise SystemExit("the load needs PostgreSQL: set DATABASE_URL=postgres://...")
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


# ------------------------------------------------------------------------------------------------ the chains


@dataclass
class Chains:
    """anvil with both contracts deployed and recorded, the regtest node, each followed once by its watcher."""

    anvil_url: str
    bitcoin_url: str
    record: object  # loans.models.ContractDeployment
    evm_head: int
    btc_tip: int


def start_chains(stack: ExitStack, tmp: Path) -> Chains:
    from django.conf import settings

    from bitcoin.testing import RegtestProcess, mine_blocks
    from evm.anvil import AnvilNode
    from evm.connection import connect
    from evm.deploy import deploy_contracts, dev_accounts
    from evm.parameters import ProtocolParameters
    from evm.testing import mine
    from loans.models import ChainCursor
    from loans.services import contract_deployment_record
    from loans.sync.bitcoin import sync_bitcoin
    from loans.sync.evm import sync_evm

    anvil = stack.enter_context(AnvilNode())
    node = RegtestProcess(tmp / "btcnode")
    node.start()
    stack.callback(node.stop)
    rpc = node.rpc()
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_RPC_URL, settings.EVM_RPC_URL, settings.EVM_CHAIN_ID = node.url, anvil.url, anvil.chain_id
    settings.BITCOIN_CONFIRMATIONS = settings.EVM_CONFIRMATIONS = 1

    w3 = connect(anvil.url, expected_chain_id=anvil.chain_id, timeout=60)
    lender = dev_accounts(1)[0]
    lender_btc_pubkey = lender_xonly()
    deployment = deploy_contracts(w3, lender, ProtocolParameters(lender_btc_pubkey=lender_btc_pubkey))
    record = contract_deployment_record(deployment=deployment)
    mine(w3, 500)
    mine_blocks(rpc, 300)
    sync_evm(w3=w3, confirmations=1)
    sync_bitcoin(rpc=rpc, confirmations=1, start_height=rpc.getblockcount())
    cursors = dict(ChainCursor.objects.values_list("chain", "block_number"))
    return Chains(anvil.url, node.url, record, cursors["evm"], cursors["bitcoin"])


def lender_xonly() -> bytes:
    from bitcoin.keys import PrivateKey

    return PrivateKey(hashlib.sha256(b"bench desk lender").digest()).xonly_pubkey


# ------------------------------------------------------------------------------------------------ the loans


@dataclass
class Desk:
    """The seeded people and loans: borrowers (user, their loan ids), the lender."""

    chains: Chains
    lender: object
    borrowers: list[object]
    loans_of: dict[int, list[int]] = field(default_factory=dict)
    seeded: int = 0


def seed_people(chains: Chains, borrowers: int) -> Desk:
    from loans.models import User

    lender = User.objects.create_user(username="lender", role=User.Role.LENDER, evm_address=address(b"lender"))
    people = [
        User.objects.create_user(username=f"borrower-{n}", role=User.Role.BORROWER, evm_address=address(b"b%d" % n))
        for n in range(borrowers)
    ]
    return Desk(chains, lender, people, {person.pk: [] for person in people})


def address(seed: bytes) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(hashlib.sha256(seed).digest()[:20])


def seed_loans(desk: Desk, count: int) -> None:
    """``count`` more loans, bulk-inserted: borrowers in turn, statuses in ``STATUS_CYCLE``, each with the fields its
    state has (escrow, hashes, preimages, heights; deadlines spread around the followed heads) and, once its escrow
    confirmed, the escrow funding as the watcher records it."""
    from django.utils import timezone

    from bitcoin.keys import PrivateKey
    from loans.models import PARAMETER_FIELDS, BitcoinTransaction, Loan

    record, chains = desk.chains.record, desk.chains
    parameters = record.parameters
    snapshot = {name: getattr(parameters, name) for name in PARAMETER_FIELDS}
    keys = {person.pk: PrivateKey(hashlib.sha256(b"key %d" % person.pk).digest()).xonly_pubkey.hex()
            for person in desk.borrowers}  # fmt: skip
    rng = random.Random(desk.seeded)
    amount = parameters.min_amount_wei * 2
    bond = amount * snapshot["bond_percent"] // 100
    repayment = amount + amount * snapshot["interest_bps"] * snapshot["loan_duration_blocks"] // (
        10_000 * snapshot["blocks_per_year"]
    )
    now = timezone.now()

    def before(head: int, blocks: int) -> int:
        """A block up to ``blocks`` before ``head`` (not before block 1): deadlines passed and still open."""
        return max(1, head - rng.randrange(0, blocks))

    rows, fundings = [], []
    for n in range(desk.seeded, desk.seeded + count):
        status, bitcoin_status = STATUS_CYCLE[n % len(STATUS_CYCLE)]
        borrower = desk.borrowers[n % len(desk.borrowers)]
        stage = [s for s, _ in STATUS_CYCLE].index(status)
        h = hashlib.sha256(b"loan %d" % n).hexdigest
        head, tip = chains.evm_head, chains.btc_tip
        loan = Loan(
            **snapshot,
            parameters=parameters,
            deployment=record,
            borrower=borrower,
            status=status,
            bitcoin_status=bitcoin_status,
            amount_wei=amount,
            bond_wei=bond,
            repayment_wei=repayment,
            borrower_btc_pubkey=keys[borrower.pk],
            lender_btc_pubkey=parameters.lender_btc_pubkey,
            borrower_hash=hashlib.sha256(b"pB %d" % n).hexdigest(),
            borrower_payout_address="bcrt1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqc8gma6",
            lender_payout_address="bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            closed_at=now if status in CLOSED else None,
        )
        if status != "draft":
            loan.contract_loan_id = n + 1
            loan.escrow_txid, loan.escrow_vout, loan.escrow_sats = h(), 0, 1_500_000 + rng.randrange(100_000)
            loan.escrow_btc_height = tip - rng.randrange(1, 40)
            loan.requested_evm_block = before(head, 400)
        if stage >= 2 and status not in ("cancelled",):
            loan.lender = desk.lender
            loan.lender_hash = hashlib.sha256(b"hL %d" % n).hexdigest()
            loan.offered_evm_block = before(head, snapshot["offer_window_blocks"] + 20)
        if stage >= 3 and status not in ("cancelled", "offer_expired"):
            loan.borrower_preimage = hashlib.sha256(b"pB value %d" % n).hexdigest()
            loan.activated_evm_block = before(head, snapshot["loan_duration_blocks"] + 20)
            loan.collateral_sats = 1_000_000
            loan.collateral_btc_height = loan.escrow_btc_height + 1
        if status in ("repayment_in_progress", "repaid", "repayment_refunded"):
            loan.repayment_evm_block = before(head, snapshot["repayment_window_blocks"] + 20)
        if status == "repaid":
            loan.lender_preimage = hashlib.sha256(b"pL value %d" % n).hexdigest()
        rows.append(loan)
    created = Loan.objects.bulk_create(rows, batch_size=1000)
    for loan in created:
        desk.loans_of[loan.borrower_id].append(loan.pk)
        if loan.escrow_txid is not None:
            fundings.append(
                BitcoinTransaction(
                    loan=loan,
                    role=BitcoinTransaction.Role.ESCROW_FUNDING,
                    txid=loan.escrow_txid,
                    vout=loan.escrow_vout,
                    value_sats=loan.escrow_sats,
                    block_hash=hashlib.sha256(b"block %d" % loan.escrow_btc_height).hexdigest(),
                    block_height=loan.escrow_btc_height,
                    applied_at=now,
                )
            )
    BitcoinTransaction.objects.bulk_create(fundings, batch_size=1000)
    desk.seeded += count


def session_for(user) -> str:
    """A signed-in session (as Sign-In with Ethereum leaves it) for ``user``: the sessionid cookie's value."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from loans.api.authentication import SESSION_ADDRESS_KEY

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session[SESSION_ADDRESS_KEY] = user.evm_address
    session.create()
    return session.session_key


def token_for(user) -> str:
    from loans.services.accounts import api_token_issue

    raw, _ = api_token_issue(user=user)
    return raw


# ------------------------------------------------------------------------------------------------ load


def serve(stack: ExitStack, tmp: Path, chains: Chains) -> str:
    """daphne as docker/compose.yml runs it, on the throwaway database and the benchmark's nodes; its URL."""
    from cryptography.fernet import Fernet

    from evm.anvil import free_port

    port = free_port()
    env = {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DATABASE_URL": database_url(),
        "BITCOIN_NETWORK": "regtest",
        "BITCOIN_RPC_URL": chains.bitcoin_url,
        "EVM_RPC_URL": chains.anvil_url,
        "EVM_CHAIN_ID": "31337",
        "LENDER_BTC_PAYOUT_ADDRESS": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
        "LOAN_VAULT_KEYS": Fernet.generate_key().decode(),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "STATIC_COLLECTED": "0",
        # production's settings less persistent connections (desk_server_settings.py says why)
        "DJANGO_SETTINGS_MODULE": "benchmarks.desk_server_settings",
    }
    env.pop("PYTEST_VERSION", None)  # the server runs as in production, not as under the test suite
    env.pop("DJANGO_TEST_DATABASE_NAME", None)
    log = (tmp / "daphne.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("daphne")), "--bind", "127.0.0.1", "--port", str(port),
         "--proxy-headers", "loanproject.asgi:application"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

    stack.callback(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310 (our own http URL)
                if response.status == 200:
                    return url
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daphne did not start:\n{(tmp / 'daphne.log').read_text()[-3000:]}")
        time.sleep(0.3)


def run_load(args: argparse.Namespace) -> None:
    from loans.models import Loan

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-desk-") as tmp_name:
        tmp = Path(tmp_name)
        chains = start_chains(stack, tmp)
        started = time.perf_counter()
        desk = seed_people(chains, args.borrowers)
        for start in range(0, args.loans, 5000):
            seed_loans(desk, min(5000, args.loans - start))
        fixture = {
            "lender": {"session": session_for(desk.lender), "token": token_for(desk.lender)},
            "borrowers": [
                {"session": session_for(person), "token": token_for(person), "loan_ids": desk.loans_of[person.pk]}
                for person in desk.borrowers
            ],
        }
        (tmp / "fixture.json").write_text(json.dumps(fixture))
        queued = Loan.objects.filter(status="requested").count()
        print(
            f"seeded {args.loans} loans of {args.borrowers} borrowers in {time.perf_counter() - started:.1f} s "
            f"({queued} requested, in the lender's queue); EVM head {chains.evm_head} (anvil), Bitcoin tip "
            f"{chains.btc_tip} (regtest node)"
        )
        print(
            f"\n{args.users} concurrent clients on one endpoint at a time, {args.seconds} s each, no pause between "
            f"requests; one daphne process (DJANGO_DEBUG=0, CONN_MAX_AGE=0), started afresh for each endpoint, "
            f"PostgreSQL; {os.cpu_count()} CPUs shared by locust, daphne, PostgreSQL and both nodes"
        )
        print(
            f"{'endpoint':<34} {'requests':>9} {'median':>8} {'p95':>8} {'p99':>8} {'failures':>9} {'alone':>8}   (ms; "
            "alone: one request with no other client)"
        )
        for endpoint in ENDPOINTS:
            # A server of its own: requests locust gave up on at the end of a run die with it, instead of running
            # on (each with its database connection) into the next endpoint's run.
            with ExitStack() as server:
                url = serve(server, tmp, chains)
                alone = alone_ms(url, fixture, endpoint)
                row = locust_run(args, tmp, url, endpoint)
            print(
                f"{row['name']:<34} {row['requests']:>9} {row['p50']:>8} {row['p95']:>8} {row['p99']:>8} "
                f"{row['failures']:>9} {alone:>8}"
            )
            if row["failures"]:
                errors = re.findall(r"\b(\w+(?:Error|Exception): [^\"\\]{0,200})", (tmp / "daphne.log").read_text())
                print(f"  last error in daphne's log: {errors[-1] if errors else '(none logged)'}")


def locust_run(args: argparse.Namespace, tmp: Path, url: str, endpoint: str) -> dict[str, object]:
    """locust, headless, ``args.users`` clients on the task tagged ``endpoint``: its requests, failures and
    response-time percentiles (ms), from the statistics locust saves when it stops."""
    command = [
        str(Path(sys.executable).with_name("locust")), "-f", str(Path(__file__).with_name("desk_locustfile.py")),
        "--headless", "--users", str(args.users), "--spawn-rate", str(args.users), "--run-time", f"{args.seconds}s",
        "--tags", endpoint, "--host", url, "--json-file", str(tmp / endpoint), "--only-summary",
        "--loglevel", "ERROR", "--stop-timeout", "60",
    ]  # fmt: skip
    env = {**os.environ, "DESK_LOAD_FIXTURE": str(tmp / "fixture.json")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=tmp)
    saved = tmp / f"{endpoint}.json"
    if not saved.exists():
        log = (tmp / "daphne.log").read_text()[-3000:]
        raise SystemExit(f"locust failed ({done.returncode}):\n{done.stderr[-3000:]}\ndaphne:\n{log}")
    entries = json.loads(saved.read_text())
    if not entries:  # not one request answered in the run and the stop timeout
        return {"name": LABELS[endpoint], "requests": 0, "failures": 0, "p50": "-", "p95": "-", "p99": "-"}
    (entry,) = entries
    times = {int(float(ms)): count for ms, count in entry["response_times"].items()}
    total = entry["num_requests"]
    return {
        "name": entry["name"],
        "requests": total,
        "failures": entry["num_failures"],
        **{name: percentile(times, total, fraction) for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
    }


LABELS = {
    "borrower_loan_page": "GET /borrower/loans/<id>/",
    "lender_queue": "GET /lender/queue/",
    "lender_desk": "GET /lender/",
    "api_loan_list_lender": "GET /api/v1/loans/ (lender)",
    "api_loan_list_borrower": "GET /api/v1/loans/ (borrower)",
}


def alone_ms(url: str, fixture: dict, endpoint: str) -> int:
    """One request of ``endpoint`` with no other client (after one to warm the server up), in ms."""
    borrower, lender = fixture["borrowers"][0], fixture["lender"]
    path, headers = {
        # the borrower's first loan, a draft: the page with the most to do (fee estimate, funding, QR code)
        "borrower_loan_page": (
            f"/borrower/loans/{borrower['loan_ids'][0]}/",
            {"Cookie": f"sessionid={borrower['session']}"},
        ),
        "lender_queue": ("/lender/queue/", {"Cookie": f"sessionid={lender['session']}"}),
        "lender_desk": ("/lender/", {"Cookie": f"sessionid={lender['session']}"}),
        "api_loan_list_lender": ("/api/v1/loans/", {"Authorization": f"Bearer {lender['token']}"}),
        "api_loan_list_borrower": ("/api/v1/loans/", {"Authorization": f"Bearer {borrower['token']}"}),
    }[endpoint]
    for _ in range(2):
        started = time.perf_counter()
        request = urllib.request.Request(url + path, headers=headers)  # noqa: S310 (our own http URL)
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            response.read()
            if response.status != 200:
                raise SystemExit(f"{LABELS[endpoint]}: HTTP {response.status}")
    return round((time.perf_counter() - started) * 1000)


def percentile(times: dict[int, int], total: int, fraction: float) -> int:
    """The response time (ms, as locust rounds it) that ``fraction`` of the requests took at most (locust's own
    rule, ``calculate_response_time_percentile``: locust is not imported here, it patches the standard library)."""
    within = int(total * fraction)
    counted = 0
    for ms in sorted(times, reverse=True):
        counted += times[ms]
        if total - counted <= within:
            return ms
    return 0


# ------------------------------------------------------------------------------------------------ queries


def count_queries(desk: Desk, subject: int) -> dict[str, int]:
    """Queries of each measured request: ``subject`` is the borrower's loan whose page is asked for."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    borrower = desk.borrowers[0]
    borrower_client, lender_client = Client(), Client()
    borrower_client.cookies["sessionid"] = session_for(borrower)
    lender_client.cookies["sessionid"] = session_for(desk.lender)
    lender_token, borrower_token = token_for(desk.lender), token_for(borrower)
    requests = {
        "GET /borrower/loans/<id>/": lambda: borrower_client.get(f"/borrower/loans/{subject}/"),
        "GET /lender/queue/": lambda: lender_client.get("/lender/queue/"),
        "GET /lender/": lambda: lender_client.get("/lender/"),
        "GET /api/v1/loans/ (lender)": lambda: Client().get(
            "/api/v1/loans/", HTTP_AUTHORIZATION=f"Bearer {lender_token}"
        ),
        "GET /api/v1/loans/ (borrower)": lambda: Client().get(
            "/api/v1/loans/", HTTP_AUTHORIZATION=f"Bearer {borrower_token}"
        ),
        "GET /api/v1/lender/queue/": lambda: Client().get(
            "/api/v1/lender/queue/", HTTP_AUTHORIZATION=f"Bearer {lender_token}"
        ),
    }
    counts = {}
    for name, request in requests.items():
        request()  # warm: the first request of a process loads templates and content types
        with CaptureQueriesContext(connection) as queries:
            response = request()
        if response.status_code != 200:
            raise SystemExit(f"{name}: HTTP {response.status_code}")
        counts[name] = len(queries)
    return counts


def run_queries(args: argparse.Namespace) -> int:
    from django.conf import settings

    from loans.models import Loan

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    sizes = sorted(args.sizes)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-desk-") as tmp_name:
        chains = start_chains(stack, Path(tmp_name))
        desk = seed_people(chains, args.borrowers)
        table: dict[int, dict[str, int]] = {}
        subject = None
        for size in sizes:
            seed_loans(desk, size - desk.seeded)
            if subject is None:  # the same loan's page at every size: the first borrower's first active loan
                active = Loan.objects.filter(borrower=desk.borrowers[0], status="active").order_by("id").first()
                if active is None:
                    raise SystemExit(f"no active loan of the first borrower among {size}: use fewer --borrowers")
                subject = active.pk
            table[size] = count_queries(desk, subject)
    names = list(table[sizes[0]])
    print(f"SQL queries per request (the same user and page; {args.borrowers} borrowers)")
    print(f"{'endpoint':<34}" + "".join(f"{f'{size} loans':>13}" for size in sizes))
    for name in names:
        print(f"{name:<34}" + "".join(f"{table[size][name]:>13}" for size in sizes))
    grows = [name for name in names if len({table[size][name] for size in sizes}) > 1]
    if grows:
        print(f"queries grow with the number of loans: {', '.join(grows)}")
        return 1
    print("queries per request: constant in the number of loans")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loans", type=int, default=10_000, help="loans in the database (load; default 10,000)")
    parser.add_argument("--users", type=int, default=50, help="concurrent clients (load; default 50)")
    parser.add_argument("--seconds", type=int, default=30, help="how long each endpoint's load runs (default 30)")
    parser.add_argument("--borrowers", type=int, default=20, help="borrowers owning the loans (default 20)")
    parser.add_argument("--queries", action="store_true", help="count queries per request instead of the load")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[100, 1000, 10_000],
        help="numbers of loans for --queries (default 100,1000,10000)",
    )
    args = parser.parse_args()
    if args.loans < len(STATUS_CYCLE) or args.users < 1 or args.seconds < 1 or args.borrowers < 1:
        parser.error(f"needs at least {len(STATUS_CYCLE)} loans, 1 user, 1 second and 1 borrower")
    if args.queries and (len(args.sizes) < 2 or min(args.sizes) < len(STATUS_CYCLE) * 4):
        parser.error(f"--queries needs two sizes or more, each at least {len(STATUS_CYCLE) * 4} loans")
    drop = throwaway_database()
    try:
        status = run_queries(args) if args.queries else run_load(args) or 0
    finally:
        drop()
    sys.exit(status)


if __name__ == "__main__":
    main()
