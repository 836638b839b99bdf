"""`fcn8s demo` with one config key set several ways: wall time and val mIoU of each, the runs alternating, so
that this machine's drift between minutes falls on all:
    python benchmarks/demo_ab.py data.num_workers 2 1 [--rounds 2] [-o benchmarks/results/<cpu kind>/demo_ab_workers.json]
    python benchmarks/demo_ab.py train.seed 1 2 3 4 5 --rounds 1 [--set data.max_scale=1.25] [-o ...]
The second form is how far the demo's val mIoU moves with the seed of its weights, data order and augmentation
(the demo is deterministic for one seed and one kernel plan). ``--set`` fixes other keys for every run. The kernel
library is built (and the probe run) once beforehand into a cache all runs share, so the times are the demo's own
work; demo_time.py measures a first use, build included.
"""
import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from fcn8s.fileio import atomic_write_text
from fcn8s.host import host_record

from demo_time import _fcn8s, _report   # this folder's, beside this script


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("key")
    parser.add_argument("values", nargs="+")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config key fixed for every run (repeatable)")
    parser.add_argument("-o", "--output", help="JSON results file")
    args = parser.parse_args()
    fixed = [word for setting in args.set for word in ("--set", setting)]
    runs = {value: [] for value in args.values}
    with tempfile.TemporaryDirectory(prefix="fcn8s-demo-ab-") as scratch:
        env = {**os.environ, "FCN8S_CACHE": str(Path(scratch) / "cache")}
        out = Path(scratch) / "demo"
        # first use: build the library and run the probe; one epoch is enough for that
        _fcn8s("demo", "--output-dir", str(out), "--force", "--set", "train.epochs=1", env=env)
        for r in range(args.rounds):
            for value in args.values if r % 2 == 0 else args.values[::-1]:
                start = time.perf_counter()
                _fcn8s("demo", "--output-dir", str(out), "--force", *fixed, "--set", f"{args.key}={value}", env=env)
                wall = time.perf_counter() - start
                runs[value].append({"wall_s": round(wall, 1), "mean_iou": _report(out / "eval")["mean_iou"]})
                print(f"{args.key}={value}: {wall:.1f} s, val mIoU {runs[value][-1]['mean_iou']:.4f}", flush=True)
    medians = {value: statistics.median(run["wall_s"] for run in done) for value, done in runs.items()}
    print(", ".join(f"{args.key}={v}: median {m:.1f} s" for v, m in medians.items()))
    if args.output:
        report = {"host": host_record(), "key": args.key, "fixed": args.set, "rounds": args.rounds, "runs": runs,
                  "median_wall_s": medians}
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
