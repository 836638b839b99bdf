"""The output folder of a training run: one writer at a time, no silent overwrite, a log and
checkpoints that a crash at any moment leaves consistent.

- A lock (``.lock``, ``flock``) keeps a second training out while one runs. The kernel drops it
  when its holder dies, so a lock left by a killed run is taken over (and said so).
- A folder that holds an earlier run is refused unless the run resumes it or ``--force`` clears it.
- Checkpoints are written atomically with a CRC (``save_checkpoint``); at each epoch's end
  ``last.ckpt`` comes first, then ``best.ckpt``, then the periodic ``epoch_NNNN.ckpt``, all of
  them training checkpoints, so any one of them resumes the run exactly.
- On resume the log loses the lines past the resumed epoch, so no step is logged twice.
- An epoch's checkpoints and plots are written behind, on a thread, while the next epoch trains
  (``write_behind``; on a small network they take a tenth of an epoch): one job at a time, from
  host copies of the parameters (``checkpoint.HostCopies``), so one more copy of the training state
  (the size of ``last.ckpt``) stays alive from the first epoch's end on. A write that failed is raised
  at the next ``wait``: the next epoch's end at the latest.
"""
import concurrent.futures
import contextlib
import fcntl
import json
import os
from pathlib import Path

from .checkpoint import read_checkpoint, save_checkpoint, training_state
from .errors import FCNError
from .fileio import atomic_write_text, make_output_dir
from .log import get_logger

# What a run writes; --force removes exactly these.
RUN_FILES = ("config.yaml", "log.jsonl", "last.ckpt", "best.ckpt", "epoch_*.ckpt", "loss.png", "miou.png",
             "ranks/rank_*.json")
LOCK_NAME = ".lock"


def _epoch_of(log_line):
    """The epoch of a log line; a line cut short by a kill counts as after every epoch."""
    try:
        return json.loads(log_line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


class RunDir:
    """Where a run writes. Every method is a no-op on ranks other than 0 (``is_main`` False)."""

    def __init__(self, path, is_main=True):
        self.dir = Path(path)
        self.is_main = is_main
        self.log_path = self.dir / "log.jsonl"
        self._lock = None
        self._writer = None    # the thread of write_behind, made on first use
        self._pending = None   # the Future of its job

    def existing_files(self):
        return sorted({p for pattern in RUN_FILES for p in self.dir.glob(pattern)})

    def open(self, resume, force):
        """Lock the folder, then refuse an earlier run (unless resumed), or clear it with ``force``."""
        if not self.is_main:
            return self
        make_output_dir(self.dir)
        earlier = self.existing_files()
        if earlier and not resume and not force:   # refused before anything is written there
            self._refuse_if_locked()
            names = ", ".join(p.name for p in earlier[:4]) + (" ..." if len(earlier) > 4 else "")
            raise FCNError(f"{self.dir}: holds an earlier run ({names}); use --resume to continue it "
                           f"or --force to start a new one there")
        self._acquire_lock()
        if force and not resume:
            for path in earlier:
                path.unlink()
        # temporary files of a write that was killed (fileio.atomic_path names them .NAME.*.tmp*)
        for stale in self.dir.glob(".*.tmp*"):
            with contextlib.suppress(OSError):
                stale.unlink()
        return self

    def _locked_error(self, holder):
        return FCNError(f"{self.dir}: another training (pid {holder or '?'}) is writing into this folder; "
                        f"wait for it or choose another --output-dir")

    def _refuse_if_locked(self):
        """FCNError if a live training holds the lock; creates nothing."""
        with contextlib.suppress(FileNotFoundError), open(self.dir / LOCK_NAME, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                raise self._locked_error(handle.read().strip()) from None

    def _acquire_lock(self):
        path = self.dir / LOCK_NAME
        handle = open(path, "a+", encoding="utf-8")
        handle.seek(0)
        holder = handle.read().strip()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise self._locked_error(holder) from None
        if holder:
            get_logger().info(f"{path}: took over the lock of pid {holder}, which ended without releasing it")
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def write_behind(self, job):
        """Run ``job()`` on the writer thread, after the job before it has finished (see ``wait``)."""
        self.wait()
        if self.is_main:
            if self._writer is None:
                self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fcn8s-writer")
            self._pending = self._writer.submit(job)

    def wait(self):
        """Wait for the job of ``write_behind``; its error, if it failed, is raised here (once)."""
        pending = self._pending
        if pending is not None:
            concurrent.futures.wait([pending])   # a Ctrl-C here leaves the job pending, to be waited for again
            self._pending = None
            pending.result()

    def close(self):
        """Wait for the writer (its error is raised only by ``wait``: here another error may be on its way),
        then release the lock (the lock file stays, empty)."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = self._pending = None
        if self._lock is not None:
            self._lock.truncate(0)
            self._lock.close()
            self._lock = None

    def resume_candidates(self):
        """Training checkpoints to resume from, best first: last.ckpt, then the periodic ones, newest first."""
        return [p for p in [self.dir / "last.ckpt", *sorted(self.dir.glob("epoch_*.ckpt"), reverse=True)]
                if p.is_file()]

    def record(self, entry):
        if self.is_main:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def truncate_log(self, epoch):
        """Drop log lines of epochs after ``epoch`` (written by a run that stopped before saving them)."""
        if not self.is_main or not self.log_path.is_file():
            return
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if _epoch_of(line) <= epoch]
        if len(kept) != len(lines):
            atomic_write_text(self.log_path, "".join(line + "\n" for line in kept))

    def save(self, name, params, state):
        if self.is_main:
            save_checkpoint(params, self.dir / name, state)

    def prune(self, keep):
        if self.is_main:
            for old in sorted(self.dir.glob("epoch_*.ckpt"))[:-keep]:
                old.unlink()


def where_to_resume(folder, how, stopped="interrupted"):
    """The line a run that ``stopped`` leaves: the checkpoint in the run folder ``folder`` that ``how`` continues
    from (the last finished epoch's)."""
    for path in RunDir(folder).resume_candidates():
        try:
            epoch = training_state(read_checkpoint(path))["epoch"]
        except (FCNError, KeyError):
            continue
        return f"{stopped}; {how} continues from {path} (end of epoch {epoch})"
    return f"{stopped} before the first epoch ended; no checkpoint was written"
