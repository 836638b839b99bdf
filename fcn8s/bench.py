"""``fcn8s bench``: train-step, inference and data-pipeline speed and peak memory, side by side.

Each measurement runs in a fresh subprocess (``python -m fcn8s.bench_worker SPEC``) so peak RSS and
threads are its own: our FCN ("fcn8s"), our FCN on MindSpore's own convolution kernels
("ms-kernels": model.kernels mindspore instead of the oneDNN custom ops), the tutorial's
definition ("seed"), our network with oneDNN's default ISA ("isa-default": ONEDNN_MAX_CPU_ISA=ALL,
which fcn8s leaves to oneDNN instead of capping MindSpore's at AVX2), and the PyTorch twin
(``python -m fcn8s.torch_twin``; needs PyTorch, which fcn8s does not install) in NCHW ("torch") and in
channels_last memory ("torch-channels-last", what a PyTorch user tuning for CPU would try). The PyTorch rows run as a
user runs PyTorch: in this process's environment (importing fcn8s changes none of it), with torch
imported first, after a check that the twin gives our logits. Warm-up calls (graph compilation
included) are excluded; the median of the timed repetitions is reported. With ``--rounds N`` every
implementation is measured N times, in turn with the others (fcn8s, torch, ..., fcn8s, torch, ...),
each time in a fresh process, and a row pools the rounds' times: on a machine whose speed drifts
between minutes, each side then sees the same drift, which one process per side would not. Each
model row is a ``bench_worker.Row``.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .bench_worker import Row, model_and_step
from .errors import FCNError
from .fileio import atomic_write_text, refuse_existing
from .host import host_record, matmul_peak
from .kernels import describe as describe_kernels
from .log import get_logger

MODEL_IMPLS = ("fcn8s", "ms-kernels", "seed", "isa-default", "torch", "torch-channels-last", "onnxruntime")
INFER_ONLY = ("onnxruntime",)
TORCH_IMPLS = ("torch", "torch-channels-last")
# run as modules (`python -m`), so an installed fcn8s finds them as well as a checkout
WORKER = "fcn8s.bench_worker"
TORCH_TWIN = "fcn8s.torch_twin"
# the largest |twin logit - our logit| accepted, as a fraction of our largest |logit|
TWIN_TOLERANCE = 1e-3


def _user_environment():
    """The environment for a measuring subprocess: os.environ, not the C environment it would inherit.

    Importing MindSpore setenv()s OMP_NUM_THREADS=1 in the C environment (os.environ does not see it);
    a child inheriting that would run PyTorch's OpenMP kernels, and ours (they follow OMP_NUM_THREADS), on
    one thread.
    """
    return dict(os.environ)


def _twin_command(impl, width):
    """The PyTorch twin's command line for ``impl`` at ``width``; the caller appends the rest."""
    return ([sys.executable, "-m", TORCH_TWIN, "--width", str(width)]
            + (["--channels-last"] if impl == "torch-channels-last" else []))


def _failure(proc):
    """Why a subprocess failed, in one line: its last stderr line, or that PyTorch is missing."""
    if "No module named 'torch'" in proc.stderr:
        return "PyTorch is not installed (pip install torch==2.13.0)"
    return (proc.stderr.strip().splitlines() or ["no output"])[-1]


def twin_mismatch(impl, width, checkpoint, images, expected):
    """Why the PyTorch twin of ``impl``, loaded with ``checkpoint``, does not give ``expected`` on ``images``.

    None when it does: within TWIN_TOLERANCE of our largest logit. ``expected`` are our network's
    logits for the same checkpoint; the PyTorch numbers only compare with ours if this holds.
    """
    with tempfile.TemporaryDirectory(prefix="fcn8s-twin-") as tmp:
        images_path, logits_path = Path(tmp) / "images.npy", Path(tmp) / "logits.npy"
        np.save(images_path, images)
        proc = subprocess.run(_twin_command(impl, width) + ["--check", str(checkpoint), "--check-input",
                                                            str(images_path), "--check-output", str(logits_path)],
                              capture_output=True, text=True, env=_user_environment())
        if proc.returncode != 0:
            return f"the PyTorch twin's check failed: {_failure(proc)}"
        logits = np.load(logits_path)
    difference, scale = np.abs(logits - expected).max(), np.abs(expected).max()
    if difference > TWIN_TOLERANCE * scale:
        return (f"the PyTorch twin's logits differ from ours by up to {difference:.3g} (largest logit {scale:.3g}) "
                f"on the same checkpoint; not timed")
    return None


