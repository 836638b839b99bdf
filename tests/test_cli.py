import subprocess
import sys

import pytest

from fcn8s import __version__
from fcn8s.cli import get_args_parser, main
from fcn8s.config import KEYS

COMMANDS = ("train", "eval", "infer", "export", "convert", "synth", "download", "check-data", "demo", "bench")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fcn8s", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_command_without_loading_mindspore():
    proc = subprocess.run([sys.executable, "-c", "import sys; from fcn8s.cli import main\n"
                           "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
                           "print('mindspore' in sys.modules)"], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout
    assert proc.stdout.strip().endswith("False")


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_documents_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: fcn8s " + command in capsys.readouterr().out


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"fcn8s {__version__}"


@pytest.mark.parametrize("args, message", [
    (["train", "--config", "missing.yaml"], "fcn8s: error: missing.yaml: config file not found"),
    (["train", "--set", "train.lrr=1"], "fcn8s: error: --set: unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    (["eval", "--ckpt", "nope.ckpt", "--set", "model.width=-1"], "fcn8s: error: --set: model.width = -1.0 must be positive"),
])
def test_user_mistakes_are_one_line_and_exit_2(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip() == message
    assert "Traceback" not in proc.stdout + proc.stderr


def test_flags_map_to_config_keys():
    from fcn8s.cli import build_config
    args = get_args_parser().parse_args(["train", "--device", "CPU", "--mode", "pynative", "--resume",
                                         "--init", "a.ckpt", "--num-classes", "5", "--set", "train.lr=0.5"])
    cfg = build_config(args)
    assert (cfg.device.target, cfg.device.mode, cfg.train.resume, cfg.train.init) == ("CPU", "pynative", "auto",
                                                                                        "a.ckpt")
    assert cfg.model.num_classes == 5 and cfg.train.reinit_head is True and cfg.train.lr == 0.5
    args = get_args_parser().parse_args(["eval", "--ckpt", "m.ckpt", "--scales", "0.5", "1", "--flip", "--window",
                                         "64", "--stride", "32"])
    cfg = build_config(args)
    assert (cfg.eval.scales, cfg.eval.flip, cfg.eval.window, cfg.eval.stride) == ([0.5, 1.0], True, 64, 32)
    assert build_config(get_args_parser().parse_args(["infer", "x.jpg", "--ckpt", "m.ckpt"])).eval.flip is False
    assert build_config(get_args_parser().parse_args(["infer", "x.jpg", "--ckpt", "m.ckpt", "--alpha", "0.25"])
                        ).infer.alpha == 0.25


def test_every_declared_flag_is_offered_with_its_choices_and_help(capsys):
    helps = ""
    for command in ("train", "eval", "infer"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps += " ".join(capsys.readouterr().out.split())   # argparse wraps lines: compare word runs
    for key in (k for k in KEYS.values() if k.flag):
        assert key.flag in helps and f"{key.name}: {' '.join(key.help.split())}" in helps
        if key.choices:
            assert f"{key.flag} {{{','.join(key.choices)}}}" in helps


def test_a_bad_flag_value_is_checked_as_its_key():
    proc = run_cli("train", "--num-classes", "0")
    assert proc.returncode == 2 and proc.stderr.strip() == "fcn8s: error: --set: model.num_classes = 0 must be positive"
