"""Every case of the bad-input corpus (tests/bad_inputs.py): non-zero exit, one line, no traceback, no file."""
import pytest

from fcn8s.cli import main
from bad_inputs import CASES   # tests/ is on sys.path (pytest's rootdir-relative conftest import)


@pytest.mark.parametrize("name, setup", CASES, ids=[name for name, _ in CASES])
def test_a_bad_input_is_one_line_and_leaves_nothing(name, setup, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = setup(tmp_path)
    made_by_setup = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("fcn8s: error: ") and "Traceback" not in err, err
    assert sorted(tmp_path.rglob("*")) == made_by_setup, f"{name} left files: {set(tmp_path.rglob('*')) - set(made_by_setup)}"
