"""``fcn8s demo``: synthetic VOC -> MindRecord -> train -> eval -> infer, all under one folder.

Re-running continues where the last run stopped (the dataset is deterministic, training resumes
from last.ckpt); ``--force`` deletes what an earlier demo made there and starts over.
"""
import shutil
import time
from pathlib import Path

from .config import load_config
from .data.mindrecord import convert_voc, existing_outputs
from .data.synth import make_synthetic_voc
from .evaluate import evaluate
from .infer import infer
from .log import get_logger
from .train import train

DEMO_PARTS = ("VOCdevkit", "mindrecord", "run", "eval", "infer")


def demo(output_dir="demo_out", config="demo", overrides=(), force=False):
    """Run the whole pipeline on the embedded synthetic dataset; returns 0."""
    log = get_logger()
    start = time.time()
    out = Path(output_dir)
    if force:
        for part in DEMO_PARTS:
            shutil.rmtree(out / part, ignore_errors=True)
    records = out / "mindrecord"
    cfg = load_config(config, [("data.train", str(records / "train.mindrecord")),
                               ("data.val", str(records / "val.mindrecord")),
                               ("train.output_dir", str(out / "run")), ("train.resume", "auto"), *overrides])
    d = cfg.demo
    if not (out / "VOCdevkit").is_dir():
        log.info("[1/5] synthetic VOC dataset")
        make_synthetic_voc(out, d.num_train, d.num_val, tuple(d.image_size), cfg.model.num_classes, d.seed)
    if not existing_outputs(records):
        log.info("[2/5] convert to MindRecord")
        convert_voc(out / "VOCdevkit", records, num_classes=cfg.model.num_classes)
    log.info("[3/5] train")
    state = train(cfg, how_to_resume="running the demo again")["state"]
    log.info("[4/5] evaluate the best checkpoint on the val split")
    ckpt = out / "run" / "best.ckpt"
    scores = evaluate(cfg, ckpt, output=out / "eval", force=True)  # the demo re-evaluates on each re-run
    log.info(f"[5/5] segment {d.infer_images} val images")
    val_ids = (out / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    images = [str(out / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{i}.jpg") for i in val_ids[:d.infer_images]]
    infer(cfg, ckpt, images, out / "infer", force=True)
    pictures = sorted((out / "infer").glob("*_overlay.png"))
    log.info("pictures: " + " ".join(str(p) for p in pictures))
    log.info(f"demo finished in {time.time() - start:.0f} s: val mIoU {scores['mean_iou']:.4f} "
             f"(best epoch {state['best_epoch']}); confusion matrix {out / 'eval' / 'confusion_matrix.png'}, "
             f"curves {out / 'run' / 'loss.png'} and {out / 'run' / 'miou.png'}")
    return 0
