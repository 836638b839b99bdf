from pathlib import Path

import pytest
import yaml

import fcn8s
from fcn8s.config import CONFIG_DIR, DEFAULTS, KEYS, class_names, dump_config, load_config
from fcn8s.errors import FCNError


def _write(path, tree):
    path.write_text(yaml.safe_dump(tree) if not isinstance(tree, str) else tree)
    return path


def test_defaults_without_a_file():
    cfg = load_config()
    assert cfg.train.lr == 0.05 and cfg.model.arch == "fcn8s"
    assert cfg.to_dict() == DEFAULTS


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
def test_every_shipped_config_loads(name):
    cfg = load_config(CONFIG_DIR / name)
    assert cfg.model.num_classes >= 2


def test_configs_ship_in_the_package_and_the_checkout_path_still_works():
    assert CONFIG_DIR == Path(fcn8s.__file__).resolve().parent / "configs"
    checkout = Path(__file__).resolve().parent.parent / "configs" / "voc.yaml"
    assert load_config(checkout).to_dict() == load_config("voc").to_dict()


@pytest.mark.parametrize("key", KEYS.values(), ids=list(KEYS))
def test_every_declared_default_passes_its_own_checks(key):
    cfg = load_config(None, [(key.name, key.default)])
    section, name = key.name.split(".", 1)
    assert cfg[section][name] == key.default == DEFAULTS[section][name]
    assert key.help and key.type is not type(None)   # a null default must name its type


def test_voc_recipe_is_the_tutorials():
    cfg = load_config("voc")
    assert (cfg.train.batch_size, cfg.data.crop_size, cfg.train.lr, cfg.train.momentum) == (4, 512, 0.05, 0.9)
    assert cfg.train.weight_decay == pytest.approx(1e-4)
    assert cfg.data.mean == [103.53, 116.28, 123.675] and cfg.data.std == [57.375, 57.120, 58.395]
    assert (cfg.data.min_scale, cfg.data.max_scale, cfg.data.ignore_label) == (0.5, 2.0, 255)


def test_base_inheritance_and_override_order(tmp_path):
    (tmp_path / "_base_").mkdir()
    _write(tmp_path / "_base_" / "a.yaml", {"train": {"lr": 0.1, "epochs": 3}, "model": {"width": 0.5}})
    _write(tmp_path / "_base_" / "b.yaml", {"_base_": "a.yaml", "train": {"epochs": 7}})
    path = _write(tmp_path / "child.yaml", {"_base_": ["_base_/b.yaml"], "train": {"batch_size": 2}})
    cfg = load_config(path, ["train.lr=0.01"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size, cfg.model.width) == (0.01, 7, 2, 0.5)
    assert cfg.train.momentum == 0.9  # untouched default


def test_override_values_are_typed():
    cfg = load_config(None, ["train.weight_decay=1e-4", "data.mean=[1, 2, 3]", "train.resume=null",
                             "eval.flip=true", "model.width=1", "eval.scales=[1, 2]"])
    assert cfg.train.weight_decay == pytest.approx(1e-4) and isinstance(cfg.train.weight_decay, float)
    assert cfg.eval.scales == [1.0, 2.0] and all(isinstance(s, float) for s in cfg.eval.scales)
    assert cfg.data.mean == [1.0, 2.0, 3.0] and cfg.eval.flip is True and cfg.model.width == 1.0


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    cfg = load_config(_write(tmp_path / "c.yaml", "train:\n  weight_decay: 1e-4\n"))
    assert cfg.train.weight_decay == pytest.approx(1e-4)


@pytest.mark.parametrize("override, message", [
    ("train.lrr=0.1", "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    ("model.backbone_impl=fast", "unknown key 'model.backbone_impl' (replaced by 'model.kernels')"),
    ("model.kernels=fast", "model.kernels = 'fast'; choose one of auto, mindspore, onednn, native"),
    ("train.lr=fast", "train.lr = 'fast' is not a float"),
    ("train.batch_size=2.5", "train.batch_size = 2.5 is not an int"),
    ("data.shuffle=1", "data.shuffle = 1 is not a bool"),
    ("model.arch=fcn4s", "model.arch = 'fcn4s'; choose one of fcn8s, fcn16s, fcn32s"),
    ("train.batch_size=0", "train.batch_size = 0 must be positive"),
    ("train.lr=null", "train.lr may not be null"),
    ("lr", "expected KEY=VALUE"),
    ("data.mean=[1, 2]", "data.mean needs 3 values"),
    ("data.mean=[1, 2, x]", "data.mean = [1, 2, 'x'] is not a list of float"),
    ("demo.image_size=[160, 1.5]", "demo.image_size = [160, 1.5] is not a list of int"),
    ("eval.window=1.5", "eval.window = 1.5 is not an int"),
    ("data.min_scale=3", "data.min_scale (3.0) is above data.max_scale (2.0)"),
])
def test_bad_overrides_name_key_value_and_expectation(override, message):
    with pytest.raises(FCNError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FCNError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = _write(tmp_path / "bad.yaml", "train:\n  lr: [0.1\n")
    with pytest.raises(FCNError, match=r"bad.yaml: invalid YAML at line \d"):
        load_config(bad)
    unknown = _write(tmp_path / "unknown.yaml", {"trian": {"lr": 1.0}})
    with pytest.raises(FCNError, match=r"unknown.yaml: unknown key 'trian' \(did you mean 'train'\?\)"):
        load_config(unknown)
    loop = _write(tmp_path / "loop.yaml", {"_base_": "loop.yaml"})
    with pytest.raises(FCNError, match="loops back"):
        load_config(loop)
    scalar = _write(tmp_path / "scalar.yaml", "42\n")
    with pytest.raises(FCNError, match="must be a mapping"):
        load_config(scalar)
    listed = _write(tmp_path / "list.yaml", "- train\n- lr\n")
    with pytest.raises(FCNError, match="list.yaml: a config must be a mapping of sections, got list"):
        load_config(listed)
    twice = _write(tmp_path / "twice.yaml", "train:\n  lr: 0.1\n  epochs: 3\n  lr: 0.2\n")
    with pytest.raises(FCNError, match=r"twice.yaml: invalid YAML at line 4: duplicate key 'lr'"):
        load_config(twice)
    empty = _write(tmp_path / "empty.yaml", "")
    assert load_config(empty).to_dict() == load_config(None).to_dict()   # an empty file sets nothing


def test_dump_round_trips(tmp_path):
    cfg = load_config("voc", ["train.lr=0.02"])
    path = _write(tmp_path / "saved.yaml", dump_config(cfg))
    assert load_config(path).to_dict() == cfg.to_dict()


def test_class_names():
    assert class_names(load_config())[15] == "person"
    assert class_names(load_config(None, ["model.num_classes=3"])) == ["class_0", "class_1", "class_2"]
    assert class_names(load_config(None, ["model.num_classes=2", "data.class_names=[sky, sea]"])) == ["sky", "sea"]
