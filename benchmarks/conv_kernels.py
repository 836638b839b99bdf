"""GFLOP/s of one convolution's forward, input gradient and weight gradient: MindSpore's kernels
(capped at AVX2 as fcn8s runs them) against fcn8s's oneDNN custom ops, with the activations channels-last
inside them (onednn) and in the layout oneDNN prefers (onednn-any).

Each op runs alone as a graph-mode cell on the layer shapes that dominate an FCN-8s step at 2x256²,
and timed as the median of 5 calls after a warm-up; the oneDNN times include their reorders from and
to NCHW. Each shape is a 3x3, stride-1, 'same' convolution:
    python benchmarks/conv_kernels.py [-o benchmarks/results/<cpu kind>/conv_kernels.json]
"""
import argparse
import json
import statistics
import time

import numpy as np

import mindspore as ms
from mindspore import nn, ops
from mindspore.ops.operations import _grad_ops

from fcn8s.fileio import atomic_write_text
from fcn8s.host import host_record
from fcn8s.kernels import ONEDNN_LAYOUTS, onednn
from fcn8s.models.layers import OneDNNConv

SHAPES = [(2, 64, 64, 256), (2, 128, 128, 128), (2, 256, 256, 64), (2, 512, 512, 32)]   # n, c, o, size


class _Op(nn.Cell):
    """One op as a graph: PyNative's dispatch threads would compete with the kernels' threads."""

    def __init__(self, op, *constants):
        super().__init__()
        self.op = op
        self.constants = constants

    def construct(self, a, b):
        return self.op(a, b, *self.constants)


class _SwappedOp(_Op):
    def construct(self, a, b):
        return self.op(b, a)


def median_seconds(fn, *args, calls=5):
    """Median seconds of ``calls`` calls of ``fn(*args)`` after one untimed, each waited for (its outputs
    copied out); also used by loss_kernel.py."""
    def call():
        out = fn(*args)
        for tensor in out if isinstance(out, tuple) else (out,):
            tensor.asnumpy()
    call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(n, c, o, size):
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((n, c, size, size)).astype(np.float32))
    w = ms.Tensor(rng.standard_normal((o, c, 3, 3)).astype(np.float32) * 0.05)
    dout = ms.Tensor(rng.standard_normal((n, o, size, size)).astype(np.float32))
    conv = ops.Conv2D(o, 3, pad_mode="pad", pad=1)
    input_grad = ops.Conv2DBackpropInput(c, 3, pad_mode="pad", pad=1)
    weight_grad = _grad_ops.Conv2DBackpropFilter(o, 3, pad_mode="pad", pad=1, pad_list=(1, 1, 1, 1))
    # each called as (x, w), (dout, w), (dout, x) below, so the library's weight_grad gets them swapped
    kernels = {"mindspore": (_Op(conv), _Op(input_grad, (n, c, size, size)), _Op(weight_grad, (o, c, 3, 3)))}
    for name in ONEDNN_LAYOUTS:
        ours = OneDNNConv(3, name)
        kernels[name] = (_Op(ours.forward), _Op(ours.input_grad), _SwappedOp(ours.weight_grad))
    gflop = 2 * n * o * c * 9 * size * size / 1e9
    row = {"shape": [n, c, o, size], "gflop": gflop,
           **{f"{name}_kernels": [onednn.kernel_name(op, n, c, o, size, size, 3, name) for op in onednn.TRAIN_OPS]
              for name in ONEDNN_LAYOUTS}}
    for name, (forward, dx, dw) in kernels.items():
        seconds = [median_seconds(forward, x, w), median_seconds(dx, dout, w), median_seconds(dw, dout, x)]
        row[name] = {op: {"s": s, "gflops": gflop / s} for op, s in zip(onednn.TRAIN_OPS, seconds)}
    return row


def start(doc):
    """The -o argument of a kernel benchmark whose docstring is ``doc``, MindSpore set up as fcn8s runs it on
    CPU (its oneDNN capped before the first kernel), in graph mode; also used by loss_kernel.py."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("-o", "--output", help="JSON results file")
    args = parser.parse_args()
    onednn.cap_mindspore_isa()
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    return args


def main():
    args = start(__doc__)
    rows = [measure(*shape) for shape in SHAPES]
    print(f"{'n, c->o, size':<18}{'kernels':<11}" + "".join(f"{op + ' GFLOP/s':>22}" for op in onednn.TRAIN_OPS))
    for r in rows:
        n, c, o, size = r["shape"]
        for name in ("mindspore", *ONEDNN_LAYOUTS):
            print(f"{f'{n}, {c}->{o}, {size}':<18}{name:<11}"
                  + "".join(f"{r[name][op]['gflops']:>22.0f}" for op in onednn.TRAIN_OPS))
    for name in ONEDNN_LAYOUTS:
        print(f"{name} kernels: " + "; ".join(f"{r['shape']}: {', '.join(r[name + '_kernels'])}" for r in rows))
    if args.output:
        atomic_write_text(args.output, json.dumps({"host": host_record(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
