"""Download the tutorial dataset, the published checkpoints, VOC 2012 and SBD, verified and resumable.

``fcn8s download [NAME ...]`` fetches each resource into the cache directory (``fetch.py``: resumed,
size- and checksum-checked, renamed into place whole) and unpacks tar archives there (``extract.py``:
every member checked to stay inside it).

Names are a group (``tutorial``: dataset archive + both checkpoints, ``checkpoints``,
``voc2012``, ``sbd``, ``all``) or one resource name or file name from ``resources.RESOURCES``
(``fcn8s download --list`` prints them).

Environment:
    FCN8S_DOWNLOAD_MIRROR  fetch every resource from ``<mirror>/<file name>`` instead of its
                           own URL: an ``http(s)://`` or ``file://`` base URL, or a local folder
                           that holds the files (e.g. a shared copy on a cluster without internet).
"""
from pathlib import Path

from ..errors import FCNError
from ..log import get_logger
from .extract import extract_archive
from .fetch import MIRROR_ENV, fetch_resource, mirror_base
from .resources import catalogue_lines, human_size, select_resources


def _print_catalogue():
    print("\n".join(catalogue_lines()))
    base = mirror_base()
    if base:
        print(f"mirror: {base} (from {MIRROR_ENV})")


def download_resources(names, cache_dir, extract=True, list_only=False):
    """Fetch (and unpack) the named resources into ``cache_dir``; return the exit status (0)."""
    if list_only:
        _print_catalogue()
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
                log.info(f"extracted {resource.file} ({count} members, {human_size(path.stat().st_size)}) "
                         f"into {cache_dir}")
    return 0
