"""The ``fcn8s download`` job, fcn8s/data/download.py: resources fetched from a mirror folder and unpacked, once."""
import hashlib
import re
import tarfile
from pathlib import Path

import pytest

from fcn8s.cli import main
from fcn8s.data import resources
from fcn8s.data.download import download_resources
from fcn8s.data.fetch import MIRROR_ENV
from fcn8s.data.resources import Resource
from fcn8s.errors import FCNError

WEIGHTS = bytes(range(256)) * 1200


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local mirror folder with a .tar.gz archive and a checkpoint-like file, both in a test registry."""
    root = tmp_path / "mirror"
    (root / "src" / "pack" / "sub").mkdir(parents=True)
    (root / "src" / "pack" / "a.txt").write_bytes(b"alpha")
    (root / "src" / "pack" / "sub" / "b.txt").write_bytes(b"beta")
    with tarfile.open(root / "pack.tar.gz", "w:gz") as tar:
        tar.add(root / "src" / "pack", arcname="pack")   # 4 members: pack, pack/a.txt, pack/sub, pack/sub/b.txt
    (root / "weights.ckpt").write_bytes(WEIGHTS)
    pack = (root / "pack.tar.gz").read_bytes()
    registry = (
        Resource("pack", "https://example.invalid/pack.tar.gz", "pack.tar.gz", "testgroup", "archive",
                 size=len(pack), checksum="md5:" + hashlib.md5(pack).hexdigest()),
        Resource("weights", "https://example.invalid/weights.ckpt", "weights.ckpt", "testgroup",
                 checksum="sha256:" + hashlib.sha256(WEIGHTS).hexdigest()),
    )
    monkeypatch.setattr(resources, "RESOURCES", registry)
    monkeypatch.setattr(resources, "GROUP_INCLUDES", {})
    monkeypatch.setenv(MIRROR_ENV, str(root))
    return root


def test_fresh_download_verifies_and_extracts_then_second_call_does_nothing(mirror, tmp_path, logs):
    cache = tmp_path / "cache"
    assert download_resources(["testgroup"], cache) == 0
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS
    assert (cache / "pack" / "a.txt").read_bytes() == b"alpha"
    assert (cache / "pack" / "sub" / "b.txt").read_bytes() == b"beta"
    assert sorted(p.name for p in cache.iterdir()) == [".pack.tar.gz.extracted", "pack", "pack.tar.gz",
                                                        "weights.ckpt"]  # no .part, no temp folder
    assert any(line.startswith("downloaded weights.ckpt (300.0 KiB, sha256 ok)") for line in logs)
    assert any(line.startswith("extracted pack.tar.gz (4 members") for line in logs)

    logs.clear()
    for served in ("pack.tar.gz", "weights.ckpt"):
        (mirror / served).unlink()   # a second fetch would fail
    (cache / "pack" / "a.txt").write_bytes(b"edited by the user")
    assert download_resources(["pack", "weights.ckpt"], cache) == 0
    assert (cache / "pack" / "a.txt").read_bytes() == b"edited by the user"  # not extracted again
    assert any("weights.ckpt: already present" in line for line in logs)
    assert any("pack.tar.gz: already extracted" in line for line in logs)


def test_no_extract_keeps_the_archive_packed(mirror, tmp_path):
    download_resources(["pack"], tmp_path / "cache", extract=False)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["pack.tar.gz"]


def test_unknown_name_creates_nothing(tmp_path):
    with pytest.raises(FCNError, match="unknown resource 'voc2013'"):
        download_resources(["voc2013"], tmp_path / "cache")
    assert list(tmp_path.iterdir()) == []


def test_list_prints_every_resource(capsys, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert download_resources(["tutorial"], "unused", list_only=True) == 0
    out = capsys.readouterr().out
    for resource in resources.RESOURCES:
        assert resource.name in out and resource.url in out
    assert "groups: checkpoints, imagenet, sbd, tutorial (+checkpoints), voc2012, all" in out
    assert "mirror:" not in out
    assert not Path("unused").exists()


def test_cli_download_ok_and_a_missing_file_is_one_line_exit_2(mirror, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["download", "weights", "--cache-dir", str(cache)]) == 0
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS
    capsys.readouterr()

    (mirror / "pack.tar.gz").unlink()
    assert main(["download", "pack", "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.fullmatch(r"fcn8s: error: file://\S+/pack\.tar\.gz: download failed: .*No such file.*\n", err)
