#!/usr/bin/env bash
# Regenerate every results file that README.md and benchmarks/RESULTS.md cite, one after the other,
# on a machine with nothing else running (about 50 minutes on 2 cores). Then
# `python benchmarks/results_tables.py` prints RESULTS.md's tables from them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
R=benchmarks/results
FCN8S="$PY -m fcn8s.cli"
ALL=torch,torch-channels-last,ms-kernels,seed,onnxruntime
$FCN8S bench --what train,infer,data --batch 2 --size 256 --compare $ALL --repeat 3 --force -o $R/bench_2x256.json
$FCN8S bench --what train,infer --batch 1 --size 512 --compare $ALL --repeat 3 --force -o $R/bench_1x512.json
$FCN8S bench --what infer --batch 1 --size 256 --compare isa-default --repeat 1 --warmup 1 --force -o $R/bench_isa.json
$PY benchmarks/conv_kernels.py -o $R/conv_kernels.json
$PY benchmarks/profile_step.py -o $R/profile_2x256.json
$PY benchmarks/demo_time.py -o $R/demo.json
