"""``fcn8s train``: the training loop, read top to bottom.

Per epoch: shuffled augmented batches -> one compiled train step (forward, cross entropy with
ignore 255, backward, Momentum with a per-step LR) -> JSON-lines log -> validation on the full
val images -> ``last.ckpt`` (model + optimizer + state), ``best.ckpt`` by val mIoU, periodic
``epoch_NNNN.ckpt``. ``--resume`` continues from ``last.ckpt`` at the same step, LR position,
optimizer state and best mIoU.
"""
import contextlib
import math
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import kernels
from .checkpoint import HostCopies, load_optimizer_state, load_weights, read_checkpoint, training_state
from .config import dump_config, save_config
from .data.dataset import create_eval_dataset, create_train_dataset, epoch_rows
from .data.mindrecord import resolve_mindrecord
from .device import init_distributed, loss_scale_manager, setup_device
from .errors import FCNError
from .evaluate import SCORE_NAMES, confusion_over_dataset, format_scores, mindrecord_items
from .log import get_logger
from .loss import PixelCrossEntropy
from .models import build_model
from .optim import Momentum
from .predict import Predictor
from .ranks import record_and_compare
from .rundir import RunDir, where_to_resume
from .runtime import MindSporeModel
from .schedule import lr_per_step
from .visualize import plot_training_curves
from .weights_import import read_pretrained

# loss.png and miou.png are redrawn after an epoch that validated, after the last one, and otherwise at most
# this often: matplotlib takes about 0.3 s of a core, which a 2-core demo's 9 s epochs would give up 30 times
CURVES_EVERY_S = 60


def _read_resume_checkpoint(resume, run, log):
    """(path, contents, state) of the checkpoint to resume from, or None for a new run.

    ``auto`` tries the run's own checkpoints newest first; one that fails its CRC or cannot be read
    is skipped with one line naming it and the one used instead. An explicit path must be good.
    """
    candidates = run.resume_candidates() if resume == "auto" else [Path(resume)]
    if not candidates:
        log.info(f"resume: no checkpoint in {run.dir} yet, starting a new run")
        return None
    for i, path in enumerate(candidates):
        try:
            ckpt = read_checkpoint(path)
            state = training_state(ckpt)
            if "epoch" not in state:
                raise FCNError(f"{path}: not a training checkpoint (no train_state.epoch); use --init to start "
                               f"from its weights")
            return path, ckpt, state
        except FCNError as exc:
            if i + 1 == len(candidates):
                raise
            log.warning(f"{exc}; resuming from {candidates[i + 1]} instead")
    raise AssertionError("unreachable")


def _initialise(net, optimizer, cfg, run, log):
    """Resume, or start from a full checkpoint, a backbone checkpoint or scratch; returns the state."""
    t = cfg.train
    found = _read_resume_checkpoint(t.resume, run, log) if t.resume else None
    if found:
        path, ckpt, state = found
        load_weights(net, path, ckpt=ckpt)
        load_optimizer_state(optimizer, path, ckpt)
        log.info(f"resumed from {path}: epoch {state['epoch']}, step {state['step']}, "
                 f"best mIoU {state['best_miou']:.4f}")
        _repair_best(net, state, run, log)
        return state
    if t.init:
        log.info(load_weights(net, t.init, reinit_head=t.reinit_head).summary(t.init))
    elif t.pretrained:
        ckpt = read_pretrained(t.pretrained, log)   # a torchvision/timm file is converted here, and reported
        log.info(load_weights(net, t.pretrained, backbone_only=True, ckpt=ckpt).summary(t.pretrained) + " (backbone)")
    else:
        log.info("initialisation: from scratch (no train.pretrained / train.init)")
    return {"epoch": 0, "step": 0, "best_miou": -1.0, "best_epoch": 0}


def _repair_best(net, state, run, log):
    """Rewrite best.ckpt when a run stopped between saving last.ckpt and best.ckpt of its best epoch.

    last.ckpt is written first and records the best epoch; when that epoch is the resumed one, the
    weights just loaded are the best ones, so a stale or missing best.ckpt is rebuilt from them.
    """
    if not run.is_main or state["best_epoch"] != state["epoch"] or state["epoch"] == 0:
        return
    best = run.dir / "best.ckpt"
    try:
        recorded = training_state(read_checkpoint(best)).get("best_epoch")
    except FCNError:
        recorded = None
    if recorded != state["best_epoch"]:
        log.warning(f"{best}: not the best epoch {state['best_epoch']} that the resumed checkpoint records; "
                    f"rewriting it from that checkpoint")
        run.save("best.ckpt", net.get_parameters(), state)


