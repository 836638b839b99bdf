"""Full-resolution prediction, shared by validation during training, ``eval`` and ``infer``.

An image (normalised, CHW, original size) is padded at the bottom/right onto a fixed canvas, so
graph mode compiles one shape for a whole dataset; logits are cropped back to the image. The
canvas size is part of the prediction: BatchNorm shifts the padded zeros, so logits near the
bottom/right border depend slightly on how much padding there is. One canvas for eval and infer
keeps their predictions identical. Optional multi-scale and flip test-time augmentation average
logits at the original size; optional sliding windows bound memory on large images (each tile is
padded to the window, not to the canvas). The network is a forward function on numpy batches: a
checkpoint run by MindSpore, or a model exported by ``fcn8s export --format ONNX`` run by
onnxruntime (same padding, so the same predictions to float rounding).
"""
import math
from pathlib import Path

import cv2
import numpy as np

from .architecture import STRIDE
from .errors import FCNError
from .log import get_logger


def mindspore_forward(net):
    """Forward function (N, 3, H, W) float32 -> (N, C, H, W) logits of a MindSpore network, in inference mode."""
    import mindspore as ms

    def forward(batch):
        net.set_train(False)
        return net(ms.Tensor(batch)).asnumpy()
    return forward


def onnxruntime_forward(path, num_classes):
    """Forward function of an exported ONNX model, run by onnxruntime on the CPU."""
    try:
        import onnxruntime
    except ImportError:
        raise FCNError(f"{path}: running an ONNX model needs onnxruntime: pip install 'fcn8s[onnx]'") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types: any of them means the file is unusable
        raise FCNError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
    classes = session.get_outputs()[0].shape[1]
    if classes != num_classes:
        raise FCNError(f"{path}: the model has {classes} classes, the config model.num_classes {num_classes}")
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def model_forward(cfg, path):
    """The forward function for prediction from ``path``: a ``.onnx`` export (onnxruntime) or a checkpoint."""
    if Path(path).suffix.lower() == ".onnx":
        get_logger().info(f"running {path} with onnxruntime (CPU)")
        return onnxruntime_forward(path, cfg.model.num_classes)
    from .checkpoint import load_weights
    from .device import setup_device
    from .models import build_model
    setup_device(cfg.device)
    net = build_model(cfg.model, get_logger())
    get_logger().info(load_weights(net, path).summary(path))
    return mindspore_forward(net)


def _ceil_to(value, multiple):
    return int(math.ceil(value / multiple) * multiple)


def _resize_chw(array, height, width, interpolation):
    if array.shape[1:] == (height, width):
        return array
    hwc = np.ascontiguousarray(array.transpose(1, 2, 0))
    # cv2 handles at most 512 channels per call; class logits are far fewer
    out = cv2.resize(hwc, (width, height), interpolation=interpolation)
    if out.ndim == 2:
        out = out[..., None]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def _window_starts(length, window, stride):
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


class Predictor:
    """Logits and class maps for single images from a forward function (see ``model_forward``)."""

    def __init__(self, forward, num_classes, canvas=512, scales=(1.0,), flip=False, window=None, stride=None):
        self.forward = forward
        self.num_classes = num_classes
        self.canvas = _ceil_to(canvas, STRIDE)
        self.scales = tuple(scales)
        self.flip = flip
        self.window = _ceil_to(window, STRIDE) if window else None
        self.stride = stride or (self.window * 2 // 3 if self.window else None)

    @classmethod
    def from_config(cls, forward, cfg):
        e = cfg.eval
        return cls(forward, cfg.model.num_classes, e.canvas, e.scales, e.flip, e.window, e.stride)

    def _forward_padded(self, image, canvas):
        """Logits (C, h, w) of one CHW image, padded onto ``canvas`` (grown to a multiple of 32 if larger)."""
        _, h, w = image.shape
        ph, pw = max(canvas, _ceil_to(h, STRIDE)), max(canvas, _ceil_to(w, STRIDE))
        canvas = np.zeros((1, image.shape[0], ph, pw), np.float32)
        canvas[0, :, :h, :w] = image
        return self.forward(canvas)[0, :, :h, :w]

    def _forward(self, image):
        if not self.window or max(image.shape[1:]) <= self.window:
            return self._forward_padded(image, self.canvas)
        _, h, w = image.shape
        total = np.zeros((self.num_classes, h, w), np.float32)
        count = np.zeros((1, h, w), np.float32)
        for top in _window_starts(h, self.window, self.stride):
            for left in _window_starts(w, self.window, self.stride):
                tile = image[:, top:top + self.window, left:left + self.window]
                total[:, top:top + tile.shape[1], left:left + tile.shape[2]] += self._forward_padded(tile,
                                                                                                     self.window)
                count[:, top:top + tile.shape[1], left:left + tile.shape[2]] += 1
        return total / count

    def logits(self, image):
        """Averaged logits (C, H, W) for a normalised CHW float32 image of any size."""
        _, h, w = image.shape
        total = np.zeros((self.num_classes, h, w), np.float32)
        for scale in self.scales:
            scaled = image if scale == 1.0 else _resize_chw(
                image, max(1, round(h * scale)), max(1, round(w * scale)), cv2.INTER_LINEAR)
            views = [scaled, scaled[:, :, ::-1]] if self.flip else [scaled]
            for i, view in enumerate(views):
                out = self._forward(np.ascontiguousarray(view))
                out = out[:, :, ::-1] if i == 1 else out
                total += _resize_chw(out, h, w, cv2.INTER_LINEAR)
        return total / (len(self.scales) * (2 if self.flip else 1))

    def predict(self, image):
        """Class map (H, W) uint8."""
        return self.logits(image).argmax(axis=0).astype(np.uint8)
