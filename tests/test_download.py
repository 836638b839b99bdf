"""fcn8s download against a loopback HTTP server: checksums, resume, safe extraction, CLI errors."""
import hashlib
import http.server
import io
import logging
import re
import tarfile
import threading
from pathlib import Path

import pytest

from fcn8s.cli import main
from fcn8s.data import download
from fcn8s.data.download import Resource, download_resources
from fcn8s.errors import FCNError
from fcn8s.log import get_logger

WEIGHTS = bytes(range(256)) * 1200  # 300 KiB: a partial file is a real prefix


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.root; honours ``Range: bytes=N-`` unless server.honour_range is False."""

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        path = srv.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    root = tmp_path / "www"
    root.mkdir()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    srv.root, srv.requests, srv.honour_range = root, [], True
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{srv.server_address[1]}")
    yield srv
    srv.shutdown()
    srv.server_close()


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


def _md5(data):
    return "md5:" + hashlib.md5(data).hexdigest()


@pytest.fixture
def resources(server, monkeypatch):
    """A test registry: a .tar.gz archive and a checkpoint-like file, both served, with checksums."""
    pack = _tar_bytes([_file_entry("pack/a.txt", b"alpha"), _file_entry("pack/sub/b.txt", b"beta")])
    (server.root / "pack.tar.gz").write_bytes(pack)
    (server.root / "weights.ckpt").write_bytes(WEIGHTS)
    registry = (
        Resource("pack", "https://example.invalid/pack.tar.gz", "pack.tar.gz", "testgroup", "archive",
                 size=len(pack), checksum=_md5(pack)),
        Resource("weights", "https://example.invalid/weights.ckpt", "weights.ckpt", "testgroup",
                 checksum="sha256:" + hashlib.sha256(WEIGHTS).hexdigest()),
    )
    monkeypatch.setattr(download, "RESOURCES", registry)
    monkeypatch.setattr(download, "GROUP_INCLUDES", {})
    return registry


def _set_registry(monkeypatch, *registry):
    monkeypatch.setattr(download, "RESOURCES", registry)
    monkeypatch.setattr(download, "GROUP_INCLUDES", {})


@pytest.fixture
def logs():
    """The package's log lines (its logger does not propagate, so caplog cannot see them)."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = get_logger()
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def test_fresh_download_verifies_and_extracts_then_second_call_does_nothing(resources, server, tmp_path, logs):
    cache = tmp_path / "cache"
    assert download_resources(["testgroup"], cache) == 0
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS
    assert (cache / "pack" / "a.txt").read_bytes() == b"alpha"
    assert (cache / "pack" / "sub" / "b.txt").read_bytes() == b"beta"
    assert sorted(p.name for p in cache.iterdir()) == [".pack.tar.gz.extracted", "pack", "pack.tar.gz",
                                                        "weights.ckpt"]  # no .part, no temp folder
    assert any(line.startswith("downloaded weights.ckpt (300.0 KiB, sha256 ok)") for line in logs)
    assert any(line.startswith("extracted pack.tar.gz (2 members") for line in logs)

    seen = len(server.requests)
    logs.clear()
    (cache / "pack" / "a.txt").write_bytes(b"edited by the user")
    assert download_resources(["pack", "weights.ckpt"], cache) == 0
    assert len(server.requests) == seen
    assert (cache / "pack" / "a.txt").read_bytes() == b"edited by the user"  # not extracted again
    assert any("weights.ckpt: already present" in line for line in logs)
    assert any("pack.tar.gz: already extracted" in line for line in logs)


def test_resume_sends_range_and_is_byte_exact(resources, server, tmp_path, logs):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "weights.ckpt.part").write_bytes(WEIGHTS[:100_000])
    download_resources(["weights"], cache)
    assert server.requests == [("/weights.ckpt", "bytes=100000-")]
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS
    assert not (cache / "weights.ckpt.part").exists()
    assert any("resuming weights.ckpt" in line for line in logs)


