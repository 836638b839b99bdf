"""Configuration: built-in defaults < YAML files (with ``_base_`` inheritance) < command-line overrides.

Every key is declared once, in ``KEYS``: its default, type, allowed values and help. DEFAULTS,
validation and the command line's dedicated flags (``--device``, ``--num-classes``, ...) are all
derived from that table; unknown keys and wrong types are errors that name the key, the value and
what was expected.
"""
import copy
import difflib
from dataclasses import dataclass
from pathlib import Path

import yaml

from .architecture import ARCHS
from .data.voc import default_class_names
from .errors import FCNError
from .fileio import atomic_write_text
from .kernels import SETTINGS as KERNEL_SETTINGS


@dataclass(frozen=True)
class Key:
    """One config key: ``section.name``, default, help, and what values it takes.

    ``type`` is the default's type; a key whose default is null is nullable and names its type.
    A list key's items must be of its default's first item's type (floats for ``data.mean``).
    ``flag`` is the key's own command-line option (``--device``), if it has one.
    """
    name: str
    default: object
    help: str
    type: object = None
    choices: tuple = ()
    positive: bool = False
    flag: str = None

    def __post_init__(self):
        if self.type is None:
            object.__setattr__(self, "type", type(self.default))

    @property
    def nullable(self):
        return self.default is None

    @property
    def item_type(self):
        return type(self.default[0]) if isinstance(self.default, list) and self.default else None


KEYS = {key.name: key for key in (
    Key("model.arch", "fcn8s", "the head: skips from pool3 and pool4 (fcn8s), pool4 (fcn16s) or none (fcn32s)",
        choices=ARCHS),
    Key("model.num_classes", 21, "classes, background included; with --init, --num-classes also sets "
        "train.reinit_head", positive=True, flag="--num-classes"),
    Key("model.width", 1.0, "channel multiplier; 1.0 is the paper's VGG-16 (conv6 4096 wide)", positive=True),
    Key("model.deconv_init", "bilinear", "transposed-convolution init: bilinear (the FCN paper) or xavier "
        "(the MindSpore tutorial)", choices=("bilinear", "xavier")),
    Key("model.kernels", "auto", "convolution kernels: auto (per layer group, the fastest of fcn8s's oneDNN "
        "library, channels-last or in oneDNN's layout, and MindSpore on this CPU, measured once), mindspore "
        "(MindSpore's, with cheaper gradients), onednn (the library: oneDNN channels-last and sgemm, CPU) or "
        "native (plain nn.Conv2d); see fcn8s/kernels",
        choices=KERNEL_SETTINGS),
    Key("data.train", "data/voc/mindrecord/train.mindrecord", "training MindRecord file"),
    Key("data.val", "data/voc/mindrecord/val.mindrecord", "validation MindRecord file"),
    Key("data.crop_size", 512, "training crop side in pixels", positive=True),
    Key("data.min_scale", 0.5, "smallest random training scale", positive=True),
    Key("data.max_scale", 2.0, "largest random training scale", positive=True),
    Key("data.flip", True, "random horizontal flips in training"),
    Key("data.ignore_label", 255, "label value no loss or metric counts (VOC's void)"),
    Key("data.mean", [103.53, 116.28, 123.675], "per-channel mean, BGR as cv2 decodes"),
    Key("data.std", [57.375, 57.120, 58.395], "per-channel standard deviation, BGR"),
    Key("data.num_workers", 2, "data pipeline threads", positive=True),
    Key("data.shuffle", True, "shuffle the training set every epoch"),
    Key("data.class_names", None, "class names; null: the VOC names when model.num_classes is 21, else class_<i>",
        type=list),
    Key("train.batch_size", 4, "images per step on each device", positive=True),
    Key("train.epochs", 100, "training epochs", positive=True),
    Key("train.lr", 0.05, "peak learning rate", positive=True),
    Key("train.min_lr", 0.0, "learning rate at the end of the cosine or poly schedule"),
    Key("train.lr_schedule", "cosine", "per-step learning-rate schedule", choices=("cosine", "poly", "constant")),
    Key("train.poly_power", 0.9, "exponent of the poly schedule"),
    Key("train.warmup_epochs", 0.0, "linear warm-up, in epochs"),
    Key("train.momentum", 0.9, "SGD momentum"),
    Key("train.weight_decay", 1.0e-4, "L2 weight decay"),
    Key("train.pretrained", None,
        "backbone: fcn8s_vgg16_pretrain.ckpt, an import-weights output, or a torchvision/timm vgg16_bn file",
        type=str, flag="--pretrained"),
    Key("train.init", None, "full model checkpoint to start from", type=str, flag="--init"),
    Key("train.reinit_head", False, "with train.init: re-initialise the score/upscore layers whose shape differs"),
    Key("train.resume", None, "checkpoint to continue from, or auto: the run's last.ckpt (a bare --resume)",
        type=str, flag="--resume"),
    Key("train.output_dir", "runs/voc", "where checkpoints, logs and plots go", flag="--output-dir"),
    Key("train.eval_interval", 1, "epochs between validations; 0 disables them"),
    Key("train.save_interval", 1, "epochs between periodic checkpoints", positive=True),
    Key("train.keep_checkpoint_max", 5, "periodic checkpoints kept", positive=True),
    Key("train.log_interval", 10, "steps between log lines", positive=True),
    Key("train.seed", 1, "seed of the weights, the data order and the augmentation"),
    Key("device.target", "auto", "auto tries Ascend, then GPU, then CPU", choices=("auto", "Ascend", "GPU", "CPU"),
        flag="--device"),
    Key("device.mode", "graph", "MindSpore execution mode", choices=("graph", "pynative"), flag="--mode"),
    Key("device.amp_level", "auto", "mixed precision; auto: O2 on Ascend/GPU, O0 (fp32) on CPU",
        choices=("auto", "O0", "O1", "O2", "O3")),
    Key("device.loss_scale", "auto", "loss scaling; auto: dynamic on Ascend/GPU, none on CPU",
        choices=("auto", "none", "fixed", "dynamic")),
    Key("device.loss_scale_value", 1024.0, "the fixed loss scale, or the dynamic one's start", positive=True),
    Key("eval.canvas", 512, "images are padded to canvas x canvas: one compiled shape", positive=True),
    Key("eval.scales", [1.0], "test-time scales, e.g. 0.75 1 1.25", flag="--scales"),
    Key("eval.flip", False, "add the logits of the horizontally flipped image", flag="--flip"),
    Key("eval.window", None, "sliding-window size in pixels; null: the whole image", type=int, flag="--window"),
    Key("eval.stride", None, "sliding-window stride in pixels", type=int, flag="--stride"),
    Key("eval.max_pixels", 2048 * 2048, "without eval.window, an image whose padded input would exceed this many "
        "pixels is segmented in sliding windows of eval.canvas, so the network's memory stays that of the "
        "canvas; 0: never"),
    Key("eval.max_memory", None, "GB that segmenting one image may take besides the network (its copies, logits "
        "and class map: about 90 + 4 x classes bytes a pixel); a larger image is refused, by infer before it "
        "is decoded; null: the memory the system has available", type=float, positive=True),
    Key("infer.alpha", 0.5, "opacity of the mask in the overlay", positive=True, flag="--alpha"),
    Key("infer.legend", True, "draw a legend of the classes present on the overlay"),
    Key("demo.num_train", 240, "synthetic training images `fcn8s demo` makes", positive=True),
    Key("demo.num_val", 60, "synthetic validation images", positive=True),
    Key("demo.image_size", [160, 160], "largest synthetic image (H, W)"),
    Key("demo.seed", 0, "seed of the synthetic dataset"),
    Key("demo.infer_images", 4, "validation images the demo segments", positive=True),
)}


