"""Readers for PASCAL VOC 2012 and SBD (Hariharan et al.), and the checks every sample must pass.

Labels are read as palette indices with Pillow (OpenCV would expand the palette to colours).
The same ``load_sample`` serves ``convert``, ``eval`` and ``check-data`` (whose MindRecord rows go through
its ``checked_label``), so all name the same problems.
"""
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import FCNError

VOC_SUBDIRS = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def default_class_names(num_classes):
    """The VOC names for 21 classes, else ``class_0`` .. ``class_<n-1>``: names for a dataset that gives none."""
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    label: Path      # .png (VOC) or .mat (SBD)


class BadSample(Exception):
    """A sample that cannot be used; ``str()`` names the file and the problem."""


def _find_layout(path, candidates, required, expected):
    """The first of ``candidates`` (relative to ``path``) that has every ``required`` subfolder."""
    path = Path(path)
    for candidate in (path / c for c in candidates):
        if all((candidate / sub).is_dir() for sub in required):
            return candidate
    if not path.exists():
        raise FCNError(f"{path}: not found")
    raise FCNError(f"{path}: no {expected} layout found (expected {', '.join(s + '/' for s in required)})")


def find_voc_root(path):
    """The VOC2012 folder given VOCdevkit/VOC2012 itself, VOCdevkit, or a folder containing VOCdevkit."""
    return _find_layout(path, (".", "VOC2012", "VOCdevkit/VOC2012"), VOC_SUBDIRS, "VOC 2012")


def find_sbd_root(path):
    """SBD's dataset/ folder given benchmark_RELEASE, benchmark_RELEASE/dataset or their parent."""
    return _find_layout(path, (".", "dataset", "benchmark_RELEASE/dataset"), ("img", "cls"), "SBD")


def read_id_list(path):
    path = Path(path)
    if not path.is_file():
        raise FCNError(f"{path}: image-set list not found")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise FCNError(f"{path}: image-set list is empty")
    return ids


def voc_samples(voc_root, split):
    voc_root = find_voc_root(voc_root)
    ids = read_id_list(voc_root / "ImageSets" / "Segmentation" / f"{split}.txt")
    return [Sample(i, voc_root / "JPEGImages" / f"{i}.jpg", voc_root / "SegmentationClass" / f"{i}.png")
            for i in ids]


def sbd_samples(sbd_root, split):
    sbd_root = find_sbd_root(sbd_root)
    ids = read_id_list(sbd_root / f"{split}.txt")
    return [Sample(i, sbd_root / "img" / f"{i}.jpg", sbd_root / "cls" / f"{i}.mat") for i in ids]


def trainaug_samples(voc_root, sbd_root):
    """(SBD train + SBD val + VOC train) minus VOC val; a VOC label is preferred where both exist."""
    val_ids = {s.id for s in voc_samples(voc_root, "val")}
    chosen = {}
    for sample in sbd_samples(sbd_root, "train") + sbd_samples(sbd_root, "val"):
        chosen.setdefault(sample.id, sample)
    for sample in voc_samples(voc_root, "train"):
        chosen[sample.id] = sample
    return [chosen[i] for i in sorted(chosen) if i not in val_ids]


def split_samples(voc_root, sbd_root=None):
    """{"train": [...], "val": [...]} with train = VOC train, or trainaug when SBD is given."""
    val = voc_samples(voc_root, "val")
    train = trainaug_samples(voc_root, sbd_root) if sbd_root else voc_samples(voc_root, "train")
    overlap = sorted({s.id for s in train} & {s.id for s in val})
    if overlap:
        raise FCNError(f"{find_voc_root(voc_root)}: {len(overlap)} ids are in both train and val "
                       f"({', '.join(overlap[:5])}); a val image must never be trained on")
    return {"train": train, "val": val}


def open_fully(data, path, what):
    """The Pillow image of encoded ``data``, decoded to its end; BadSample if unreadable or truncated."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes fully: truncated files fail here
        return image
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadSample(f"{path}: unreadable or truncated {what} ({exc})") from None


def check_image(data, path):
    """(height, width) of an encoded 8-bit 3-channel image; BadSample otherwise."""
    image = open_fully(data, path, "image")
    if image.mode != "RGB":
        kind = {"L": "grayscale", "LA": "grayscale with alpha", "RGBA": "RGBA", "P": "palette", "CMYK": "CMYK",
                "I;16": "16-bit", "I": "32-bit integer", "F": "floating-point"}.get(image.mode, image.mode)
        raise BadSample(f"{path}: {kind} image (mode {image.mode}); expected 8-bit RGB")
    return image.height, image.width


def read_label(path, data=None):
    """Class indices (uint8 HxW) of a VOC palette PNG, an 8-bit gray PNG, or an SBD .mat file."""
    path = Path(path)
    if path.suffix == ".mat":
        from scipy.io import loadmat
        try:
            return np.ascontiguousarray(loadmat(str(path))["GTcls"]["Segmentation"][0][0], dtype=np.uint8)
        except (OSError, KeyError, IndexError, ValueError, TypeError) as exc:
            raise BadSample(f"{path}: unreadable SBD label ({exc})") from None
    image = open_fully(path.read_bytes() if data is None else data, path, "label")
    if image.mode not in ("P", "L"):
        hint = " (a colour-coded picture, not class indices?)" if image.mode in ("RGB", "RGBA") else ""
        raise BadSample(f"{path}: label mode {image.mode}{hint}; expected an 8-bit palette or gray PNG")
    return np.array(image)


def check_label_values(label, path, num_classes, ignore_label=255):
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != ignore_label)]
    if bad.size:
        raise BadSample(f"{path}: label values {', '.join(map(str, bad[:8]))} outside 0..{num_classes - 1} "
                        f"and {ignore_label}")


def checked_label(image_data, image_path, label_path, num_classes, label_data=None):
    """The label (uint8 HxW) of an encoded image and its label after every check; BadSample names the problem.

    ``label_data``: the label's bytes where they are not read from ``label_path`` (a MindRecord row).
    """
    size = check_image(image_data, image_path)
    label = read_label(label_path, label_data)
    if label.shape != size:
        raise BadSample(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its image is "
                        f"{size[1]}x{size[0]}")
    check_label_values(label, label_path, num_classes)
    return label


def load_sample(sample, num_classes):
    """(image bytes, label uint8 array) of a sample after every check; BadSample names the problem."""
    for path in (sample.image, sample.label):
        if not path.is_file():
            raise BadSample(f"{path}: listed as '{sample.id}' but missing")
    data = sample.image.read_bytes()
    return data, checked_label(data, sample.image, sample.label, num_classes)
