"""Fetch one resource over HTTP(S) or ``file://``: resumable, size- and checksum-verified, renamed into place whole.

The file is written as ``<file>.part`` (resumed with an HTTP Range request when the server allows it),
checked against the size and checksum the catalogue (``resources.py``) knows, and only then renamed
to its final name. ``$FCN8S_DOWNLOAD_MIRROR`` replaces every resource's own URL by ``<mirror>/<file>``.
"""
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .. import __version__
from ..errors import FCNError, one_line
from ..log import get_logger
from .resources import human_size

MIRROR_ENV = "FCN8S_DOWNLOAD_MIRROR"
TIMEOUT_S = 60  # per socket operation, not for the whole file
CHUNK_BYTES = 1 << 20


def mirror_base():
    """``$FCN8S_DOWNLOAD_MIRROR`` as a base URL (a local folder becomes a ``file://`` URL), None when unset."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return None
    if "://" not in mirror:  # a local folder
        return Path(mirror).expanduser().resolve().as_uri()
    return mirror.rstrip("/")


def resource_url(resource):
    """The URL a resource is fetched from: its own, or ``$FCN8S_DOWNLOAD_MIRROR/<file>``."""
    base = mirror_base()
    return resource.url if base is None else f"{base}/{urllib.parse.quote(resource.file)}"


def _new_hasher(resource):
    return hashlib.new(resource.checksum_algorithm) if resource.checksum else None


def hash_file(hasher, path):
    """``hasher`` updated with the bytes of ``path``, read in chunks (checkpoints and archives are large)."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            hasher.update(chunk)
    return hasher


def _file_digest(path, resource):
    return hash_file(_new_hasher(resource), path).hexdigest()


def _checksum_note(resource):
    return f"{resource.checksum_algorithm} ok" if resource.checksum else "no known checksum"


def _is_present(path, resource):
    """True when ``path`` exists and matches the known checksum (any content when none is known)."""
    if not path.is_file():
        return False
    if resource.size is not None and path.stat().st_size != resource.size:
        return False
    return resource.checksum is None or resource.digest_matches(_file_digest(path, resource))


def _open(url, offset):
    request = urllib.request.Request(url, headers={"User-Agent": f"fcn8s/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def _range_start(response):
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _stream(url, part, resource):
    """Fetch ``url`` into ``part`` (resuming what is there); return the hex digest or None."""
    log = get_logger()
    offset = part.stat().st_size if part.exists() else 0
    if resource.size is not None and offset > resource.size:
        offset = 0
    while True:
        try:
            response = _open(url, offset)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing after `offset`: the part may already be whole
                total = re.search(r"/(\d+)", exc.headers.get("Content-Range", "") or "")
                if total and int(total.group(1)) == offset:
                    return _file_digest(part, resource) if resource.checksum else None
                offset = 0
                continue
            raise FCNError(f"{url}: HTTP {exc.code} {one_line(exc.reason)}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise FCNError(f"{url}: download failed: {one_line(getattr(exc, 'reason', exc))}") from None
        status = getattr(response, "status", None)  # None for file:// URLs
        if offset and status == 206 and _range_start(response) == offset:
            log.info(f"resuming {resource.file} at {human_size(offset)}")
        elif offset:
            log.info(f"{resource.file}: {url} does not resume downloads; starting again from zero")
            offset = 0
        break
    hasher = _new_hasher(resource)
    if hasher and offset:
        hash_file(hasher, part)
    length = response.headers.get("Content-Length")
    expected = offset + int(length) if length and length.isdigit() else resource.size
    received = offset
    with response, open(part, "ab" if offset else "wb") as out, \
            tqdm(total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=resource.file, disable=None, leave=False) as bar:
        try:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(chunk)
                if hasher:
                    hasher.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise FCNError(f"{url}: download interrupted after {human_size(received)}: "
                           f"{one_line(getattr(exc, 'reason', exc))} (run again to resume)") from None
    if length and length.isdigit() and received < expected:
        raise FCNError(f"{url}: connection closed after {received} of {expected} bytes (run again to resume)")
    return hasher.hexdigest() if hasher else None


def fetch_resource(resource, cache_dir):
    """Make ``cache_dir/<file>`` a verified copy of ``resource``; return its path."""
    log = get_logger()
    final = Path(cache_dir) / resource.file
    if _is_present(final, resource):
        log.info(f"{resource.file}: already present ({human_size(final.stat().st_size)}, "
                 f"{_checksum_note(resource)})")
        return final
    if final.exists():
        log.info(f"{resource.file}: size or checksum differs from the registry; downloading again")
    url = resource_url(resource)
    part = final.with_name(final.name + ".part")
    digest = _stream(url, part, resource)
    size = part.stat().st_size
    if resource.size is not None and size != resource.size:
        part.unlink()
        raise FCNError(f"{final}: size mismatch: expected {resource.size} bytes, got {size} (from {url})")
    if resource.checksum and not resource.digest_matches(digest):
        part.unlink()
        raise FCNError(f"{final}: {resource.checksum_algorithm} mismatch: expected {resource.checksum_digest}, "
                       f"got {digest} (from {url})")
    os.replace(part, final)
    log.info(f"downloaded {resource.file} ({human_size(size)}, {_checksum_note(resource)}) to {final}")
    return final