def _defaults():
    tree = {}
    for key in KEYS.values():
        section, name = key.name.split(".", 1)
        tree.setdefault(section, {})[name] = copy.deepcopy(key.default)
    return tree


DEFAULTS = _defaults()

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


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


def resolve_config_path(name):
    """A path as given, or a bare name (``voc``, ``demo.yaml``) looked up in the configs shipped in the package."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if not path.is_absolute() and candidate.is_file():
            return candidate
    raise FCNError(f"{name}: config file not found")


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key written twice in one mapping (PyYAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FCNError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        tree = yaml.load(text, Loader=_UniqueKeyLoader)
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


# keys of earlier versions, and what replaced them
RENAMED = {"model.backbone_impl": "model.kernels", "model.conv6_impl": "model.kernels"}


def _unknown_key(key, source):
    close = difflib.get_close_matches(key, list(KEYS) + list(DEFAULTS), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    if key in RENAMED:
        hint = f" (replaced by '{RENAMED[key]}')"
    return FCNError(f"{source}: unknown key '{key}'{hint}")


def _as_type(value, expected):
    """``value`` as an ``expected`` (ints and numeric strings become floats), or None where it is not one."""
    if expected is float and isinstance(value, str):
        try:  # PyYAML reads 1e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            return None
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        return None
    return value


def _check_value(name, value, source):
    """Return ``value`` converted to the key's type, or raise FCNError naming key, value and type."""
    key = KEYS[name]
    if value is None:
        if key.nullable:
            return None
        raise FCNError(f"{source}: {name} may not be null (expected {key.type.__name__})")
    checked = _as_type(value, key.type)
    if checked is None:
        kind = key.type.__name__
        raise FCNError(f"{source}: {name} = {value!r} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    if key.item_type is not None:
        checked = [_as_type(item, key.item_type) for item in value]
        if None in checked:
            raise FCNError(f"{source}: {name} = {value!r} is not a list of {key.item_type.__name__}")
    if key.choices and checked not in key.choices:
        raise FCNError(f"{source}: {name} = {checked!r}; choose one of {', '.join(key.choices)}")
    if key.positive and checked <= 0:
        raise FCNError(f"{source}: {name} = {checked!r} must be positive")
    return checked


def _apply(tree, updates, source):
    """Validate each (dotted key, value) of ``updates`` and write it into ``tree``."""
    for key, value in updates:
        if key not in KEYS:
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
    """data.class_names, or the default names for model.num_classes."""
    names = cfg.data.class_names
    return list(names) if names is not None else default_class_names(cfg.model.num_classes)


def dump_config(cfg):
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def save_config(cfg, path):
    atomic_write_text(path, dump_config(cfg))

