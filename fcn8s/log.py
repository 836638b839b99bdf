"""One logger for the package: plain one-line messages, printed by rank 0 only."""
import logging
import os
import sys

_LOGGER = logging.getLogger("fcn8s")


_RANK = None


def set_rank(rank):
    """Called once communication is initialised: only rank 0 logs below WARNING."""
    global _RANK
    _RANK = rank
    _LOGGER.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def rank_id():
    """This process's rank (0 when not distributed)."""
    if _RANK is not None:
        return _RANK
    for var in ("RANK_ID", "OMPI_COMM_WORLD_RANK", "RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time (pytest's capture, tqdm's redirection)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def get_logger():
    if not _LOGGER.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("[fcn8s] %(message)s"))
        _LOGGER.addHandler(handler)
        _LOGGER.propagate = False
        _LOGGER.setLevel(logging.INFO if rank_id() == 0 else logging.WARNING)
    return _LOGGER
