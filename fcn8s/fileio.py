"""Atomic output: write to a temporary name in the target directory, then rename.

A crash or Ctrl-C at any moment leaves either the old file or the new one, never half of one. The
temporary names (files of ``atomic_path``, folders of ``staging_dir``) carry the writer's pid,
``.<name>.fcn8s-<pid>.<random>``, so that what a killed run left behind can be told from what a
running one is writing: ``make_output_dir`` removes the former and never touches the latter.
"""
import contextlib
import errno
import fcntl
import os
import re
import resource
import shutil
import tempfile
from pathlib import Path

from .errors import FCNError, one_line
from .log import get_logger

_UMASK = os.umask(0)
os.umask(_UMASK)

# what tempfile adds to a prefix: 8 of [a-z0-9_], then the suffix (atomic_path's start with .tmp)
_TEMPORARY = re.compile(r"^\..+\.fcn8s-(\d+)\.[a-z0-9_]{8}(\.tmp.*)?$")
# the MindRecord writer fills pages of 32 MB: a failed write with less free than this is a full disk
LOW_SPACE = 64 << 20


def refuse_existing(path, force):
    """FCNError if ``path`` exists and the user did not pass --force: outputs never silently replace files."""
    if Path(path).exists() and not force:
        raise FCNError(f"{path}: already exists (use --force to overwrite)")


def _temporary_prefix(name):
    return f".{name}.fcn8s-{os.getpid()}."


def _process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True


def remove_stale_temporaries(folder):
    """Remove the temporary files and staging folders in ``folder`` whose writer no longer runs (killed).

    Only names made by this module are considered, and only those whose pid is not a running process.
    """
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMPORARY.match(entry.name)
            if not match or _process_exists(int(match.group(1))):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def make_output_dir(path):
    """Create the output folder ``path`` (and its parents), removing what killed runs left in it (see
    remove_stale_temporaries); FCNError naming it if it cannot be made."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FCNError(f"{path}: cannot create the output folder ({exc.strerror or exc})") from None
    remove_stale_temporaries(path)


def write_error(path, exc):
    """The FCNError for a failed write of ``path``: the path and the OS's reason, one line.

    An OSError carries the reason. MindSpore's MindRecord writer does not pass it on (a full disk and a
    file size limit both read 'Failed to seekp file'), so for its RuntimeError the process's file size
    limit or the free space left says which it was, where one of them can; otherwise its own reason.
    """
    if isinstance(exc, OSError) and exc.strerror:
        return FCNError(f"{path}: cannot write ({exc.strerror})")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    free = None
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(Path(path).parent).free
    if limit != resource.RLIM_INFINITY:
        reason = f"{os.strerror(errno.EFBIG)}: the file size limit is {limit / 1e6:.1f} MB"
    elif free is not None and free < LOW_SPACE:
        reason = f"{os.strerror(errno.ENOSPC)}: {free / 1e6:.1f} MB free"
    else:   # MindSpore's own reason is its line that starts with [ERROR]; a banner and a C++ stack surround it
        line = next((line for line in str(exc).splitlines() if line.startswith("[ERROR]")), None)
        reason = one_line(line[len("[ERROR]"):] if line else exc)
    return FCNError(f"{path}: cannot write ({reason})")


@contextlib.contextmanager
def atomic_path(path, mode=None):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, with permissions ``mode``
    (default: the usual ones, 0o666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path.name), suffix=".tmp" + path.suffix, dir=path.parent)
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


@contextlib.contextmanager
def taking_turns(lock_path, waiting_message):
    """Hold an exclusive ``flock`` on ``lock_path`` (made if missing) while the block runs; when another
    process holds it, log ``waiting_message`` once and wait for it.

    For files that processes make on first use and then share (the kernel cache): the first makes them,
    the others wait and find them made, instead of making the same file at the same time.
    """
    with open(lock_path, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            get_logger().info(waiting_message)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield   # closing the file releases the lock


@contextlib.contextmanager
def staging_dir(parent, name):
    """A new hidden folder in ``parent`` for files that are moved into place only when all are complete;
    removed afterwards with whatever is left in it."""
    staging = Path(tempfile.mkdtemp(prefix=_temporary_prefix(name), dir=parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def write_output(path, data):
    """Write ``data`` (bytes or text) to ``path`` atomically; a failed write (disk full, file size limit,
    no permission) is one FCNError naming ``path`` and the reason (see write_error), and leaves no file."""
    try:
        atomic_write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as exc:
        raise write_error(path, exc) from None
