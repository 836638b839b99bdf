"""Download the tutorial dataset, the published checkpoints, VOC 2012 and SBD, verified and resumable.

``fcn8s download [NAME ...]`` fetches each resource into the cache directory as ``<file>.part``
(resumed with an HTTP Range request when the server allows it), checks its size and checksum
where they are known, and only then renames it to its final name. Tar archives are unpacked
into the cache directory after every member has been checked to stay inside it.

Names are a group (``tutorial``: dataset archive + both checkpoints, ``checkpoints``,
``voc2012``, ``sbd``, ``all``) or one resource name or file name from ``RESOURCES``
(``fcn8s download --list`` prints them).

Environment:
    FCN8S_DOWNLOAD_MIRROR  fetch every resource from ``<mirror>/<file name>`` instead of its
                           own URL: an ``http(s)://`` or ``file://`` base URL, or a local folder
                           that holds the files (e.g. a shared copy on a cluster without internet).
"""
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from tqdm import tqdm

from .. import __version__
from ..errors import FCNError
from ..log import get_logger

MIRROR_ENV = "FCN8S_DOWNLOAD_MIRROR"
TIMEOUT_S = 60  # per socket operation, not for the whole file
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Resource:
    name: str
    url: str
    file: str
    group: str
    kind: str = "file"               # "archive" (a tar, unpacked unless --no-extract) or "file"
    size: Optional[int] = None       # bytes, None when not published
    checksum: Optional[str] = None   # "md5:<hex>" or "sha256:<hex>" (or its published prefix), None if unknown


_TUTORIAL_BASE = "https://obs.dualstack.cn-north-4.myhuaweicloud.com/mindspore-website/notebook/datasets/"

# Only checksums known for certain are listed (the VOC and SBD md5s are those torchvision checks);
# the tutorial files have none published, so for them only presence is checked.
RESOURCES = (
    Resource("dataset_fcn8s", _TUTORIAL_BASE + "dataset_fcn8s.tar", "dataset_fcn8s.tar", "tutorial", "archive"),
    Resource("fcn8s_vgg16_pretrain", _TUTORIAL_BASE + "fcn8s_vgg16_pretrain.ckpt", "fcn8s_vgg16_pretrain.ckpt",
             "checkpoints"),
    Resource("FCN8s", _TUTORIAL_BASE + "FCN8s.ckpt", "FCN8s.ckpt", "checkpoints"),
    Resource("voc2012_trainval", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
             "VOCtrainval_11-May-2012.tar", "voc2012", "archive", size=1999639040,
             checksum="md5:6cd6e144f989b92b3379bac3b3de84fd"),
    Resource("sbd_benchmark",
             "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
             "benchmark.tgz", "sbd", "archive", checksum="md5:82b4d87ceb2ed10f6038a1cba92111cb"),
    # ImageNet vgg16_bn for `fcn8s import-weights`; torchvision publishes the first 8 hex digits of
    # the sha256 in the file name (and checks only those), so that prefix is what is checked here
    Resource("torchvision_vgg16_bn", "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
             "vgg16_bn-6c64b313.pth", "imagenet", checksum="sha256:6c64b313"),
)

# A group may include other groups: the tutorial needs its dataset and both checkpoints.
GROUP_INCLUDES = {"tutorial": ("checkpoints",)}


def _human_size(num_bytes):
    if num_bytes is None:
        return "unknown size"
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def _one_line(reason):
    return " ".join(str(reason).split()) or type(reason).__name__


def select_resources(names):
    """The resources named by ``names`` (groups, resource names or file names), in registry order."""
    groups = {r.group for r in RESOURCES} | set(GROUP_INCLUDES) | {"all"}
    chosen = set()
    for name in names:
        if name == "all":
            chosen.update(RESOURCES)
        elif name in groups:
            wanted = {name, *GROUP_INCLUDES.get(name, ())}
            chosen.update(r for r in RESOURCES if r.group in wanted)
        else:
            match = [r for r in RESOURCES if name in (r.name, r.file)]
            if not match:
                valid = sorted(groups) + [r.name for r in RESOURCES]
                raise FCNError(f"unknown resource '{name}' (valid names: {', '.join(valid)})")
            chosen.update(match)
    return [r for r in RESOURCES if r in chosen]


