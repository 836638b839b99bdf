#!/usr/bin/env bash
# Build the wheel, install it into a fresh virtual environment outside the checkout and run fcn8s from
# there: the shipped configs, the packaged C++ sources and the console script must work without the
# source tree. To stay fast and offline, the fresh environment borrows the dependencies already in
# .venv (MindSpore alone is 800 MB) through a .pth line naming .venv's site-packages. A .pth line only
# adds a folder to sys.path, so the .pth files inside that folder, among them the editable fcn8s
# install's finder, are not run: fcn8s itself can only come from the wheel, and the script checks that.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD
tmp=$(mktemp -d -t fcn8s-wheel.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
unset PYTHONPATH

# Built from a copy of what the wheel is made of: setuptools' build/ folder keeps files that left the
# package, which would hide them from this check. Built as pip builds it for a user: in an isolated
# environment with pyproject.toml's build requirements, not whatever setuptools .venv happens to have.
mkdir "$tmp/src"
cp -r pyproject.toml README.md fcn8s "$tmp/src"
.venv/bin/python -m pip wheel --quiet --no-deps -w "$tmp/dist" "$tmp/src"
wheel=$(ls "$tmp"/dist/fcn8s-*.whl)
echo "[wheel] built $(basename "$wheel")"

.venv/bin/python -m venv --without-pip "$tmp/venv"
.venv/bin/python -m pip --python "$tmp/venv/bin/python" install --quiet --no-deps "$wheel"
site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
deps=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
echo "$deps" > "$site/fcn8s-check-dependencies-from-dotvenv.pth"

cd "$tmp"   # nothing of the checkout on sys.path or in relative paths
"$tmp/venv/bin/python" - "$tmp/venv" "$checkout" <<'EOF'
import sys
from pathlib import Path

import fcn8s
from fcn8s.config import load_config

venv, checkout = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
where = Path(fcn8s.__file__).resolve()
print(f"[wheel] fcn8s {fcn8s.__version__} imported from {where}")
assert where.is_relative_to(venv) and not where.is_relative_to(checkout), "fcn8s was not imported from the wheel"
assert load_config("voc").train.batch_size == 4
assert (where.parent / "kernels" / "onednn_conv.cc").is_file() and (where.parent / "torch_twin.py").is_file()
EOF
"$tmp/venv/bin/fcn8s" --help > /dev/null
"$tmp/venv/bin/fcn8s" train -c voc --help > /dev/null
# one epoch on 8 synthetic images of 64x64, in PyNative mode (no graph compilation)
"$tmp/venv/bin/fcn8s" demo --output-dir "$tmp/demo" --set demo.num_train=8 --set demo.num_val=2 \
    --set demo.image_size=[64,64] --set demo.infer_images=1 --set eval.canvas=64 --set data.crop_size=64 \
    --set train.epochs=1 --set train.eval_interval=1 --set device.mode=pynative
test -s "$tmp/demo/eval/metrics.json"
echo "[wheel] the installed wheel runs: --help, train -c voc --help, a one-epoch demo"
