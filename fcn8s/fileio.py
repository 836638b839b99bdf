"""Atomic output: write to a temporary name in the target directory, then rename.

A crash or Ctrl-C at any moment leaves either the old file or the new one, never half of one.
"""
import contextlib
import os
import tempfile
from pathlib import Path

from .errors import FCNError

_UMASK = os.umask(0)
os.umask(_UMASK)


def refuse_existing(path, force):
    """FCNError if ``path`` exists and the user did not pass --force: outputs never silently replace files."""
    if Path(path).exists() and not force:
        raise FCNError(f"{path}: already exists (use --force to overwrite)")


def make_output_dir(path):
    """Create the output folder ``path`` (and its parents); FCNError naming it if that is impossible."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FCNError(f"{path}: cannot create the output folder ({exc.strerror or exc})") from None


@contextlib.contextmanager
def atomic_path(path, mode=None):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, with permissions ``mode``
    (default: the usual ones, 0o666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes 0600 and MindSpore writes checkpoints 0400: outputs get the usual permissions
        os.chmod(tmp, 0o666 & ~_UMASK if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))

