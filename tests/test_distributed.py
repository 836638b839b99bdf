import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fcn8s.checkpoint import read_checkpoint, training_state
from fcn8s.data.mindrecord import convert_voc
from fcn8s.data.synth import make_synthetic_voc
from fcn8s.kernels import onednn
from fcn8s.launch import free_port, worker_threads

# the launches get the environment a user's shell would give them: without it they would inherit this process's C
# environment, where importing MindSpore has set OMP_NUM_THREADS=1 (os.environ does not see it)
USER_ENV = dict(os.environ)


def _kernel_threads_line(workers_on_node):
    """What rank 0 logs of its kernels' threads under `fcn8s launch` with ``workers_on_node`` workers on its node."""
    threads = int(USER_ENV.get("OMP_NUM_THREADS", "").split(",")[0] or
                  max(1, len(os.sched_getaffinity(0)) // workers_on_node))
    return f"oneDNN convolution kernels: {threads} thread{'s' if threads > 1 else ''} (OMP_NUM_THREADS)"


@pytest.fixture(scope="module")
def launch_args(tmp_path_factory):
    """(`fcn8s launch` command for 2 workers of a tiny run, output folder, log folder)."""
    root = tmp_path_factory.mktemp("dp")
    voc = make_synthetic_voc(root, num_train=8, num_val=2, size=(64, 64), num_classes=3, seed=2)
    convert_voc(voc, root / "mr", num_classes=3)

    def command(name, *extra, launch_options=("--workers", "2"), log_dir=None):
        overrides = [f"data.train={root / 'mr' / 'train.mindrecord'}", f"data.val={root / 'mr' / 'val.mindrecord'}",
                     f"train.output_dir={root / name}", "model.num_classes=3", "model.width=0.0625",
                     "data.crop_size=64", "data.num_workers=1", "train.batch_size=2", "train.log_interval=1",
                     "eval.canvas=64", "device.target=CPU", *extra]
        logs = root / (log_dir or f"{name}_logs")
        return ([sys.executable, "-m", "fcn8s.cli", "launch", *launch_options, "--log-dir", str(logs),
                 "--", "-c", "demo", *sum((["--set", o] for o in overrides), [])], root / name, logs)
    return command


def test_two_workers_read_disjoint_rows_and_end_with_identical_weights(launch_args):
    command, run, logs = launch_args("run", "train.epochs=2", "train.save_interval=1")
    proc = subprocess.run(command, env=USER_ENV, capture_output=True, text=True, timeout=600)
    rank0, rank1 = ((logs / f"worker_{r}.log").read_text() for r in (0, 1))
    assert proc.returncode == 0, proc.stderr[-2000:] + rank0[-2000:] + rank1[-2000:]
    assert "data parallel: 2 workers (this is rank 0)" in rank0
    if onednn.available()[0]:   # the node's cores shared: not the 1 thread msrun's workers would inherit
        assert _kernel_threads_line(2) in rank0
    assert "training 2 epochs x 2 steps, batch 2 x 2 devices" in rank0   # 8 images / (2 per step x 2 workers)
    assert "[fcn8s]" not in rank1                                         # only rank 0 logs
    assert "data parallel: 2 ranks read disjoint rows and end with identical trained weights" in rank0
    records = [json.loads((run / "ranks" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    for epoch in ("1", "2"):
        rows = [set(record["rows"][epoch]) for record in records]
        assert len(rows[0]) == len(rows[1]) == 4 and not rows[0] & rows[1] and rows[0] | rows[1] == set(range(8))
    assert records[0]["rows"]["1"] != records[0]["rows"]["2"]            # reshuffled each epoch
    assert records[0]["sha256"] == records[1]["sha256"]
    state = training_state(read_checkpoint(run / "last.ckpt"))
    assert state["epoch"] == 2 and state["step"] == 4
    first = read_checkpoint(run / "epoch_0001.ckpt")["conv1.0.weight"].asnumpy()
    assert not np.array_equal(first, read_checkpoint(run / "last.ckpt")["conv1.0.weight"].asnumpy())


def test_each_worker_gets_its_share_of_the_node_unless_the_user_set_omp_num_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert worker_threads(1) == ("8", "8 cores")
    assert worker_threads(2) == ("4", "8 cores / 2 workers")
    assert worker_threads(16) == ("1", "8 cores / 16 workers")
    monkeypatch.setenv("OMP_NUM_THREADS", "")   # not a thread count: the share
    assert worker_threads(2) == ("4", "8 cores / 2 workers")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_threads(2) == ("3", "OMP_NUM_THREADS, set by the user")


def _wait_for(condition, what, proc=None, timeout=300):
    """Wait until ``condition()``; fail with ``what`` after ``timeout`` s, or as soon as ``proc`` (if given) has ended."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline and (proc is None or proc.poll() is None), what
        time.sleep(0.5)


def _workers_of(run):
    found = subprocess.run(["pgrep", "-f", f"msrun_worker.py train .*{run}"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def test_a_killed_worker_fails_the_job_a_relaunch_resumes_and_a_stopped_launcher_stops_its_workers(launch_args):
    command, run, logs = launch_args("killed", "train.epochs=200")
    proc = subprocess.Popen(command, env=USER_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rank0_log = logs / "worker_0.log"
    _wait_for(lambda: rank0_log.exists() and "step 3/" in rank0_log.read_text(), "the job did not start training", proc)
    os.kill(max(_workers_of(run)), signal.SIGKILL)
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode != 0
    # the relaunch continues from the last finished epoch's checkpoint, which the failure names
    done = training_state(read_checkpoint(run / "last.ckpt"))["epoch"]
    assert (f"a worker failed; the same fcn8s launch with --resume continues from {run / 'last.ckpt'} "
            f"(end of epoch {done})") in out
    command, run, logs = launch_args("killed", "train.epochs=200", "train.resume=auto")
    proc = subprocess.Popen(command, env=USER_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: training_state(read_checkpoint(run / "last.ckpt"))["epoch"] > done,
              "the relaunch did not finish an epoch", proc)
    # stopped as a scheduler stops a job (SIGTERM to the launcher alone): msrun's workers stop with it
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    _wait_for(lambda: not _workers_of(run), "a worker outlived the launcher", timeout=10)
    assert f"resumed from {run / 'last.ckpt'}: epoch {done}, step {2 * done}" in (logs / "worker_0.log").read_text()
    state = training_state(read_checkpoint(run / "last.ckpt"))
    assert state["epoch"] > done and state["step"] == 2 * state["epoch"]
    assert err.splitlines()[-1] == (f"fcn8s: interrupted; the same fcn8s launch with --resume continues from "
                                    f"{run / 'last.ckpt'} (end of epoch {state['epoch']})")


def _non_loopback_address():
    """An IPv4 address of this host other than loopback (None if it has none): two "nodes" on one host."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))   # a UDP connect sends nothing; it picks the address a packet would leave from
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def _listening(address, port):
    with socket.socket() as s:
        return s.connect_ex((address, port)) == 0


def _worker_ranks(run):
    """The ranks of the msrun workers still training ``run`` (their RANK_ID; msrun and its scheduler left out)."""
    ranks = set()
    for pid in _workers_of(run):
        with contextlib.suppress(OSError):
            environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
                           if "=" in item)
            if environ.get("MS_ROLE") == "MS_WORKER":
                ranks.add(int(environ["RANK_ID"]))
    return ranks


def test_a_launcher_stopped_on_node_1_stops_its_worker_and_node_0_fails_naming_the_checkpoint(launch_args):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no address but loopback, which msrun refuses for several nodes")
    port = free_port()
    nodes = []
    for rank in (0, 1):
        command, run, logs = launch_args("nodes", "train.epochs=200", log_dir=f"nodes_logs_{rank}", launch_options=(
            "--workers", "1", "--nodes", "2", "--node-rank", str(rank), "--master-addr", address, "--master-port",
            str(port)))
        nodes.append(subprocess.Popen(command, env=USER_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        if rank == 0:   # node 0 runs the scheduler (on one host node 1's msrun starts one too, which must lose)
            _wait_for(lambda: _listening(address, port), "node 0's scheduler did not start", nodes[0], timeout=60)
    node0, node1 = nodes
    rank0_log = run.parent / "nodes_logs_0" / "worker_0.log"
    try:
        _wait_for(lambda: rank0_log.exists() and "step 3/" in rank0_log.read_text(), "the job did not train", node0)
        assert _worker_ranks(run) == {0, 1}
        if onednn.available()[0]:   # alone on its node, a worker's kernels get all its cores
            assert _kernel_threads_line(1) in rank0_log.read_text()
        node1.send_signal(signal.SIGTERM)   # node 1's launcher stopped alone
        out1, _ = node1.communicate(timeout=120)
        assert node1.returncode == 130, out1[-2000:]
        assert out1.splitlines()[-1] == ("fcn8s: interrupted; this node's workers are stopped, and the job fails on "
                                         "the other nodes without them (node 0 names the checkpoint to resume from)")
        _wait_for(lambda: 1 not in _worker_ranks(run), "node 1's worker outlived its launcher", timeout=10)
        out0, _ = node0.communicate(timeout=240)   # node 0's job notices it lost rank 1
    finally:
        for node in nodes:
            node.kill()
    assert node0.returncode != 0
    done = training_state(read_checkpoint(run / "last.ckpt"))["epoch"]
    assert (f"a worker failed; the same fcn8s launch with --resume continues from {run / 'last.ckpt'} "
            f"(end of epoch {done})") in out0
    _wait_for(lambda: not _worker_ranks(run), "node 0's worker outlived its launcher", timeout=10)
