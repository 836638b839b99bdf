"""Which kernels run each convolution, the BatchNorms, the pooling, the upsampling, the loss and the momentum
update: the one setting ``model.kernels``, and the plan it makes.

The setting (``SETTINGS``):

- ``native``: ``nn.Conv2d`` everywhere, MindSpore's own kernels and gradients (the tutorial's layers;
  on CPU conv6's weight gradient alone takes 45 s at 2x256²).
- ``mindspore``: MindSpore's kernels with cheaper gradients (``models/layers.py``): conv1-conv3 take
  the input gradient as a flipped-kernel convolution, conv6 the weight gradient as one matmul.
- ``onednn``: the kernel library of ``onednn.py`` (CPU only): the 3x3 convolutions of conv1-conv5 in
  oneDNN's channels-last kernels, conv6 and conv7 as matrix products on oneDNN's sgemm, and training's
  BatchNorm + ReLU, the max pooling, the x8 (x16, x32) upsampling, the training loss and the momentum
  update in the library's own kernels (``LIBRARY_OPS``).
- ``auto``: on CPU where the library loads, per layer group (conv1..conv7) whichever measured fastest on
  this host (``probe.py``) of MindSpore's kernels and the library's ways to run it (``LIBRARY_CHOICES``:
  for conv1-conv5 oneDNN with the activations channels-last, or in the layout oneDNN prefers), and
  ``LIBRARY_OPS`` in the library; elsewhere ``mindspore``.

A plan maps each convolution layer conv1..conv7 to how ``models.layers.make_conv`` makes it:
``native``, ``flipped`` (input gradient as a convolution), ``matmul`` (weight gradient as a matmul),
``onednn`` or ``onednn-any`` (conv1-conv5: channels-last, or oneDNN's choice of layout) or ``gemm``
(conv6, conv7: the library's sgemm); ``batchnorm`` to how ``models.vgg.ConvBNReLUBlock`` runs each
BatchNorm and its ReLU in training: ``native`` (nn.BatchNorm2d, nn.ReLU) or ``custom`` (fused in the library,
wherever it loads on a CPU with AVX2 and FMA); ``pool`` to how ``models.layers.MaxPool`` makes the max pooling:
``native`` or ``custom`` (a forward that keeps each window's winner and a one-pass gradient, in the
library: it is used wherever that library loads); ``upsample`` to how ``models.layers.make_upsample`` makes
the head's transposed convolutions: ``native`` or ``custom`` (the library's for factors that are a multiple of
8, wherever it loads on a CPU with AVX2 and FMA); ``loss`` to how ``loss.PixelCrossEntropy`` computes the
training loss: ``native`` (MindSpore's ops) or ``custom`` (the library's, also wherever it loads); and
``optimizer`` to how ``optim.Momentum`` updates each parameter: ``native`` (the decay and ApplyMomentum) or
``custom`` (one pass in the library, wherever it loads).
``choose`` is the one place a setting becomes a plan.
Importing this package loads neither MindSpore nor the kernels.
"""
from ..architecture import BACKBONE_LAYERS as BACKBONE, FC_LAYERS

SETTINGS = ("auto", "mindspore", "onednn", "native")
LAYERS = BACKBONE + FC_LAYERS + ("batchnorm", "pool", "upsample", "loss", "optimizer")
# the kernel library's oneDNN convolutions, by plan name, and the activations' layout inside them: in this
# order, Layout in onednn_conv.cc (onednn.py maps a name to it)
ONEDNN_LAYOUTS = {"onednn": "NHWC", "onednn-any": "any layout"}
# the ways the kernel library can make each convolution layer group; the probe measures each against
# MINDSPORE_PLAN's, and the first is what model.kernels onednn takes (LIBRARY_PLAN)
LIBRARY_CHOICES = {**dict.fromkeys(BACKBONE, tuple(ONEDNN_LAYOUTS)), **dict.fromkeys(FC_LAYERS, ("gemm",))}
LIBRARY_PLAN = {layer: choices[0] for layer, choices in LIBRARY_CHOICES.items()}
# the entries that take the library's own kernels ("custom") wherever it loads, unmeasured by the probe
LIBRARY_OPS = ("batchnorm", "pool", "upsample", "loss", "optimizer")

