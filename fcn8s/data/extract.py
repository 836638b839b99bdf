"""Unpack a downloaded tar archive safely: every member checked before anything is written, once per archive.

A member with an absolute path, '..', a link or path leaving the target folder, or a device file is
refused (the rules of Python 3.12's ``tarfile.data_filter``) and nothing is extracted.
"""
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import FCNError, one_line


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
    ``.<archive>.extracted`` makes the next call a no-op (it returns None).
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
        raise FCNError(f"{archive}: cannot extract (corrupt or truncated archive?): {one_line(exc)}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(f"{archive.name}: {len(members)} members\n")
    return len(members)
