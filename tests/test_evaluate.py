import json

import cv2
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn
from PIL import Image

from fcn8s.checkpoint import save_checkpoint
from fcn8s.cli import main
from fcn8s.config import load_config
from fcn8s.data.dataset import create_eval_dataset
from fcn8s.data.mindrecord import convert_voc
from fcn8s.data.preprocess import Preprocessor
from fcn8s.data.synth import make_synthetic_voc
from fcn8s.evaluate import evaluate, mindrecord_items
from fcn8s.infer import infer
from fcn8s.models import build_model
from fcn8s.errors import FCNError
from fcn8s.export import export
from fcn8s.predict import Predictor
from fcn8s.runtime import MindSporeModel, load_model

NUM_CLASSES = 5
MEAN, STD = (103.53, 116.28, 123.675), (57.375, 57.120, 58.395)   # the default data.mean and data.std (BGR)
PREPROCESSOR = Preprocessor(MEAN, STD)


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory):
    """Val images of odd sizes (up to 75x101) and a narrow random model saved as a checkpoint."""
    root = tmp_path_factory.mktemp("odd")
    voc = make_synthetic_voc(root, num_train=2, num_val=4, size=(75, 101), num_classes=NUM_CLASSES, seed=5)
    convert_voc(voc, root / "mr", num_classes=NUM_CLASSES)
    cfg = config(root)
    ms.set_seed(1)
    net = build_model(cfg.model)
    save_checkpoint(net.get_parameters(), root / "model.ckpt")
    return root


def config(root, *overrides):
    return load_config(None, [f"data.val={root / 'mr' / 'val.mindrecord'}", f"model.num_classes={NUM_CLASSES}",
                              "model.width=0.0625", "eval.canvas=64", "device.target=CPU", "device.mode=pynative",
                              *overrides])


