"""Image/label transforms on numpy arrays, shared by training, evaluation and inference.

``normalize`` is the only normalisation in the package. Images are BGR (as cv2 decodes) uint8;
labels are uint8 class indices with ``ignore_label`` (255) for void and padding.
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


def normalize(image, mean, std):
    """(image - mean) / std per channel, float32 HWC (BGR order, as mean and std are given)."""
    image = image.astype(np.float32)
    image -= np.asarray(mean, np.float32)
    image *= 1.0 / np.asarray(std, np.float32)
    return image


def to_chw(image):
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def rescale(image, label, scale):
    """Resize by ``scale``: cubic for the image, nearest for the label (class indices stay indices)."""
    h, w = image.shape[:2]
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST) if label is not None else None
    return image, label


def pad_to(image, height, width, value=0.0):
    """Pad an HW or HWC array at the bottom and right to at least (height, width) with ``value``."""
    h, w = image.shape[:2]
    if h >= height and w >= width:
        return image
    out = np.full((max(h, height), max(w, width)) + image.shape[2:], value, dtype=image.dtype)
    out[:h, :w] = image
    return out


class TrainTransform:
    """decode -> random scale -> random crop (padded: image 0 after normalisation, label 255) -> flip.

    Same result as the tutorial's decode / scale / normalise / pad / crop / flip, but only the
    cropped pixels are normalised and padded. Called by MindDataset.map workers with the raw
    ``data`` and ``label`` bytes; returns (CHW float32 image, HW int32 label). Random draws use
    numpy's global generator, which MindDataset seeds per worker (seed + worker id) once
    ``mindspore.dataset.config.set_seed`` is called: augmentation is then reproducible.
    """

    def __init__(self, crop_size, min_scale, max_scale, mean, std, ignore_label=255, flip=True):
        self.crop_size = crop_size
        self.min_scale, self.max_scale = min_scale, max_scale
        self.mean, self.std = mean, std
        self.ignore_label = ignore_label
        self.flip = flip

    def __call__(self, data, label):
        crop = self.crop_size
        image, label = decode_image(data), decode_label(label)
        image, label = rescale(image, label, np.random.uniform(self.min_scale, self.max_scale))
        h, w = label.shape
        top = np.random.randint(0, max(h - crop, 0) + 1)
        left = np.random.randint(0, max(w - crop, 0) + 1)
        image = normalize(image[top:top + crop, left:left + crop], self.mean, self.std)
        label = label[top:top + crop, left:left + crop]
        image, label = pad_to(image, crop, crop, 0.0), pad_to(label, crop, crop, self.ignore_label)
        if self.flip and np.random.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return to_chw(image), label.astype(np.int32)


class EvalTransform:
    """decode -> normalise, at the original size (padding is the predictor's job)."""

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, data, label):
        image = normalize(decode_image(data), self.mean, self.std)
        return to_chw(image), decode_label(label).astype(np.int32)
