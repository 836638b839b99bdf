import os
import subprocess
import sys
from pathlib import Path

from fcn8s.checkpoint import read_checkpoint, training_state
from fcn8s.data.mindrecord import convert_voc
from fcn8s.data.synth import make_synthetic_voc

ROOT = Path(__file__).resolve().parent.parent


def test_msrun_two_workers_split_the_data_and_only_rank0_logs_and_saves(tmp_path):
    voc = make_synthetic_voc(tmp_path, num_train=8, num_val=2, size=(64, 64), num_classes=3, seed=2)
    convert_voc(voc, tmp_path / "mr", num_classes=3)
    overrides = [f"data.train={tmp_path / 'mr' / 'train.mindrecord'}", f"data.val={tmp_path / 'mr' / 'val.mindrecord'}",
                 f"train.output_dir={tmp_path / 'run'}", "model.num_classes=3", "model.width=0.0625",
                 "data.crop_size=64", "data.num_workers=1", "train.batch_size=2", "train.epochs=1",
                 "train.log_interval=1", "eval.canvas=64", "device.target=CPU"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", LOG_DIR=str(tmp_path / "logs"),
               MASTER_PORT="8127")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "run_distributed.sh"), "2", "-c", "demo",
                           *sum((["--set", o] for o in overrides), [])],
                          capture_output=True, text=True, env=env, timeout=600)
    rank0 = (tmp_path / "logs" / "worker_0.log").read_text()
    rank1 = (tmp_path / "logs" / "worker_1.log").read_text()
    assert proc.returncode == 0, rank0[-2000:] + rank1[-2000:]
    assert "data parallel: 2 workers (this is rank 0)" in rank0
    assert "training 1 epochs x 2 steps, batch 2 x 2 devices" in rank0  # 8 images / (2 per step x 2 workers)
    assert "[fcn8s]" not in rank1
    state = training_state(read_checkpoint(tmp_path / "run" / "last.ckpt"))
    assert state["epoch"] == 1 and state["step"] == 2