def normalised_by_hand(image):
    """(BGR uint8 HxWx3 - mean) / std as CHW float32, written out with numpy."""
    return ((image.astype(np.float32) - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)


def random_image(rng, height=75, width=101):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _loaded_net(root, cfg):
    from fcn8s.checkpoint import load_weights
    net = build_model(cfg.model)
    load_weights(net, root / "model.ckpt")
    net.set_train(False)
    return net


def test_eval_matches_an_independent_numpy_computation(odd_data):
    cfg = config(odd_data)
    scores = evaluate(cfg, odd_data / "model.ckpt", output=odd_data / "ev")
    net = _loaded_net(odd_data, cfg)
    truth, preds = [], []
    for image, label, _ in mindrecord_items(create_eval_dataset(cfg.data)):
        h, w, c = image.shape
        # by hand: normalise, then bottom/right zero padding onto the 64x64 canvas, grown to a multiple of 32
        padded = np.zeros((1, c, max(64, -(-h // 32) * 32), max(64, -(-w // 32) * 32)), np.float32)
        padded[0, :, :h, :w] = normalised_by_hand(image)
        logits = net(ms.Tensor(padded)).asnumpy()[0, :, :h, :w]
        preds.append(logits.argmax(0).ravel())
        truth.append(label.ravel())
    truth, preds = np.concatenate(truth), np.concatenate(preds)
    keep = truth != 255
    t, p = truth[keep], preds[keep]
    assert len(np.unique(p)) >= 2  # a non-trivial prediction
    ious, accs = [], []
    for c in range(NUM_CLASSES):
        inter, union = np.sum((t == c) & (p == c)), np.sum((t == c) | (p == c))
        if union:
            ious.append(inter / union)
        if np.sum(t == c):
            accs.append(inter / np.sum(t == c))
    assert scores["pixel_accuracy"] == pytest.approx(np.mean(t == p))
    assert scores["mean_iou"] == pytest.approx(np.mean(ious))
    assert scores["mean_accuracy"] == pytest.approx(np.mean(accs))
    assert scores["pixels"].sum() == keep.sum()  # every original pixel but void, nothing from padding
    report = json.loads((odd_data / "ev" / "metrics.json").read_text())
    assert report["mean_iou"] == pytest.approx(scores["mean_iou"]) and report["images"] == 4
    assert set(report["per_class"]) == {"class_0", "class_1", "class_2", "class_3", "class_4"}
    with Image.open(odd_data / "ev" / "confusion_matrix.png") as image:
        assert image.format == "PNG"
    before = (odd_data / "ev" / "metrics.json").stat().st_mtime_ns
    with pytest.raises(FCNError, match=r"ev/metrics.json: already exists \(use --force to overwrite\)"):
        evaluate(cfg, odd_data / "model.ckpt", output=odd_data / "ev")
    assert (odd_data / "ev" / "metrics.json").stat().st_mtime_ns == before


def test_eval_from_voc_root_equals_eval_from_mindrecord(odd_data, capsys):
    cfg = config(odd_data)
    from_records = evaluate(cfg, odd_data / "model.ckpt", output=odd_data / "ev1")
    from_voc = evaluate(cfg, odd_data / "model.ckpt", voc_root=odd_data, output=odd_data / "ev2")
    np.testing.assert_array_equal(from_records["pixels"], from_voc["pixels"])
    assert from_records["mean_iou"] == from_voc["mean_iou"]
    out = capsys.readouterr().out
    assert "PA " in out and "mIoU" in out and "class_4" in out


class PerPixel(nn.Cell):
    """A 1x1 convolution: flip-equivariant and without spatial context."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, NUM_CLASSES, 1, has_bias=True)

    def construct(self, x):
        return self.conv(x)


def test_flip_tta_of_a_flip_symmetric_model_equals_no_tta(rng):
    model = MindSporeModel(PerPixel())
    image = random_image(rng)
    plain = Predictor(model, NUM_CLASSES, PREPROCESSOR, canvas=64).logits(image)
    flipped = Predictor(model, NUM_CLASSES, PREPROCESSOR, canvas=64, flip=True).logits(image)
    np.testing.assert_allclose(flipped, plain, atol=1e-5)
    twice = Predictor(model, NUM_CLASSES, PREPROCESSOR, canvas=64, scales=(1.0, 1.0)).logits(image)
    np.testing.assert_allclose(twice, plain, atol=1e-6)


def test_sliding_window_averages_the_logits_of_overlapping_tiles(odd_data, rng):
    net = _loaded_net(odd_data, config(odd_data))
    model = MindSporeModel(net)
    image = random_image(rng)
    tiled = Predictor(model, NUM_CLASSES, PREPROCESSOR, canvas=64, window=64, stride=48).logits(image)
    normalised = normalised_by_hand(image)
    # the same computed by hand: 64x64 tiles at rows 0 and 75-64, columns 0 and 101-64, averaged
    total, count = np.zeros((NUM_CLASSES, 75, 101), np.float32), np.zeros((75, 101), np.float32)
    for top in (0, 11):
        for left in (0, 37):
            total[:, top:top + 64, left:left + 64] += model.forward(normalised[None, :, top:top + 64,
                                                                                left:left + 64])[0]
            count[top:top + 64, left:left + 64] += 1
    np.testing.assert_allclose(tiled, total / count, atol=1e-5)
    whole = Predictor(model, NUM_CLASSES, PREPROCESSOR, canvas=64).logits(image)
    assert np.abs(tiled - whole).max() > 1e-2   # the windows saw less context: not the whole-image logits
    # small overlapping windows stitch exactly when the model has no spatial context
    per_pixel = MindSporeModel(PerPixel())
    tiled = Predictor(per_pixel, NUM_CLASSES, PREPROCESSOR, canvas=32, window=32, stride=20).logits(image)
    np.testing.assert_allclose(tiled, Predictor(per_pixel, NUM_CLASSES, PREPROCESSOR, canvas=32).logits(image),
                               atol=1e-5)


def test_sliding_windows_are_padded_to_the_window_not_the_canvas(rng):
    shapes = []

    class Recording(PerPixel):
        def construct(self, x):
            shapes.append(tuple(x.shape))
            return self.conv(x)

    Predictor(MindSporeModel(Recording()), NUM_CLASSES, PREPROCESSOR, canvas=512, window=64, stride=48).logits(
        random_image(rng))
    assert shapes and set(shapes) == {(1, 3, 64, 64)}   # memory bounded by the window


def test_multiscale_tta_returns_original_size(odd_data, rng):
    net = _loaded_net(odd_data, config(odd_data))
    logits = Predictor(MindSporeModel(net), NUM_CLASSES, PREPROCESSOR, canvas=64, scales=(0.75, 1.25),
                       flip=True).logits(random_image(rng))
    assert logits.shape == (NUM_CLASSES, 75, 101) and np.isfinite(logits).all()


def test_infer_writes_pngs_matching_argmax_and_eval(odd_data, tmp_path):
    cfg = config(odd_data, "infer.legend=false")
    voc = odd_data / "VOCdevkit" / "VOC2012"
    val_ids = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    assert infer(cfg, odd_data / "model.ckpt", [str(voc / "JPEGImages" / f"{i}.jpg") for i in val_ids],
                 tmp_path) == 0
    net = _loaded_net(odd_data, cfg)
    predictor = Predictor.from_config(MindSporeModel(net), cfg)
    for image, label, name in mindrecord_items(create_eval_dataset(cfg.data)):
        with Image.open(tmp_path / f"{name}_label.png") as png:
            assert png.mode == "P"
            written = np.array(png)
        np.testing.assert_array_equal(written, predictor.predict(image))   # infer == eval, pixel for pixel
        color = np.array(Image.open(tmp_path / f"{name}_color.png"))
        overlay = np.array(Image.open(tmp_path / f"{name}_overlay.png"))
        assert color.shape == overlay.shape == label.shape + (3,)


def test_exported_onnx_model_evaluates_and_infers_like_the_checkpoint(odd_data, tmp_path):
    pytest.importorskip("onnxruntime")
    cfg = config(odd_data)
    ckpt, onnx = odd_data / "model.ckpt", tmp_path / "model.onnx"
    assert export(cfg, ckpt, onnx, fmt="ONNX", size=(64, 64)) == 0
    by_ckpt = Predictor.from_config(load_model(cfg, ckpt), cfg)
    by_onnx = Predictor.from_config(load_model(cfg, onnx), cfg)
    for image, _, _ in mindrecord_items(create_eval_dataset(cfg.data)):   # odd sizes, padded to the canvas
        expected = by_ckpt.logits(image)
        np.testing.assert_allclose(by_onnx.logits(image), expected, atol=1e-4 * np.abs(expected).max())
    from_ckpt = evaluate(cfg, ckpt, output=tmp_path / "eval_ckpt")
    from_onnx = evaluate(cfg, onnx, output=tmp_path / "eval_onnx")
    assert abs(from_onnx["mean_iou"] - from_ckpt["mean_iou"]) < 1e-4
    image = next((odd_data / "VOCdevkit/VOC2012/JPEGImages").glob("*.jpg"))
    assert infer(cfg, onnx, [str(image)], tmp_path / "infer") == 0
    assert (tmp_path / "infer" / f"{image.stem}_overlay.png").is_file()
    with pytest.raises(FCNError, match="model.onnx: the model has 5 classes, the config model.num_classes 3"):
        load_model(config(odd_data, "model.num_classes=3"), onnx)


def test_infer_handles_gray_rgba_unreadable_and_existing_outputs(odd_data, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "gray.png"), np.full((40, 50), 120, np.uint8))
    cv2.imwrite(str(src / "rgba.png"), np.full((33, 47, 4), 200, np.uint8))
    cv2.imwrite(str(src / "wide16.png"), np.full((20, 30, 3), 40000, np.uint16))
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    whole = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8))[1].tobytes()
    (src / "cut.jpg").write_bytes(whole[:len(whole) // 2])   # OpenCV alone would decode it, half grey
    cfg = config(odd_data)
    out = tmp_path / "out"
    code = infer(cfg, odd_data / "model.ckpt", [str(src)], out)
    log = capsys.readouterr().out
    assert code == 1
    assert "gray.png: converted (grayscale to colour)" in log and "rgba.png: converted (alpha channel dropped)" in log
    assert "wide16.png: converted (16-bit to 8-bit)" in log
    assert "skipped" in log and "broken.jpg: unreadable or truncated image" in log
    assert "cut.jpg: unreadable or truncated image (image file is truncated" in log
    for stem, shape in (("gray", (40, 50)), ("rgba", (33, 47)), ("wide16", (20, 30))):
        assert np.array(Image.open(out / f"{stem}_label.png")).shape == shape
    assert not (out / "broken_label.png").exists() and not (out / "cut_label.png").exists()
    before = (out / "gray_label.png").read_bytes()
    code = main(["infer", "--ckpt", str(odd_data / "model.ckpt"), str(src / "gray.png"), "-o", str(out),
                 "--set", f"model.num_classes={NUM_CLASSES}", "--set", "model.width=0.0625"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"fcn8s: error: {out / 'gray_label.png'}: already exists (use --force to overwrite)"
    assert (out / "gray_label.png").read_bytes() == before
    assert main(["infer", "--ckpt", str(odd_data / "model.ckpt"), str(tmp_path / "nothing*.jpg")]) == 2
