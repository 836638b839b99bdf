"""Milliseconds of FCN-8s's x8 upsampling (upscore8: a 21 -> 21 transposed convolution, kernel 16, stride 8),
forward and both gradients, made as the kernel plan's ``upsample`` names it: nn.Conv2dTranspose (native:
MindSpore's convolution kernels) against the kernel library's upsample_* (custom: TransposedConv), at the demo's
batch and the two benchmark sizes. Each is a graph-mode cell, timed as the median of 10 calls after a warm-up:
    python benchmarks/upsample_kernel.py [-o benchmarks/results/<cpu kind>/upsample_kernel.json]
"""
import json

import numpy as np

import mindspore as ms
from mindspore import nn

from fcn8s.fileio import atomic_write_text
from fcn8s.host import host_record
from fcn8s.models.layers import make_upsample

from conv_kernels import median_seconds, start   # this folder's, beside this script

FACTOR, CLASSES = 8, 21
SHAPES = [(8, 128), (2, 256), (1, 512)]   # n, output size
IMPLS = ("native", "custom")


class _Gradients(nn.Cell):
    """Both gradients of sum(upsample(x) * dout): the input's and the weight's."""

    def __init__(self, up):
        super().__init__()
        self.up = up
        self.grad = ms.grad(self.weighted_sum, grad_position=0, weights=up.trainable_params())

    def weighted_sum(self, x, dout):
        return (self.up(x) * dout).sum()

    def construct(self, x, dout):
        dx, (dweight,) = self.grad(x, dout)
        return dx, dweight


def measure(n, size):
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((n, CLASSES, size // FACTOR, size // FACTOR)).astype(np.float32))
    dout = ms.Tensor(rng.standard_normal((n, CLASSES, size, size)).astype(np.float32))
    flop = 2 * n * size * size * CLASSES * CLASSES * 4   # each output pixel: C x 2 x 2 products per channel
    row = {"shape": [n, CLASSES, size], "factor": FACTOR, "gflop_per_op": flop / 1e9}
    for impl in IMPLS:
        up = make_upsample(CLASSES, FACTOR, impl)
        forward = 1000 * median_seconds(up, x, calls=10)
        gradients = 1000 * median_seconds(_Gradients(up), x, dout, calls=10)
        row[impl] = {"forward_ms": forward, "gradients_ms": gradients}
    return row


def main():
    args = start(__doc__)
    rows = [measure(*shape) for shape in SHAPES]
    for r in rows:
        n, classes, size = r["shape"]
        print(f"{n}x{classes}x{size // FACTOR}² -> {size}²: " + ", ".join(
            f"{impl} forward {r[impl]['forward_ms']:.1f} ms, gradients {r[impl]['gradients_ms']:.1f} ms"
            for impl in IMPLS))
    if args.output:
        atomic_write_text(args.output, json.dumps({"host": host_record(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
