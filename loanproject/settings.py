"""Settings, read from the environment (see `.env.example`).

Defaults need nothing installed: SQLite, an in-memory channel layer and django-q2's ORM broker. Setting
`DATABASE_URL` switches to PostgreSQL (psycopg 3); setting `REDIS_URL` switches channels and django-q2 to Redis.
"""

import ipaddress
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
# pytest (8.2+) sets PYTEST_VERSION: tests get PostgreSQL and Redis by default and never read a developer's .env.
UNDER_PYTEST = "PYTEST_VERSION" in os.environ


def load_dotenv(path: Path) -> None:
    """Read KEY=VALUE lines of a `.env` file into the environment; variables already set win."""
    if not path.is_file():
        return
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ImproperlyConfigured(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        os.environ.setdefault(key.strip(), value.strip().strip("'\""))


if not UNDER_PYTEST:
    load_dotenv(BASE_DIR / ".env")


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise ImproperlyConfigured(f"environment variable {name} is required")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


DEBUG = env_bool("DJANGO_DEBUG", False)
# The development key only works with DEBUG on or under pytest; production must set DJANGO_SECRET_KEY.
DEV_SECRET_KEY = "dev-insecure-key-never-in-production"  # noqa: S105
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not (DEBUG or UNDER_PYTEST):
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off")
    SECRET_KEY = DEV_SECRET_KEY
ALLOWED_HOSTS = [h.strip() for h in env("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "daphne",
    "loans.apps.LoansAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "csp",
    "template_partials",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "django_prometheus",
    "loans",
    "bitcoin",
    "evm",
]

MIDDLEWARE = [
    # django-prometheus: first and last, so they time the whole request (see "Observability" below).
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (htmx, the pages' CSS and JavaScript, admin and API docs assets) straight from the app, in
    # production too: see "Static files" below.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Content-Security-Policy on every response: see "Content-Security-Policy" below.
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "loanproject.urls"
WSGI_APPLICATION = "loanproject.wsgi.application"
ASGI_APPLICATION = "loanproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The test suite runs on PostgreSQL and Redis (as production does) unless told otherwise; a newcomer's app runs on
# SQLite and an in-memory channel layer.
DEFAULT_DATABASE_URL = (
    "postgres://postgres@127.0.0.1:5432/loans" if UNDER_PYTEST else f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
)
# DATABASE_CONN_MAX_AGE (seconds; default 0: each request's connection is closed when it ends). The web app runs
# under ASGI (daphne), where each request's synchronous code runs in a thread of its own: a persistent connection
# (> 0) stays open per thread served until PostgreSQL has no connection left (the load benchmark ran out of 100
# with 60; Django's docs: disable persistent connections under ASGI, pool outside Django if needed).
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", DEFAULT_DATABASE_URL),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # channels' live-server test case needs an explicit test database name.
    DATABASES["default"]["TEST"] = {"NAME": env("DJANGO_TEST_DATABASE_NAME", "test_loans")}
# django-prometheus's database wrappers: Django's own PostgreSQL (psycopg 3) and SQLite backends, subclassed to count
# connections, queries and errors and time every query (django_db_* on /metrics), for a counter increment and a timer
# per query. They keep the vendor ("postgresql", "sqlite") and every option of DATABASE_URL (conn_max_age, health
# checks, TEST); METRICS_DATABASE=0 keeps Django's plain backends.
PROMETHEUS_DATABASE_BACKENDS = {
    "django.db.backends.postgresql": "django_prometheus.db.backends.postgresql",
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
}
if env_bool("METRICS_DATABASE", True):
    for database in DATABASES.values():
        database["ENGINE"] = PROMETHEUS_DATABASE_BACKENDS.get(database["ENGINE"], database["ENGINE"])

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "loans.User"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15" if UNDER_PYTEST else "")
if REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

Q_CLUSTER = {
    "name": "loans",
    "workers": env_int("Q_WORKERS", 2),
    "timeout": 60,
    "retry": 90,  # greater than timeout, so a slow task is never run twice at once
    "max_attempts": 5,
    "catch_up": False,
    "orm": "default",
}
if REDIS_URL:
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = REDIS_URL

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files ----------------------------------------------------------------------------------------------
# WhiteNoise serves them from the app process (daphne), so the compose stack needs no separate web server. In
# production (DEBUG off, not under pytest) they come from STATIC_ROOT, filled by `collectstatic` when the image is
# built (docker/Dockerfile), under content-hashed names with far-future caching and gzip/brotli copies; with DEBUG on
# and under pytest they are found in place (STATICFILES_DIRS and the apps) so nothing needs collecting.
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_COLLECTED = env_bool("STATIC_COLLECTED", not (DEBUG or UNDER_PYTEST))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_COLLECTED
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not STATIC_COLLECTED
WHITENOISE_AUTOREFRESH = not STATIC_COLLECTED

# --- Content-Security-Policy (django-csp) ------------------------------------------------------------------
# No inline script and no eval anywhere: JavaScript lives in static files and reads data-* attributes; htmx is told
# not to eval (templates/base.html's htmx-config). Each source, and why it is allowed:
# - default-src 'self': anything not named below only from this origin.
# - script-src 'self': our static files (htmx, the pages' modules). No 'unsafe-inline', no 'unsafe-eval'.
# - style-src 'self': our stylesheets; htmx's injected indicator <style> is switched off (includeIndicatorStyles).
# - img-src 'self' data:: our images, and data: URIs that the API docs page's stylesheet (Swagger UI) draws icons with.
# - connect-src 'self': htmx requests, the pages' fetch() to /api/v1/, and the live websocket (CSP Level 3 'self'
#   matches ws:/wss: of this host). The wallet talks to its own node from its extension, not from the page.
# - object-src 'none', base-uri 'self', form-action 'self', frame-ancestors 'none' (with X-Frame-Options: DENY).
# Exemptions, each on its own view: the API docs page (loans/api/urls.py) gets style-src 'unsafe-inline' for the
# <style> block in drf-spectacular's template; its script is served as a file (SpectacularSwaggerSplitView). The
# admin needs none. CSP_REPORT_ONLY=1 sends the same policy as Content-Security-Policy-Report-Only instead.
_CSP_DIRECTIVES = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
if env_bool("CSP_REPORT_ONLY", False):
    CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": _CSP_DIRECTIVES}
else:
    CONTENT_SECURITY_POLICY = {"DIRECTIVES": _CSP_DIRECTIVES}

# Throttle counters and other short-lived state: Redis when REDIS_URL is set (shared by every web process),
# otherwise this process's memory.
CACHE_KEY_PREFIX = env("CACHE_KEY_PREFIX", "loans")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                    "KEY_PREFIX": CACHE_KEY_PREFIX}
    }  # fmt: skip
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "KEY_PREFIX": CACHE_KEY_PREFIX}}

