"""The kernel probe's verdict on this host, as `model.kernels: auto` uses it, into a results file:
    python benchmarks/probe_verdict.py [-o benchmarks/results/<cpu kind>/probe.json] [--width 1 --width 0.25]

It reads the verdict cached beside the kernel library (run_all.sh calls it after the benches, whose
first run on a host measured it) and runs the probe only where no verdict is cached for a width.
"""
import argparse
import json
from pathlib import Path

import mindspore as ms

from fcn8s.fileio import atomic_write_text
from fcn8s.host import cpu_kind, host_record
from fcn8s.kernels import onednn, probe


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=f"benchmarks/results/{cpu_kind()}/probe.json")
    parser.add_argument("--width", type=float, action="append", help="model.width (default: 1 and 0.25)")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    usable, why = onednn.available()
    if not usable:
        raise SystemExit(f"the kernel library does not load here: {why}")
    verdicts = []
    for width in args.width or [1.0, 0.25]:
        library, note = probe.library_choice(width)
        seconds, _ = probe.verdict_seconds(width)   # cached by the call above
        verdicts.append({"width": width, "seconds": seconds, "library": library, "note": note})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps({"host": host_record(), "close": probe.CLOSE, "verdicts": verdicts},
                                              indent=1) + "\n")
    print(json.dumps(verdicts, indent=1))


if __name__ == "__main__":
    main()
