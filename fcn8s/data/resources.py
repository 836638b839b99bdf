"""What ``fcn8s download`` knows how to fetch: each resource's name, URL, file, size and checksum.

A resource belongs to a group (``tutorial``, ``checkpoints``, ``voc2012``, ``sbd``, ``imagenet``);
``select_resources`` turns the names a user gives (groups, resource names, file names) into resources.
"""
from dataclasses import dataclass
from typing import Optional

from ..errors import FCNError


@dataclass(frozen=True)
class Resource:
    name: str
    url: str
    file: str
    group: str
    kind: str = "file"               # "archive" (a tar, unpacked unless --no-extract) or "file"
    size: Optional[int] = None       # bytes, None when not published
    checksum: Optional[str] = None   # "md5:<hex>" or "sha256:<hex>" (or its published prefix), None if unknown

    @property
    def checksum_algorithm(self):
        """The checksum's hash name ("md5", "sha256"), None when no checksum is known."""
        return self.checksum.split(":", 1)[0] if self.checksum else None

    @property
    def checksum_digest(self):
        """The checksum's hex digits: the whole digest, or the prefix where only that is published."""
        return self.checksum.split(":", 1)[1] if self.checksum else None

    def digest_matches(self, digest):
        """True when ``digest`` (hex) is the resource's checksum, or starts with it where only a prefix is published."""
        return digest.startswith(self.checksum_digest)


_TUTORIAL_BASE = "https://obs.dualstack.cn-north-4.myhuaweicloud.com/mindspore-website/notebook/datasets/"

# Only checksums known for certain are listed (the VOC and SBD md5s are those torchvision checks);
# the tutorial files have none published, so for them only presence is checked.
RESOURCES = (
    Resource("dataset_fcn8s", _TUTORIAL_BASE + "dataset_fcn8s.tar", "dataset_fcn8s.tar", "tutorial", "archive"),
    Resource("fcn8s_vgg16_pretrain", _TUTORIAL_BASE + "fcn8s_vgg16_pretrain.ckpt", "fcn8s_vgg16_pretrain.ckpt",
             "checkpoints"),
    Resource("FCN8s", _TUTORIAL_BASE + "FCN8s.ckpt", "FCN8s.ckpt", "checkpoints"),
    Resource("voc2012_trainval", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
             "VOCtrainval_11-May-2012.tar", "voc2012", "archive", size=1999639040,
             checksum="md5:6cd6e144f989b92b3379bac3b3de84fd"),
    Resource("sbd_benchmark",
             "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
             "benchmark.tgz", "sbd", "archive", checksum="md5:82b4d87ceb2ed10f6038a1cba92111cb"),
    # ImageNet vgg16_bn for `fcn8s import-weights`; torchvision publishes the first 8 hex digits of
    # the sha256 in the file name (and checks only those), so that prefix is what is checked here
    Resource("torchvision_vgg16_bn", "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
             "vgg16_bn-6c64b313.pth", "imagenet", checksum="sha256:6c64b313"),
)

# A group may include other groups: the tutorial needs its dataset and both checkpoints.
GROUP_INCLUDES = {"tutorial": ("checkpoints",)}


def human_size(num_bytes):
    """``num_bytes`` as the catalogue and the download log print it: B, KiB, MiB or GiB."""
    if num_bytes is None:
        return "unknown size"
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def catalogue_lines():
    """The ``fcn8s download --list`` table: one line per resource, then the groups."""
    rows = [("name", "group", "size", "checksum", "url")]
    for r in RESOURCES:
        rows.append((r.name, r.group, human_size(r.size) if r.size else "?", r.checksum_algorithm or "none", r.url))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4] for row in rows]
    groups = sorted({r.group for r in RESOURCES} | set(GROUP_INCLUDES))
    described = [g + (f" (+{', '.join(GROUP_INCLUDES[g])})" if g in GROUP_INCLUDES else "") for g in groups]
    return lines + [f"groups: {', '.join(described)}, all"]


def select_resources(names):
    """The resources named by ``names`` (groups, resource names or file names), in registry order."""
    groups = {r.group for r in RESOURCES} | set(GROUP_INCLUDES) | {"all"}
    chosen = set()
    for name in names:
        if name == "all":
            chosen.update(RESOURCES)
        elif name in groups:
            wanted = {name, *GROUP_INCLUDES.get(name, ())}
            chosen.update(r for r in RESOURCES if r.group in wanted)
        else:
            match = [r for r in RESOURCES if name in (r.name, r.file)]
            if not match:
                valid = sorted(groups) + [r.name for r in RESOURCES]
                raise FCNError(f"unknown resource '{name}' (valid names: {', '.join(valid)})")
            chosen.update(match)
    return [r for r in RESOURCES if r in chosen]
