#!/usr/bin/env bash
# Creates the virtualenv at .venv/ (Python 3.11) and installs the pinned Python and npm dependencies into the
# repository. Idempotent and quick when nothing changed. Used by scripts/run.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 "$HOME"/.pyenv/versions/3.11*/bin/python3.11 /usr/bin/python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "bootstrap: Python 3.11 not found (Django 5.2 LTS on 3.11, see docs/adr/0001-stack.md). Set PYTHON=/path/to/python3.11." >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    python=$(find_python)
    echo "bootstrap: creating .venv with $python"
    "$python" -m venv .venv
fi

requirements_hash=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$requirements_hash" ]; then
    echo "bootstrap: installing Python dependencies"
    if command -v uv >/dev/null 2>&1; then
        uv=uv
    else
        .venv/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
        uv=.venv/bin/uv
    fi
    "$uv" pip install --quiet --python .venv/bin/python -r requirements.txt
    echo "$requirements_hash" >.venv/.requirements.sha256
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "bootstrap: npm not found; install Node.js 20+ (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.package-lock.sha256 2>/dev/null)" != "$lock_hash" ]; then
    echo "bootstrap: installing npm dependencies (solc-js, anvil, htmx, esbuild and the signer's libraries)"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$lock_hash" >node_modules/.package-lock.sha256
fi
