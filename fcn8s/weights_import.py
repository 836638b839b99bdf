"""ImageNet VGG-16-BN weights from torchvision (``.pth``) or timm (``model.safetensors``) as our backbone.

``fcn8s import-weights SRC -o OUT.ckpt`` writes the converted tensors as a MindSpore checkpoint;
``train.pretrained`` accepts SRC itself and converts it on the fly. The format is read from the
file: a zip or pickle is a torch state dict, an 8-byte length + JSON header is safetensors,
anything else is taken as a MindSpore checkpoint (the tutorial's ``fcn8s_vgg16_pretrain.ckpt``).

The mapping is exact in inference mode:
- the 13 ``features.N`` convolutions and their BatchNorms become conv1..conv5 in order; our
  convolutions have no bias, so a source bias b goes into the BatchNorm as ``moving_mean - b``
  (BN(Wx + b) with mean m equals BN(Wx) with mean m - b);
- fc6 (torchvision ``classifier.0``, 4096 x 25088; timm ``pre_logits.fc1``, 4096x512x7x7) becomes
  ``conv6.0.weight`` (4096, 512, 7, 7) and fc7 (``classifier.3`` / ``pre_logits.fc2``) becomes
  ``conv7.0.weight`` (4096, 4096, 1, 1), convolutionalised as in the FCN paper; their biases go
  into conv6's and conv7's BatchNorms set to the identity (gamma 1, beta = bias, mean 0,
  variance 1 - eps, so that sqrt(variance + eps) is exactly 1 in float32);
- the 1000-class layer and the ``num_batches_tracked`` counters are dropped; the FCN head keeps
  the model's own initialisation.
"""
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .architecture import FC_CHANNELS, VGG16_BLOCKS
from .checkpoint import read_checkpoint, save_checkpoint
from .data.fetch import hash_file
from .errors import FCNError
from .fileio import refuse_existing
from .log import get_logger

BN_EPS = 1e-5            # torchvision's, timm's and MindSpore's BatchNorm2d default
FC6_KERNEL = 7
VGG_DEPTHS = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}   # convolutions -> torchvision/timm name
# fc6, fc7 and the 1000-class layer under each library's names
CLASSIFIER_NAMES = {
    "torchvision": ("classifier.0", "classifier.3", "classifier.6"),
    "timm": ("pre_logits.fc1", "pre_logits.fc2", "head.fc"),
}
_FEATURE_KEY = re.compile(r"features\.(\d+)\.\w+")


@dataclass
class ImportReport:
    source: Path
    source_format: str
    sha256: str
    mapped: list = field(default_factory=list)    # source tensor names used
    dropped: list = field(default_factory=list)   # source tensor names left out

    def lines(self):
        counters = [name for name in self.dropped if name.endswith("num_batches_tracked")]
        dropped = [name for name in self.dropped if name not in counters]
        dropped += [f"{len(counters)} BatchNorm num_batches_tracked counters"] if counters else []
        return [f"imported {self.source}: {self.source_format}, sha256 {self.sha256}",
                f"mapped {len(self.mapped)} tensors: 13 conv + BatchNorm -> conv1..conv5 (conv biases folded "
                f"into the BatchNorm means), fc6 -> conv6 (7x7), fc7 -> conv7 (1x1), fc biases -> identity "
                f"BatchNorms",
                f"dropped {len(self.dropped)}: {', '.join(dropped) or 'none'}"]


