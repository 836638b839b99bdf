"""The VOC colour palette, colour masks, overlays and index PNGs: the pictures users look at."""
import io

import numpy as np
from PIL import Image


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


def read_index_png(path_or_bytes):
    """Class indices of a palette (or grayscale) PNG, read with Pillow so palette indices stay indices."""
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(source) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"label image mode {image.mode}: expected a palette (P) or 8-bit gray (L) PNG")
        return np.array(image)
