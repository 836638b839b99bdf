"""Safe tar extraction, fcn8s/data/extract.py: unsafe members refused before anything is written, once per archive."""
import io
import tarfile

import pytest

from fcn8s.data.extract import extract_archive
from fcn8s.errors import FCNError


def _tar_bytes(entries, mode="w:gz"):
    """entries: (TarInfo, bytes or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file_entry(name, data):
    return tarfile.TarInfo(name), data


def _symlink(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _fifo(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info, None


def test_extracts_once_and_merges_into_existing_folders(tmp_path):
    cache = tmp_path / "cache"
    (cache / "pack").mkdir(parents=True)
    (cache / "pack" / "mine.txt").write_bytes(b"kept")
    archive = cache / "pack.tar.gz"
    archive.write_bytes(_tar_bytes([_file_entry("pack/a.txt", b"alpha"), _file_entry("pack/sub/b.txt", b"beta")]))
    assert extract_archive(archive, cache) == 2
    assert (cache / "pack" / "a.txt").read_bytes() == b"alpha"
    assert (cache / "pack" / "sub" / "b.txt").read_bytes() == b"beta"
    assert (cache / "pack" / "mine.txt").read_bytes() == b"kept"
    assert sorted(p.name for p in cache.iterdir()) == [".pack.tar.gz.extracted", "pack", "pack.tar.gz"]

    (cache / "pack" / "a.txt").write_bytes(b"edited by the user")
    assert extract_archive(archive, cache) is None
    assert (cache / "pack" / "a.txt").read_bytes() == b"edited by the user"  # not extracted again


@pytest.mark.parametrize("bad, member", [
    (lambda tmp: _file_entry("../evil.txt", b"x"), "../evil.txt"),
    (lambda tmp: _file_entry("pack/../../evil.txt", b"x"), "pack/../../evil.txt"),
    (lambda tmp: _file_entry(str(tmp / "abs_evil.txt"), b"x"), "abs_evil.txt"),
    (lambda tmp: _symlink("passwd", "/etc/passwd"), "passwd"),
    (lambda tmp: _symlink("pack/up", "../../.."), "pack/up"),
    (lambda tmp: _symlink("hard", "../outside", tarfile.LNKTYPE), "hard"),
    (lambda tmp: _fifo("pipe"), "pipe"),
])
def test_unsafe_archive_is_refused_and_nothing_is_extracted(bad, member, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    archive = cache / "bad.tar"
    archive.write_bytes(_tar_bytes([_file_entry("ok.txt", b"fine"), bad(tmp_path), _file_entry("zz.txt", b"fine")],
                                  mode="w"))
    with pytest.raises(FCNError, match="refusing to extract member") as err:
        extract_archive(archive, cache)
    assert "bad.tar" in str(err.value) and member in str(err.value)
    assert [p.name for p in cache.iterdir()] == ["bad.tar"]  # no ok.txt, temp folder or marker
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_corrupt_archive_names_the_archive(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    good = _tar_bytes([_file_entry("a.txt", b"x" * 4000)])
    archive = cache / "broken.tgz"
    archive.write_bytes(good[: len(good) // 2])
    with pytest.raises(FCNError, match=r"broken\.tgz: cannot extract"):
        extract_archive(archive, cache)
    assert [p.name for p in cache.iterdir()] == ["broken.tgz"]
