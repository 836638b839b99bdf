"""Which kernels run each convolution and the pooling: the one setting ``model.kernels``, and the plan it makes.

The setting (``SETTINGS``):

- ``native``: ``nn.Conv2d`` everywhere, MindSpore's own kernels and gradients (the tutorial's layers;
  on CPU conv6's weight gradient alone takes 45 s at 2x256²).
- ``mindspore``: MindSpore's kernels with cheaper gradients (``models/layers.py``): conv1-conv3 take
  the input gradient as a flipped-kernel convolution, conv6 the weight gradient as one matmul.
- ``onednn``: the 3x3 convolutions of conv1-conv5 in oneDNN channels-last kernels (``onednn.py``,
  CPU only) and the max pooling in the same library's own kernel, the rest as ``mindspore``.
- ``auto``: on CPU where the oneDNN kernels load, per block whichever measured faster on this host
  (``probe.py``); elsewhere ``mindspore``.

A plan maps each convolution layer conv1..conv7 to how ``models.layers.make_conv`` makes it:
``native``, ``flipped`` (input gradient as a convolution), ``matmul`` (weight gradient as a matmul)
or ``onednn``; and ``pool`` to how ``models.layers.MaxPool`` makes the max pooling: ``native`` or
``custom`` (a forward that keeps each window's winner and a one-pass gradient, in the library
whose convolutions are oneDNN's: it is used wherever that library loads). ``choose`` is the one
place a setting becomes a plan. Importing this package loads neither MindSpore nor the kernels.
"""
from ..architecture import BACKBONE_LAYERS as BACKBONE, FC_LAYERS

SETTINGS = ("auto", "mindspore", "onednn", "native")
LAYERS = BACKBONE + FC_LAYERS + ("pool",)   # BACKBONE: the 3x3 blocks the oneDNN kernels and the probe cover

# MindSpore's kernels with the gradients that measured fastest for each layer (see models/layers.py):
# the flipped-kernel input gradient wins on the 64-256-channel blocks, the native one on the 512-channel
# blocks; conv6's native weight gradient is pathological; conv7 is a 1x1 convolution.
MINDSPORE_PLAN = {"conv1": "flipped", "conv2": "flipped", "conv3": "flipped", "conv4": "native",
                  "conv5": "native", "conv6": "matmul", "conv7": "native", "pool": "native"}


def plan(setting, onednn_blocks=BACKBONE):
    """The plan of a setting other than ``auto``; for ``onednn``, ``onednn_blocks`` are the blocks that take
    the oneDNN kernels (``auto`` passes the ones that won the probe)."""
    if setting == "native":
        return dict.fromkeys(LAYERS, "native")
    if setting == "mindspore":
        return dict(MINDSPORE_PLAN)
    if setting == "onednn":
        return {**{layer: "onednn" if layer in onednn_blocks else impl for layer, impl in MINDSPORE_PLAN.items()},
                "pool": "custom"}
    raise ValueError(f"kernels must be one of {SETTINGS[1:]}, got {setting!r}")


def describe(layer_plan):
    """One line: which kernels each backbone block and the pooling run, for the log."""
    pool = "fcn8s" if layer_plan["pool"] == "custom" else "MindSpore"
    return ", ".join([f"{layer} {'oneDNN' if layer_plan[layer] == 'onednn' else 'MindSpore'}" for layer in BACKBONE]
                     + [f"max pool {pool}"])


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
    kernel = onednn.kernel_name("forward", 1, 64, 64, 64, 64, 3)
    if setting == "onednn":
        return plan("onednn"), f"convolutions: oneDNN channels-last kernels ({kernel})"
    from .probe import faster_onednn_blocks
    winners, measured = faster_onednn_blocks(width)
    chosen = plan("onednn", winners)
    return chosen, f"convolutions: {describe(chosen)} (oneDNN kernels {kernel}; {measured})"
