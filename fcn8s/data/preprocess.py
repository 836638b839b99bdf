"""The one place images become network input: mean/std, channel order, size divisor and pad values.

Like mmsegmentation's ``SegDataPreProcessor``: the train pipeline, eval, infer, the Python API and the
ONNX/MINDIR runners all take their normalisation and padding from a ``Preprocessor``, so no caller
normalises or pads on its own. Framework-free (numpy and cv2).
"""
import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ..architecture import STRIDE
from ..errors import FCNError

CHANNEL_ORDERS = ("bgr", "rgb")


@functools.lru_cache(maxsize=8)
def _normalize_tables(mean, std):
    """Per channel, the 256 float32 values (v - mean) / std, computed as the tutorial computes them."""
    values = np.arange(256, dtype=np.float32)
    return tuple((values - np.float32(m)) / np.float32(s) for m, s in zip(mean, std))


@dataclass(frozen=True)
class Preprocessor:
    """HxWx3 uint8 images -> normalised CHW float32, and the padding the network's input gets.

    ``mean`` and ``std`` are in BGR order (as cv2 decodes, as the configs give them); the network's
    planes are BGR whatever ``channel_order`` the caller's images have. Padding goes at the bottom and
    right: ``image_pad`` after normalisation (0, the mean colour), ``label_pad`` (the ignore label) for
    labels; sizes are padded up to a multiple of ``size_divisor``, the network's total stride.
    """
    mean: tuple
    std: tuple
    channel_order: str = "bgr"
    size_divisor: int = STRIDE
    image_pad: float = 0.0
    label_pad: int = 255

    def __post_init__(self):
        if self.channel_order not in CHANNEL_ORDERS:
            raise FCNError(f"channel_order {self.channel_order!r}: choose from {', '.join(CHANNEL_ORDERS)}")

    @classmethod
    def from_config(cls, data_cfg, channel_order="bgr"):
        return cls(tuple(data_cfg.mean), tuple(data_cfg.std), channel_order, label_pad=data_cfg.ignore_label)

    def padded_size(self, length, minimum=0):
        """``length`` rounded up to a multiple of ``size_divisor``, and at least ``minimum``."""
        return max(minimum, -(-length // self.size_divisor) * self.size_divisor)

    def normalize(self, image, out=None):
        """(image - mean) / std per channel as a BGR CHW float32 array.

        ``image`` is HxWx3 uint8 in ``channel_order`` (anything else is an FCNError). With ``out``
        (3, H', W'), H' >= h and W' >= w, the result is written into ``out[:, :h, :w]`` and the rest of
        ``out`` is left as it is (the padding). Each uint8 plane goes through a 256-entry float32 table
        (cv2.LUT) straight into ``out``: one pass per plane, the same float32 values as the tutorial's
        ``(image - mean) / std``, and about 2x faster than computing them.
        """
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3):
            described = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                         else type(image).__name__)
            raise FCNError(f"expected an HxWx3 uint8 image ({self.channel_order.upper()}), got a {described}")
        h, w = image.shape[:2]
        if out is None:
            out = np.empty((3, h, w), np.float32)
        tables = _normalize_tables(tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std))
        planes = cv2.split(image)
        if self.channel_order == "rgb":
            planes = planes[::-1]
        for c, plane in enumerate(planes):
            cv2.LUT(plane, tables[c], dst=out[c, :h, :w])
        return out

    def pad_images(self, images, height, width):
        """(N, C, h, w) float32 images padded at the bottom/right to (N, C, height, width) with ``image_pad``."""
        n, c, h, w = images.shape
        padded = np.full((n, c, height, width), self.image_pad, np.float32)
        padded[:, :, :h, :w] = images
        return padded