# --- REST API /api/v1/ (loans/api/) ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "loans.api.authentication.BearerTokenAuthentication",
        "loans.api.authentication.AddressBoundSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "loans.api.pagination.LoanPagination",
    "DEFAULT_THROTTLE_CLASSES": ["loans.api.throttles.WriteRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "write": env("API_WRITE_RATE", "60/min"),
        "sign_in": env("API_SIGN_IN_RATE", "10/min"),
    },
    "EXCEPTION_HANDLER": "loans.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "BTC-collateralized loan desk API",
    "DESCRIPTION": (
        "Every error has the shape {code, message, fields}; the codes are listed in docs/api-errors.md. "
        "Amounts are decimal strings of integers (sats, wei), never floats. Every POST honours an Idempotency-Key."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge fetched from the public validator (it would leave the site and break img-src 'self').
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
    # statuses the shared machinery gives (idempotency keys, body size, unmatched ids): loans/api/schema.py
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "loans.api.schema.cross_cutting_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "LoanStatusEnum": "loans.models.Loan.Status",
        "BitcoinStatusEnum": "loans.models.Loan.BitcoinStatus",
        "AuditStatusEnum": "loans.api.serializers.AUDIT_STATUS_CHOICES",
    },
}

# Sign-In with Ethereum (EIP-4361): the domain and URI the message must name (default: the request's host and
# https://<host>/), how long a nonce and a message live, and wallets' bearer tokens.
SIWE_DOMAIN = env("SIWE_DOMAIN", "")
SIWE_URI = env("SIWE_URI", "")
SIWE_NONCE_TTL_SECONDS = env_int("SIWE_NONCE_TTL_SECONDS", 300)
SIWE_MAX_MESSAGE_AGE_SECONDS = env_int("SIWE_MAX_MESSAGE_AGE_SECONDS", 600)
SIWE_CLOCK_SKEW_SECONDS = env_int("SIWE_CLOCK_SKEW_SECONDS", 60)
API_TOKEN_TTL_SECONDS = env_int("API_TOKEN_TTL_SECONDS", 30 * 24 * 3600)

