"""Checkpoint I/O: model-only and backbone-only loads with a name/shape report, atomic saves, training state.

A training checkpoint holds the model parameters (tutorial names: ``conv1.0.weight`` ...), the
optimizer state (``moments.*``, ``learning_rate``, ``global_step``, ``momentum``) and a few
``train_state.*`` scalars (epoch, step, best mIoU). Loading a model ignores the latter two, so the
tutorial's ``FCN8s.ckpt``, our ``best.ckpt`` and a bare weights file all load the same way.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .architecture import BACKBONE_LAYERS, FC_LAYERS, HEAD_LAYER_NAMES
from .errors import FCNError
from .fileio import atomic_path

OPTIMIZER_KEYS = ("learning_rate", "global_step", "momentum", "scale_sense", "current_iterator_step",
                  "last_overflow_iterator_step")
OPTIMIZER_PREFIXES = ("moments.", "accum.", "stat.")
TRAIN_STATE_PREFIX = "train_state."
BACKBONE_PREFIXES = tuple(f"{layer}." for layer in BACKBONE_LAYERS)
HEAD_PREFIXES = tuple(f"{layer}." for layer in HEAD_LAYER_NAMES)
# fc6/fc7 as convolutions: part of a backbone load when the file has them (an ImageNet import does)
FC_PREFIXES = tuple(f"{layer}." for layer in FC_LAYERS)


def _is_training_key(name):
    return (name in OPTIMIZER_KEYS or name.startswith(OPTIMIZER_PREFIXES)
            or name.startswith(TRAIN_STATE_PREFIX))


@dataclass
class LoadReport:
    loaded: list = field(default_factory=list)
    skipped: list = field(default_factory=list)      # present in the file, deliberately not loaded
    reinitialised: list = field(default_factory=list)

    def summary(self, path):
        parts = [f"loaded {len(self.loaded)} tensors from {path}"]
        if self.reinitialised:
            parts.append(f"re-initialised {len(self.reinitialised)} head tensors ({', '.join(self.reinitialised)})")
        if self.skipped:
            parts.append(f"ignored {len(self.skipped)} entries not used by the model")
        return "; ".join(parts)


def read_checkpoint(path):
    """The checkpoint at ``path`` as {name: Parameter or str}; FCNError if missing, unreadable or corrupt.

    Files written by save_checkpoint carry a CRC, checked here: a flipped byte is refused, not
    loaded. Files without one (the published checkpoints) load as before.
    """
    import mindspore as ms
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"{path}: checkpoint not found")
    try:
        return ms.load_checkpoint(str(path), crc_check=True)
    except (ValueError, RuntimeError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if exc.args else type(exc).__name__
        if "Failed to read the checkpoint file" in reason:   # MindSpore's words for a bad CRC or a cut file
            reason = "truncated or corrupt"
        raise FCNError(f"{path}: not a readable MindSpore checkpoint ({reason})") from None


def _shape(value):
    return tuple(value.shape)


def _listing(items, limit=6):
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def select_weights(model_shapes, ckpt, backbone_only=False, reinit_head=False):
    """Decide which checkpoint tensors go into which model parameters.

    ``model_shapes`` maps parameter names to shapes. Returns a LoadReport (``loaded`` are the names
    to load); raises FCNError naming every missing, unexpected and mis-shaped key when they do not fit.
    ``backbone_only``: conv1..conv5, and conv6/conv7 too when ``ckpt`` has them.
    """
    report = LoadReport()
    backbone = BACKBONE_PREFIXES + (FC_PREFIXES if any(n.startswith(FC_PREFIXES) for n in ckpt) else ())
    wanted = {n: s for n, s in model_shapes.items() if not backbone_only or n.startswith(backbone)}
    missing, unexpected, misshaped = [], [], []
    for name, value in ckpt.items():
        if _is_training_key(name) or (backbone_only and not name.startswith(backbone)):
            report.skipped.append(name)
        elif name not in model_shapes:
            (report.skipped if reinit_head and name.startswith(HEAD_PREFIXES) else unexpected).append(name)
        elif isinstance(value, str) or _shape(value) != model_shapes[name]:
            if reinit_head and name.startswith(HEAD_PREFIXES):
                report.reinitialised.append(name)
            else:
                got = "a string" if isinstance(value, str) else _shape(value)
                misshaped.append(f"{name}: checkpoint {got}, model {model_shapes[name]}")
        else:
            report.loaded.append(name)
    for name in wanted:
        if name not in ckpt:
            (report.reinitialised if reinit_head and name.startswith(HEAD_PREFIXES) else missing).append(name)
    problems = []
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped ({_listing(misshaped, 3)})")
    if missing:
        problems.append(f"{len(missing)} missing ({_listing(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
    if problems:
        hint = ""
        if any(m.startswith(HEAD_PREFIXES) for m in misshaped):
            hint = "; for another class count use --set train.reinit_head=true (or --num-classes)"
        raise FCNError("does not fit the model: " + "; ".join(problems) + hint)
    return report


def load_weights(net, path, backbone_only=False, reinit_head=False, ckpt=None):
    """Load model weights from ``path`` into ``net`` (optimizer state ignored); returns a LoadReport.

    ``ckpt``: the file's contents when the caller has already read them.
    """
    import mindspore as ms
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    params = {p.name: p for p in net.get_parameters()}
    try:
        report = select_weights({n: tuple(p.shape) for n, p in params.items()}, ckpt, backbone_only, reinit_head)
    except FCNError as exc:
        raise FCNError(f"{path}: {exc}") from None
    values = {name: ckpt[name].asnumpy() for name in report.loaded}
    broken = [name for name, value in values.items() if not np.isfinite(value).all()]
    if broken:   # refused before any weight is set: a NaN weight makes every later loss NaN
        raise FCNError(f"{path}: NaN or infinite values in {len(broken)} tensor(s) ({_listing(broken)})")
    for name, value in values.items():
        params[name].set_data(ms.Tensor(value, dtype=params[name].dtype))
    return report


def load_optimizer_state(optimizer, path, ckpt):
    """Copy the momentum buffers and the step counter of a training checkpoint into ``optimizer``.

    Set one by one by name: MindSpore's load_param_into_net, given the optimizer, matches the
    network's own weights against ``moments.*`` with the prefix dropped and overwrites them.
    """
    import mindspore as ms
    state = [p for p in optimizer.get_parameters() if p.name.startswith("moments.") or p.name == "global_step"]
    missing = [p.name for p in state if p.name not in ckpt or tuple(ckpt[p.name].shape) != tuple(p.shape)]
    if missing:
        raise FCNError(f"{path}: optimizer state missing or mis-shaped ({_listing(missing)}); cannot resume exactly")
    for p in state:
        p.set_data(ms.Tensor(ckpt[p.name].asnumpy(), dtype=p.dtype))


def training_state(ckpt):
    """The ``train_state.*`` scalars of a checkpoint dict as plain Python numbers."""
    state = {}
    for name, value in ckpt.items():
        if name.startswith(TRAIN_STATE_PREFIX):
            state[name[len(TRAIN_STATE_PREFIX):]] = value if isinstance(value, str) else value.asnumpy().item()
    return state


class HostCopies:
    """Copies of parameters in host memory, for a checkpoint written while training goes on: the optimizer
    updates the weights in place (``asnumpy`` shares their memory).

    The buffers are kept from one copy to the next. Fresh ones, wrapped as Parameters, cost about 0.3 s
    of the main thread at each of the demo's epoch ends (68 MB: page faults, and a second copy into each
    Parameter); warm ones about 0.01 s. So a copy lasts until the next one: take that only once the
    writer of this one has finished.
    """

    def __init__(self):
        self._buffers = {}

    def of(self, params):
        """{name: Tensor}: the values of ``params`` (Parameters) now, in this object's buffers."""
        import mindspore as ms
        copies = {}
        for p in params:
            value = p.asnumpy()
            buffer = self._buffers.get(p.name)
            if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
                buffer = self._buffers[p.name] = np.empty_like(value)
            np.copyto(buffer, value)
            copies[p.name] = ms.Tensor.from_numpy(buffer)
        return copies


def save_checkpoint(params, path, state=None):
    """Write ``params`` (Parameters, or {name: Tensor}) and ``state`` (scalars) to ``path`` atomically, with a CRC.

    A failed write (disk full, file size limit) is an FCNError naming ``path`` and the OS's reason;
    the file that was there stays as it was, and no temporary file is left.
    """
    import mindspore as ms
    named = params.items() if isinstance(params, dict) else ((p.name, p) for p in params)
    entries = [{"name": name, "data": data} for name, data in named]
    append = {f"{TRAIN_STATE_PREFIX}{k}": v for k, v in (state or {}).items()}
    try:
        with atomic_path(path) as tmp:
            try:
                ms.save_checkpoint(entries, str(tmp), append_dict=append or None, crc_check=True)
            finally:   # MindSpore writes through its own temporary file, <name>.tmp, and leaves it on failure
                tmp.with_suffix(".tmp").unlink(missing_ok=True)
    except OSError as exc:
        raise FCNError(f"{path}: cannot write the checkpoint ({exc.strerror or exc})") from None