def build_train_step(net, cfg, setup, lr, log):
    import mindspore as ms
    from mindspore import amp, nn
    t = cfg.train
    manager = loss_scale_manager(setup)
    # A fixed scale without overflow-drop divides the gradients inside the optimizer.
    fixed = setup.loss_scale == "fixed"
    # in-place weight decay (fcn8s.optim) saves two weight-sized temporaries per tensor; same update
    # the loss and the update as the network's kernel plan makes them; one without a plan (the tutorial's
    # definition) gets MindSpore's
    layer_plan = getattr(net, "kernel_plan", kernels.plan("native"))
    options = {"impl": layer_plan["optimizer"]} if t.momentum > 0 else {}
    optimizer = (Momentum if t.momentum > 0 else nn.Momentum)(
        net.trainable_params(), learning_rate=ms.Tensor(lr), momentum=t.momentum, weight_decay=t.weight_decay,
        loss_scale=setup.loss_scale_value if fixed else 1.0, **options)
    loss_fn = PixelCrossEntropy(ignore_index=cfg.data.ignore_label, impl=layer_plan["loss"])
    kwargs = {"loss_scale_manager": manager} if manager else {}
    step = amp.build_train_network(net, optimizer, loss_fn, level=setup.amp_level, **kwargs)
    step.set_train(True)
    if log:
        log.info(f"optimizer: Momentum {t.momentum}, weight decay {t.weight_decay:g}, lr {t.lr_schedule} "
                 f"{t.lr:g} -> {t.min_lr:g} over {len(lr)} steps ({t.warmup_epochs:g} warm-up epochs)")
    return step, optimizer


def train(cfg, force=False, how_to_resume="--resume"):
    """Train as ``cfg`` says; returns a dict with the final state and the output directory.

    ``force``: start a new run in an output folder that holds an earlier one (its files are removed).
    ``how_to_resume``: what the line of a Ctrl-C tells the user to do to continue.
    """
    log = get_logger()
    t = cfg.train
    for records in (cfg.data.train, cfg.data.val if t.eval_interval > 0 else None):
        if records:
            resolve_mindrecord(records)   # a missing data file is named before anything is written
    setup = setup_device(cfg.device)
    rank, group_size = init_distributed()
    shards = {"num_shards": group_size, "shard_id": rank} if group_size > 1 else {}
    steps_per_epoch = len(epoch_rows(cfg.data, 1, t.seed, **shards)) // t.batch_size   # batches drop the remainder
    if steps_per_epoch == 0:   # named before the run's folder is touched
        raise FCNError(f"{cfg.data.train}: fewer images than one batch of {t.batch_size} (train.batch_size)"
                       f"{f' per device ({group_size} devices)' if group_size > 1 else ''}")
    run = RunDir(t.output_dir, rank == 0).open(t.resume, force)
    try:
        return _train(cfg, setup, rank, group_size, shards, steps_per_epoch, run, log)
    except KeyboardInterrupt:
        with contextlib.suppress(FCNError):   # a failed write: the checkpoint named is the one before it
            run.wait()                        # the last finished epoch's files land first
        raise KeyboardInterrupt(where_to_resume(run.dir, how_to_resume)) from None
    finally:
        run.close()


def _epoch_writer(run, params, net, state, t, draw_curves):
    """The job that writes an epoch's files from ``params``, host copies of the train step's parameters
    ({name: Tensor}), and the training curves if ``draw_curves``.

    last.ckpt first: it records the best epoch, so a stop before best.ckpt is repaired on resume.
    """
    epoch = state["epoch"]
    model_names = {p.name for p in net.get_parameters()}

    def write():
        run.save("last.ckpt", params, state)
        if state["best_epoch"] == epoch:
            run.save("best.ckpt", {name: value for name, value in params.items() if name in model_names}, state)
        if epoch % t.save_interval == 0:
            run.save(f"epoch_{epoch:04d}.ckpt", params, state)
            run.prune(t.keep_checkpoint_max)
        if draw_curves:
            plot_training_curves(run.log_path, run.dir)
    return write


