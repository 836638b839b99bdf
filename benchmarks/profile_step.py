"""Per-op time of FCN-8s train steps (graph mode, CPU), from MindSpore's profiler.

Two warm-up steps, then two profiled ones; prints milliseconds per step by op type, with conv6's
ops apart and the kernel library's ops (all "Custom" to MindSpore) by the Cell that runs them, e.g.
"Custom OneDNNConv", "Custom LibraryBatchNormReLU" (forward and gradients together); and by part of the
network (``part``), so that a step on MindSpore's kernels (``--kernels mindspore``, the network before the
library) and one on the kernels ``fcn8s train`` picks (``--kernels auto``) compare line by line:
    python benchmarks/profile_step.py [--batch 2 --size 256 --width 1.0] [--kernels auto] [--out /tmp/fcn8s-profile]
                                      [-o RESULTS.json]
"""
import argparse
import csv
import json
import re
from pathlib import Path

import mindspore as ms
from mindspore.profiler import Profiler

from fcn8s.bench_worker import model_and_step, random_batch
from fcn8s.fileio import atomic_write_text
from fcn8s.host import host_record

STEPS = 2
CONV6 = re.compile(r"/conv6-\w+/0-")   # conv6's convolution (cell 0 of its block), not its BatchNorm
LIBRARY_CELL = re.compile(r"-(\w+)/Custom-op\d+$")   # e.g. .../op-OneDNNConv/Custom-op1: the op's Cell class
IMPLS = {"auto": "fcn8s", "mindspore": "ms-kernels"}   # --kernels: bench_worker's name of the network
# part of the network: the first pattern found in an op's full name (its Cell scope) names it; the profiler
# names some fused gradient ops by one of the layers they serve (conv4's weight gradients under conv5's scope),
# so the blocks conv1-conv5 are one part
PARTS = ((re.compile(r"^Default/optimizer-"), "optimizer update"),
         (re.compile(r"/_loss_fn-"), "loss"),
         (re.compile(r"/upscore\w*-"), "upsampling (upscore*)"),
         (re.compile(r"/pool-MaxPool"), "max pooling"),
         (re.compile(r"/bn_relu-|-BatchNorm2d/|-ReLU/"), "BatchNorm + ReLU"),
         (CONV6, "conv6"),
         (re.compile(r"/conv7-"), "conv7"),
         (re.compile(r"/score_\w+-"), "score heads (score_fr, score_pool*)"),
         (re.compile(r"/conv[1-5]-"), "blocks conv1-conv5"))


def part(full_op_name):
    """The part of the network an op of the profile runs for (PARTS), or "other" (the skip connections' adds)."""
    return next((name for pattern, name in PARTS if pattern.search(full_op_name)), "other")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--width", type=float, default=1.0, help="model.width (the demo's is 0.25)")
    parser.add_argument("--kernels", choices=IMPLS, default="auto",
                        help="model.kernels: the probe's choice (auto, as fcn8s train) or MindSpore's own")
    parser.add_argument("--out", default="/tmp/fcn8s-profile", help="profiler output folder")
    parser.add_argument("-o", "--output", help="JSON results file")
    args = parser.parse_args()
    net, step = model_and_step(IMPLS[args.kernels], "train", args.width, "graph", 2 * STEPS + 1)
    images, labels = (ms.Tensor(a) for a in random_batch(args.batch, args.size))
    for _ in range(STEPS):
        step(images, labels).asnumpy()
    profiler = Profiler(output_path=args.out)
    for _ in range(STEPS):
        step(images, labels).asnumpy()
    profiler.stop()
    profiler.analyse()
    details = max(Path(args.out).glob("*/FRAMEWORK/cpu_op_detail_info_0.csv"), key=lambda p: p.stat().st_mtime)
    per_op, per_part = {}, {}
    for row in csv.DictReader(details.open()):
        op = row["op_type"]
        cell = LIBRARY_CELL.search(row["full_op_name"]) if op == "Custom" else None
        op = f"{op} {cell.group(1)}" if cell else op
        group = f"conv6 {op}" if CONV6.search(row["full_op_name"]) else op
        ms_per_step = float(row["op_total_time(ms)"]) / STEPS
        per_op[group] = per_op.get(group, 0.0) + ms_per_step
        where = part(row["full_op_name"])
        per_part[where] = per_part.get(where, 0.0) + ms_per_step
    print(f"{'op (per step)':<32}{'ms':>8}")
    for group, ms_per_step in sorted(per_op.items(), key=lambda item: -item[1]):
        if ms_per_step >= 1:
            print(f"{group:<32}{ms_per_step:>8.1f}")
    print(f"{'total':<32}{sum(per_op.values()):>8.1f}")
    if args.output:
        ranked = dict(sorted(per_op.items(), key=lambda item: -item[1]))
        atomic_write_text(args.output, json.dumps({"host": host_record(), "batch": args.batch, "size": args.size,
                                                   "width": args.width, "impl": IMPLS[args.kernels],
                                                   "kernels": net.kernel_plan, "per_op_ms": ranked,
                                                   "per_part_ms": per_part}, indent=1) + "\n")


if __name__ == "__main__":
    main()
