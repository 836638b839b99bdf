"""One kernel-plan entry, two ways, in the demo's train step: the median step time of each, interleaved in one
process (rounds of steps, the order alternating), so that this machine's drift between minutes falls on both:
    python benchmarks/plan_step_ab.py upsample native custom [-o benchmarks/results/<cpu kind>/ab_upsample.json]
The rest of the plan is what ``model.kernels: auto`` picks on this host for the width. With
``--baseline-build`` the kernel library's own loops run their baseline x86-64 build, not the AVX2 + FMA one.
``pool_spin`` compares two spins of the library's threads (microseconds, see SleepingPool in onednn_conv.cc)
on one network: ``plan_step_ab.py pool_spin 0 100``. ``--batch/--size/--width`` measure another step than the
demo's (the full network's: ``--batch 2 --size 256 --width 1``).
"""
import argparse
import json
import statistics
import time

import mindspore as ms

from fcn8s.bench_worker import random_batch
from fcn8s.config import load_config
from fcn8s.device import setup_device
from fcn8s.fileio import atomic_write_text
from fcn8s.host import host_record
from fcn8s.kernels import LAYERS, choose, onednn
from fcn8s.models import FCN
from fcn8s.schedule import lr_per_step
from fcn8s.train import build_train_step

BATCH, SIZE, WIDTH = 8, 128, 0.25   # the demo's (fcn8s/configs/demo.yaml)
POOL_SPIN = "pool_spin"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entry", choices=[*LAYERS, POOL_SPIN])
    parser.add_argument("ways", nargs=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8, help="steps per round")
    parser.add_argument("--baseline-build", action="store_true",
                        help="the library's own loops in their baseline x86-64 build (onednn_conv.cc, vectorised)")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--width", type=float, default=WIDTH)
    parser.add_argument("-o", "--output", help="JSON results file")
    args = parser.parse_args()
    cfg = load_config(None, [("model.width", args.width), ("device.target", "CPU"), ("device.mode", "graph")])
    setup = setup_device(cfg.device, announce=False)
    plan, _ = choose("auto", args.width)
    onednn.use_baseline_build(args.baseline_build)
    images, labels = (ms.Tensor(a) for a in random_batch(args.batch, args.size))

    def train_step(kernels):
        net = FCN("fcn8s", 21, args.width, kernels=kernels)
        step, _ = build_train_step(net, cfg, setup, lr_per_step("constant", 0.01, 10_000), None)
        for _ in range(3):   # compile and warm up
            step(images, labels).asnumpy()
        return step
    if args.entry == POOL_SPIN:
        step = train_step(plan)
        steps = {way: step for way in args.ways}
    else:
        steps = {way: train_step({**plan, args.entry: way}) for way in args.ways}
    times = {way: [] for way in args.ways}
    for r in range(args.rounds):
        for way in args.ways if r % 2 == 0 else args.ways[::-1]:
            if args.entry == POOL_SPIN:
                onednn.set_pool_spin(float(way))
            for _ in range(args.steps):
                start = time.perf_counter()
                steps[way](images, labels).asnumpy()
                times[way].append(time.perf_counter() - start)
    medians = {way: statistics.median(t) for way, t in times.items()}
    first, second = args.ways
    print(", ".join(f"{args.entry} {way}: median {1000 * m:.1f} ms" for way, m in medians.items())
          + f"; {second} / {first} {medians[second] / medians[first]:.3f}")
    if args.output:
        report = {"host": host_record(), "entry": args.entry, "plan": plan, "batch": args.batch, "size": args.size,
                  "width": args.width, "baseline_build": args.baseline_build, "rounds": args.rounds,
                  "steps_per_round": args.steps, "times_s": times, "median_s": medians}
        atomic_write_text(args.output, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