def test_complete_part_file_is_finished_without_refetching(resources, server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "weights.ckpt.part").write_bytes(WEIGHTS)
    download_resources(["weights"], cache)  # the server answers 416 with the full size
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS


def test_server_ignoring_range_restarts_from_zero(resources, server, tmp_path):
    server.honour_range = False
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "weights.ckpt.part").write_bytes(b"\xff" * 5000)  # wrong bytes: appending would corrupt
    download_resources(["weights"], cache)
    assert server.requests[0][1] == "bytes=5000-"
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS


def test_stale_final_file_is_downloaded_again(resources, server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "weights.ckpt").write_bytes(b"not the weights")
    download_resources(["weights"], cache)
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS


def test_checksum_mismatch_names_file_and_both_digests(server, tmp_path, monkeypatch):
    (server.root / "weights.ckpt").write_bytes(WEIGHTS)
    wrong = "0" * 32
    _set_registry(monkeypatch, Resource("weights", "https://example.invalid/w", "weights.ckpt", "g",
                                        checksum="md5:" + wrong))
    cache = tmp_path / "cache"
    with pytest.raises(FCNError) as err:
        download_resources(["weights"], cache)
    message = str(err.value)
    assert "weights.ckpt" in message and wrong in message and hashlib.md5(WEIGHTS).hexdigest() in message
    assert list(cache.iterdir()) == []  # neither the final file nor the .part


def test_published_checksum_prefix_is_checked(server, tmp_path, monkeypatch):
    """torchvision publishes only the first 8 hex digits of a file's sha256 (in its name)."""
    (server.root / "weights.ckpt").write_bytes(WEIGHTS)
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    for prefix, ok in ((digest[:8], True), (f"{int(digest[:8], 16) ^ 1:08x}", False)):
        _set_registry(monkeypatch, Resource("weights", "https://example.invalid/w", "weights.ckpt", "g",
                                            checksum="sha256:" + prefix))
        cache = tmp_path / prefix
        if ok:
            assert download_resources(["weights"], cache) == 0
            assert (cache / "weights.ckpt").read_bytes() == WEIGHTS
        else:
            with pytest.raises(FCNError, match=f"sha256 mismatch: expected {prefix}, got {digest}"):
                download_resources(["weights"], cache)
            assert list(cache.iterdir()) == []


def test_http_404_names_the_url_and_keeps_nothing_half_done(resources, server, tmp_path):
    (server.root / "weights.ckpt").unlink()
    with pytest.raises(FCNError, match=r"http://127\.0\.0\.1:\d+/weights\.ckpt: HTTP 404") as err:
        download_resources(["weights"], tmp_path / "cache")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "weights.ckpt").exists()


def test_timeout_is_a_one_line_error(resources, server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "TIMEOUT_S", 0.2)
    server.RequestHandlerClass = type("Slow", (_RangeHandler,), {
        "do_GET": lambda self: threading.Event().wait(0.6),
        "handle_error": lambda *a: None})
    server.handle_error = lambda *a: None
    with pytest.raises(FCNError, match=r"weights\.ckpt: download failed: timed out"):
        download_resources(["weights"], tmp_path / "cache")


def test_local_folder_mirror_needs_no_server(resources, server, tmp_path, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, str(server.root))
    download_resources(["weights"], tmp_path / "cache")
    assert (tmp_path / "cache" / "weights.ckpt").read_bytes() == WEIGHTS
    assert server.requests == []


