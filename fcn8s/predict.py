"""Full-resolution prediction, shared by validation during training, ``eval``, ``infer`` and ``fcn8s.Segmenter``.

An image (HxWx3 uint8, original size) is normalised and padded by the one ``Preprocessor``: at the
bottom/right onto a fixed canvas, so graph mode compiles one shape for a whole dataset; logits are
cropped back to the image. The canvas size is part of the prediction: BatchNorm shifts the padded
zeros, so logits near the bottom/right border depend slightly on how much padding there is. One
canvas for eval and infer keeps their predictions identical. Optional multi-scale and flip test-time
augmentation average logits at the original size; optional sliding windows bound memory on large
images (each tile is padded to the window, not to the canvas). The model comes from
``runtime.load_model``: a checkpoint run by MindSpore, or an ONNX or MINDIR export (same padding, so
the same predictions to float rounding; a MINDIR's fixed input size replaces the canvas).
"""
import cv2
import numpy as np

from .data.preprocess import Preprocessor
from .errors import FCNError


def _resize_each(arrays, height, width):
    """Each (C, h, w) array of an (N, C, h, w) stack resized (bilinear) to (height, width)."""
    if arrays.shape[2:] == (height, width):
        return arrays
    # cv2 resizes HWC arrays of at most 512 channels; class logits are far fewer
    resized = (cv2.resize(np.ascontiguousarray(array.transpose(1, 2, 0)), (width, height),
                          interpolation=cv2.INTER_LINEAR) for array in arrays)
    return np.stack([out.reshape(height, width, -1).transpose(2, 0, 1) for out in resized])


def _window_starts(length, window, stride):
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


class Predictor:
    """Logits and class maps for images from a model (see ``runtime.load_model``).

    Images are HxWx3 uint8 in the ``preprocessor``'s channel order; several images go through the
    model as one batch when they have the same size.
    """

    def __init__(self, model, num_classes, preprocessor, canvas=512, scales=(1.0,), flip=False, window=None,
                 stride=None):
        self.model = model
        self.num_classes = num_classes
        self.preprocessor = preprocessor
        self.canvas = preprocessor.padded_size(canvas)
        self.scales = tuple(scales)
        self.flip = flip
        self.window = preprocessor.padded_size(window) if window else None
        self.stride = stride or (self.window * 2 // 3 if self.window else None)

    @classmethod
    def from_config(cls, model, cfg, channel_order="bgr"):
        e = cfg.eval
        return cls(model, cfg.model.num_classes, Preprocessor.from_config(cfg.data, channel_order), e.canvas,
                   e.scales, e.flip, e.window, e.stride)

    def _forward_padded(self, images, canvas):
        """Logits (N, C, h, w) of NCHW images padded onto ``canvas`` (grown to the size divisor if larger).

        A fixed-shape model's input size replaces the canvas; a larger input is an FCNError.
        """
        _, _, h, w = images.shape
        if self.model.input_size:
            ph, pw = self.model.input_size
            if h > ph or w > pw:
                raise FCNError(f"a {h}x{w} input does not fit the model's fixed {ph}x{pw} input; "
                               f"export it with a larger --size, or set eval.window to at most {min(ph, pw)}")
        else:
            ph, pw = self.preprocessor.padded_size(h, canvas), self.preprocessor.padded_size(w, canvas)
        return self.model.forward(self.preprocessor.pad_images(images, ph, pw))[:, :, :h, :w]

    def _forward(self, images):
        if not self.window or max(images.shape[2:]) <= self.window:
            return self._forward_padded(images, self.canvas)
        n, _, h, w = images.shape
        total = np.zeros((n, self.num_classes, h, w), np.float32)
        count = np.zeros((1, 1, h, w), np.float32)
        for top in _window_starts(h, self.window, self.stride):
            for left in _window_starts(w, self.window, self.stride):
                tile = images[:, :, top:top + self.window, left:left + self.window]
                rows, cols = slice(top, top + tile.shape[2]), slice(left, left + tile.shape[3])
                total[:, :, rows, cols] += self._forward_padded(tile, self.window)
                count[:, :, rows, cols] += 1
        return total / count

    def batch_logits(self, images):
        """Averaged logits (N, C, H, W) for a sequence of same-size HxWx3 uint8 images."""
        normalised = np.stack([self.preprocessor.normalize(image) for image in images])
        n, _, h, w = normalised.shape
        total = np.zeros((n, self.num_classes, h, w), np.float32)
        for scale in self.scales:
            scaled = normalised if scale == 1.0 else _resize_each(
                normalised, max(1, round(h * scale)), max(1, round(w * scale)))
            views = [scaled, scaled[..., ::-1]] if self.flip else [scaled]
            for i, view in enumerate(views):
                out = self._forward(np.ascontiguousarray(view))
                out = out[..., ::-1] if i == 1 else out
                total += _resize_each(out, h, w)
        return total / (len(self.scales) * (2 if self.flip else 1))

    def batch_predict(self, images):
        """Class maps (N, H, W) uint8 of a sequence of same-size images."""
        return self.batch_logits(images).argmax(axis=1).astype(np.uint8)

    def logits(self, image):
        """Averaged logits (C, H, W) of one image of any size."""
        return self.batch_logits([image])[0]

    def predict(self, image):
        """Class map (H, W) uint8 of one image."""
        return self.batch_predict([image])[0]
