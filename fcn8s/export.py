"""``fcn8s export``: a checkpoint to MINDIR or ONNX, verified numerically before it is kept.

The network is loaded by ``runtime.load_model`` with MindSpore's own kernels only. MINDIR is written
by mindspore.export; ONNX by ``fcn8s.onnx_graph`` from the weights (MindSpore 2.10's ONNX exporter
fails on this network). The exported file is loaded back by the runtime eval and infer use for it
(MINDIR: mindspore.load + nn.GraphCell, ONNX: onnxruntime) and run on a random (batch, 3, H, W) input,
normalised BGR as in eval; it is renamed into place only if its logits match the network's. The
MINDIR input shape is fixed to that; the ONNX model takes any batch and size. A write that fails (disk
full, file size limit) is one line naming the output; an earlier output stays as it was.
"""
import importlib.util
from pathlib import Path

import numpy as np

from .errors import FCNError
from .fileio import make_output_dir, refuse_existing, staging_dir, write_error
from .log import get_logger
from .runtime import MindirModel, OnnxModel, load_model

TOLERANCE = 1e-4   # max |difference| relative to the largest logit


def _run_exported(path, fmt, images, num_classes):
    """Logits of the exported file on ``images``; FCNError if it does not load or run."""
    try:
        return (MindirModel if fmt == "MINDIR" else OnnxModel)(path, num_classes).forward(images)
    except Exception as exc:  # the runtimes' own error types: any of them means the file is unusable
        raise FCNError(f"the exported {fmt} file does not load and run: {str(exc).splitlines()[0]}") from None


def export(cfg, ckpt, output, fmt="MINDIR", batch=1, size=(512, 512), force=False):
    """Export ``ckpt`` to ``output`` (suffix added if missing); returns 0."""
    import mindspore as ms
    log = get_logger()
    suffix = ".mindir" if fmt == "MINDIR" else ".onnx"
    output = Path(output)
    if output.suffix.lower() != suffix:
        output = output.with_name(output.name + suffix)
    refuse_existing(output, force)
    if fmt == "ONNX" and not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        raise FCNError("ONNX export needs onnx and onnxruntime (to write and to verify the file): "
                       "pip install 'fcn8s[onnx]'")
    if batch < 1 or min(size) < 1:
        raise FCNError(f"--batch {batch} --size {size[0]} {size[1]}: must be positive")
    make_output_dir(output.parent)   # before minutes of loading and verifying, not after
    model = load_model(cfg, ckpt, mindspore_kernels_only=True)
    net = model.net
    images = np.random.default_rng(0).standard_normal((batch, 3, *size)).astype(np.float32)
    expected = model.forward(images)
    with staging_dir(output.parent, output.name) as staging:
        try:
            if fmt == "ONNX":
                from .onnx_graph import build_onnx_model
                model = build_onnx_model(net.parameters_dict(), cfg.model.arch, cfg.model.num_classes)
                (staging / "model.onnx").write_bytes(model.SerializeToString())
            else:
                try:
                    ms.export(net, ms.Tensor(images), file_name=str(staging / "model"), file_format=fmt)
                except (RuntimeError, TypeError, ValueError) as exc:
                    raise FCNError(f"MindSpore {ms.__version__} cannot export this network to {fmt} "
                                   f"({str(exc).strip().splitlines()[0]})") from None
        except OSError as exc:   # the disk is full, a file size limit, ...
            raise write_error(output, exc) from None
        exported = staging / f"model{suffix}"
        got = _run_exported(exported, fmt, images, cfg.model.num_classes)
        diff = float(np.abs(got - expected).max()) / max(1.0, float(np.abs(expected).max()))
        if got.shape != expected.shape or diff > TOLERANCE:
            raise FCNError(f"the exported {fmt} file gives different logits (shape {got.shape}, "
                           f"relative max difference {diff:.2e}); not written")
        exported.replace(output)
    log.info(f"wrote {output}: input (batch {batch}, 3, {size[0]}, {size[1]}), verified against the network "
             f"(relative max difference {diff:.1e})")
    return 0
