#!/usr/bin/env bash
# Create (or reuse) .venv in the repository and install fcn8s into it, editable, with test extras.
# Re-running is fast: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.fcn8s-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing fcn8s and its dependencies into .venv (first time: MindSpore is ~800 MB)"
    # quiet unless it fails: setuptools' build warnings would bury the test output
    if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e '.[test]'; } \
            > .venv/install.log 2>&1; then
        tail -n 30 .venv/install.log
        echo "[setup] install failed; the whole log is .venv/install.log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
