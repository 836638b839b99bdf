"""Print the tables of benchmarks/RESULTS.md from the result files, so every figure there is one of theirs:
    python benchmarks/results_tables.py [benchmarks/results/<cpu kind> ...]
With no folder, every kind of CPU measured (each folder of benchmarks/results), one after the other.
"""
import functools
import json
import sys
from pathlib import Path

from fcn8s.config import load_config
from fcn8s.kernels import describe as describe_kernels

LABELS = {"fcn8s": "fcn8s", "ms-kernels": "fcn8s, MindSpore's kernels", "seed": "tutorial's definition",
          "torch": "PyTorch (NCHW)", "torch-channels-last": "PyTorch (channels_last)", "onnxruntime": "ONNX Runtime",
          "isa-default": "fcn8s, MindSpore's oneDNN uncapped"}


def _load(folder, name):
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def host_line(host):
    isa = f" ({host['isa']}, family/model {host['cpu_family_model']})" if "isa" in host else ""
    return (f"{host['date']}, {host['cpu']}{isa}, {host['cores']} cores, NumPy sgemm "
            f"{host.get('numpy_sgemm_gflops') or host['matmul_peak_gflops']['numpy']:.0f} GFLOP/s")


def model_table(report):
    rows = [r for r in report["models"] if "error" not in r]
    lines = ["| what | batch x size | impl | median s | rounds | GFLOP/s | peak RSS MiB | threads | kernels |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kernels = describe_kernels(r["kernels"]) if r.get("kernels") else ", ".join(
            (r.get("torch") or {}).get("onednn_convolutions") or [])
        lines.append(f"| {r['what']} | {r['batch']}x{r['size']}² | {LABELS[r['impl']]} | {r['median_s']:.3f} | "
                     f"{r['rounds']} | {r['gflop'] / r['median_s']:.0f} | {r['peak_rss_mib']:.0f} | "
                     f"{r.get('threads', '')} | {kernels} |")
    return lines


def ratio_lines(report):
    by = {(r["what"], r["impl"]): r for r in report["models"] if "error" not in r}
    lines = []
    for (what, impl), r in by.items():
        ours = by.get((what, "fcn8s"))
        if impl == "fcn8s" or not ours:
            continue
        lines.append(f"- {what} {r['batch']}x{r['size']}²: fcn8s time = **{ours['median_s'] / r['median_s']:.2f}x** "
                     f"{LABELS[impl]}, peak RSS {ours['peak_rss_mib'] / r['peak_rss_mib']:.2f}x")
    return lines


def data_lines(report):
    lines = []
    for r in report.get("data", []):
        if "error" in r:
            continue
        lines.append(f"- {LABELS[r['impl']]} pipeline, {r['workers']} worker(s): {r['images_per_s']:.0f} images/s")
        if "step_pipeline_s" in r:
            lines.append(f"- train step {r['step_batch']}x{r['step_size']}²: {r['step_synthetic_s']:.3f} s on fixed "
                         f"tensors, {r['step_pipeline_s']:.3f} s fed by the pipeline")
    return lines


