#!/usr/bin/env bash
# Set up .venv if needed, then run the one-command demo on the embedded synthetic VOC dataset.
# Extra arguments go to `fcn8s demo` (e.g. --force to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/fcn8s demo "$@"
