"""Which convolution kernels each layer group should run on this host, decided by measuring them here.

The oneDNN channels-last kernels were 1.4-2.7x MindSpore's on one 2-core Xeon, yet made the
full-width network 1.3x slower on a 2-core AMD EPYC, while still winning there on the narrow demo
network; on an AVX2-only EPYC oneDNN's channels-last weight gradient was 2-3x slower than its blocked
(nChw8c) one, which the AVX-512 EPYC showed no gain from. No property known in advance predicts that, so
``model.kernels: auto`` measures: for each layer group (the five blocks, conv6, conv7) it times one of
its convolutions (forward, input gradient and weight gradient, as a train step runs them, at its
resolution for a 2x256² input) with MindSpore's kernels (as the ``mindspore`` plan makes it) and with
each of the kernel library's ways to run it (``LIBRARY_CHOICES``), and keeps the fastest.

They are timed in turn, so that drift reaches both, and each keeps its fastest call (noise only
adds time). A near tie (within ``UNSURE``) is timed for longer: on a shared 2-core host three calls
each read conv4 at 1.19x MindSpore's time in one sitting's probe, and timed for longer it read 1.00
in the next (benchmarks/RESULTS.md, AVX2). A close call (the library
slower by less than ``CLOSE``) goes to the library: one pair measured 0.86x and 1.86x minutes apart,
and a verdict that flips with noise changes the numerics of training from one first run to the next;
and the library's convolutions keep no buffer across the step, where each of MindSpore's keeps its
im2col buffer (README, trap 4).

The verdict is cached beside the compiled library, keyed by everything that changes it (CPU model and
flags, cores, MindSpore version, kernel and probe source, width, the kernels' thread count), so the
probe runs once per host, width and thread count. Processes that start together take turns: one measures
(alone on the cores, and once), the others wait and read its verdict, so every worker runs the same kernels.
"""
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from ..architecture import FC_CHANNELS, STRIDE, VGG16_BLOCKS, scaled
from ..fileio import atomic_write_text, taking_turns
from ..host import cpu_flags, cpu_name
from ..log import get_logger
from . import BACKBONE, FC_LAYERS, LIBRARY_CHOICES, MINDSPORE_PLAN, onednn

PROBE_BATCH, PROBE_SIZE = 2, 256   # the bench's and the docs' reference step
# timed calls per implementation: at least MIN_CALLS, more until each has run MIN_SECONDS (UNSURE_SECONDS while
# MindSpore's and the library's fastest are within UNSURE of each other), at most MAX_CALLS
# (0.25, 25 and 2.0 before took 12 s of the demo's first run on a 2-core AVX2 EPYC, most of it on clear
# calls: there the library's time was 0.4-0.6x MindSpore's on every block)
MIN_CALLS, MIN_SECONDS, MAX_CALLS = 3, 0.1, 15
UNSURE, UNSURE_SECONDS = 0.25, 1.0
CLOSE = 0.05


def verdict_path(width):
    """Where the probe's measurements for ``width`` on this host are cached."""
    return onednn.cache_dir() / f"kernel-probe-{_probe_key(width)}.json"


def _probe_key(width):
    import mindspore
    parts = (onednn.SOURCE.read_bytes(), Path(__file__).read_bytes(), mindspore.__version__.encode(),
             cpu_flags().encode(), cpu_name().encode(), str(os.cpu_count()).encode(), f"{width:g}".encode(),
             str(onednn.kernel_threads()[0]).encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _train_step(conv, x):
    """A call that runs forward + input and weight gradients of ``conv`` on ``x``, compiled as a graph
    whatever the context's mode (as training runs it), and waits for them."""
    import mindspore as ms
    from mindspore import nn, ops

    class Step(nn.Cell):
        # a jit method of a Cell, not a jit function: MindSpore warns each time a function made again
        # (one per measured convolution) is compiled, and only logs it at info level for a Cell
        def __init__(self):
            super().__init__()
            self.conv = conv
            self.weights = ms.ParameterTuple(conv.trainable_params())
            self.grad = ops.GradOperation(get_all=True, get_by_list=True)

        @ms.jit
        def construct(self, inputs):
            return self.grad(self.conv, self.weights)(inputs)

    step = Step()

    def call():
        (dx,), (dweight,) = step(x)
        dx.asnumpy(), dweight.asnumpy()
    return call


def fastest_in_turn(calls):
    """The fastest seconds of each of ``calls`` (MindSpore's way first, then the library's), timed in turn (one
    warm-up call each first), for longer while the first and the fastest of the others are a near tie."""
    for call in calls:
        call()
    times = [[] for _ in calls]

    def more():
        if len(times[0]) >= MAX_CALLS:
            return False
        spent, fastest = min(sum(t) for t in times), [min(t, default=0.0) for t in times]
        near_tie = fastest[0] > 0 and abs(min(fastest[1:]) / fastest[0] - 1) < UNSURE
        return len(times[0]) < MIN_CALLS or spent < MIN_SECONDS or (near_tie and spent < UNSURE_SECONDS)

    while more():
        for call, seconds in zip(calls, times):
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)
    return [min(seconds) for seconds in times]


