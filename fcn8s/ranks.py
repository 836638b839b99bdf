"""Proof that data-parallel ranks trained one model on disjoint data.

At the end of a run with several workers every rank writes ``ranks/rank_<r>.json`` in the output
folder: the rows of the training set it read in each epoch, and the sha256 of its trainable
parameters. Rank 0 waits for the others' files and checks that no row was read by two ranks in one
epoch and that all digests are its own (gradients are averaged every step, so the weights must be
identical); it logs one line, or stops with an FCNError naming the rank that disagrees. BatchNorm's
moving statistics are not compared: each rank updates them from its own batches (no synchronised
BatchNorm), and the checkpoints keep rank 0's.
"""
import hashlib
import json
import time

from .errors import FCNError
from .fileio import atomic_write_text
from .log import get_logger

WAIT_S = 120   # for the other ranks to finish their last step and write their file


def parameters_sha256(params):
    digest = hashlib.sha256()
    for p in sorted(params, key=lambda p: p.name):
        digest.update(p.name.encode())
        digest.update(p.asnumpy().tobytes())
    return digest.hexdigest()


def record_and_compare(output_dir, rank, group_size, rows_by_epoch, params):
    """Write this rank's record; on rank 0 compare all of them (see the module docstring)."""
    folder = output_dir / "ranks"
    folder.mkdir(exist_ok=True)
    own = {"rank": rank, "rows": {str(e): [int(r) for r in rows] for e, rows in rows_by_epoch.items()},
           "sha256": parameters_sha256(params)}
    atomic_write_text(folder / f"rank_{rank}.json", json.dumps(own) + "\n")
    if rank != 0:
        return
    records, deadline = {0: own}, time.time() + WAIT_S
    while len(records) < group_size:
        for other in range(1, group_size):
            path = folder / f"rank_{other}.json"
            if other not in records and path.is_file():
                records[other] = json.loads(path.read_text())
        if len(records) < group_size:
            if time.time() > deadline:
                missing = sorted(set(range(group_size)) - set(records))
                raise FCNError(f"{folder}: no record from rank(s) {missing} within {WAIT_S} s")
            time.sleep(0.5)
    for epoch in own["rows"]:
        seen = {}
        for other, record in records.items():
            for row in record["rows"].get(epoch, []):
                if row in seen:
                    raise FCNError(f"epoch {epoch}: training row {row} was read by ranks {seen[row]} and {other}")
                seen[row] = other
    differ = [other for other, record in records.items() if record["sha256"] != own["sha256"]]
    if differ:
        raise FCNError(f"data parallel: the trained weights of rank(s) {differ} differ from rank 0's")
    get_logger().info(f"data parallel: {group_size} ranks read disjoint rows and end with identical trained weights "
                      f"(sha256 {own['sha256'][:16]})")
