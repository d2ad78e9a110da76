#!/usr/bin/env bash
# Runs every check and the whole test suite on PostgreSQL and Redis (127.0.0.1:5432 user postgres, trust auth;
# 127.0.0.1:6379). Extra arguments go to pytest, e.g. `./scripts/test.sh loans -x` (then the browser tests are not
# run). With none, the browser tests (marker `browser`, loans/tests/browser/) run after the main suite in a pytest
# process of their own, in headless Chromium (Debian's `chromium`, installed here when missing and run as root).
# Their screenshots land in BROWSER_ARTIFACTS_DIR (default var/browser-artifacts/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh

export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/loans}"
export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
export DJANGO_DEBUG=0
py=.venv/bin/python

$py - <<'PY'
import os, sys
import psycopg, redis
try:
    psycopg.connect(os.environ["DATABASE_URL"].replace("/loans", "/postgres"), connect_timeout=3).close()
except Exception as exc:
    sys.exit(f"test: PostgreSQL is not reachable ({exc}); .ci/run starts it, or see README.md")
try:
    redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=3).ping()
except Exception as exc:
    sys.exit(f"test: Redis is not reachable ({exc}); .ci/run starts it, or see README.md")
PY

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== migrations are complete"
DATABASE_URL=sqlite:///:memory: DJANGO_SECRET_KEY=check-only $py manage.py makemigrations --check --dry-run
echo "== system checks"
DJANGO_SECRET_KEY=check-only $py manage.py check --fail-level WARNING
echo "== OpenAPI schema"
DJANGO_SECRET_KEY=check-only $py manage.py spectacular --validate --fail-on-warn --file /dev/null
echo "== contract artifacts match their sources"
node contracts/compile.js --check
echo "== the browser signer bundle matches its source and the lock file"
node frontend/build.js --check
echo "== pytest"
if [ $# -gt 0 ]; then
    exec .venv/bin/pytest "$@"
fi
.venv/bin/pytest
echo "== browser tests (headless Chromium)"
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test: installing Debian's chromium"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
    else
        echo "test: the browser tests need Debian's chromium: apt-get install chromium" >&2
        exit 1
    fi
fi
exec .venv/bin/pytest -m browser loans/tests/browser
