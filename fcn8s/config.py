"""Configuration: built-in defaults < YAML files (with ``_base_`` inheritance) < command-line overrides.

This module is the one place defaults live. Every key is typed by its default (or by
``NULLABLE`` when the default is ``null``); unknown keys and wrong types are errors that
name the key, the value and what was expected.
"""
import copy
import difflib
from pathlib import Path

import yaml

from .errors import FCNError
from .fileio import atomic_write_text

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

DEFAULTS = {
    "model": {
        "arch": "fcn8s",            # fcn8s | fcn16s | fcn32s
        "num_classes": 21,
        "width": 1.0,               # channel multiplier; 1.0 is the paper's VGG16 (conv6 = 4096)
        "deconv_init": "bilinear",  # bilinear (FCN paper) | xavier (the MindSpore tutorial)
        "conv6_impl": "fast",       # fast (matmul weight gradient) | native (nn.Conv2d)
        "backbone_impl": "auto",    # auto (onednn on CPU where it builds, else fast) | onednn (oneDNN channels-last
                                    # kernels, CPU) | fast (conv1-conv3: flipped-kernel input gradient) | native
    },
    "data": {
        "train": "data/voc/mindrecord/train.mindrecord",
        "val": "data/voc/mindrecord/val.mindrecord",
        "crop_size": 512,
        "min_scale": 0.5,
        "max_scale": 2.0,
        "flip": True,
        "ignore_label": 255,
        "mean": [103.53, 116.28, 123.675],  # BGR, as cv2 decodes
        "std": [57.375, 57.120, 58.395],
        "num_workers": 2,
        "shuffle": True,
        "class_names": None,       # null: the VOC names when num_classes is 21, else class_<i>
    },
    "train": {
        "batch_size": 4,
        "epochs": 100,
        "lr": 0.05,
        "min_lr": 0.0,
        "lr_schedule": "cosine",   # cosine | poly | constant
        "poly_power": 0.9,
        "warmup_epochs": 0.0,
        "momentum": 0.9,
        "weight_decay": 1.0e-4,
        "pretrained": None,        # backbone checkpoint (fcn8s_vgg16_pretrain.ckpt format)
        "init": None,              # full model checkpoint to start from
        "reinit_head": False,      # with init: re-initialise score/upscore layers whose shape differs
        "resume": None,            # "auto" (the run's last.ckpt if any) or a checkpoint path
        "output_dir": "runs/voc",
        "eval_interval": 1,        # epochs between validations; 0 disables
        "save_interval": 1,        # epochs between periodic checkpoints
        "keep_checkpoint_max": 5,
        "log_interval": 10,        # steps between log lines
        "seed": 1,
    },
    "device": {
        "target": "auto",          # auto (Ascend, then GPU, then CPU) | Ascend | GPU | CPU
        "mode": "graph",           # graph | pynative
        "amp_level": "auto",       # auto | O0 | O1 | O2 | O3
        "loss_scale": "auto",      # auto | none | fixed | dynamic
        "loss_scale_value": 1024.0,
    },
    "eval": {
        "canvas": 512,             # images are padded to canvas x canvas (one compiled shape)
        "scales": [1.0],
        "flip": False,
        "window": None,            # sliding-window size; null = whole image
        "stride": None,
    },
    "infer": {
        "alpha": 0.5,
        "legend": True,
    },
    "demo": {                      # the synthetic dataset `fcn8s demo` makes
        "num_train": 240,
        "num_val": 60,
        "image_size": [160, 160],
        "seed": 0,
        "infer_images": 4,
    },
}

NULLABLE = {
    "data.class_names": list,
    "train.pretrained": str,
    "train.init": str,
    "train.resume": str,
    "eval.window": int,
    "eval.stride": int,
}

CHOICES = {
    "model.arch": ("fcn8s", "fcn16s", "fcn32s"),
    "model.deconv_init": ("bilinear", "xavier"),
    "model.conv6_impl": ("fast", "native"),
    "model.backbone_impl": ("auto", "onednn", "fast", "native"),
    "train.lr_schedule": ("cosine", "poly", "constant"),
    "device.target": ("auto", "Ascend", "GPU", "CPU"),
    "device.mode": ("graph", "pynative"),
    "device.amp_level": ("auto", "O0", "O1", "O2", "O3"),
    "device.loss_scale": ("auto", "none", "fixed", "dynamic"),
}

