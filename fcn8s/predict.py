"""Full-resolution prediction, shared by validation during training, ``eval``, ``infer`` and ``fcn8s.Segmenter``.

An image (HxWx3 uint8, original size) is normalised and padded by the one ``Preprocessor``: at the
bottom/right onto a fixed canvas, so graph mode compiles one shape for a whole dataset; logits are
cropped back to the image. The canvas size is part of the prediction: BatchNorm shifts the padded
zeros, so logits near the bottom/right border depend slightly on how much padding there is. One
canvas for eval and infer keeps their predictions identical. Optional multi-scale and flip test-time
augmentation average logits at the original size; sliding windows bound memory on large images
(each tile is padded to the window, not to the canvas): ``eval.window`` always, else windows of the
canvas for an image whose padded input would exceed ``eval.max_pixels``. An image whose logits would
not fit in memory (``check_memory``) is refused in one line, not left to the out-of-memory killer. The
model comes from ``runtime.load_model``: a checkpoint run by MindSpore, or an ONNX or MINDIR export
(same padding, so the same predictions to float rounding; a MINDIR's fixed input size replaces the
canvas).
"""
import cv2
import numpy as np

from .data.preprocess import Preprocessor
from .errors import FCNError
from .host import available_memory


def _resize_each(arrays, height, width):
    """Each (C, h, w) array of an (N, C, h, w) stack resized (bilinear) to (height, width)."""
    if arrays.shape[2:] == (height, width):
        return arrays
    # cv2 resizes HWC arrays of at most 512 channels; class logits are far fewer
    resized = (cv2.resize(np.ascontiguousarray(array.transpose(1, 2, 0)), (width, height),
                          interpolation=cv2.INTER_LINEAR) for array in arrays)
    return np.stack([out.reshape(height, width, -1).transpose(2, 0, 1) for out in resized])


def _in_units(nbytes):
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def _default_stride(window):
    """The step between sliding windows when eval.stride is not set: two thirds of the window."""
    return window * 2 // 3


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
                 stride=None, max_pixels=0, max_memory=None):
        self.model = model
        self.num_classes = num_classes
        self.preprocessor = preprocessor
        self.canvas = preprocessor.padded_size(canvas)
        self.scales = tuple(scales)
        self.flip = flip
        self.window = preprocessor.padded_size(window) if window else None
        self.stride = stride or (_default_stride(self.window) if self.window else None)
        self.max_pixels = max_pixels      # eval.max_pixels; 0: never windows of their own accord
        self.max_memory = max_memory      # eval.max_memory, GB; None: what is available

    @classmethod
    def from_config(cls, model, cfg, channel_order="bgr"):
        e = cfg.eval
        return cls(model, cfg.model.num_classes, Preprocessor.from_config(cfg.data, channel_order), e.canvas,
                   e.scales, e.flip, e.window, e.stride, e.max_pixels, e.max_memory)

    @property
    def views(self):
        """How many logit maps are averaged for each image: one per test-time scale, two with flips."""
        return len(self.scales) * (2 if self.flip else 1)

    def memory_needed(self, height, width, count=1):
        """About how many bytes segmenting ``count`` height x width images takes besides the network.

        Per pixel: the normalised image (12 bytes), the window count (4), the class map (int64 argmax
        and uint8: 9), 64 for the caller's pictures (decoded, converted, and infer's overlay, blended in
        float32), and 4 x classes for the logits, three times over with several views (each view, its
        resized copy and the sum). Measured: ``fcn8s infer`` of a 10000x10000 image with 3 classes
        peaked at 7.2 GB, this says 10.1.
        """
        per_pixel = 12 + 4 + 9 + 64 + 4 * self.num_classes * (1 if self.views == 1 else 3)
        return count * height * width * per_pixel

    def check_memory(self, height, width, count=1):
        """FCNError saying how much memory ``count`` height x width images need, when that is more than
        eval.max_memory allows or, without it, more than is available."""
        needed = self.memory_needed(height, width, count)
        limit = self.max_memory * 1e9 if self.max_memory else available_memory()
        if needed > limit:
            what = f"{count} {height}x{width} images need" if count > 1 else f"a {height}x{width} image needs"
            raise FCNError(f"{what} about {_in_units(needed)} of memory to segment, more than the "
                           f"{_in_units(limit)} {'eval.max_memory allows' if self.max_memory else 'available'}")

    def _window_for(self, height, width):
        """The sliding window for an input of this size, or None for the whole input: eval.window when the
        input is larger; else the canvas when padding the whole input would exceed eval.max_pixels (a
        fixed-shape model's input size bounds its memory already)."""
        if self.window:
            return self.window if max(height, width) > self.window else None
        if not self.max_pixels or self.model.input_size:
            return None
        padded = self.preprocessor.padded_size(height, self.canvas) * self.preprocessor.padded_size(width, self.canvas)
        return self.canvas if padded > self.max_pixels else None

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
        n, _, h, w = images.shape
        window = self._window_for(h, w)
        if window is None:
            return self._forward_padded(images, self.canvas)
        stride = self.stride or _default_stride(window)
        total = np.zeros((n, self.num_classes, h, w), np.float32)
        count = np.zeros((1, 1, h, w), np.float32)
        for top in _window_starts(h, window, stride):
            for left in _window_starts(w, window, stride):
                tile = images[:, :, top:top + window, left:left + window]
                rows, cols = slice(top, top + tile.shape[2]), slice(left, left + tile.shape[3])
                total[:, :, rows, cols] += self._forward_padded(tile, window)
                count[:, :, rows, cols] += 1
        total /= count
        return total

    def batch_logits(self, images):
        """Averaged logits (N, C, H, W) for a sequence of same-size HxWx3 uint8 images.

        Refused (check_memory) before anything is allocated when they would not fit in memory; one view
        (no test-time augmentation) is returned as the network gives it, without a running sum.
        """
        shape = np.shape(images[0])
        if len(shape) == 3:   # anything else is refused by normalize, naming what it got
            self.check_memory(shape[0], shape[1], len(images))
        normalised = (self.preprocessor.normalize(images[0])[None] if len(images) == 1
                      else np.stack([self.preprocessor.normalize(image) for image in images]))
        h, w = normalised.shape[2:]
        total = None
        for scale in self.scales:
            scaled = normalised if scale == 1.0 else _resize_each(
                normalised, max(1, round(h * scale)), max(1, round(w * scale)))
            for flipped in ((False, True) if self.flip else (False,)):
                out = self._forward(np.ascontiguousarray(scaled[..., ::-1] if flipped else scaled))
                out = _resize_each(out[..., ::-1] if flipped else out, h, w)
                if total is None:
                    total = out if self.views == 1 else out.copy()
                else:
                    total += out
        if self.views > 1:
            total /= self.views
        return total

    def batch_predict(self, images):
        """Class maps (N, H, W) uint8 of a sequence of same-size images."""
        return self.batch_logits(images).argmax(axis=1).astype(np.uint8)

    def logits(self, image):
        """Averaged logits (C, H, W) of one image of any size."""
        return self.batch_logits([image])[0]

    def predict(self, image):
        """Class map (H, W) uint8 of one image."""
        return self.batch_predict([image])[0]
