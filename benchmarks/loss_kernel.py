"""Milliseconds of the training loss's value and gradient together, made as the kernel plan's ``loss`` names
it: MindSpore's ops (native: the logits transposed to a row per pixel, SoftmaxCrossEntropyWithLogits) against
the kernel library's cross_entropy_* (custom: NCHW in place), on FCN-8s's logits (21 classes, 10% of the
pixels void) at the demo's batch and the two benchmark sizes. Each is a graph-mode cell, timed as the median
of 10 calls after a warm-up:
    python benchmarks/loss_kernel.py [-o benchmarks/results/<cpu kind>/loss_kernel.json]
"""
import json

import numpy as np

import mindspore as ms
from mindspore import nn

from fcn8s.fileio import atomic_write_text
from fcn8s.host import host_record
from fcn8s.loss import PixelCrossEntropy

from conv_kernels import median_seconds, start   # this folder's, beside this script

SHAPES = [(8, 21, 128), (2, 21, 256), (1, 21, 512)]   # n, classes, size
IMPLS = ("native", "custom")


class _ValueAndGrad(nn.Cell):
    def __init__(self, impl):
        super().__init__()
        self.value_and_grad = ms.value_and_grad(PixelCrossEntropy(255, impl))

    def construct(self, logits, labels):
        return self.value_and_grad(logits, labels)


def measure(n, classes, size):
    rng = np.random.default_rng(0)
    logits = ms.Tensor(3 * rng.standard_normal((n, classes, size, size)).astype(np.float32))
    labels = rng.integers(0, classes, (n, size, size)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.1] = 255
    labels = ms.Tensor(labels)
    return {"shape": [n, classes, size],
            **{f"{impl}_ms": 1000 * median_seconds(_ValueAndGrad(impl), logits, labels, calls=10) for impl in IMPLS}}


def main():
    args = start(__doc__)
    rows = [measure(*shape) for shape in SHAPES]
    for r in rows:
        n, classes, size = r["shape"]
        print(f"{n}x{classes}x{size}²: " + ", ".join(f"{impl} {r[impl + '_ms']:.1f} ms" for impl in IMPLS))
    if args.output:
        atomic_write_text(args.output, json.dumps({"host": host_record(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
