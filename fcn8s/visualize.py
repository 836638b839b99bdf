"""The VOC colour palette, colour masks, overlays and index PNGs: the pictures users look at."""
import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .fileio import atomic_path


def voc_palette(num_colors=256):
    """The standard VOC colour map as a (num_colors, 3) uint8 array (class 1 = (128, 0, 0), 255 = (224, 224, 192))."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for c in range(num_colors):
        label, r, g, b = c, 0, 0, 0
        for j in range(8):
            r |= ((label >> 0) & 1) << (7 - j)
            g |= ((label >> 1) & 1) << (7 - j)
            b |= ((label >> 2) & 1) << (7 - j)
            label >>= 3
        palette[c] = (r, g, b)
    return palette


_PALETTE = voc_palette()


def colorize(index_map):
    """RGB uint8 image of a class-index map (H, W)."""
    return _PALETTE[np.asarray(index_map, dtype=np.uint8)]


def overlay(image_rgb, index_map, alpha=0.5, ignore_index=255):
    """Blend the colour mask over an RGB image; background (0) and ``ignore_index`` pixels stay as they are."""
    image = np.asarray(image_rgb, dtype=np.float32)
    mask = colorize(index_map).astype(np.float32)
    blend = (1 - alpha) * image + alpha * mask
    keep = np.isin(index_map, (0, ignore_index))[..., None]
    return np.where(keep, image, blend).round().clip(0, 255).astype(np.uint8)


def index_png_bytes(index_map):
    """An 8-bit palette PNG of class indices: coloured in any viewer, exact indices with Pillow."""
    index_map = np.ascontiguousarray(index_map, dtype=np.uint8)
    image = Image.frombytes("P", index_map.shape[::-1], index_map.tobytes())
    image.putpalette(_PALETTE.tobytes())  # without a palette Pillow 13 loses the indices on save
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _save_figure(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _figure(figsize):
    """A figure and its axes, without pyplot: no global state, so the training curves can be drawn on the
    writer thread of a run (rundir.RunDir.write_behind) while the main thread goes on."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def plot_confusion_matrix(matrix, names, path):
    """Row-normalised confusion matrix (rows = truth) with class names, as a PNG."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    n = len(names)
    fig, ax = _figure((2 + 0.45 * n, 1.5 + 0.45 * n))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if normalised[i, j] >= 0.01:
                    ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (row-normalised)")
    _save_figure(fig, path)


def plot_training_curves(log_path, output_dir):
    """loss.png (training loss per logged step) and miou.png (val mIoU per validation) from log.jsonl.

    Drawn while training appends to the log: a last line without its newline is still being written.
    """
    steps, losses, epochs, mious = [], [], [], []
    for line in Path(log_path).read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            continue
        entry = json.loads(line)
        if "loss" in entry:
            steps.append(entry["step"])
            losses.append(entry["loss"])
        if "val" in entry:
            epochs.append(entry["epoch"])
            mious.append(entry["val"]["mean_iou"])
    for name, x, y, xlabel, ylabel in (("loss.png", steps, losses, "step", "training loss"),
                                       ("miou.png", epochs, mious, "epoch", "val mIoU")):
        if not x:
            continue
        fig, ax = _figure((6, 3.5))
        ax.plot(x, y, marker="o" if len(x) < 30 else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _save_figure(fig, Path(output_dir) / name)


def add_legend(image_rgb, index_map, names, ignore_index=255):
    """The image with a white panel on its right listing the classes present, each with its colour."""
    present = [c for c in np.unique(index_map) if c != ignore_index and c < len(names)]
    row, pad = 18, 6
    width = 24 + 8 * max((len(names[c]) for c in present), default=4) + 2 * pad
    panel = np.full((max(image_rgb.shape[0], row * len(present) + 2 * pad), width, 3), 255, np.uint8)
    for i, c in enumerate(present):
        top = pad + i * row
        panel[top:top + row - 4, pad:pad + 14] = _PALETTE[c]
        cv2.putText(panel, names[c], (pad + 20, top + row - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    canvas = np.full((panel.shape[0], image_rgb.shape[1] + width, 3), 255, np.uint8)
    canvas[:image_rgb.shape[0], :image_rgb.shape[1]] = image_rgb
    canvas[:, image_rgb.shape[1]:] = panel
    return canvas


def png_bytes(image_rgb):
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