def sniff_format(path):
    """"torch", "safetensors" or "mindspore" from the first bytes of ``path``."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):   # torch.save: zip, or a legacy pickle
        return "torch"
    if head[8:9] == b"{":   # safetensors: a little-endian u64 header length, then the JSON header
        return "safetensors"
    return "mindspore"


def _read_torch(path):
    try:
        import torch
    except ImportError:
        raise FCNError(f"{path}: a PyTorch file; reading it needs torch (pip install torch)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # torch raises RuntimeError, UnpicklingError, EOFError... for a bad file
        raise FCNError(f"{path}: not a readable PyTorch file ({_first_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FCNError(f"{path}: not a PyTorch state dict (a {type(state).__name__} of name -> tensor expected)")
    floats = {name: value.float().numpy() for name, value in state.items() if value.is_floating_point()}
    return floats, [name for name in state if name not in floats]


def _read_safetensors(path):
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
    except ImportError:
        raise FCNError(f"{path}: a safetensors file; reading it needs safetensors (pip install safetensors)") from None
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FCNError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    floats = {name: value.astype(np.float32) for name, value in state.items() if value.dtype.kind == "f"}
    return floats, [name for name in state if name not in floats]


def _first_line(exc):
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _describe_other(state, convs, batch_norms):
    """What a state dict that is not vgg16_bn holds, in words, for the error."""
    if not convs:
        return f"{len(state)} tensors but no VGG features.N convolutions (e.g. {', '.join(list(state)[:3])})"
    depth = VGG_DEPTHS.get(len(convs), "an unknown VGG")
    if not batch_norms:
        return f"a VGG with {len(convs)} convolutions without BatchNorm ({depth})"
    return f"a VGG with {len(convs)} convolutions and BatchNorm ({depth}_bn)"


def backbone_layers():
    """(weight name, BatchNorm prefix, weight shape) of our conv1..conv7, in network order."""
    layers, in_channels = [], 3
    for block, (out_channels, num_convs) in enumerate(VGG16_BLOCKS, start=1):
        for i in range(num_convs):   # each conv is [Conv, BN, ReLU] in the block's SequentialCell
            layers.append((f"conv{block}.{3 * i}.weight", f"conv{block}.{3 * i + 1}.",
                           (out_channels, in_channels, 3, 3)))
            in_channels = out_channels
    layers.append(("conv6.0.weight", "conv6.1.", (FC_CHANNELS, in_channels, FC6_KERNEL, FC6_KERNEL)))
    layers.append(("conv7.0.weight", "conv7.1.", (FC_CHANNELS, FC_CHANNELS, 1, 1)))
    return layers


def _vgg16_bn_sources(state):
    """The 15 source (layer, BatchNorm or None) prefixes in network order; FCNError saying what else was found."""
    indices = {int(m.group(1)) for m in map(_FEATURE_KEY.fullmatch, state) if m}
    convs = [i for i in sorted(indices) if state.get(f"features.{i}.weight", np.empty(0)).ndim == 4]
    batch_norms = [i for i in sorted(indices) if f"features.{i}.running_mean" in state]
    if len(convs) != 13 or batch_norms != [i + 1 for i in convs]:
        found = _describe_other(state, convs, batch_norms)
    elif not any(f"{names[0]}.weight" in state for names in CLASSIFIER_NAMES.values()):
        found = "vgg16_bn convolutions but no fc6 (classifier.0 of torchvision, pre_logits.fc1 of timm)"
    else:
        library = next(lib for lib, names in CLASSIFIER_NAMES.items() if f"{names[0]}.weight" in state)
        fc6, fc7 = CLASSIFIER_NAMES[library][:2]
        return library, [(f"features.{i}", f"features.{i + 1}") for i in convs] + [(fc6, None), (fc7, None)]
    raise FCNError(f"found {found}; fcn8s imports a vgg16_bn (13 convolutions, each followed by BatchNorm, "
                   f"and fc6/fc7) of torchvision or timm")


def convert_vgg16_bn(state):
    """(converted {our name: float32 array}, library, source names used) for a vgg16_bn state dict.

    FCNError naming what was found when ``state`` is another network or a misshapen vgg16_bn.
    """
    library, sources = _vgg16_bn_sources(state)
    out, used = {}, []
    for (weight_name, bn_prefix, shape), (src, bn) in zip(backbone_layers(), sources):
        weight, bias = state[f"{src}.weight"], state.get(f"{src}.bias")
        if weight.ndim == 2 and weight.size == np.prod(shape):   # torchvision's Linear fc6/fc7: (out, c*k*k)
            weight = weight.reshape(shape)
        if weight.shape != shape or bias is None or bias.shape != shape[:1]:
            got = "no bias" if bias is None else f"{weight.shape} + bias {bias.shape}"
            raise FCNError(f"{src}: {got}, vgg16_bn has {shape} + bias {shape[:1]}")
        out[weight_name] = weight
        used += [f"{src}.weight", f"{src}.bias"]
        if bn:
            names = [f"{bn}.{stat}" for stat in ("weight", "bias", "running_mean", "running_var")]
            gamma, beta, mean, var = (state[name] for name in names)
            mean = mean - bias
            used += names
        else:   # fc6/fc7 have no BatchNorm: ours adds the bias and nothing else
            gamma, beta, mean = np.ones_like(bias), bias, np.zeros_like(bias)
            var = np.full_like(bias, np.float32(1) - np.float32(BN_EPS))
        for stat, value in zip(("gamma", "beta", "moving_mean", "moving_variance"), (gamma, beta, mean, var)):
            if value.shape != shape[:1]:
                raise FCNError(f"{bn}: BatchNorm {stat} of shape {value.shape}, vgg16_bn has {shape[:1]}")
            out[bn_prefix + stat] = value
    return {n: np.ascontiguousarray(v, dtype=np.float32) for n, v in out.items()}, library, used


def import_weights(path):
    """(converted {our name: float32 array}, ImportReport) for a torchvision ``.pth`` or timm safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"{path}: file not found")
    kind = sniff_format(path)
    if kind == "mindspore":
        raise FCNError(f"{path}: not a PyTorch (.pth) or safetensors file; a MindSpore checkpoint is used "
                       f"directly by --pretrained")
    state, non_float = _read_torch(path) if kind == "torch" else _read_safetensors(path)
    try:
        converted, library, used = convert_vgg16_bn(state)
    except FCNError as exc:
        raise FCNError(f"{path}: {exc}") from None
    source_format = f"{library} vgg16_bn {'state dict (.pth)' if kind == 'torch' else 'safetensors'}"
    dropped = [name for name in state if name not in used] + non_float
    sha256 = hash_file(hashlib.sha256(), path).hexdigest()
    return converted, ImportReport(path, source_format, sha256, used, dropped)


def _as_parameters(arrays):
    import mindspore as ms
    return {name: ms.Parameter(ms.Tensor(value), name=name) for name, value in arrays.items()}


def read_pretrained(path, log):
    """The ``train.pretrained`` file as {name: Parameter}: a MindSpore checkpoint as it is, a torchvision
    or timm vgg16_bn converted here, with the import report in ``log``."""
    if not Path(path).is_file() or sniff_format(path) == "mindspore":
        return read_checkpoint(path)   # which names a missing or unreadable file
    converted, report = import_weights(path)
    for line in report.lines():
        log.info(line)
    return _as_parameters(converted)


def import_weights_file(src, output, force=False):
    """``fcn8s import-weights``: convert ``src`` and write ``output`` (a MindSpore checkpoint) atomically."""
    refuse_existing(output, force)
    converted, report = import_weights(src)
    save_checkpoint(_as_parameters(converted).values(), output)
    log = get_logger()
    for line in report.lines():
        log.info(line)
    log.info(f"wrote {len(converted)} tensors to {output} (use it with --pretrained; the head keeps its own init)")
    return 0
