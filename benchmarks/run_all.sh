#!/usr/bin/env bash
# Regenerate every results file that README.md and benchmarks/RESULTS.md cite, one after the other,
# on a machine with nothing else running (60-80 minutes on 2 cores, the three demo runs included), into
# the folder of this kind of CPU (benchmarks/results/<model name>-<ISA>, from fcn8s/host.py): one
# sitting per kind, each replacing that kind's last. Then `python benchmarks/results_tables.py` prints
# RESULTS.md's tables from them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
R=benchmarks/results/$($PY -m fcn8s.host)
mkdir -p "$R"
FCN8S="$PY -m fcn8s.cli"
# five rounds, each implementation in turn with the others: this machine's speed drifts between minutes
PEERS=torch,torch-channels-last,ms-kernels,onnxruntime
$FCN8S bench --what train,infer,data --batch 2 --size 256 --compare $PEERS --repeat 3 --rounds 5 --force -o $R/bench_2x256.json
$FCN8S bench --what train,infer --batch 1 --size 512 --compare $PEERS --repeat 3 --rounds 5 --force -o $R/bench_1x512.json
# the tutorial's definition is 10x slower: one timed call each
$FCN8S bench --what train,infer --batch 2 --size 256 --compare seed --repeat 1 --warmup 1 --force -o $R/bench_tutorial_2x256.json
$FCN8S bench --what train,infer --batch 1 --size 512 --compare seed --repeat 1 --warmup 1 --force -o $R/bench_tutorial_1x512.json
$FCN8S bench --what infer --batch 1 --size 256 --compare isa-default --repeat 1 --warmup 1 --force -o $R/bench_isa.json
# the probe's verdicts that the fcn8s rows above ran with (full width) and the demo's (width 0.25)
$PY benchmarks/probe_verdict.py -o $R/probe.json
$PY benchmarks/conv_kernels.py -o $R/conv_kernels.json
$PY benchmarks/loss_kernel.py -o $R/loss_kernel.json
$PY benchmarks/upsample_kernel.py -o $R/upsample_kernel.json
$PY benchmarks/plan_step_ab.py upsample native custom -o $R/ab_upsample.json
$PY benchmarks/plan_step_ab.py batchnorm native custom -o $R/ab_batchnorm.json
$PY benchmarks/plan_step_ab.py optimizer native custom -o $R/ab_optimizer.json
# the library's threads spinning 100 us for the next region before sleeping (onednn_conv.cc, SleepingPool), or not
$PY benchmarks/plan_step_ab.py pool_spin 0 100 -o $R/ab_pool_spin.json
$PY benchmarks/plan_step_ab.py pool_spin 0 100 --batch 2 --size 256 --width 1 --rounds 12 --steps 2 -o $R/ab_pool_spin_2x256.json
# the library's loops built for the baseline x86-64 (SSE2): why batchnorm and upsample need AVX2 (kernels.NEED_AVX2)
$PY benchmarks/plan_step_ab.py upsample native custom --baseline-build -o $R/ab_upsample_baseline.json
$PY benchmarks/plan_step_ab.py batchnorm native custom --baseline-build -o $R/ab_batchnorm_baseline.json
# each step's ops on the kernels fcn8s picks, and before them (the same network on MindSpore's kernels)
$PY benchmarks/profile_step.py -o $R/profile_2x256.json
$PY benchmarks/profile_step.py --kernels mindspore -o $R/profile_2x256_ms_kernels.json
$PY benchmarks/profile_step.py --batch 1 --size 512 -o $R/profile_1x512.json
$PY benchmarks/profile_step.py --batch 1 --size 512 --kernels mindspore -o $R/profile_1x512_ms_kernels.json
$PY benchmarks/profile_step.py --batch 8 --size 128 --width 0.25 -o $R/profile_demo.json
$PY benchmarks/profile_step.py --batch 8 --size 128 --width 0.25 --kernels mindspore -o $R/profile_demo_ms_kernels.json
$PY benchmarks/onednn_primitives.py --batch 1 --size 512 -o $R/onednn_1x512.json
$PY benchmarks/demo_time.py -o $R/demo.json
