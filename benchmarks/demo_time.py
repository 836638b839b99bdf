"""Wall time and val mIoU of `fcn8s demo` from nothing, as a new user runs it; writes a results file.

The demo runs as its own process (`fcn8s demo --force`), with an empty kernel cache, so the first-use
build of the oneDNN kernels is included; the install is not. Then its best checkpoint is exported to
ONNX and evaluated by both runtimes, for the README's deployment figures:
    python benchmarks/demo_time.py [-o benchmarks/results/demo.json] [--output-dir demo_out]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fcn8s.fileio import atomic_write_text
from fcn8s.host import host_record


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="benchmarks/results/demo.json")
    parser.add_argument("--output-dir", default="demo_out", help="where the demo writes (replaced)")
    args = parser.parse_args()
    out = Path(args.output_dir)
    with tempfile.TemporaryDirectory(prefix="fcn8s-cache-") as cache:
        start = time.perf_counter()
        log = _fcn8s("demo", "--output-dir", str(out), "--force", env={**os.environ, "FCN8S_CACHE": cache})
        wall = time.perf_counter() - start
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
    result = {"host": host_record(), "demo_wall_s": round(wall, 1), "demo_eval": _report(out / "eval"),
              "eval_by_runtime": evals}
    atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
