"""Where a train step's oneDNN time goes, ours against PyTorch's: each side's oneDNN primitives (convolutions,
reorders between layouts, BatchNorm, sgemm...) timed by oneDNN itself (ONEDNN_VERBOSE=1) over one step after
two warm-ups, into a results file:
    python benchmarks/onednn_primitives.py [--batch 1 --size 512 --width 1.0] [-o RESULTS.json]

Each side runs in its own process with its default environment plus ONEDNN_VERBOSE, on as many threads as
this process may use. On our side both oneDNN instances report: MindSpore's own (its NCHW convolutions and
BatchNorm) and the kernel library's private copy (fcn8s/kernels/onednn_conv.cc). Ops that are not oneDNN
primitives (MindSpore's or PyTorch's own kernels, the library's max pooling) are not in it; the step's
wall time, slowed a little by the logging, is.
"""
import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict

MARK = "fcn8s-bench: timed step"
SIDES = ("fcn8s", "torch")


def run_step(side, batch, size, width, threads):
    """In the child: build ``side``'s train step, run two warm-ups, then mark stdout and run the timed one."""
    import ctypes
    import time
    if side == "torch":
        from fcn8s import torch_twin   # PyTorch first, as a user's script imports it
        torch_twin.torch.set_num_threads(threads)
        step, _, _ = torch_twin.make_step("train", batch, size, width, channels_last=False)
    else:
        import mindspore as ms
        from fcn8s.bench_worker import model_and_step, random_batch
        _, step_fn = model_and_step("fcn8s", "train", width, "graph", 4)
        images, labels = (ms.Tensor(a) for a in random_batch(batch, size))

        def step():
            step_fn(images, labels).asnumpy()
    libc = ctypes.CDLL(None)
    for _ in range(2):
        step()
    libc.fflush(None)   # oneDNN prints through C's stdio: its lines so far go out before the mark
    os.write(1, f"{MARK}\n".encode())
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    libc.fflush(None)
    os.write(1, f"{MARK} took {seconds:.6f} s\n".encode())


def primitive_times(lines):
    """(step seconds, {(kind, implementation, propagation): [calls, ms]}) from a child's stdout after the mark."""
    start = lines.index(MARK)
    times = defaultdict(lambda: [0, 0.0])
    seconds = None
    for line in lines[start + 1:]:
        if line.startswith(f"{MARK} took "):
            seconds = float(line.split()[-2])
            continue
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        kind, implementation, propagation = fields[at + 2:at + 5]
        entry = times[(kind, implementation, propagation)]
        entry[0] += 1
        entry[1] += float(fields[-1])
    return seconds, times


def measure(side, batch, size, width, threads):
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    done = subprocess.run([sys.executable, __file__, "--child", side, "--batch", str(batch), "--size", str(size),
                           "--width", str(width), "--threads", str(threads)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{side}: the step failed:\n{done.stderr[-3000:]}")
    seconds, times = primitive_times(done.stdout.splitlines())
    by_kind = defaultdict(float)
    for (kind, _, _), (_, ms) in times.items():
        by_kind[kind] += ms
    return {"step_s": seconds, "onednn_ms": sum(by_kind.values()),
            "by_kind_ms": dict(sorted(by_kind.items(), key=lambda item: -item[1])),
            "primitives": [{"kind": k, "implementation": i, "propagation": p, "calls": n, "ms": ms}
                           for (k, i, p), (n, ms) in sorted(times.items(), key=lambda item: -item[1][1])]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("-o", "--output", help="JSON results file")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_step(args.child, args.batch, args.size, args.width, args.threads)
        return
    from fcn8s.fileio import atomic_write_text
    from fcn8s.host import host_record, thread_budget
    args.threads = args.threads or thread_budget()[0]   # here, not at import: a child imports PyTorch first
    sides = {side: measure(side, args.batch, args.size, args.width, args.threads) for side in SIDES}
    for side, result in sides.items():
        print(f"{side}: step {result['step_s']:.2f} s, oneDNN {result['onednn_ms']:.0f} ms: "
              + ", ".join(f"{kind} {ms:.0f}" for kind, ms in result["by_kind_ms"].items()))
    if args.output:
        atomic_write_text(args.output, json.dumps({"host": host_record(), "batch": args.batch, "size": args.size,
                                                   "width": args.width, "threads": args.threads, "sides": sides},
                                                  indent=1) + "\n")


if __name__ == "__main__":
    main()
