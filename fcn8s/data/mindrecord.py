"""VOC 2012 (+ SBD) -> MindRecord: columns ``data`` (encoded image), ``label`` (8-bit index PNG), ``file_name``.

Decoding happens in the pipeline, not here. Files are written into a hidden staging folder
under their final names (a MindRecord header records its shard file names, so a file cannot be
renamed afterwards) and moved into place, with the id lists, only when every split is complete. The
staging folder of a convert that was killed is removed by the next one (fileio.make_output_dir).

Reading goes through ``resolve_mindrecord``, which checks a file before MindSpore opens it: MindSpore
takes a file cut short and fails only when it reaches the missing part, halfway through an epoch, in a
pipeline thread that prints a C++ stack. The check reads the file's header and its .db index (an SQLite
file) itself: a MindSpore dataset made before the device is set up changes how training computes.
"""
import contextlib
import json
import sqlite3
import time
from pathlib import Path

import cv2
from tqdm import tqdm

from ..errors import FCNError
from ..fileio import make_output_dir, refuse_existing, staging_dir, write_error
from ..log import get_logger
from .voc import BadSample, load_sample, split_samples

SCHEMA = {"file_name": {"type": "string"}, "data": {"type": "bytes"}, "label": {"type": "bytes"}}
WRITE_CHUNK = 64


def shard_files(path, shards):
    """The data files (without .db) that make up MindRecord ``path`` written with ``shards`` shards."""
    path = Path(path)
    return [path] if shards == 1 else [path.with_name(f"{path.name}{i}") for i in range(shards)]


def _first_file(path):
    """``x.mindrecord`` as given, or its first shard ``x.mindrecord0``; FCNError naming the path if neither."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + "0")):
        if candidate.is_file():
            return candidate
    raise FCNError(f"{path}: MindRecord file not found (make one with `fcn8s convert` or `fcn8s demo`)")


def resolve_mindrecord(path):
    """``x.mindrecord`` as given, or its first shard ``x.mindrecord0``, checked to be a whole MindRecord of
    ``fcn8s convert`` with at least one image; FCNError naming the file and what is wrong otherwise."""
    path = _first_file(path)
    check_mindrecord(path)
    return path


def _header(path):
    """The JSON header MindSpore's writer puts at the start of a MindRecord file (after its length, 8 bytes
    little-endian), or None where there is none."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= Path(path).stat().st_size - 8:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) and {"header_size", "page_size", "schema"} <= header.keys() else None


def _check_shard(path, header):
    """The number of rows of shard ``path``; FCNError unless it is as long as its header's pages say and has
    a readable .db index."""
    db = path.with_name(path.name + ".db")
    if not db.is_file():
        raise FCNError(f"{db}: missing (a MindRecord file is read through its .db index; convert again)")
    if header is None:
        raise FCNError(f"{path}: not a MindRecord file (no MindRecord header)")
    # page i lies at header_size + i * page_size; the last one is as long as it is full
    needed = max((header["header_size"] + page["page_id"] * header["page_size"] + page["page_size"]
                  for page in header.get("page") or ()), default=0)
    size = path.stat().st_size
    if size < needed:
        raise FCNError(f"{path}: truncated ({size} bytes; its pages need {needed})")
    try:   # one row of table INDEXES per record
        with contextlib.closing(sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)) as index:
            return index.execute("SELECT COUNT(*) FROM INDEXES").fetchone()[0]
    except sqlite3.Error as exc:
        raise FCNError(f"{db}: unreadable MindRecord index ({exc})") from None


def check_mindrecord(path):
    """The number of rows of MindRecord ``path`` (a file or the first shard), read from its index without
    opening a dataset; FCNError naming the file unless it is complete: every shard its header lists,
    under the name it was written with, with its .db index and all its pages; the columns of ``fcn8s
    convert``; at least one row."""
    path = Path(path)
    header = _header(path)
    names = [Path(name).name for name in (header or {}).get("shard_addresses") or [path.name]]
    if path.name not in names:
        raise FCNError(f"{path}: renamed after it was written (its header names {names[0]}); "
                       f"a MindRecord file keeps the name `fcn8s convert` gave it")
    rows = 0
    for name in names:
        shard = path.with_name(name)
        if not shard.is_file():
            raise FCNError(f"{shard}: missing (a shard of {path})")
        rows += _check_shard(shard, header if shard == path else _header(shard))
    columns = sorted(header["schema"][0].get("schema", {})) if header["schema"] else []
    if not set(SCHEMA) <= set(columns):
        raise FCNError(f"{path}: has columns {', '.join(columns) or '(none)'}, not {', '.join(SCHEMA)} "
                       f"(not a file of `fcn8s convert`)")
    if rows == 0:
        raise FCNError(f"{path}: no images")
    return rows


