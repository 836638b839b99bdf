"""Fetching one resource, fcn8s/data/fetch.py, from a loopback HTTP server: checksums, resume, errors, mirrors."""
import hashlib
import http.server
import re
import threading

import pytest

from fcn8s.data import fetch
from fcn8s.data.fetch import fetch_resource
from fcn8s.data.resources import Resource
from fcn8s.errors import FCNError

WEIGHTS = bytes(range(256)) * 1200  # 300 KiB: a partial file is a real prefix


def _weights(checksum="sha256:" + hashlib.sha256(WEIGHTS).hexdigest()):
    return Resource("weights", "https://example.invalid/weights.ckpt", "weights.ckpt", "g", checksum=checksum)


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
    """The mirror every resource is fetched from, serving weights.ckpt."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "weights.ckpt").write_bytes(WEIGHTS)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    srv.root, srv.requests, srv.honour_range = root, [], True
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    monkeypatch.setenv(fetch.MIRROR_ENV, f"http://127.0.0.1:{srv.server_address[1]}")
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path):
    path = tmp_path / "cache"
    path.mkdir()
    return path


def test_fresh_download_is_verified_then_a_second_call_fetches_nothing(server, cache, logs):
    assert fetch_resource(_weights(), cache) == cache / "weights.ckpt"
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS
    assert [p.name for p in cache.iterdir()] == ["weights.ckpt"]  # no .part
    assert any(line.startswith("downloaded weights.ckpt (300.0 KiB, sha256 ok)") for line in logs)
    seen = len(server.requests)
    fetch_resource(_weights(), cache)
    assert len(server.requests) == seen
    assert any("weights.ckpt: already present" in line for line in logs)


def test_resume_sends_range_and_is_byte_exact(server, cache, logs):
    (cache / "weights.ckpt.part").write_bytes(WEIGHTS[:100_000])
    fetch_resource(_weights(), cache)
    assert server.requests == [("/weights.ckpt", "bytes=100000-")]
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS
    assert not (cache / "weights.ckpt.part").exists()
    assert any("resuming weights.ckpt" in line for line in logs)


def test_complete_part_file_is_finished_without_refetching(server, cache):
    (cache / "weights.ckpt.part").write_bytes(WEIGHTS)
    fetch_resource(_weights(), cache)  # the server answers 416 with the full size
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS


def test_server_ignoring_range_restarts_from_zero(server, cache):
    server.honour_range = False
    (cache / "weights.ckpt.part").write_bytes(b"\xff" * 5000)  # wrong bytes: appending would corrupt
    fetch_resource(_weights(), cache)
    assert server.requests[0][1] == "bytes=5000-"
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS


def test_stale_final_file_is_downloaded_again(server, cache):
    (cache / "weights.ckpt").write_bytes(b"not the weights")
    fetch_resource(_weights(), cache)
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS


def test_checksum_mismatch_names_file_and_both_digests(server, cache):
    wrong = "0" * 32
    with pytest.raises(FCNError) as err:
        fetch_resource(_weights("md5:" + wrong), cache)
    message = str(err.value)
    assert "weights.ckpt" in message and wrong in message and hashlib.md5(WEIGHTS).hexdigest() in message
    assert list(cache.iterdir()) == []  # neither the final file nor the .part


def test_published_checksum_prefix_is_checked(server, tmp_path):
    """torchvision publishes only the first 8 hex digits of a file's sha256 (in its name)."""
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    for prefix, ok in ((digest[:8], True), (f"{int(digest[:8], 16) ^ 1:08x}", False)):
        cache = tmp_path / prefix
        cache.mkdir()
        if ok:
            fetch_resource(_weights("sha256:" + prefix), cache)
            assert (cache / "weights.ckpt").read_bytes() == WEIGHTS
        else:
            with pytest.raises(FCNError, match=f"sha256 mismatch: expected {prefix}, got {digest}"):
                fetch_resource(_weights("sha256:" + prefix), cache)
            assert list(cache.iterdir()) == []


def test_http_404_names_the_url_and_keeps_nothing_half_done(server, cache):
    (server.root / "weights.ckpt").unlink()
    with pytest.raises(FCNError) as err:
        fetch_resource(_weights(), cache)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/weights\.ckpt: HTTP 404 Not Found", str(err.value))
    assert not (cache / "weights.ckpt").exists()


def test_timeout_is_a_one_line_error(server, cache, monkeypatch):
    monkeypatch.setattr(fetch, "TIMEOUT_S", 0.2)
    server.RequestHandlerClass = type("Slow", (_RangeHandler,), {
        "do_GET": lambda self: threading.Event().wait(0.6),
        "handle_error": lambda *a: None})
    server.handle_error = lambda *a: None
    with pytest.raises(FCNError, match=r"weights\.ckpt: download failed: timed out"):
        fetch_resource(_weights(), cache)


def test_local_folder_mirror_needs_no_server(server, cache, monkeypatch):
    monkeypatch.setenv(fetch.MIRROR_ENV, str(server.root))
    fetch_resource(_weights(), cache)
    assert (cache / "weights.ckpt").read_bytes() == WEIGHTS
    assert server.requests == []
