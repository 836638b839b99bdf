import subprocess
import sys

import pytest

from fcn8s import __version__
from fcn8s.cli import get_args_parser, main

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
