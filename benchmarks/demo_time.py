"""Wall time and val mIoU of `fcn8s demo` from nothing, as a new user runs it; writes a results file.

The demo runs as its own process (`fcn8s demo --force`), with an empty kernel cache, so the first-use
build of the oneDNN kernels and the probe are included; the install is not. It runs ``--rounds`` times
(default 3), each from an empty cache: one run's time is one moment's speed of a shared machine,
and the probe may pick other kernels each time, which moves the mIoU. The README gives the median
and the range. Then the last run's best checkpoint is exported to ONNX and evaluated by both
runtimes, for the README's deployment figures, and the README's picture of the demo's overlays
(docs/demo_overlays.png) is made from its infer output:
    python benchmarks/demo_time.py [-o benchmarks/results/<cpu kind>/demo.json] [--output-dir demo_out] [--rounds 3]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from fcn8s.fileio import atomic_write_bytes, atomic_write_text
from fcn8s.host import cpu_kind, host_record

FIGURE = Path("docs/demo_overlays.png")


def _fcn8s(*args, env=None):
    """Run the fcn8s CLI of this interpreter; its combined output (raises if it fails)."""
    done = subprocess.run([sys.executable, "-m", "fcn8s.cli", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"fcn8s {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def _report(folder):
    report = json.loads((folder / "metrics.json").read_text())
    keys = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "images", "seconds")
    return {**{k: report[k] for k in keys}, "images_per_s": report["images"] / report["seconds"]}


def overlay_figure(folder, count=3, gap=8):
    """PNG bytes: ``count`` val images of the demo in ``folder`` (left) beside their overlays (right), stacked."""
    rows = []
    for overlay in sorted((folder / "infer").glob("*_overlay.png"))[:count]:
        image = cv2.imread(str(folder / "VOCdevkit" / "VOC2012" / "JPEGImages" / (overlay.name[:-12] + ".jpg")))
        picture = cv2.imread(str(overlay))
        height = max(image.shape[0], picture.shape[0])
        row = np.full((height, image.shape[1] + gap + picture.shape[1], 3), 255, np.uint8)
        row[:image.shape[0], :image.shape[1]] = image
        row[:picture.shape[0], image.shape[1] + gap:] = picture
        rows.append(row)
    width = max(row.shape[1] for row in rows)
    canvas = np.full((sum(row.shape[0] + gap for row in rows) - gap, width, 3), 255, np.uint8)
    top = 0
    for row in rows:
        canvas[top:top + row.shape[0], :row.shape[1]] = row
        top += row.shape[0] + gap
    return cv2.imencode(".png", canvas)[1].tobytes()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=f"benchmarks/results/{cpu_kind()}/demo.json")
    parser.add_argument("--output-dir", default="demo_out", help="where the demo writes (replaced)")
    parser.add_argument("--rounds", type=int, default=3, help="demo runs, each from an empty kernel cache")
    args = parser.parse_args()
    out = Path(args.output_dir)
    runs = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="fcn8s-cache-") as cache:
            start = time.perf_counter()
            log = _fcn8s("demo", "--output-dir", str(out), "--force", env={**os.environ, "FCN8S_CACHE": cache})
            runs.append({"wall_s": round(time.perf_counter() - start, 1), "eval": _report(out / "eval")})
        print(log[-1500:])
    onnx = out / "best.onnx"
    onnx.unlink(missing_ok=True)
    _fcn8s("export", "-c", "demo", "--ckpt", str(out / "run" / "best.ckpt"), "--format", "ONNX", "-o", str(onnx))
    evals = {}
    for name, model in (("mindspore", out / "run" / "best.ckpt"), ("onnxruntime", onnx)):
        folder = out / f"eval_{name}"
        shutil.rmtree(folder, ignore_errors=True)
        _fcn8s("eval", "-c", "demo", "--ckpt", str(model), "--data", str(out / "mindrecord" / "val.mindrecord"),
               "--output", str(folder))
        evals[name] = _report(folder)
    result = {"host": host_record(), "demo_wall_s": statistics.median(run["wall_s"] for run in runs),
              "runs": runs, "eval_by_runtime": evals}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
    atomic_write_bytes(FIGURE, overlay_figure(out))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