def mindrecord_rows(path):
    """The number of rows of ``x.mindrecord`` (or its shards), checked as resolve_mindrecord checks it."""
    return check_mindrecord(_first_file(path))


def existing_outputs(output, names=("train", "val")):
    """What a conversion into ``output`` writes that is already there: MindRecord files and id lists."""
    output = Path(output)
    patterns = ("{}.mindrecord*", "{}_ids.txt", "{}_skipped.txt")
    return sorted(p for name in names for pattern in patterns for p in output.glob(pattern.format(name)))


def _write_split(samples, path, shards, num_classes, skip_bad, desc):
    """Write one split; returns (ids written, bad-sample messages, bytes of data)."""
    from mindspore.mindrecord import FileWriter
    writer = FileWriter(str(path), shard_num=shards, overwrite=True)
    writer.add_schema(SCHEMA, "fcn8s VOC segmentation")
    rows, written, bad, nbytes = [], [], [], 0
    for sample in tqdm(samples, desc=desc, unit="img", leave=False, disable=None):
        try:
            data, label = load_sample(sample, num_classes)
        except BadSample as exc:
            if not skip_bad:
                raise FCNError(f"{exc} (use --skip-bad to skip bad samples)") from None
            bad.append(str(exc))
            continue
        png = cv2.imencode(".png", label)[1].tobytes()
        rows.append({"file_name": sample.id, "data": data, "label": png})
        written.append(sample.id)
        nbytes += len(data) + len(png)
        if len(rows) == WRITE_CHUNK:
            writer.write_raw_data(rows)
            rows = []
    if not written:
        raise FCNError(f"{desc}: no usable samples ({len(bad)} bad)")
    if len(written) < shards:
        raise FCNError(f"{desc}: {len(written)} samples cannot fill {shards} shards")
    if rows:
        writer.write_raw_data(rows)
    writer.commit()
    return written, bad, nbytes


def _is_data_file(path):
    return ".mindrecord" in path.name and path.suffix != ".db"


def convert_voc(voc_root, output, sbd_root=None, shards=1, num_classes=21, skip_bad=False, force=False):
    """Write ``output``/train.mindrecord and ``output``/val.mindrecord (plus id lists); returns 0.

    A failed write (disk full, file size limit) is an FCNError naming the file and the reason; what was
    in ``output`` before stays as it was.
    """
    if shards < 1:
        raise FCNError(f"--shards {shards}: must be at least 1")
    splits = split_samples(voc_root, sbd_root)
    output = Path(output)
    for existing in existing_outputs(output):
        refuse_existing(existing, force)
    make_output_dir(output)
    log = get_logger()
    report = {}
    with staging_dir(output, "convert") as staging:
        for name, samples in splits.items():
            start, path = time.time(), output / f"{name}.mindrecord"
            try:
                ids, bad, nbytes = _write_split(samples, staging / path.name, shards, num_classes, skip_bad,
                                                f"{name} ({len(samples)} listed)")
            except RuntimeError as exc:   # how MindSpore's writer fails (disk full, file size limit, ...)
                raise write_error(path, exc) from None
            report[name] = (ids, bad, nbytes, time.time() - start)
            for list_name, lines in ((f"{name}_ids.txt", ids), (f"{name}_skipped.txt", bad)):
                if lines:
                    try:
                        (staging / list_name).write_text("\n".join(lines) + "\n")
                    except OSError as exc:
                        raise write_error(output / list_name, exc) from None
        for old in existing_outputs(output):
            old.unlink()
        # index files and id lists first, data files last: a reader never finds a data file without its index
        for path in sorted(staging.iterdir(), key=_is_data_file):
            path.replace(output / path.name)
    source = "VOC train + SBD (trainaug)" if sbd_root else "VOC train"
    for name, (ids, bad, nbytes, seconds) in report.items():
        log.info(f"{name}: {len(ids)} images, {nbytes / 1e6:.1f} MB, {seconds:.1f} s"
                 f"{' (' + source + ')' if name == 'train' else ''} -> {shard_files(output / f'{name}.mindrecord', shards)[0]}")
        if bad:
            log.warning(f"{name}: skipped {len(bad)} bad samples, listed in {output / f'{name}_skipped.txt'}; "
                        f"first: {bad[0]}")
    return 0