# --- E-mail (alerts) ----------------------------------------------------------------------------------------
# Development prints mail on the console; production sets EMAIL_BACKEND to SMTP and its EMAIL_* settings.
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "loan desk <desk@localhost>")
# Links in e-mails (no trailing slash), e.g. https://desk.example.com.
SITE_URL = env("SITE_URL", "http://127.0.0.1:8000")
# Deadline alerts (loans.services.deadline_alerts): each party is told once a deadline is this close, in blocks of
# its chain (Rootstock: about 30 s a block, 2880 a day; Bitcoin: 144 a day). Operators are told when a watcher has
# failed this many runs in a row, or is more than this many blocks behind its node's head.
ALERT_WARNING_EVM_BLOCKS = env_int("ALERT_WARNING_EVM_BLOCKS", 2880)
ALERT_WARNING_BTC_BLOCKS = env_int("ALERT_WARNING_BTC_BLOCKS", 144)
ALERT_NODE_FAILURES = env_int("ALERT_NODE_FAILURES", 3)
ALERT_WATCHER_LAG_EVM_BLOCKS = env_int("ALERT_WATCHER_LAG_EVM_BLOCKS", 120)
ALERT_WATCHER_LAG_BTC_BLOCKS = env_int("ALERT_WATCHER_LAG_BTC_BLOCKS", 6)
# The unattended Bitcoin duties: the lender's TX_1 is bumped by CPFP once it has waited this many blocks in the
# mempool (loans.services.automation); the watchtower climbs a TX_release rung that waited this many
# (loans.services.watchtower).
AUTOMATION_TX1_LINGER_BLOCKS = env_int("AUTOMATION_TX1_LINGER_BLOCKS", 3)
WATCHTOWER_CLIMB_AFTER_BLOCKS = env_int("WATCHTOWER_CLIMB_AFTER_BLOCKS", 3)

# --- Observability -------------------------------------------------------------------------------------------
# Logs: LOG_FORMAT=json writes one JSON object a line (time, level, logger, message, loan_id, exception, extras:
# loans/logging.py), for a log collector; text (the message alone) is for a person at a terminal. JSON is the default
# with DEBUG off, text with DEBUG on and under pytest. Either way every record carries loan_id: the one the call
# passed in `extra`, else the one `loans.logging.loan_context` set around the work (or None).
LOG_FORMAT = env("LOG_FORMAT", "text" if (DEBUG or UNDER_PYTEST) else "json")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, got {LOG_FORMAT!r}")

