"""VOC 2012 (+ SBD) -> MindRecord: columns ``data`` (encoded image), ``label`` (8-bit index PNG), ``file_name``.

Decoding happens in the pipeline, not here. Files are written into a hidden staging folder
under their final names (a MindRecord header records its shard file names, so a file cannot be
renamed afterwards) and moved into place only when every split is complete.
"""
import shutil
import tempfile
import time
from pathlib import Path

import cv2
from tqdm import tqdm

from ..errors import FCNError
from ..fileio import atomic_write_text, make_output_dir, refuse_existing
from ..log import get_logger
from .voc import BadSample, load_sample, split_samples

SCHEMA = {"file_name": {"type": "string"}, "data": {"type": "bytes"}, "label": {"type": "bytes"}}
WRITE_CHUNK = 64


def shard_files(path, shards):
    """The data files (without .db) that make up MindRecord ``path`` written with ``shards`` shards."""
    path = Path(path)
    return [path] if shards == 1 else [path.with_name(f"{path.name}{i}") for i in range(shards)]


def resolve_mindrecord(path):
    """``x.mindrecord`` as given, or its first shard ``x.mindrecord0``; FCNError naming the path if neither."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + "0")):
        if candidate.is_file():
            return candidate
    raise FCNError(f"{path}: MindRecord file not found (make one with `fcn8s convert` or `fcn8s demo`)")


def existing_outputs(output, names=("train", "val")):
    output = Path(output)
    return sorted(p for name in names for p in output.glob(f"{name}.mindrecord*"))


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


def convert_voc(voc_root, output, sbd_root=None, shards=1, num_classes=21, skip_bad=False, force=False):
    """Write ``output``/train.mindrecord and ``output``/val.mindrecord (plus id lists); returns 0."""
    if shards < 1:
        raise FCNError(f"--shards {shards}: must be at least 1")
    splits = split_samples(voc_root, sbd_root)
    output = Path(output)
    for existing in existing_outputs(output):
        refuse_existing(existing, force)
    make_output_dir(output)
    log = get_logger()
    staging = Path(tempfile.mkdtemp(prefix=".convert.", dir=output))
    try:
        report = {}
        for name, samples in splits.items():
            start = time.time()
            ids, bad, nbytes = _write_split(samples, staging / f"{name}.mindrecord", shards, num_classes,
                                            skip_bad, f"{name} ({len(samples)} listed)")
            report[name] = (ids, bad, nbytes, time.time() - start)
        for old in existing_outputs(output):
            old.unlink()
        # .db index files first, data files last: a reader never finds a data file without its index
        for path in sorted(staging.iterdir(), key=lambda p: p.suffix != ".db"):
            path.rename(output / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    source = "VOC train + SBD (trainaug)" if sbd_root else "VOC train"
    for name, (ids, bad, nbytes, seconds) in report.items():
        atomic_write_text(output / f"{name}_ids.txt", "\n".join(ids) + "\n")
        log.info(f"{name}: {len(ids)} images, {nbytes / 1e6:.1f} MB, {seconds:.1f} s"
                 f"{' (' + source + ')' if name == 'train' else ''} -> {shard_files(output / f'{name}.mindrecord', shards)[0]}")
        if bad:
            atomic_write_text(output / f"{name}_skipped.txt", "\n".join(bad) + "\n")
            log.warning(f"{name}: skipped {len(bad)} bad samples, listed in {output / f'{name}_skipped.txt'}; "
                        f"first: {bad[0]}")
    return 0
