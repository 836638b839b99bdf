"""``fcn8s eval``: full-resolution evaluation of a checkpoint on a MindRecord file or a VOC root.

Every image is predicted at its original size (see predict.Predictor; the model comes from
runtime.load_model: a checkpoint, an ONNX or a MINDIR export); one confusion matrix collects all
pixels except label 255; PA / MPA / mIoU / FWIoU and the per-class table come from
metrics.segmentation_scores. Writes metrics.json and confusion_matrix.png.
"""
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .config import class_names
from .data.dataset import create_eval_dataset
from .data.transforms import decode_image
from .data.voc import BadSample, load_sample, voc_samples
from .errors import FCNError
from .fileio import make_output_dir, refuse_existing, write_error, write_output
from .log import get_logger
from .metrics import ConfusionMatrix
from .predict import Predictor
from .runtime import load_model
from .visualize import plot_confusion_matrix

SCORE_NAMES = (("pixel_accuracy", "PA"), ("mean_accuracy", "MPA"), ("mean_iou", "mIoU"), ("fw_iou", "FWIoU"))


def format_scores(scores):
    return " ".join(f"{short} {scores[key]:.4f}" for key, short in SCORE_NAMES)


def class_table(scores, names):
    lines = [f"{'class':<16}{'IoU':>8}{'acc':>8}{'pixels':>12}"]
    for name, iou, acc, pixels in zip(names, scores["iou"], scores["accuracy"], scores["pixels"]):
        lines.append(f"{name:<16}{iou:>8.4f}{acc:>8.4f}{pixels:>12}".replace("nan", "  - "))
    return "\n".join(lines)


def mindrecord_items(dataset):
    """(HxWx3 uint8 BGR image, label, name) from an eval MindDataset."""
    for image, label, name in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
        yield image, label, str(name)


def voc_items(voc_root, split, num_classes):
    """The same items read straight from a VOC folder (no MindRecord needed)."""
    for sample in voc_samples(voc_root, split):
        try:
            data, label = load_sample(sample, num_classes)
        except BadSample as exc:
            raise FCNError(str(exc)) from None
        yield decode_image(data), label, sample.id


def confusion_over_dataset(predictor, items, num_classes, limit=None, desc="eval"):
    """(confusion matrix, number of images) over (image, label, name) items, with a progress bar."""
    matrix = ConfusionMatrix(num_classes)
    count = 0
    bar = tqdm(items, desc=desc, unit="img", leave=False, disable=None, total=limit)
    for image, label, name in bar:
        if limit is not None and count >= limit:
            break
        try:
            matrix.update(predictor.predict(image), label)
        except FCNError as exc:   # an image too large for the memory there is
            raise FCNError(f"{name}: {exc}") from None
        count += 1
    bar.close()
    return matrix, count


def evaluate(cfg, ckpt, data=None, voc_root=None, split="val", output=None, limit=None, force=False):
    """Evaluate ``ckpt``; prints the scores and the per-class table, writes the report; returns the scores.

    An earlier report in the output folder is refused (before the evaluation runs) unless ``force``.
    """
    log = get_logger()
    predictor = Predictor.from_config(load_model(cfg, ckpt), cfg)
    num_classes = cfg.model.num_classes
    if voc_root:
        items, source, name = voc_items(voc_root, split, num_classes), f"{voc_root} ({split})", split
    else:
        path = Path(data or cfg.data.val)
        items, source, name = mindrecord_items(create_eval_dataset(cfg.data, path)), str(path), path.stem
    output = Path(output) if output else Path(ckpt).parent / f"eval_{name}"
    for report_file in ("metrics.json", "confusion_matrix.png"):
        refuse_existing(output / report_file, force)
    tta = f"scales {list(predictor.scales)}{', flip' if predictor.flip else ''}"
    if predictor.window:
        tta += f", window {predictor.window}/{predictor.stride}"
    elif predictor.max_pixels:
        tta += f", windows of the canvas past {predictor.max_pixels} pixels"
    log.info(f"evaluating on {source}: full resolution, canvas {predictor.canvas}, {tta}")
    start = time.time()
    matrix, count = confusion_over_dataset(predictor, items, num_classes, limit)
    seconds = time.time() - start
    scores = matrix.scores()
    names = class_names(cfg)
    print(f"{format_scores(scores)}\n{class_table(scores, names)}")

    report = {"checkpoint": str(ckpt), "data": source, "images": count, "seconds": round(seconds, 2),
              **{key: scores[key] for key, _ in SCORE_NAMES},
              "per_class": {name: {"iou": None if np.isnan(iou) else float(iou),
                                   "accuracy": None if np.isnan(acc) else float(acc), "pixels": int(pixels)}
                            for name, iou, acc, pixels in zip(names, scores["iou"], scores["accuracy"],
                                                              scores["pixels"])},
              "confusion_matrix": matrix.matrix.tolist()}
    make_output_dir(output)   # which also removes what an eval killed while writing there left
    write_output(output / "metrics.json", json.dumps(report, indent=1) + "\n")
    try:
        plot_confusion_matrix(matrix.matrix, names, output / "confusion_matrix.png")
    except OSError as exc:
        raise write_error(output / "confusion_matrix.png", exc) from None
    log.info(f"wrote {output / 'metrics.json'} and {output / 'confusion_matrix.png'} "
             f"({count} images, {count / max(seconds, 1e-9):.1f} img/s)")
    return scores