def _symlink(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _fifo(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info, None


@pytest.mark.parametrize("bad, member", [
    (lambda tmp: _file_entry("../evil.txt", b"x"), "../evil.txt"),
    (lambda tmp: _file_entry("pack/../../evil.txt", b"x"), "pack/../../evil.txt"),
    (lambda tmp: _file_entry(str(tmp / "abs_evil.txt"), b"x"), "abs_evil.txt"),
    (lambda tmp: _symlink("passwd", "/etc/passwd"), "passwd"),
    (lambda tmp: _symlink("pack/up", "../../.."), "pack/up"),
    (lambda tmp: _symlink("hard", "../outside", tarfile.LNKTYPE), "hard"),
    (lambda tmp: _fifo("pipe"), "pipe"),
])
def test_unsafe_archive_is_refused_and_nothing_is_extracted(bad, member, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    archive = _tar_bytes([_file_entry("ok.txt", b"fine"), bad(tmp_path), _file_entry("zz.txt", b"fine")],
                         mode="w")
    (cache / "bad.tar").write_bytes(archive)
    _set_registry(monkeypatch, Resource("bad", "https://example.invalid/bad.tar", "bad.tar", "g", "archive"))
    with pytest.raises(FCNError, match="refusing to extract member") as err:
        download_resources(["bad"], cache)
    assert "bad.tar" in str(err.value) and member in str(err.value)
    assert [p.name for p in cache.iterdir()] == ["bad.tar"]  # no ok.txt, temp folder or marker
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_corrupt_archive_names_the_archive(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    good = _tar_bytes([_file_entry("a.txt", b"x" * 4000)])
    (cache / "broken.tgz").write_bytes(good[: len(good) // 2])
    _set_registry(monkeypatch, Resource("broken", "https://example.invalid/b.tgz", "broken.tgz", "g", "archive"))
    with pytest.raises(FCNError, match=r"broken\.tgz: cannot extract"):
        download_resources(["broken"], cache)
    assert [p.name for p in cache.iterdir()] == ["broken.tgz"]


def test_no_extract_keeps_the_archive_packed(resources, server, tmp_path):
    download_resources(["pack"], tmp_path / "cache", extract=False)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["pack.tar.gz"]


def test_unknown_name_lists_the_valid_names(tmp_path):
    with pytest.raises(FCNError) as err:
        download_resources(["voc2013"], tmp_path)
    message = str(err.value)
    assert "'voc2013'" in message
    for name in ("tutorial", "checkpoints", "voc2012", "sbd", "all", "FCN8s"):
        assert name in message
    assert list(tmp_path.iterdir()) == []


def test_groups_select_the_published_resources():
    def files(*names):
        return [r.file for r in download.select_resources(names)]
    assert files("tutorial") == ["dataset_fcn8s.tar", "fcn8s_vgg16_pretrain.ckpt", "FCN8s.ckpt"]
    assert files("checkpoints") == ["fcn8s_vgg16_pretrain.ckpt", "FCN8s.ckpt"]
    assert files("voc2012", "sbd") == ["VOCtrainval_11-May-2012.tar", "benchmark.tgz"]
    assert files("imagenet") == ["vgg16_bn-6c64b313.pth"]
    assert files("all") == [r.file for r in download.RESOURCES] and len(files("all")) == 6
    assert files("FCN8s.ckpt", "checkpoints") == ["fcn8s_vgg16_pretrain.ckpt", "FCN8s.ckpt"]
    voc = download.select_resources(["voc2012"])[0]
    assert (voc.size, voc.checksum) == (1999639040, "md5:6cd6e144f989b92b3379bac3b3de84fd")


def test_list_prints_every_resource(capsys, monkeypatch):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    assert download_resources(["tutorial"], "unused", list_only=True) == 0
    out = capsys.readouterr().out
    for resource in download.RESOURCES:
        assert resource.name in out and resource.url in out
    assert "groups: checkpoints, imagenet, sbd, tutorial (+checkpoints), voc2012, all" in out
    assert not Path("unused").exists()


def test_cli_download_ok_and_404_is_one_line_exit_2(resources, server, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["download", "weights", "--cache-dir", str(cache)]) == 0
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS
    capsys.readouterr()

    (server.root / "pack.tar.gz").unlink()
    assert main(["download", "pack", "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.fullmatch(r"fcn8s: error: http://127\.0\.0\.1:\d+/pack\.tar\.gz: HTTP 404 Not Found\n", err)