def _check_torch_twins(impls, width):
    """{impl: twin_mismatch} for our network at ``width`` (PyNative, seeded) on one 64x64 image.

    It sets MindSpore's device, which must come before this process's first MindSpore kernel.
    """
    import mindspore as ms
    from .checkpoint import save_checkpoint
    ms.set_seed(0)
    net, _ = model_and_step("fcn8s", "infer", width, "pynative", 1)
    images = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    expected = net(ms.Tensor(images)).asnumpy()
    with tempfile.TemporaryDirectory(prefix="fcn8s-twin-") as tmp:
        checkpoint = Path(tmp) / "fcn8s.ckpt"
        save_checkpoint(net.get_parameters(), checkpoint)
        return {impl: twin_mismatch(impl, width, checkpoint, images, expected) for impl in impls}


def _run_worker(spec):
    """Run one measurement in a fresh interpreter: a Row (as a dict), a data row, or the request and its error."""
    if spec["impl"] in TORCH_IMPLS:
        args = _twin_command(spec["impl"], spec["width"]) + [
            "--what", spec["what"], "--batch", str(spec["batch"]), "--size", str(spec["size"]),
            "--repeat", str(spec["repeat"]), "--warmup", str(spec["warmup"])]
    else:
        args = [sys.executable, "-m", WORKER, json.dumps(spec)]
    env = _user_environment()
    if spec["impl"] == "isa-default":
        env["ONEDNN_MAX_CPU_ISA"] = "ALL"
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**spec, "error": _failure(proc)}
    result = {**spec, **json.loads(lines[-1])}
    return asdict(Row(**result)) if spec["kind"] == "model" else result


def _pooled(rounds):
    """One row from the rows of each round of one implementation: their times pooled, the largest peak RSS;
    the first round's error where one failed."""
    failed = [r for r in rounds if "error" in r]
    if failed:
        return failed[0]
    times = [t for r in rounds for t in r["times_s"]]
    return {**rounds[0], "times_s": times, "median_s": statistics.median(times), "rounds": len(rounds),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rounds)}


def _synthetic_mindrecord(folder):
    """A small VOC-sized (up to 375x500) synthetic MindRecord for the data benchmark."""
    from .data.mindrecord import convert_voc
    from .data.synth import make_synthetic_voc
    voc = make_synthetic_voc(folder, num_train=48, num_val=2, size=(375, 500), seed=0)
    convert_voc(voc, folder / "mr")
    return str(folder / "mr" / "train.mindrecord")


def _format_model_rows(rows, peaks):
    peak = max(peaks.values())
    lines = [f"{'what':<6}{'impl':<20}{'batch x size':>13}{'median s':>10}{'GFLOP/s':>9}{'% peak':>8}"
             f"{'peak RSS MiB':>14}  notes"]
    for r in rows:
        shape = f"{r['batch']}x{r['size']}"
        if "error" in r:
            lines.append(f"{r['what']:<6}{r['impl']:<20}{shape:>13}  skipped: {r['error']}")
            continue
        rate = r["gflop"] / r["median_s"]
        notes = [f"first call {r['first_call_s']:.1f} s"] if r["first_call_s"] is not None else []
        if r["kernels"]:
            notes.append(describe_kernels(r["kernels"]))
        if r["torch"]:
            notes.append("oneDNN convolutions " + (", ".join(r["torch"]["onednn_convolutions"]) or "none"))
        note = ", ".join(notes)
        lines.append(f"{r['what']:<6}{r['impl']:<20}{shape:>13}{r['median_s']:>10.3f}{rate:>9.1f}"
                     f"{100 * rate / peak:>7.0f}%{r['peak_rss_mib']:>14.0f}  {note}")
    return lines


def _ratios(rows):
    lines = []
    by = {(r["what"], r["impl"], r["batch"], r["size"]): r for r in rows if "error" not in r}
    for (what, impl, batch, size), r in by.items():
        ours = by.get((what, "fcn8s", batch, size))
        if impl == "fcn8s" or not ours:
            continue
        lines.append(f"{what} {batch}x{size}: fcn8s time = {ours['median_s'] / r['median_s']:.2f} x {impl}"
                     f"; fcn8s peak RSS = {ours['peak_rss_mib'] / r['peak_rss_mib']:.2f} x {impl}"
                     + (_pytorch_note(r) if impl in TORCH_IMPLS else ""))
    return lines