def kernel_table(report):
    lines = ["| n, c->o, size | kernels | forward GFLOP/s | input grad | weight grad |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        n, c, o, size = r["shape"]
        for name in (name for name in ("mindspore", "onednn", "onednn-any") if name in r):
            rates = " | ".join(f"{r[name][op]['gflops']:.0f}" for op in ("forward", "input_grad", "weight_grad"))
            lines.append(f"| {n}, {c}->{o}, {size}² | {name} | {rates} |")
    return lines


def probe_table(report):
    """Per width: each library way's time / MindSpore's, per layer group, and the way chosen."""
    layers = list(report["verdicts"][0]["seconds"])
    lines = ["| width, time / MindSpore's | " + " | ".join(layers) + " |", "|---|" + "---|" * len(layers)]
    for v in report["verdicts"]:
        seconds = v["seconds"]
        ways = list(dict.fromkeys(way for layer in layers for way in seconds[layer] if way != "mindspore"))
        for way in ways:
            cells = [f"{seconds[layer][way] / seconds[layer]['mindspore']:.2f}" if way in seconds[layer] else ""
                     for layer in layers]
            lines.append(f"| {v['width']:g}, {way} | " + " | ".join(cells) + " |")
        lines.append(f"| {v['width']:g}, chosen | " + " | ".join(v["library"].get(layer, "MindSpore")
                                                               for layer in layers) + " |")
    return lines


def loss_table(report):
    lines = ["| logits (n x classes x size²) | MindSpore's ops, ms | fcn8s's kernels, ms |", "|---|---|---|"]
    for r in report["rows"]:
        n, classes, size = r["shape"]
        lines.append(f"| {n}x{classes}x{size}² | {r['native_ms']:.1f} | {r['custom_ms']:.1f} |")
    return lines


def upsample_table(report):
    lines = ["| x (n x classes x size²) -> y | MindSpore forward, ms | gradients | fcn8s forward, ms | gradients |",
             "|---|---|---|---|---|"]
    for r in report["rows"]:
        n, classes, size = r["shape"]
        native, custom = r["native"], r["custom"]
        lines.append(f"| {n}x{classes}x{size // r['factor']}² -> {size}² | {native['forward_ms']:.1f} | "
                     f"{native['gradients_ms']:.1f} | {custom['forward_ms']:.1f} | {custom['gradients_ms']:.1f} |")
    return lines


@functools.cache
def _demo_step():
    """(batch, crop size, width) of the demo's train step, as demo.yaml sets them."""
    demo = load_config("demo")
    return demo.train.batch_size, demo.data.crop_size, demo.model.width


def ab_line(report):
    """One line: a train step (the demo's unless the file says another) with one kernel-plan entry, or the
    library's threads' spin, made two ways (plan_step_ab.py)."""
    (first, a), (second, b) = report["median_s"].items()
    build = ", the library's baseline x86-64 build" if report.get("baseline_build") else ""
    whose = "the demo's" if (report["batch"], report["size"], report["width"]) == _demo_step() else "the"
    return (f"- {whose} train step ({report['batch']}x{report['size']}², "
            f"width {report['width']:g}{build}), "
            f"{report['entry']} {first} {1000 * a:.1f} ms, {second} {1000 * b:.1f} ms: {second} / {first} "
            f"{b / a:.2f} (medians of {report['rounds']} interleaved rounds of {report['steps_per_round']} steps)")


def demo_ab_line(report):
    """One line: `fcn8s demo` with one config key set several ways (demo_ab.py)."""
    runs = "; ".join(f"{report['key']}={value}: " + ", ".join(f"{run['wall_s']:.0f} s (mIoU {run['mean_iou']:.4f})"
                                                              for run in done)
                     for value, done in report["runs"].items())
    fixed = f" ({', '.join(report['fixed'])} in every run)" if report.get("fixed") else ""
    line = f"- `fcn8s demo`{fixed}, the library built beforehand, runs alternating: {runs}"
    if len(report["median_wall_s"]) == 2:
        (first, a), (second, b) = report["median_wall_s"].items()
        line += f"; medians {a:.0f} and {b:.0f} s, {second} / {first} {b / a:.2f}"
    ious = [run["mean_iou"] for done in report["runs"].values() for run in done]
    return line + f"; val mIoU {min(ious):.4f}-{max(ious):.4f} (mean {sum(ious) / len(ious):.4f})"


def profile_table(report):
    lines = ["| op (per step) | ms |", "|---|---|"]
    lines += [f"| {op} | {ms:.0f} |" for op, ms in report["per_op_ms"].items() if ms >= 5]
    lines.append(f"| total | {sum(report['per_op_ms'].values()):.0f} |")
    return lines


def before_after_table(before, after):
    """Milliseconds a step per part of the network: on MindSpore's kernels (``before``) and on fcn8s's (``after``),
    two profiles of one sitting (profile_step.py --kernels mindspore / auto)."""
    def ms(report, part):
        return sum(report["per_part_ms"].values()) if part == "total" else report["per_part_ms"].get(part, 0.0)

    parts = sorted(set(before["per_part_ms"]) | set(after["per_part_ms"]), key=lambda part: -ms(before, part))
    lines = ["| part of the step (ms) | MindSpore's kernels | fcn8s | fcn8s / MindSpore's |", "|---|---|---|---|"]
    for part in parts + ["total"]:
        ms_before, ms_after = ms(before, part), ms(after, part)
        ratio = f"{ms_after / ms_before:.2f}x" if ms_before >= 1 else ""
        lines.append(f"| {part} | {ms_before:.0f} | {ms_after:.0f} | {ratio} |")
    return lines


def onednn_table(report):
    """Per oneDNN primitive kind: milliseconds of one train step on each side, then the step and oneDNN totals."""
    sides = report["sides"]
    kinds = list(dict.fromkeys(kind for side in sides.values() for kind in side["by_kind_ms"]))
    lines = ["| oneDNN primitive (ms per step) | fcn8s | PyTorch (NCHW) |", "|---|---|---|"]
    for kind in kinds:
        cells = [f"{side['by_kind_ms'][kind]:.0f}" if kind in side["by_kind_ms"] else "" for side in sides.values()]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append("| all oneDNN primitives | " + " | ".join(f"{side['onednn_ms']:.0f}" for side in sides.values()) + " |")
    lines.append("| the step (wall, logging on) | " + " | ".join(f"{side['step_s'] * 1000:.0f}"
                                                                 for side in sides.values()) + " |")
    return lines


def main():
    folders = [Path(arg) for arg in sys.argv[1:]] or sorted(p for p in (Path(__file__).parent / "results").iterdir()
                                                           if p.is_dir())
    for folder in folders:
        print(f"## {folder.name}\n")
        print_tables(folder)


def print_tables(folder):
    for name in ("bench_2x256.json", "bench_1x512.json", "bench_tutorial_2x256.json", "bench_tutorial_1x512.json",
                 "bench_isa.json"):
        report = _load(folder, name)
        if report:
            print(f"### {name} ({host_line(report['machine'])})\n")
            print("\n".join(model_table(report) + [""] + ratio_lines(report) + data_lines(report)) + "\n")
    verdict = _load(folder, "probe.json")
    if verdict:
        print(f"### probe.json ({host_line(verdict['host'])}; each library way's time / MindSpore's per layer "
              f"group, and the choice: close calls within {verdict['close']:.0%} go to the library)\n\n"
              + "\n".join(probe_table(verdict)) + "\n")
    kernels = _load(folder, "conv_kernels.json")
    if kernels:
        print(f"### conv_kernels.json ({host_line(kernels['host'])})\n\n" + "\n".join(kernel_table(kernels)) + "\n")
    loss = _load(folder, "loss_kernel.json")
    if loss:
        print(f"### loss_kernel.json ({host_line(loss['host'])}; the loss's value and gradient)\n\n"
              + "\n".join(loss_table(loss)) + "\n")
    upsample = _load(folder, "upsample_kernel.json")
    if upsample:
        print(f"### upsample_kernel.json ({host_line(upsample['host'])}; upscore8, x8, forward and both "
              f"gradients)\n\n" + "\n".join(upsample_table(upsample)) + "\n")
    for path in sorted(folder.glob("ab_*.json")):
        ab = _load(folder, path.name)
        print(f"### {path.name} ({host_line(ab['host'])})\n\n{ab_line(ab)}\n")
    for path in sorted(folder.glob("demo_ab_*.json")):
        ab = _load(folder, path.name)
        print(f"### {path.name} ({host_line(ab['host'])})\n\n{demo_ab_line(ab)}\n")
    for shape in ("2x256", "1x512", "demo"):
        profile, before = _load(folder, f"profile_{shape}.json"), _load(folder, f"profile_{shape}_ms_kernels.json")
        if profile:
            print(f"### profile_{shape}.json ({host_line(profile['host'])}; {profile['batch']}x{profile['size']}², "
                  f"width {profile['width']:g})\n\n" + "\n".join(profile_table(profile)) + "\n")
        if profile and before and "per_part_ms" in profile:
            print(f"### profile_{shape}_ms_kernels.json against profile_{shape}.json (before: "
                  f"{host_line(before['host'])}; the same network on MindSpore's kernels)\n\n"
                  + "\n".join(before_after_table(before, profile)) + "\n")
    primitives = _load(folder, "onednn_1x512.json")
    if primitives:
        print(f"### onednn_1x512.json ({host_line(primitives['host'])}; train {primitives['batch']}x"
              f"{primitives['size']}², width {primitives['width']:g}, {primitives['threads']} threads each)\n\n"
              + "\n".join(onednn_table(primitives)) + "\n")
    demo = _load(folder, "demo.json")
    if demo:
        runs, r = demo["runs"], demo["eval_by_runtime"]
        print(f"### demo.json ({host_line(demo['host'])})\n\n- `fcn8s demo` from nothing (kernel build and probe "
              f"included), " + (f"{len(runs)} runs, median {demo['demo_wall_s']:.0f} s: " if len(runs) > 1 else "")
              + ", ".join(f"{run['wall_s']:.0f} s (val mIoU {run['eval']['mean_iou']:.4f})" for run in runs) + "\n"
              + "".join(f"- the last run's best.ckpt evaluated by {k}: mIoU {v['mean_iou']:.4f}, PA "
                        f"{v['pixel_accuracy']:.4f}, {v['images_per_s']:.1f} images/s\n" for k, v in r.items()))


if __name__ == "__main__":
    main()
