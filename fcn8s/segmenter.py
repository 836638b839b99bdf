"""``fcn8s.Segmenter``: segmentation from Python, with ``fcn8s infer``'s own loading, prediction and pictures.

The model comes from ``runtime.load_model`` and the class maps from ``predict.Predictor`` (the same
preprocessing, padding, test-time augmentation and sliding windows as ``eval``); ``fcn8s infer`` is
written on this class, so the two cannot disagree.
"""
import numpy as np

from .config import Config, class_names, load_config
from .predict import Predictor
from .runtime import load_model
from .visualize import add_legend, overlay

DEFAULT_CONFIG = "voc"   # the command line's default


class Segmenter:
    """``Segmenter("best.ckpt")(image)``: the HxW uint8 class map of an HxWx3 uint8 image.

    ``weights``: a MindSpore checkpoint (model-only or training), or a ``.onnx`` / ``.mindir`` file from
    ``fcn8s export``. ``config``: a name from configs/ (``"voc"``, ``"demo"``), a YAML path or a loaded
    ``Config``; it gives the network, the normalisation, test-time augmentation (``eval``), the device
    and the overlay's look (``infer``). ``channel_order``: of the images passed in and the overlays
    returned, ``"bgr"`` (as cv2 reads) or ``"rgb"`` (as Pillow reads). ``batch_size``: the most images
    ``batch`` sends through the model at once.
    """

    def __init__(self, weights, config=DEFAULT_CONFIG, channel_order="bgr", batch_size=8):
        self.cfg = config if isinstance(config, Config) else load_config(config)
        self.predictor = Predictor.from_config(load_model(self.cfg, weights), self.cfg, channel_order)
        self.class_names = class_names(self.cfg)
        self.batch_size = batch_size

    @property
    def channel_order(self):
        return self.predictor.preprocessor.channel_order

    def __call__(self, image):
        return self.predictor.predict(image)

    def batch(self, images):
        """The class maps of ``images``, in their order; images of one size go through the model together."""
        images = list(images)
        by_size = {}
        for i, image in enumerate(images):
            by_size.setdefault(np.shape(image), []).append(i)
        masks = {}
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                masks.update(zip(chunk, self.predictor.batch_predict([images[i] for i in chunk])))
        return [masks[i] for i in range(len(images))]

    def overlay(self, image, mask):
        """``mask`` blended over ``image`` (``infer.alpha``, legend if ``infer.legend``), in ``channel_order``.

        The picture ``fcn8s infer`` writes as ``<stem>_overlay.png``.
        """
        rgb = image if self.channel_order == "rgb" else image[..., ::-1]
        blended = overlay(rgb, mask, self.cfg.infer.alpha)
        if self.cfg.infer.legend:
            blended = add_legend(blended, mask, self.class_names)
        return blended if self.channel_order == "rgb" else np.ascontiguousarray(blended[..., ::-1])
