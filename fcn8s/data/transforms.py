"""Image/label transforms on numpy arrays, shared by training, evaluation and inference.

Normalisation and pad values come from a ``preprocess.Preprocessor``. Images are BGR (as cv2 decodes)
uint8; labels are uint8 class indices with the ignore label (255) for void and padding.
"""
import cv2
import numpy as np


def decode_image(data):
    """BGR uint8 image from encoded bytes (JPEG/PNG/BMP)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("cannot decode image bytes")
    return image


def decode_label(data):
    """uint8 class indices from the 8-bit gray index PNG stored by ``fcn8s convert``."""
    label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if label is None:
        raise ValueError("cannot decode label bytes")
    return label


def rescale(image, label, scale):
    """Resize by ``scale``: cubic for the image, nearest for the label (class indices stay indices)."""
    h, w = image.shape[:2]
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST) if label is not None else None
    return image, label


class AugmentationDraws:
    """Adds a column of four uniform [0, 1) draws per sample: scale, crop row, crop column, flip.

    Mapped with one worker, in row order, from its own seeded generator: the draws, and so the
    whole augmentation, are the same on every run however many threads then run TrainTransform.
    ``seed`` is anything numpy's default_rng takes: an int, or (seed, epoch, shard) for one epoch's draws.
    """

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, label):
        return label, self.rng.random(4)


class TrainTransform:
    """decode -> random scale -> random crop (padded with the preprocessor's pad values) -> flip.

    The tutorial's decode / scale / normalise / pad / crop / flip, with only the cropped pixels
    normalised (by ``preprocessor``, straight into the padded array). Called by MindDataset.map workers
    with the raw ``data`` and ``label`` bytes and the sample's AugmentationDraws; returns (CHW float32
    image, HW int32 label).
    """

    def __init__(self, crop_size, min_scale, max_scale, preprocessor, flip=True):
        self.crop_size = crop_size
        self.min_scale, self.max_scale = min_scale, max_scale
        self.preprocessor = preprocessor
        self.flip = flip

    def __call__(self, data, label, draws):
        crop = self.crop_size
        image, label = decode_image(data), decode_label(label)
        image, label = rescale(image, label, self.min_scale + draws[0] * (self.max_scale - self.min_scale))
        h, w = label.shape
        top = int(draws[1] * (max(h - crop, 0) + 1))
        left = int(draws[2] * (max(w - crop, 0) + 1))
        image = image[top:top + crop, left:left + crop]
        label = label[top:top + crop, left:left + crop]
        h, w = label.shape
        # the tutorial pads right/bottom, then flips the crop: a flipped crop has its padding on the left
        col = 0
        if self.flip and draws[3] < 0.5:
            image, label, col = cv2.flip(image, 1), cv2.flip(label, 1), crop - w
        prep = self.preprocessor
        out_image = np.full((3, crop, crop), prep.image_pad, np.float32)
        prep.normalize(image, out=out_image[:, :, col:])
        out_label = np.full((crop, crop), prep.label_pad, np.int32)
        out_label[:h, col:col + w] = label
        return out_image, out_label


def decode_sample(data, label):
    """(HxWx3 uint8 BGR image, HW int32 label) at the original size: the eval pipeline's map.

    Normalisation and padding are the predictor's (see predict.Predictor), as for every image it sees.
    """
    return decode_image(data), decode_label(label).astype(np.int32)
