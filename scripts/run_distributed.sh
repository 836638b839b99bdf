#!/usr/bin/env bash
# Data-parallel training with msrun on one machine: N worker processes, one per device
# (on CPU, N processes sharing the cores). Only rank 0 logs and saves checkpoints.
#   scripts/run_distributed.sh 2 --config configs/voc.yaml [--set key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:?usage: scripts/run_distributed.sh NUM_WORKERS [fcn8s train options]}
shift
export PATH="$PWD/.venv/bin:$PATH"   # msrun starts each worker with the `python` found on PATH
exec msrun --worker_num="$workers" --local_worker_num="$workers" --master_port="${MASTER_PORT:-8118}" \
    --log_dir="${LOG_DIR:-msrun_logs}" --join=True .venv/bin/fcn8s train "$@"