# /metrics (loans/metrics.py) tells loan counts, amounts held and the watchers' state: not for the public. A scraper
# may present `Authorization: Bearer <METRICS_TOKEN>` (Prometheus: `authorization: {credentials_file: ...}`), which
# works through any proxy; or come from an address in METRICS_ALLOWED_NETWORKS (comma-separated addresses or CIDR
# networks). Client addresses are only as good as what sets REMOTE_ADDR: daphne runs with --proxy-headers
# (docker/compose.yml), so X-Forwarded-For from anyone who reaches it directly is believed. Hence no network is
# allowed by default with DEBUG off (only the token opens /metrics; neither set: 403 for all) and loopback with
# DEBUG on. Metrics of several processes: set PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode).
METRICS_TOKEN = env("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = [
    n.strip() for n in env("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1" if DEBUG else "").split(",") if n.strip()
]
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {_network!r} is no address or network") from None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"loan_context": {"()": "loans.logging.LoanContextFilter"}},
    "formatters": {
        "text": {"format": "%(message)s"},
        "json": {"()": "loans.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["loan_context"], "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    # daphne's runserver gives its access log a handler of its own: keep it from printing twice via root.
    "loggers": {
        "django.channels.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # web3's debug lines print every JSON-RPC payload: calldata and signed transactions carry pL before it is
        # mined (acceptRepayment's dry run and send). Never below INFO (loans/tests/secret_scan.py checks).
        "web3.providers": {"level": "INFO"},
    },
}

# Where the development stack keeps its state (anvil, the regtest node, the deployment record, logs).
VAR_DIR = Path(env("VAR_DIR", str(BASE_DIR / "var")))

# --- Chains -----------------------------------------------------------------------------------------------
# Bitcoin: one network for the whole process, checked at start-up (loanproject.checks).
BITCOIN_NETWORK = env("BITCOIN_NETWORK", "regtest")
BITCOIN_RPC_URL = env("BITCOIN_RPC_URL", "http://127.0.0.1:18443")
BITCOIN_RPC_USER = env("BITCOIN_RPC_USER", "")
BITCOIN_RPC_PASSWORD = env("BITCOIN_RPC_PASSWORD", "")
BITCOIN_RPC_COOKIE_FILE = env("BITCOIN_RPC_COOKIE_FILE", "")  # bitcoind's .cookie, instead of user/password
BITCOIN_RPC_TIMEOUT = env_int("BITCOIN_RPC_TIMEOUT", 10)
BITCOIN_CONFIRMATIONS = env_int("BITCOIN_CONFIRMATIONS", 1 if BITCOIN_NETWORK == "regtest" else 3)
BTCNODE_DATA_DIR = Path(env("BTCNODE_DATA_DIR", str(VAR_DIR / "btcnode")))
# Bounds on every loan transaction's fee rate (sat/vB, decimal strings): the lender refuses a pre-signed TX_1
# outside them and the borrower's tools sign nothing outside them (they travel in the loan file).
# The Bitcoin watcher's first run starts here (a height); unset: 144 blocks (about a day) below the node's tip.
BITCOIN_SYNC_START_HEIGHT = env_int("BITCOIN_SYNC_START_HEIGHT", 0) or None
BITCOIN_MIN_FEE_RATE_SAT_VB = env("BITCOIN_MIN_FEE_RATE_SAT_VB", "1")
BITCOIN_MAX_FEE_RATE_SAT_VB = env("BITCOIN_MAX_FEE_RATE_SAT_VB", "500")
# The lender's payout address on BITCOIN_NETWORK (TX_1's origination fee, TX_capture); unset: no loan is created.
LENDER_BTC_PAYOUT_ADDRESS = env("LENDER_BTC_PAYOUT_ADDRESS", "")

# EVM: Rootstock in production (chain id 30; testnet 31); anvil (31337) in development.
EVM_RPC_URL = env("EVM_RPC_URL", "http://127.0.0.1:8545")
EVM_CHAIN_ID = env_int("EVM_CHAIN_ID", 31337)
EVM_CONFIRMATIONS = env_int("EVM_CONFIRMATIONS", 1 if EVM_CHAIN_ID == 31337 else 12)
EVM_BLOCKS_PER_BTC_BLOCK = env_int("EVM_BLOCKS_PER_BTC_BLOCK", 20)
EVM_RPC_TIMEOUT = env_int("EVM_RPC_TIMEOUT", 10)
# The EVM watcher reads logs in chunks of at most this many blocks (halved when a node refuses a range).
EVM_SCAN_CHUNK_BLOCKS = env_int("EVM_SCAN_CHUNK_BLOCKS", 1000)
EVM_DEPLOYMENT_FILE = Path(env("EVM_DEPLOYMENT_FILE", str(VAR_DIR / "deployment.json")))

# --- Secrets at rest (loans.vault) -------------------------------------------------------------------------
# Fernet keys, newest first: the newest encrypts, every one decrypts; `manage.py rotate_vault_keys` re-encrypts
# everything under the newest. LOAN_VAULT_KEYS_FILE (one key a line, e.g. a Docker secret) wins over
# LOAN_VAULT_KEYS (comma-separated). With neither, only DEBUG and the tests get a generated development key under
# VAR_DIR; otherwise nothing is sealed or unsealed and the system check loans.E007 stops manage.py.
LOAN_VAULT_KEYS = env("LOAN_VAULT_KEYS", "")
LOAN_VAULT_KEYS_FILE = env("LOAN_VAULT_KEYS_FILE", "")
LOAN_VAULT_DEV_KEYS_ALLOWED = DEBUG or UNDER_PYTEST
LOAN_VAULT_DEV_KEYS_FILE = VAR_DIR / "vault.keys"
