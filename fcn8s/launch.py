"""``fcn8s launch``: ``fcn8s train`` as N data-parallel processes per node, through MindSpore's msrun.

msrun runs ``python <script> <args>`` once per worker with the ``python`` found on PATH; the script is
``msrun_worker.py`` beside this file and the python is the one running fcn8s (put first on PATH), so
the fcn8s that is launched is the one the user runs, however it was installed. One node: a free port
on this machine is picked unless ``--master-port`` is given. Several nodes: run the same command on
each with its ``--node-rank`` and the first node's ``--master-addr``; rank 0 is on node 0.

Ctrl-C, or a SIGTERM to the launcher alone, stops the job msrun's own way: msrun, sent SIGINT, kills its
workers (each in a session of its own, so nothing else reaches them) and its scheduler, then exits. Killing
msrun instead would leave the workers training. Stopped on a node other than 0, only that node's workers
stop; the job then fails on the others when MindSpore's cluster notices, and node 0 names the checkpoint.
"""
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from .errors import FCNError
from .host import omp_num_threads, thread_budget
from .log import get_logger
from .rundir import where_to_resume

WORKER_SCRIPT = Path(__file__).resolve().with_name("msrun_worker.py")
DEFAULT_PORT = 8118   # several nodes need a port agreed in advance
STOP_GRACE_S = 30     # how long msrun may take to stop its workers before it is killed


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def msrun_command(workers, nodes, node_rank, master_addr, master_port, log_dir, train_args):
    """The msrun command line, and the port it uses; FCNError for values msrun would reject late."""
    if workers < 1 or nodes < 1 or not 0 <= node_rank < nodes:
        raise FCNError(f"--workers {workers} --nodes {nodes} --node-rank {node_rank}: need workers >= 1, "
                       f"nodes >= 1 and 0 <= node-rank < nodes")
    if nodes > 1 and master_addr in ("127.0.0.1", "localhost"):
        raise FCNError("--master-addr: with several nodes, give the address of node 0 that the others can reach")
    bin_dir = str(Path(sys.executable).parent)
    msrun = shutil.which("msrun", path=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if msrun is None:
        raise FCNError("msrun not found (it comes with MindSpore: pip install mindspore)")
    port = master_port or (free_port() if nodes == 1 else DEFAULT_PORT)
    command = [msrun, f"--worker_num={workers * nodes}", f"--local_worker_num={workers}",
               f"--master_addr={master_addr}", f"--master_port={port}", f"--node_rank={node_rank}",
               f"--log_dir={log_dir}", "--join=True", str(WORKER_SCRIPT), "train", *train_args]
    return command, port


def check_scheduler_address(address, port):
    """FCNError unless this machine, node 0, can listen on ``address``:``port``, as msrun's scheduler will: where it
    cannot start, msrun's workers wait for it without end (seen with the port taken: no error, no exit)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as a server does: a port in TIME_WAIT is free
        try:
            s.bind((address, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise FCNError(f"--master-port {port}: in use on {address}, where msrun's scheduler must listen; "
                               f"choose another port (on one node, leave it out)") from None
            raise FCNError(f"--master-addr {address}: this machine, node 0, cannot listen there for msrun's scheduler "
                           f"({e.strerror or e})") from None


def worker_threads(workers):
    """(OMP_NUM_THREADS for each of this node's ``workers``, why): the user's, else an equal share of the cores.

    It must be set: msrun imports MindSpore, which sets OMP_NUM_THREADS=1 where it is unset, and msrun's
    workers inherit that, so their kernels (kernels.onednn.kernel_threads) would run one thread each
    however many cores the node has.
    """
    if omp_num_threads():
        return os.environ["OMP_NUM_THREADS"], "OMP_NUM_THREADS, set by the user"
    cores, why = thread_budget()
    return str(max(1, cores // workers)), why if workers == 1 else f"{why} / {workers} workers"


def launch(workers, train_args, run_dir, nodes=1, node_rank=0, master_addr="127.0.0.1", master_port=None,
           log_dir="msrun_logs"):
    """Run msrun (see the module docstring) and wait for it; its exit code (non-zero when a worker failed).

    ``train_args``: the arguments of ``fcn8s train``, already checked; ``run_dir``: the run's folder, where a
    Ctrl-C finds the checkpoint that the same command with ``--resume`` continues from.
    """
    command, port = msrun_command(workers, nodes, node_rank, master_addr, master_port, log_dir, train_args)
    if node_rank == 0:
        check_scheduler_address(master_addr, port)
    threads, why = worker_threads(workers)
    get_logger().info(f"msrun: {workers} worker(s) on this node (node {node_rank} of {nodes}), {threads} "
                      f"thread{'' if threads == '1' else 's'} each ({why}), master {master_addr}:{port}, "
                      f"worker logs in {log_dir}/")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS=threads)
    msrun = subprocess.Popen(command, env=env)
    resume = "the same fcn8s launch with --resume"
    try:
        code = msrun.wait()
    except KeyboardInterrupt:
        _stop(msrun)
        if node_rank != 0:   # rank 0, on node 0, writes the checkpoints
            raise KeyboardInterrupt("interrupted; this node's workers are stopped, and the job fails on the other "
                                    "nodes without them (node 0 names the checkpoint to resume from)") from None
        raise KeyboardInterrupt(where_to_resume(run_dir, resume)) from None
    if code != 0:
        failed = where_to_resume(run_dir, resume, "a worker failed") if node_rank == 0 else "a worker failed"
        get_logger().error(f"msrun ended with exit code {code}: {failed}; see {log_dir}/worker_*.log")
    return code


def _stop(msrun):
    """Stop msrun and its workers: SIGINT (which a Ctrl-C at a terminal has sent already), then a kill if it hangs."""
    if msrun.poll() is None:
        msrun.send_signal(signal.SIGINT)
    try:
        msrun.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        msrun.kill()
        msrun.wait()