def _train(cfg, setup, rank, group_size, shards, steps_per_epoch, run, log):
    import mindspore as ms
    import mindspore.dataset as ds
    t = cfg.train
    output_dir = run.dir
    if rank == 0:
        save_config(cfg, output_dir / "config.yaml")
    log.info("effective config (saved to %s):\n%s", output_dir / "config.yaml", dump_config(cfg).rstrip())
    ms.set_seed(t.seed)          # weights: MindSpore's seed and, for its initializers, numpy's global one
    np.random.seed(t.seed)
    ds.config.set_seed(t.seed)   # the pipeline's own randomness (the order and the draws are seeded per epoch)

    total_steps = steps_per_epoch * t.epochs
    lr = lr_per_step(t.lr_schedule, t.lr, total_steps, t.min_lr, round(t.warmup_epochs * steps_per_epoch),
                     t.poly_power)
    validate = t.eval_interval > 0 and rank == 0   # the other ranks would only repeat it
    val_data = create_eval_dataset(cfg.data) if validate else None

    net = build_model(cfg.model, log)
    step_fn, optimizer = build_train_step(net, cfg, setup, lr, log)
    state = _initialise(net, optimizer, cfg, run, log)
    run.truncate_log(state["epoch"])
    start_epoch = state["epoch"]
    if start_epoch >= t.epochs:
        log.info(f"nothing to do: already trained {start_epoch} of {t.epochs} epochs")
        return {"state": state, "output_dir": output_dir}
    predictor = Predictor.from_config(MindSporeModel(net), cfg)
    log.info(f"training {t.epochs - start_epoch} epochs x {steps_per_epoch} steps, batch {t.batch_size}"
             f"{f' x {group_size} devices' if group_size > 1 else ''}, crop {cfg.data.crop_size}, "
             f"output {output_dir}")

    step, curves_drawn, host = state["step"], 0.0, HostCopies()
    for epoch in range(start_epoch + 1, t.epochs + 1):
        net.set_train(True)
        losses, epoch_start = [], time.time()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{t.epochs}", leave=False,
                   disable=None if rank == 0 else True)
        batches = create_train_dataset(cfg.data, t.batch_size, seed=t.seed, epoch=epoch,
                                       **shards).create_tuple_iterator(num_epochs=1)
        for i, (images, labels) in enumerate(batches):
            step_start = time.time()
            out = step_fn(images, labels)
            loss = float((out[0] if isinstance(out, tuple) else out).asnumpy())
            overflow = isinstance(out, tuple) and bool(out[1].asnumpy())
            step += 1
            if not math.isfinite(loss) and not overflow:
                run.wait()
                raise FCNError(f"loss is {loss} at epoch {epoch}, step {step} (lr {lr[step - 1]:.3g}); stopped. "
                               f"The last good checkpoint is {output_dir / 'last.ckpt'}"
                               f"{'' if (output_dir / 'last.ckpt').exists() else ' (none saved yet)'}")
            losses.append(loss)
            seconds = time.time() - step_start
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr[step - 1]:.2e}")
            if step % t.log_interval == 0 or i == steps_per_epoch - 1:
                entry = {"epoch": epoch, "step": step, "loss": loss, "lr": float(lr[step - 1]),
                         "step_time": round(seconds, 4), "images_per_s": round(t.batch_size * group_size / seconds, 2)}
                if overflow:
                    entry["overflow"] = True
                run.record(entry)
                if bar.disable:  # no progress bar (not a terminal): a log line instead
                    log.info(f"epoch {epoch}/{t.epochs} step {step}/{total_steps} loss {loss:.4f} "
                             f"lr {lr[step - 1]:.3e} {entry['images_per_s']:.1f} img/s")
        bar.close()
        state.update(epoch=epoch, step=step)
        summary = f"epoch {epoch}/{t.epochs}: mean loss {np.mean(losses):.4f}, {time.time() - epoch_start:.1f} s"
        validated = validate and (epoch % t.eval_interval == 0 or epoch == t.epochs)
        if validated:
            scores = confusion_over_dataset(predictor, mindrecord_items(val_data), cfg.model.num_classes,
                                            desc="val")[0].scores()
            run.record({"epoch": epoch, "step": step, "val": {key: scores[key] for key, _ in SCORE_NAMES}})
            summary += f"; val {format_scores(scores)}"
            if scores["mean_iou"] > state["best_miou"]:
                state.update(best_miou=scores["mean_iou"], best_epoch=epoch)
                summary += " (best)"
        log.info(summary)
        run.wait()   # the previous epoch's files: one copy of the training state at a time, in ``host``
        if run.is_main:
            draw_curves = validated or epoch == t.epochs or time.time() - curves_drawn >= CURVES_EVERY_S
            if draw_curves:
                curves_drawn = time.time()
            run.write_behind(_epoch_writer(run, host.of(step_fn.get_parameters()), net, dict(state), t,
                                           draw_curves))
    run.wait()
    if group_size > 1:
        rows = {epoch: epoch_rows(cfg.data, epoch, t.seed, **shards) for epoch in range(start_epoch + 1, t.epochs + 1)}
        record_and_compare(output_dir, rank, group_size, rows, net.trainable_params())
    log.info(f"done: {state['epoch']} epochs, {state['step']} steps, best val mIoU {state['best_miou']:.4f} "
             f"(epoch {state['best_epoch']}); checkpoints in {output_dir}")
    return {"state": state, "output_dir": output_dir, "final_lr": float(lr[step - 1])}
