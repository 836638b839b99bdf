"""``fcn8s check-data``: the dataset doctor for a VOC root or a MindRecord file.

Runs the same per-sample checks as ``convert`` (readable, 8-bit RGB, label size, label values),
plus ids listed without files, duplicates between train and val, and a class pixel histogram.
"""
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import FCNError
from .mindrecord import resolve_mindrecord
from .voc import BadSample, Sample, checked_label, default_class_names, find_voc_root, load_sample, read_id_list


class Findings:
    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.problems = []
        self.counts = Counter()          # split -> images checked
        self.bad = Counter()             # split -> bad images
        self.pixels = np.zeros(256, np.int64)
        self.images_with = np.zeros(256, np.int64)

    def add_label(self, label):
        hist = np.bincount(label.ravel(), minlength=256)
        self.pixels += hist
        self.images_with += hist > 0

    def add_problem(self, split, message):
        self.bad[split] += 1
        self.problems.append(message)


def _check_voc(root, findings):
    lists = {p.stem: read_id_list(p) for p in sorted((root / "ImageSets" / "Segmentation").glob("*.txt"))}
    if not lists:
        raise FCNError(f"{root / 'ImageSets' / 'Segmentation'}: no image-set lists (*.txt)")
    for split, ids in lists.items():
        for image_id, n in Counter(ids).items():
            if n > 1:
                findings.add_problem(split, f"{split}.txt: '{image_id}' listed {n} times")
    if "train" in lists and "val" in lists:
        for image_id in sorted(set(lists["train"]) & set(lists["val"])):
            findings.add_problem("train", f"'{image_id}' is in both train.txt and val.txt")
    checked = set()
    for split, ids in lists.items():
        for image_id in tqdm(dict.fromkeys(ids), desc=split, unit="img", leave=False, disable=None):
            findings.counts[split] += 1
            if image_id in checked:   # trainval repeats train and val: count, do not re-read
                continue
            checked.add(image_id)
            sample = Sample(image_id, root / "JPEGImages" / f"{image_id}.jpg",
                            root / "SegmentationClass" / f"{image_id}.png")
            try:
                findings.add_label(load_sample(sample, findings.num_classes)[1])
            except BadSample as exc:
                findings.add_problem(split, str(exc))


def _check_mindrecord(path, findings):
    import mindspore.dataset as ds
    path = resolve_mindrecord(path)
    try:
        dataset = ds.MindDataset(str(path), columns_list=["file_name", "data", "label"], shuffle=False)
        rows = dataset.create_dict_iterator(output_numpy=True, num_epochs=1)
    except RuntimeError as exc:
        raise FCNError(f"{path}: not a readable fcn8s MindRecord ({str(exc).strip().splitlines()[-1]})") from None
    split = path.name.split(".")[0]
    seen = Counter()
    for row in tqdm(rows, desc=split, unit="img", leave=False, disable=None):
        name = str(row["file_name"])
        seen[name] += 1
        findings.counts[split] += 1
        where = Path(f"{path}[{name}]")   # names the row in every message, for its image and its label
        try:
            findings.add_label(checked_label(row["data"].tobytes(), where, where, findings.num_classes,
                                             row["label"].tobytes()))
        except BadSample as exc:
            findings.add_problem(split, str(exc))
    for name, n in seen.items():
        if n > 1:
            findings.add_problem(split, f"{path}: '{name}' stored {n} times")


def _report(findings):
    lines = [f"{'split':<12}{'images':>8}{'bad':>6}"]
    lines += [f"{split:<12}{n:>8}{findings.bad[split]:>6}" for split, n in findings.counts.items()]
    total = findings.pixels.sum()
    names = default_class_names(findings.num_classes)
    lines += ["", f"{'class':<16}{'pixels':>12}{'share':>8}{'images':>8}"]
    for c in list(range(findings.num_classes)) + [255]:
        name = names[c] if c < findings.num_classes else "void (255)"
        share = findings.pixels[c] / total if total else 0.0
        lines.append(f"{name:<16}{findings.pixels[c]:>12}{share:>8.2%}{findings.images_with[c]:>8}")
    if findings.problems:
        lines += ["", f"{len(findings.problems)} problem(s):"] + [f"  {p}" for p in findings.problems]
    else:
        lines += ["", "no problems found"]
    return "\n".join(lines)


def check_data(path, num_classes=21):
    """Check a VOC root or a MindRecord file, print the report; returns 1 if anything is wrong, else 0."""
    findings = Findings(num_classes)
    path = Path(path)
    if ".mindrecord" in path.name:
        _check_mindrecord(path, findings)
    else:
        _check_voc(find_voc_root(path), findings)
    print(_report(findings))
    return 1 if findings.problems else 0
