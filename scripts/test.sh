#!/usr/bin/env bash
# Runs every check and the whole test suite on PostgreSQL and Redis (127.0.0.1:5432 user postgres, trust auth;
# 127.0.0.1:6379). Extra arguments go to pytest, e.g. `./scripts/test.sh loans -x`.
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
exec .venv/bin/pytest "$@"