def _pytorch_note(row):
    """How a PyTorch row ran: PyTorch's defaults, but for kernel variables the user set, on how many threads."""
    user_set = " ".join(f"{name}={value}" for name, value in row["env"].items() if value is not None)
    return (f" ({row['impl']} ran in PyTorch's default environment{' with ' + user_set if user_set else ''}, "
            f"{row['threads']} threads)")


def bench(args):
    """Run the measurements the CLI asked for; print a table, write JSON; returns 0."""
    log = get_logger()
    whats = [w for w in args.what.split(",") if w]
    compares = [c for c in args.compare.split(",") if c]
    for w in whats:
        if w not in ("train", "infer", "data"):
            raise FCNError(f"--what {w}: choose from train, infer, data")
    for c in compares:
        if c not in MODEL_IMPLS[1:]:
            raise FCNError(f"--compare {c}: choose from {', '.join(MODEL_IMPLS[1:])}")
    if "seed" in compares and args.width != 1.0:
        raise FCNError(f"--compare seed: the tutorial's network is full width; use --width 1 (not {args.width:g})")
    if min(args.batch, args.size, args.repeat, args.rounds) < 1 or args.warmup < 0:
        raise FCNError("--batch, --size, --repeat and --rounds must be positive, --warmup >= 0")
    refuse_existing(args.output, args.force)   # before minutes of measuring, not after
    model_whats = [w for w in whats if w != "data"]
    torch_impls = [c for c in compares if c in TORCH_IMPLS] if model_whats else []
    twin_errors = {}
    if torch_impls:   # before matmul_peak: see _check_torch_twins
        log.info(f"checking that the PyTorch twin ({', '.join(torch_impls)}) gives our logits ...")
        twin_errors = _check_torch_twins(torch_impls, args.width)
    peaks = matmul_peak()
    log.info("matmul peak (2048x2048 fp32): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    rows = []
    for what in model_whats:
        specs = [{"kind": "model", "impl": impl, "what": what, "batch": args.batch, "size": args.size,
                  "width": args.width, "repeat": args.repeat, "warmup": args.warmup, "mode": args.mode}
                 for impl in ("fcn8s", *compares)]
        refused = {spec["impl"]: f"{spec['impl']} is compared for inference only"
                   if what == "train" and spec["impl"] in INFER_ONLY else twin_errors.get(spec["impl"])
                   for spec in specs}
        measured = {spec["impl"]: [] for spec in specs if not refused[spec["impl"]]}
        for number in range(1, args.rounds + 1):
            for spec in specs:
                if spec["impl"] in measured:
                    of = f" (round {number}/{args.rounds})" if args.rounds > 1 else ""
                    log.info(f"measuring {what} {spec['impl']} {args.batch}x{args.size}{of} ...")
                    measured[spec["impl"]].append(_run_worker(spec))
        rows += [_pooled(measured[spec["impl"]]) if spec["impl"] in measured
                 else {**spec, "error": refused[spec["impl"]]} for spec in specs]
    lines = _format_model_rows(rows, peaks) + [""] + _ratios(rows)
    data_rows = []
    if "data" in whats:
        with tempfile.TemporaryDirectory(prefix="fcn8s-bench-") as tmp:
            record = args.data or _synthetic_mindrecord(Path(tmp))
            for impl in ("fcn8s", "seed"):
                for workers in (1, 2):
                    spec = {"kind": "data", "impl": impl, "workers": workers, "data": record, "crop": 512,
                            "images": 768, "width": args.width, "repeat": args.repeat}
                    if impl == "fcn8s" and workers == 2:
                        spec.update(step_batch=args.batch, step_size=args.size)
                    log.info(f"measuring data pipeline {impl} with {workers} worker(s) ...")
                    data_rows.append(_run_worker(spec))
        lines += ["", f"{'data pipeline (512 crops)':<28}{'workers':>8}{'images/s':>10}"]
        for r in data_rows:
            value = f"{r['images_per_s']:>10.1f}" if "error" not in r else f"  skipped: {r['error']}"
            lines.append(f"{r['impl']:<28}{r['workers']:>8}{value}")
            if "step_pipeline_s" in r:
                lines.append(f"train step {args.batch}x{args.size}: {r['step_synthetic_s']:.3f} s on fixed tensors, "
                             f"{r['step_pipeline_s']:.3f} s fed by the pipeline ({r['workers']} workers)")
    print("\n".join(lines))
    machine = {**host_record(sgemm=peaks["numpy"]), "matmul_peak_gflops": peaks}
    atomic_write_text(args.output, json.dumps({"machine": machine, "models": rows, "data": data_rows},
                                              indent=1) + "\n")
    log.info(f"wrote {args.output}")
    return 0