# MindSpore's kernels with the gradients that measured fastest for each layer (see models/layers.py):
# the flipped-kernel input gradient wins on the 64-256-channel blocks, the native one on the 512-channel
# blocks; conv6's native weight gradient is pathological; conv7 is a 1x1 convolution.
MINDSPORE_PLAN = {"conv1": "flipped", "conv2": "flipped", "conv3": "flipped", "conv4": "native",
                  "conv5": "native", "conv6": "matmul", "conv7": "native", "batchnorm": "native", "pool": "native",
                  "upsample": "native", "loss": "native", "optimizer": "native"}


def plan(setting, library=LIBRARY_PLAN):
    """The plan of a setting other than ``auto``; for ``onednn``, ``library`` maps the layer groups that take
    the kernel library's convolutions to how it makes them (``auto`` passes the probe's winners), the others
    keep MindSpore's."""
    if setting == "native":
        return dict.fromkeys(LAYERS, "native")
    if setting == "mindspore":
        return dict(MINDSPORE_PLAN)
    if setting == "onednn":
        return {**MINDSPORE_PLAN, **library, **_library_ops()}
    raise ValueError(f"kernels must be one of {SETTINGS[1:]}, got {setting!r}")


# the LIBRARY_OPS the library runs only where the CPU has AVX2 with FMA: in their baseline x86-64 (SSE2) build
# the BatchNorm made the demo's train step no faster than MindSpore's kernels, the upsampling much slower
# (benchmarks/plan_step_ab.py --baseline-build); the pooling has no vector loops
NEED_AVX2 = ("batchnorm", "upsample")


def _library_ops():
    """LIBRARY_OPS made "custom", those of NEED_AVX2 only where the CPU has AVX2 with FMA (as the library,
    which builds its loops for both, tells)."""
    from . import onednn
    ways = dict.fromkeys(LIBRARY_OPS, "custom")
    if not onednn.cpu_has_avx2_fma():
        ways.update(dict.fromkeys(NEED_AVX2, "native"))
    return ways


def describe(layer_plan):
    """One line: which kernels each convolution layer group, the BatchNorms, the pooling, the upsampling, the
    loss and the momentum update run, for the log and the results tables (a plan recorded before an entry
    existed ran MindSpore's for it)."""
    names = {**{way: f"oneDNN {layout}" for way, layout in ONEDNN_LAYOUTS.items()}, "gemm": "oneDNN sgemm",
             "custom": "fcn8s"}
    labels = {**{layer: layer for layer in BACKBONE + FC_LAYERS}, "batchnorm": "BatchNorm+ReLU",
              "pool": "max pool", "upsample": "upsampling", "loss": "loss", "optimizer": "momentum update"}
    return ", ".join(f"{label} {names.get(layer_plan.get(layer), 'MindSpore')}" for layer, label in labels.items())


def choose(setting, width):
    """(plan, note): what ``model.kernels`` means on this device for a network of ``width``; the note,
    for the log, says what was chosen and why. An explicit ``onednn`` that cannot load is an FCNError."""
    import mindspore as ms

    from ..errors import FCNError
    from . import onednn
    if setting not in ("auto", "onednn"):
        return plan(setting), f"convolutions: MindSpore's ({setting})"
    target = ms.get_context("device_target")
    usable, why = (False, f"CPU only, the device is {target}") if target != "CPU" else onednn.available()
    if not usable:
        if setting == "onednn":
            raise FCNError(f"model.kernels onednn: {why}")
        return plan("mindspore"), f"convolutions: MindSpore's (oneDNN custom kernels not used: {why})"
    if setting == "onednn":
        return plan("onednn"), f"convolutions: oneDNN channels-last kernels ({_kernel_names(['onednn'])})"
    from .probe import library_choice
    winners, measured = library_choice(width)
    chosen = plan("onednn", winners)
    ways = [way for way in ONEDNN_LAYOUTS if way in winners.values()]
    return chosen, f"convolutions: {describe(chosen)} (oneDNN kernels {_kernel_names(ways)}; {measured})"


def _kernel_names(ways):
    """The oneDNN implementations of a 64-channel convolution's forward and gradients, per way (ONEDNN_LAYOUTS),
    for the log."""
    from . import onednn
    return "; ".join(f"{ONEDNN_LAYOUTS[way]}: " + ", ".join(dict.fromkeys(
        onednn.kernel_name(op, 1, 64, 64, 64, 64, 3, way) for op in onednn.OPS)) for way in ways) or "none"