def _mirror_base():
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return None
    if "://" not in mirror:  # a local folder
        return Path(mirror).expanduser().resolve().as_uri()
    return mirror.rstrip("/")


def resource_url(resource):
    """The URL a resource is fetched from: its own, or ``$FCN8S_DOWNLOAD_MIRROR/<file>``."""
    base = _mirror_base()
    return resource.url if base is None else f"{base}/{urllib.parse.quote(resource.file)}"


def _new_hasher(resource):
    return hashlib.new(resource.checksum.split(":", 1)[0]) if resource.checksum else None


def hash_file(hasher, path):
    """``hasher`` updated with the bytes of ``path``, read in chunks (checkpoints and archives are large)."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            hasher.update(chunk)
    return hasher


def _file_digest(path, resource):
    return hash_file(_new_hasher(resource), path).hexdigest()


def _digest_matches(digest, resource):
    """True when ``digest`` (hex) is the resource's checksum, or starts with it where only a prefix is published."""
    return digest.startswith(resource.checksum.split(":", 1)[1])


def _checksum_note(resource):
    return f"{resource.checksum.split(':')[0]} ok" if resource.checksum else "no known checksum"


def _is_present(path, resource):
    """True when ``path`` exists and matches the known checksum (any content when none is known)."""
    if not path.is_file():
        return False
    if resource.size is not None and path.stat().st_size != resource.size:
        return False
    return resource.checksum is None or _digest_matches(_file_digest(path, resource), resource)


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
            raise FCNError(f"{url}: HTTP {exc.code} {_one_line(exc.reason)}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise FCNError(f"{url}: download failed: {_one_line(getattr(exc, 'reason', exc))}") from None
        status = getattr(response, "status", None)  # None for file:// URLs
        if offset and status == 206 and _range_start(response) == offset:
            log.info(f"resuming {resource.file} at {_human_size(offset)}")
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
            raise FCNError(f"{url}: download interrupted after {_human_size(received)}: "
                           f"{_one_line(getattr(exc, 'reason', exc))} (run again to resume)") from None
    if length and length.isdigit() and received < expected:
        raise FCNError(f"{url}: connection closed after {received} of {expected} bytes (run again to resume)")
    return hasher.hexdigest() if hasher else None


def fetch_resource(resource, cache_dir):
    """Make ``cache_dir/<file>`` a verified copy of ``resource``; return its path."""
    log = get_logger()
    final = Path(cache_dir) / resource.file
    if _is_present(final, resource):
        log.info(f"{resource.file}: already present ({_human_size(final.stat().st_size)}, "
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
    if resource.checksum:
        algo, want = resource.checksum.split(":", 1)
        if not _digest_matches(digest, resource):
            part.unlink()
            raise FCNError(f"{final}: {algo} mismatch: expected {want}, got {digest} (from {url})")
    os.replace(part, final)
    log.info(f"downloaded {resource.file} ({_human_size(size)}, {_checksum_note(resource)}) to {final}")
    return final


def _member_problem(member, root):
    """Why extracting ``member`` under the absolute, resolved ``root`` would be unsafe, or None.

    The same rules as Python 3.12's ``tarfile.data_filter``, checked for every member before
    anything is written, so a bad archive leaves nothing behind.
    """
    name = member.name
    if name.startswith(("/", "\\")) or os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "'..' in path"
    dest = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, dest]) != root:
        return "path outside the target folder"
    if member.issym() or member.islnk():
        link = member.linkname
        if link.startswith(("/", "\\")) or os.path.isabs(link):
            return f"link to absolute path '{link}'"
        base = os.path.dirname(dest) if member.issym() else root  # hard links are relative to the archive root
        if os.path.commonpath([root, os.path.realpath(os.path.join(base, link))]) != root:
            return f"link to '{link}' outside the target folder"
    elif not (member.isfile() or member.isdir()):
        return "device file or fifo"
    return None


