"""``fcn8s infer``: segment image files; for each, an index PNG, a colour mask and an overlay.

``<stem>_label.png`` is an 8-bit palette PNG (class indices in Pillow, colours in any viewer),
``<stem>_color.png`` the colour mask, ``<stem>_overlay.png`` the mask blended over the image
(with a legend of the classes present when ``infer.legend`` is on). Written on ``fcn8s.Segmenter``,
so the Python API gives the same pixels; its prediction is eval's. An image too large to segment in
the memory there is (predict.Predictor.check_memory) is refused from its header, before it is decoded,
and skipped like an unreadable one.
"""
import glob
import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from .errors import FCNError
from .data.voc import BadSample, open_fully
from .fileio import make_output_dir, refuse_existing, write_output
from .log import get_logger
from .segmenter import Segmenter
from .visualize import colorize, index_png_bytes, png_bytes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
OUTPUTS = ("label", "color", "overlay")


def collect_images(inputs):
    """Image paths from files, folders (their images, sorted) and glob patterns; missing ones reported."""
    found, missing = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        elif any(ch in item for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(item) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        else:
            missing.append(f"{item}: not found")
    return list(dict.fromkeys(found)), missing


def _header_size(data):
    """(height, width) from an encoded image's header, without decoding it; None where Pillow cannot tell."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except (OSError, SyntaxError, ValueError):
        return None


def read_image(path, check_size=None):
    """(BGR uint8 image, note or None). Grayscale, alpha and 16-bit images are converted, with a note.

    A file that does not decode to its end (a truncated JPEG) is refused, as ``convert`` refuses it:
    OpenCV would decode what it can, fill the rest with grey and only warn. ``check_size(height,
    width)`` sees the size before the image is decoded and raises to refuse it; it replaces Pillow's
    warning about images of over 89 million pixels (Pillow still refuses twice that).
    """
    try:
        data = Path(path).read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            size = _header_size(data)
            if size and check_size:
                check_size(*size)
            open_fully(data, path, "image")
    except OSError as exc:
        raise ValueError(f"unreadable image ({exc.strerror or exc})") from None
    except BadSample as exc:
        raise ValueError(str(exc).removeprefix(f"{path}: ")) from None
    except (FCNError, Image.DecompressionBombError) as exc:
        raise ValueError(str(exc)) from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("unreadable image")
    notes = []
    if image.dtype == np.uint16:
        image = (image / 257).round().astype(np.uint8)
        notes.append("16-bit to 8-bit")
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        notes.append("grayscale to colour")
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        notes.append("alpha channel dropped")
    return image, ", ".join(notes) or None


def output_paths(images, output_dir):
    """{image: {kind: path}} with unique stems (a second 'a.jpg' from another folder becomes a_2)."""
    seen, plan = {}, {}
    for image in images:
        stem = image.stem
        seen[stem] = seen.get(stem, 0) + 1
        if seen[stem] > 1:
            stem = f"{stem}_{seen[stem]}"
        plan[image] = {kind: output_dir / f"{stem}_{kind}.png" for kind in OUTPUTS}
    return plan


def infer(cfg, ckpt, inputs, output_dir, force=False):
    """Segment ``inputs``; returns 0, or 1 when some inputs could not be read (all others are done)."""
    log = get_logger()
    images, problems = collect_images(inputs)
    if not images:
        raise FCNError(f"no images found in {' '.join(map(str, inputs))}")
    output_dir = Path(output_dir)
    plan = output_paths(images, output_dir)
    sources = {p.resolve() for p in images}
    for paths in plan.values():
        for path in paths.values():
            if path.resolve() in sources:
                raise FCNError(f"{path}: is an input image; choose another --output folder")
            refuse_existing(path, force)
    make_output_dir(output_dir)
    segmenter = Segmenter(ckpt, cfg, channel_order="rgb")
    written = 0
    for image_path in tqdm(images, desc="infer", unit="img", disable=None):
        try:
            bgr, note = read_image(image_path, segmenter.predictor.check_memory)
        except ValueError as exc:
            problems.append(f"{image_path}: {exc}")
            continue
        if note:
            log.info(f"{image_path}: converted ({note})")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        classes = segmenter(rgb)
        paths = plan[image_path]
        write_output(paths["label"], index_png_bytes(classes))
        write_output(paths["color"], png_bytes(colorize(classes)))
        write_output(paths["overlay"], png_bytes(segmenter.overlay(rgb, classes)))
        written += 1
    log.info(f"wrote {written} x {len(OUTPUTS)} PNGs ({', '.join(f'*_{k}.png' for k in OUTPUTS)}) to {output_dir}")
    for problem in problems:
        log.warning(f"skipped {problem}")
    if problems:
        log.warning(f"{len(problems)} input(s) could not be processed")
        return 1
    return 0