POSITIVE = (
    "model.num_classes", "model.width", "data.crop_size", "data.num_workers", "data.min_scale", "data.max_scale",
    "train.batch_size", "train.epochs", "train.lr", "train.log_interval", "train.save_interval",
    "train.keep_checkpoint_max", "device.loss_scale_value", "eval.canvas", "infer.alpha",
    "demo.num_train", "demo.num_val", "demo.infer_images",
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class Config(dict):
    """A nested dict whose keys read as attributes: ``cfg.train.lr``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self):
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}


def _to_config(tree):
    return Config({k: _to_config(v) if isinstance(v, dict) else v for k, v in tree.items()})


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


LEAF_KEYS = dict(_flatten(DEFAULTS))


def resolve_config_path(name):
    """A path as given, or a bare name (``voc``, ``demo.yaml``) looked up in the shipped configs/."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if not path.is_absolute() and candidate.is_file():
            return candidate
    raise FCNError(f"{name}: config file not found")


def _read_yaml(path):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FCNError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise FCNError(f"{path}: invalid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise FCNError(f"{path}: a config must be a mapping of sections, got {type(tree).__name__}")
    return tree


def _deep_merge(base, override):
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_yaml_tree(path, _seen=()):
    """Read one YAML config, merging its ``_base_`` file(s) (paths relative to it) underneath."""
    path = Path(path).resolve()
    if path in _seen:
        raise FCNError(f"{path}: _base_ inheritance loops back to this file")
    tree = _read_yaml(path)
    bases = tree.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise FCNError(f"{path}: _base_ must be a file name or a list of file names")
    merged = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise FCNError(f"{path}: _base_ file {base_path} not found")
        merged = _deep_merge(merged, load_yaml_tree(base_path, _seen + (path,)))
    return _deep_merge(merged, tree)


def parse_override(text):
    """``train.lr=0.01`` -> ("train.lr", 0.01); the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise FCNError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=0.01")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _unknown_key(key, source):
    close = difflib.get_close_matches(key, list(LEAF_KEYS) + list(DEFAULTS), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return FCNError(f"{source}: unknown key '{key}'{hint}")


def _check_value(key, value, source):
    """Return ``value`` converted to the key's type, or raise FCNError naming key, value and type."""
    default = LEAF_KEYS[key]
    expected = NULLABLE.get(key, type(default))
    if value is None:
        if key in NULLABLE:
            return None
        raise FCNError(f"{source}: {key} may not be null (expected {expected.__name__})")
    if expected is float and isinstance(value, str):
        try:  # PyYAML reads 1e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    if ok and expected is list and isinstance(default, list):
        if default and all(isinstance(d, float) for d in default):
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            value = [float(v) for v in value] if ok else value
    if not ok:
        raise FCNError(f"{source}: {key} = {value!r} is not a {expected.__name__}")
    if key in CHOICES and value not in CHOICES[key]:
        raise FCNError(f"{source}: {key} = {value!r}; choose one of {', '.join(CHOICES[key])}")
    if key in POSITIVE and value <= 0:
        raise FCNError(f"{source}: {key} = {value!r} must be positive")
    return value


def _apply(tree, updates, source):
    """Validate each (dotted key, value) of ``updates`` and write it into ``tree``."""
    for key, value in updates:
        if key not in LEAF_KEYS:
            raise _unknown_key(key, source)
        section, name = key.split(".", 1)
        tree[section][name] = _check_value(key, value, source)


def _check_consistency(cfg, source):
    if cfg["data"]["min_scale"] > cfg["data"]["max_scale"]:
        raise FCNError(f"{source}: data.min_scale ({cfg['data']['min_scale']}) is above "
                       f"data.max_scale ({cfg['data']['max_scale']})")
    for key in ("mean", "std"):
        if len(cfg["data"][key]) != 3:
            raise FCNError(f"{source}: data.{key} needs 3 values (B, G, R), got {cfg['data'][key]}")
    if not 0 <= cfg["data"]["ignore_label"] <= 255:
        raise FCNError(f"{source}: data.ignore_label must be in 0..255")
    if cfg["model"]["num_classes"] > cfg["data"]["ignore_label"]:
        raise FCNError(f"{source}: model.num_classes ({cfg['model']['num_classes']}) must be below "
                       f"data.ignore_label ({cfg['data']['ignore_label']})")
    names = cfg["data"]["class_names"]
    if names is not None and len(names) != cfg["model"]["num_classes"]:
        raise FCNError(f"{source}: data.class_names has {len(names)} names for "
                       f"model.num_classes = {cfg['model']['num_classes']}")


def load_config(path=None, overrides=()):
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` (KEY=VALUE strings)."""
    tree = copy.deepcopy(DEFAULTS)
    source = "defaults"
    if path is not None:
        source = str(resolve_config_path(path))
        user = load_yaml_tree(source)
        flat = []
        for section, values in user.items():
            if section not in DEFAULTS:
                raise _unknown_key(section, source)
            if not isinstance(values, dict):
                raise FCNError(f"{source}: section '{section}' must be a mapping")
            flat.extend((f"{section}.{k}", v) for k, v in values.items())
        _apply(tree, flat, source)
    _apply(tree, [parse_override(o) if isinstance(o, str) else o for o in overrides], "--set")
    _check_consistency(tree, source)
    return _to_config(tree)


def class_names(cfg):
    names = cfg.data.class_names
    if names is not None:
        return list(names)
    if cfg.model.num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class_{i}" for i in range(cfg.model.num_classes)]


def dump_config(cfg):
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def save_config(cfg, path):
    atomic_write_text(path, dump_config(cfg))

