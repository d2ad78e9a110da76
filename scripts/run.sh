#!/usr/bin/env bash
# Sets everything up and runs the app on http://127.0.0.1:8000: the virtualenv at .venv/, Python and npm
# dependencies, .env from .env.example (first run), migrations, then `manage.py devstack` (anvil, the regtest
# Bitcoin node, contract deployment, the worker and the web server). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
if [ ! -f .env ]; then
    cp .env.example .env
    echo "run: created .env from .env.example (SQLite, in-memory channel layer; edit it to use PostgreSQL/Redis)"
fi
.venv/bin/python manage.py migrate --noinput
exec .venv/bin/python manage.py devstack "$@"
