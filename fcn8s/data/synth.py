"""A small synthetic segmentation dataset in exact PASCAL VOC 2012 layout: the embedded default.

Each foreground class has its own shape, texture and colour (with jitter), drawn at random sizes
and positions, sometimes overlapping, over a cluttered background of low-saturation noise,
gradients and stray strokes. Labels are palette PNGs with a 255 "void" band along object
boundaries, as in VOC. Everything downstream (convert, pipeline, train, eval, infer) treats it
exactly like the real dataset.
"""
import colorsys
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..errors import FCNError
from ..fileio import refuse_existing
from ..log import get_logger
from ..visualize import index_png_bytes

SHAPES = ("disc", "square", "triangle", "diamond", "ring", "cross", "ellipse", "star")
TEXTURES = ("solid", "stripes", "checker", "dots")
BOUNDARY_WIDTH = 3   # pixels of 255 along each object boundary (VOC uses about 5 at 500 px)


def class_appearance(num_classes):
    """(shape, texture, BGR colour) for each foreground class 1..num_classes-1."""
    looks = {}
    for c in range(1, num_classes):
        hue = ((c - 1) * 0.61803398875) % 1.0      # golden-ratio hues: neighbours far apart
        value = 0.95 if c % 2 else 0.7
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        looks[c] = (SHAPES[(c - 1) % len(SHAPES)], TEXTURES[((c - 1) // len(SHAPES) + c) % len(TEXTURES)],
                    (int(b * 255), int(g * 255), int(r * 255)))
    return looks


def _shape_mask(shape, h, w, cy, cx, radius, angle):
    mask = np.zeros((h, w), np.uint8)
    center = (int(cx), int(cy))
    r = int(radius)
    if shape == "disc":
        cv2.circle(mask, center, r, 1, -1)
    elif shape == "ring":
        cv2.circle(mask, center, r, 1, -1)
        cv2.circle(mask, center, max(1, int(r * 0.5)), 0, -1)
    elif shape == "ellipse":
        cv2.ellipse(mask, center, (r, max(2, int(r * 0.5))), angle, 0, 360, 1, -1)
    elif shape == "cross":
        arm = max(2, r // 3)
        box = cv2.boxPoints(((cx, cy), (2 * r, 2 * arm), angle)).astype(np.int32)
        cv2.fillPoly(mask, [box], 1)
        box = cv2.boxPoints(((cx, cy), (2 * arm, 2 * r), angle)).astype(np.int32)
        cv2.fillPoly(mask, [box], 1)
    else:
        corners = {"square": 4, "triangle": 3, "diamond": 4, "star": 10}[shape]
        offset = np.deg2rad(angle + (45 if shape == "square" else 0))
        t = offset + 2 * np.pi * np.arange(corners) / corners
        radii = np.full(corners, float(r))
        if shape == "star":
            radii[1::2] *= 0.45
        if shape == "diamond":
            radii[1::2] *= 0.6
        pts = np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask.astype(bool)


def _texture(texture, h, w, color, rng, box):
    """The texture's pixels in ``box`` (rows, columns: two slices) of an h x w image. The random draws are
    those of the whole image, so the data does not depend on the box; only the pixels outside it, which the
    object does not cover, are not computed."""
    jitter = rng.integers(-20, 21, 3)
    base = np.clip(np.array(color) + jitter, 0, 255).astype(np.float32)
    yy, xx = np.mgrid[box]
    image = np.empty(yy.shape + (3,), np.float32)
    image[:] = base
    period = int(rng.integers(6, 11))
    if texture == "stripes":
        theta = rng.uniform(0, np.pi)
        band = ((xx * np.cos(theta) + yy * np.sin(theta)) // (period / 2)) % 2 == 0
        image[band] *= 0.55
    elif texture == "checker":
        image[((yy // period) + (xx // period)) % 2 == 0] *= 0.55
    elif texture == "dots":
        dots = ((yy % period) - period / 2) ** 2 + ((xx % period) - period / 2) ** 2 < (period / 3.5) ** 2
        image[dots] = 255 - image[dots]
    image += rng.normal(0, 6, (h, w, 1))[box]
    return image


def _background(h, w, rng):
    """Cluttered but colourless-ish: grey gradients, blurred noise and thin strokes of random colour."""
    base = rng.uniform(60, 200)
    gy, gx = rng.uniform(-60, 60, 2)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    image = base + gy * yy / h + gx * xx / w
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w)).astype(np.float32), (0, 0), rng.uniform(1.5, 4))
    image = np.repeat((image + noise)[..., None], 3, axis=2)
    image += rng.normal(0, 12, 3)                         # slight colour cast
    for _ in range(int(rng.integers(3, 9))):
        p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
        p2 = tuple(int(v) for v in rng.integers(0, (w, h)))
        color = tuple(float(v) for v in rng.uniform(40, 220, 3))
        cv2.line(image, p1, p2, color, int(rng.integers(1, 3)))
    return image


def synth_sample(rng, height, width, num_classes, looks, max_objects=4):
    """One (BGR uint8 image, uint8 label with 255 boundaries) pair."""
    image = _background(height, width, rng)
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        c = int(rng.integers(1, num_classes))
        shape, texture, color = looks[c]
        radius = rng.uniform(0.15, 0.3) * min(height, width)
        cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        mask = _shape_mask(shape, height, width, cy, cx, radius, rng.uniform(0, 180))
        if mask.sum() < 30:
            continue
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))   # the object's bounding box
        tex = _texture(texture, height, width, color, rng, box)
        shade = 1.0 + 0.35 * (np.mgrid[box][0] - cy) / max(radius, 1) / 3  # soft lighting
        inside = mask[box]
        image[box][inside] = (tex * shade[..., None])[inside]
        label[mask] = c
    kernel = np.ones((BOUNDARY_WIDTH, BOUNDARY_WIDTH), np.uint8)
    edges = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
    label[edges] = 255
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_synthetic_voc(output, num_train=120, num_val=30, size=(160, 160), num_classes=21, seed=0,
                       force=False, jpeg_quality=90):
    """Write ``output``/VOCdevkit/VOC2012 with JPEGImages, SegmentationClass and ImageSets lists.

    Image sizes vary between 3/4 of ``size`` and ``size`` (H, W). Returns the VOC2012 path.
    """
    if num_classes < 2 or num_classes > 255:
        raise FCNError(f"--num-classes {num_classes}: need 2..255 classes (background included)")
    if num_train < 1 or num_val < 1:
        raise FCNError("--num-train and --num-val must be at least 1")
    if min(size) < 32:
        raise FCNError(f"--size {size[0]} {size[1]}: images must be at least 32x32")
    output = Path(output)
    final = output / "VOCdevkit"
    refuse_existing(final, force)
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    looks = class_appearance(num_classes)
    staging = Path(tempfile.mkdtemp(prefix=".VOCdevkit.", dir=output))
    try:
        voc = staging / "VOC2012"
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (voc / sub).mkdir(parents=True)
        ids = [f"2026_{i:06d}" for i in range(1, num_train + num_val + 1)]
        for image_id in ids:
            h = int(rng.integers(size[0] * 3 // 4, size[0] + 1))
            w = int(rng.integers(size[1] * 3 // 4, size[1] + 1))
            image, label = synth_sample(rng, h, w, num_classes, looks)
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg.tobytes())
            (voc / "SegmentationClass" / f"{image_id}.png").write_bytes(index_png_bytes(label))
        lists = {"train": ids[:num_train], "val": ids[num_train:], "trainval": ids}
        for split, split_ids in lists.items():
            (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(split_ids) + "\n")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    get_logger().info(f"synthetic VOC: {num_train} train + {num_val} val images, {num_classes} classes, "
                      f"up to {size[0]}x{size[1]}, seed {seed} -> {final / 'VOC2012'}")
    return final / "VOC2012"