def _sanitised(member):
    # What data_filter does to modes, for Pythons without it: no setuid/setgid/sticky, no group/other write.
    if member.mode is not None:
        member.mode &= 0o755 if member.isdir() or member.mode & 0o100 else 0o644
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def _move_into(src, dest):
    """Rename ``src`` onto ``dest``, merging folders that already exist (e.g. a shared VOCdevkit)."""
    if src.is_dir() and not src.is_symlink() and dest.is_dir() and not dest.is_symlink():
        for child in src.iterdir():
            _move_into(child, dest / child.name)
    elif dest.is_dir() and not dest.is_symlink():
        raise FCNError(f"{dest}: is a folder, but the archive has a file there")
    else:
        os.replace(src, dest)


def extract_archive(archive, target_dir):
    """Unpack a tar (plain, gz, bz2, xz) into ``target_dir``, once; return the number of members.

    Every member is checked first; an unsafe one (absolute path, '..', link or path leaving the
    folder, device file) is an FCNError and nothing is extracted. Members are unpacked into a
    temporary folder inside ``target_dir`` and then renamed into place, and a marker file
    ``.<archive>.extracted`` makes the next call a no-op.
    """
    archive, target_dir = Path(archive), Path(target_dir)
    marker = target_dir / f".{archive.name}.extracted"
    if marker.exists():
        return None
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extracting", dir=target_dir))
            root = os.path.realpath(tmp)
            for member in members:
                problem = _member_problem(member, root)
                if problem:
                    raise FCNError(f"{archive}: refusing to extract member '{member.name}': {problem}")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.12, and 3.8-3.11 security releases
                tar.extractall(tmp, members=members, filter="data")
            else:
                tar.extractall(tmp, members=[_sanitised(m) for m in members])
        for child in sorted(tmp.iterdir()):
            _move_into(child, target_dir / child.name)
    except FCNError:
        raise
    except getattr(tarfile, "FilterError", ()) as exc:
        raise FCNError(f"{archive}: refusing to extract member '{exc.tarinfo.name}': {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise FCNError(f"{archive}: cannot extract (corrupt or truncated archive?): {_one_line(exc)}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(f"{archive.name}: {len(members)} members\n")
    return len(members)


def _print_table():
    rows = [("name", "group", "size", "checksum", "url")]
    for r in RESOURCES:
        rows.append((r.name, r.group, _human_size(r.size) if r.size else "?",
                     r.checksum.split(":")[0] if r.checksum else "none", r.url))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    groups = sorted({r.group for r in RESOURCES} | set(GROUP_INCLUDES))
    described = [g + (f" (+{', '.join(GROUP_INCLUDES[g])})" if g in GROUP_INCLUDES else "") for g in groups]
    print(f"groups: {', '.join(described)}, all")
    base = _mirror_base()
    if base:
        print(f"mirror: {base} (from {MIRROR_ENV})")


def download_resources(names, cache_dir, extract=True, list_only=False):
    """Fetch (and unpack) the named resources into ``cache_dir``; return the exit status (0)."""
    if list_only:
        _print_table()
        return 0
    resources = select_resources(names or ["tutorial"])
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FCNError(f"{cache_dir}: cannot create the cache folder: {exc.strerror}") from None
    log = get_logger()
    for resource in resources:
        path = fetch_resource(resource, cache_dir)
        if extract and resource.kind == "archive":
            count = extract_archive(path, cache_dir)
            if count is None:
                log.info(f"{resource.file}: already extracted into {cache_dir}")
            else:
                log.info(f"extracted {resource.file} ({count} members, {_human_size(path.stat().st_size)}) "
                         f"into {cache_dir}")
    return 0
