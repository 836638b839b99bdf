import subprocess
import sys

import cv2
import mindspore as ms
import numpy as np
import pytest
from PIL import Image

import fcn8s
from fcn8s.errors import FCNError
from fcn8s.export import export
from fcn8s.infer import infer
from test_evaluate import NUM_CLASSES, _loaded_net, config, normalised_by_hand, odd_data  # noqa: F401 (fixture)


def _val_images(root):
    voc = root / "VOCdevkit" / "VOC2012"
    return [voc / "JPEGImages" / f"{i}.jpg" for i in (voc / "ImageSets/Segmentation/val.txt").read_text().split()]


def _infer_pictures(cfg, weights, image, output):
    """(label, overlay RGB) that ``fcn8s infer`` writes for ``image``."""
    assert infer(cfg, weights, [str(image)], output) == 0
    with Image.open(output / f"{image.stem}_label.png") as label:
        with Image.open(output / f"{image.stem}_overlay.png") as picture:
            return np.array(label), np.array(picture.convert("RGB"))


def test_import_fcn8s_loads_no_mindspore_and_segmenter_on_first_use():
    code = ("import sys, fcn8s\n"
            "assert 'mindspore' not in sys.modules and 'fcn8s.segmenter' not in sys.modules\n"
            "assert fcn8s.Segmenter.__module__ == 'fcn8s.segmenter' and 'mindspore' not in sys.modules\n"
            "try:\n    fcn8s.segment\nexcept AttributeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "module 'fcn8s' has no attribute 'segment'"


def test_segmenter_gives_infers_pixels_and_the_networks_argmax(odd_data, tmp_path):
    cfg = config(odd_data)
    seg = fcn8s.Segmenter(odd_data / "model.ckpt", cfg)
    net = _loaded_net(odd_data, cfg)
    for path in _val_images(odd_data)[:2]:
        image = cv2.imread(str(path))
        mask = seg(image)
        label, overlay = _infer_pictures(cfg, odd_data / "model.ckpt", path, tmp_path / path.stem)
        np.testing.assert_array_equal(mask, label)
        np.testing.assert_array_equal(seg.overlay(image, mask), overlay[..., ::-1])   # BGR in, BGR out
        # by hand: normalise, pad onto the 64 canvas grown to a multiple of 32, argmax of the cropped logits
        h, w = mask.shape
        padded = np.zeros((1, 3, max(64, -(-h // 32) * 32), max(64, -(-w // 32) * 32)), np.float32)
        padded[0, :, :h, :w] = normalised_by_hand(image)
        np.testing.assert_array_equal(mask, net(ms.Tensor(padded)).asnumpy()[0, :, :h, :w].argmax(0))


def test_segmenter_takes_a_config_file_and_names_a_checkpoint_that_does_not_fit(odd_data, tmp_path):
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text(f"model: {{num_classes: {NUM_CLASSES}, width: 0.0625}}\neval: {{canvas: 64}}\n"
                    "device: {target: CPU, mode: pynative}\n")
    image = cv2.imread(str(_val_images(odd_data)[0]))
    by_file = fcn8s.Segmenter(odd_data / "model.ckpt", str(yaml))
    np.testing.assert_array_equal(by_file(image), fcn8s.Segmenter(odd_data / "model.ckpt", config(odd_data))(image))
    with pytest.raises(FCNError) as error:
        fcn8s.Segmenter(odd_data / "model.ckpt", "demo")   # a 21-class, width 0.25 network
    assert "model.ckpt" in str(error.value) and "\n" not in str(error.value)


def test_channel_order_rgb_takes_rgb_images_and_gives_rgb_overlays(odd_data):
    cfg = config(odd_data)
    bgr = cv2.imread(str(_val_images(odd_data)[0]))
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    by_bgr = fcn8s.Segmenter(odd_data / "model.ckpt", cfg)
    by_rgb = fcn8s.Segmenter(odd_data / "model.ckpt", cfg, channel_order="rgb")
    mask = by_bgr(bgr)
    np.testing.assert_array_equal(by_rgb(rgb), mask)
    assert (by_rgb(bgr) != mask).any()   # the flag matters: swapped channels are another picture
    np.testing.assert_array_equal(by_rgb.overlay(rgb, mask), by_bgr.overlay(bgr, mask)[..., ::-1])


def test_batch_equals_one_by_one_and_batches_images_of_one_size(odd_data, rng):
    seg = fcn8s.Segmenter(odd_data / "model.ckpt", config(odd_data), batch_size=2)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
              [(40, 50, 3), (33, 70, 3), (40, 50, 3), (40, 50, 3), (33, 70, 3)]]
    batch_shapes = []
    forward = seg.predictor.model.forward
    seg.predictor.model.forward = lambda batch: batch_shapes.append(batch.shape) or forward(batch)
    masks = seg.batch(images)
    assert sorted(batch_shapes) == [(1, 3, 64, 64), (2, 3, 64, 64), (2, 3, 64, 96)]
    assert len(masks) == len(images)
    for image, mask in zip(images, masks):
        np.testing.assert_array_equal(mask, seg(image))
    assert seg.batch([]) == []


@pytest.mark.parametrize("image, what", [
    (np.zeros((40, 50, 3), np.float32), "a float32 array of shape (40, 50, 3)"),
    (np.zeros((40, 50), np.uint8), "a uint8 array of shape (40, 50)"),
    (np.zeros((40, 50, 4), np.uint8), "a uint8 array of shape (40, 50, 4)"),
    ("photo.jpg", "a str"),
])
def test_images_that_are_not_hxwx3_uint8_are_one_line_errors(odd_data, image, what):
    seg = fcn8s.Segmenter(odd_data / "model.ckpt", config(odd_data))
    for call in (seg, lambda x: seg.batch([x])):
        with pytest.raises(FCNError) as error:
            call(image)
        assert str(error.value) == f"expected an HxWx3 uint8 image (BGR), got {what}"


def test_segmenter_on_an_onnx_export_gives_infers_pixels(odd_data, tmp_path):
    pytest.importorskip("onnxruntime")
    cfg = config(odd_data)
    onnx = tmp_path / "model.onnx"
    assert export(cfg, odd_data / "model.ckpt", onnx, fmt="ONNX", size=(64, 64)) == 0
    seg = fcn8s.Segmenter(onnx, cfg)
    path = _val_images(odd_data)[1]
    label, overlay = _infer_pictures(cfg, onnx, path, tmp_path / "infer")
    image = cv2.imread(str(path))
    np.testing.assert_array_equal(seg(image), label)
    np.testing.assert_array_equal(seg.overlay(image, label), overlay[..., ::-1])


def test_mindir_export_segments_on_its_fixed_input_and_refuses_larger_images(odd_data, tmp_path, capsys):
    """A MINDIR exported at batch 2 x 96x128: images are padded to that, batches run in pairs."""
    cfg = config(odd_data, "eval.canvas=128")
    mindir = tmp_path / "model.mindir"
    assert export(cfg, odd_data / "model.ckpt", mindir, batch=2, size=(96, 128)) == 0
    by_mindir = fcn8s.Segmenter(mindir, cfg)
    assert "fixed input: batch 2, 96x128" in capsys.readouterr().out
    net = _loaded_net(odd_data, cfg)
    images = [cv2.imread(str(p)) for p in _val_images(odd_data)[:3]]
    for image, got in zip(images, [by_mindir.predictor.logits(image) for image in images]):
        # by hand: normalised, padded to the file's 96x128 (not the 128 canvas), the checkpoint's network
        h, w = image.shape[:2]
        padded = np.zeros((1, 3, 96, 128), np.float32)
        padded[0, :, :h, :w] = normalised_by_hand(image)
        expected = net(ms.Tensor(padded)).asnumpy()[0, :, :h, :w]
        np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    same_size = [images[0]] * 3
    for mask in by_mindir.batch(same_size):   # two calls of batch 2, the second filled up
        np.testing.assert_array_equal(mask, by_mindir(images[0]))
    with pytest.raises(FCNError) as error:
        by_mindir(np.zeros((100, 60, 3), np.uint8))
    assert str(error.value) == ("a 100x60 input does not fit the model's fixed 96x128 input; "
                                "export it with a larger --size, or set eval.window to at most 96")