def probe_convolutions(width):
    """(layer, in channels, out channels, kernel size, map size) of the convolution measured for each layer
    group: a c -> c 3x3 convolution per block, conv6 and conv7 as they are, at a 2x256² step's resolution."""
    convs = [(block, scaled(channels, width), scaled(channels, width), 3, PROBE_SIZE >> level)
             for level, (block, (channels, _)) in enumerate(zip(BACKBONE, VGG16_BLOCKS))]
    fc, pool5 = scaled(FC_CHANNELS, width), scaled(VGG16_BLOCKS[-1][0], width)
    return convs + [(FC_LAYERS[0], pool5, fc, 7, PROBE_SIZE // STRIDE), (FC_LAYERS[1], fc, fc, 1, PROBE_SIZE // STRIDE)]


def measure(width):
    """{layer group: {"mindspore": s, each of the library's ways (LIBRARY_CHOICES): s}}: one convolution of
    each group (``probe_convolutions``), timed each way."""
    import mindspore as ms

    from ..models.layers import make_conv
    seconds = {}
    rng = np.random.default_rng(0)
    for layer, in_channels, out_channels, kernel, size in probe_convolutions(width):
        x = ms.Tensor(rng.standard_normal((PROBE_BATCH, in_channels, size, size)).astype(np.float32))
        # weights from this generator, not an initializer: the probe must not move the seeded random
        # state that the network's own initialisation draws from next
        weight = ms.Tensor(rng.standard_normal((out_channels, in_channels, kernel, kernel)).astype(np.float32)
                           * 0.05)
        ways = {"mindspore": MINDSPORE_PLAN[layer], **{impl: impl for impl in LIBRARY_CHOICES[layer]}}
        calls = [_train_step(make_conv(in_channels, out_channels, kernel, impl, weight_init=weight), x)
                 for impl in ways.values()]
        seconds[layer] = dict(zip(ways, fastest_in_turn(calls)))
    return seconds


def verdict_seconds(width):
    """(seconds, how): the probe's times for ``width`` on this host, as ``measure`` returns them, read from
    the cache, or measured now and cached where none is (see the module docstring); ``how`` says which."""
    path = verdict_path(width)
    with taking_turns(path.with_suffix(".lock"), f"waiting for another process measuring the kernels ({path})"):
        try:
            return json.loads(path.read_text())["seconds"], f"cached in {path}"
        except (OSError, ValueError, KeyError):
            get_logger().info(f"measuring which convolution kernels are fastest on this host (once, width {width:g})")
            seconds = measure(width)
            atomic_write_text(path, json.dumps({"width": width, "seconds": seconds}) + "\n")
            return seconds, f"measured now, saved to {path}"


def library_choice(width):
    """(library, note): {layer group: the library's fastest way to run it}, for the groups where that way was
    faster here than MindSpore's kernels, or slower by less than ``CLOSE`` (``verdict_seconds``: measured
    once per host and width); the note gives each group's time ratio and way."""
    seconds, how = verdict_seconds(width)
    library, ratios = {}, []
    for layer, ways in LIBRARY_CHOICES.items():
        fastest = min(ways, key=seconds[layer].get)
        ratio = seconds[layer][fastest] / seconds[layer]["mindspore"]
        ratios.append(f"{layer} {ratio:.2f} {fastest}")
        if ratio < 1 + CLOSE:
            library[layer] = fastest
    return library, f"library / MindSpore time per layer group: {', '.join(ratios)} ({how})"
