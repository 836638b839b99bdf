import io
import shutil

import cv2
import mindspore.dataset as ds
import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fcn8s.cli import main
from fcn8s.config import load_config
from fcn8s.data.dataset import create_eval_dataset, create_train_dataset
from fcn8s.data.mindrecord import convert_voc
from fcn8s.data.preprocess import Preprocessor
from fcn8s.data import synth
from fcn8s.data.synth import make_synthetic_voc
from fcn8s.data.transforms import TrainTransform, decode_label
from fcn8s.errors import FCNError
from fcn8s.visualize import index_png_bytes

NUM_CLASSES = 6


@pytest.fixture(scope="module")
def synth_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return make_synthetic_voc(root, num_train=10, num_val=4, size=(64, 80), num_classes=NUM_CLASSES, seed=3)


@pytest.fixture(scope="module")
def converted(synth_voc, tmp_path_factory):
    out = tmp_path_factory.mktemp("mr")
    convert_voc(synth_voc, out, num_classes=NUM_CLASSES)
    return out


def _copy_voc(voc, tmp_path):
    dst = tmp_path / "VOCdevkit" / "VOC2012"
    shutil.copytree(voc, dst)
    return dst


def _records(path, columns=("file_name", "label"), **kwargs):
    data = ds.MindDataset(str(path), columns_list=list(columns), shuffle=False, **kwargs)
    return list(data.create_dict_iterator(output_numpy=True, num_epochs=1))


def test_synth_has_exact_voc_layout(synth_voc):
    lists = {s: (synth_voc / "ImageSets" / "Segmentation" / f"{s}.txt").read_text().split()
             for s in ("train", "val", "trainval")}
    assert len(lists["train"]) == 10 and len(lists["val"]) == 4
    assert lists["trainval"] == lists["train"] + lists["val"] and not set(lists["train"]) & set(lists["val"])
    seen = set()
    for image_id in lists["trainval"]:
        with Image.open(synth_voc / "JPEGImages" / f"{image_id}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert 48 <= im.height <= 64 and 60 <= im.width <= 80
            size = im.size
        with Image.open(synth_voc / "SegmentationClass" / f"{image_id}.png") as lb:
            assert lb.mode == "P" and lb.size == size
            assert lb.getpalette()[3:6] == [128, 0, 0]  # the VOC colour of class 1
            seen |= set(np.unique(np.array(lb)).tolist())
    assert 255 in seen and 0 in seen and seen <= set(range(NUM_CLASSES)) | {255}
    assert len(seen - {0, 255}) >= 3


def test_synth_is_deterministic_and_refuses_to_overwrite(synth_voc, tmp_path):
    again = make_synthetic_voc(tmp_path, num_train=10, num_val=4, size=(64, 80), num_classes=NUM_CLASSES, seed=3)
    name = "JPEGImages/2026_000005.jpg"
    assert (again / name).read_bytes() == (synth_voc / name).read_bytes()
    with pytest.raises(FCNError, match="already exists"):
        make_synthetic_voc(tmp_path, num_train=2, num_val=1, size=(64, 64), num_classes=3, seed=4)
    other = make_synthetic_voc(tmp_path, num_train=2, num_val=1, size=(64, 64), num_classes=3, seed=4, force=True)
    assert (other / name).exists() is False and len(list(tmp_path.iterdir())) == 1


def test_convert_preserves_labels_and_records_ids(synth_voc, converted):
    assert (converted / "train_ids.txt").read_text().split() == (
        synth_voc / "ImageSets/Segmentation/train.txt").read_text().split()
    for split in ("train", "val"):
        rows = _records(converted / f"{split}.mindrecord", ("file_name", "data", "label"))
        for row in rows:
            image_id = str(row["file_name"])
            original = np.array(Image.open(synth_voc / "SegmentationClass" / f"{image_id}.png"))
            np.testing.assert_array_equal(decode_label(row["label"].tobytes()), original)
            assert row["data"].tobytes() == (synth_voc / "JPEGImages" / f"{image_id}.jpg").read_bytes()
    train = {str(r["file_name"]) for r in _records(converted / "train.mindrecord")}
    val = {str(r["file_name"]) for r in _records(converted / "val.mindrecord")}
    assert len(train) == 10 and len(val) == 4 and not train & val


def test_convert_refuses_existing_output_and_leaves_nothing_behind(synth_voc, converted, tmp_path):
    before = sorted(p.name for p in converted.iterdir())
    with pytest.raises(FCNError, match="train.mindrecord: already exists"):
        convert_voc(synth_voc, converted, num_classes=NUM_CLASSES)
    assert sorted(p.name for p in converted.iterdir()) == before


def test_train_pipeline_shapes_ranges_and_padding(converted):
    cfg = load_config(None, [f"data.train={converted / 'train.mindrecord'}", "data.crop_size=96",
                             "data.num_workers=1"])
    batches = list(create_train_dataset(cfg.data, batch_size=4).create_tuple_iterator(output_numpy=True,
                                                                                        num_epochs=1))
    assert len(batches) == 2  # 10 images, drop_remainder
    image, label = batches[0]
    assert image.shape == (4, 3, 96, 96) and image.dtype == np.float32
    assert label.shape == (4, 96, 96) and label.dtype == np.int32
    assert -2.5 < image.min() and image.max() < 2.8
    assert set(np.unique(label)) <= set(range(NUM_CLASSES)) | {255}


def test_train_transform_pads_with_zero_and_255():
    transform = TrainTransform(crop_size=64, min_scale=1.0, max_scale=1.0,
                               preprocessor=Preprocessor((10, 20, 30), (2, 4, 8)), flip=False)
    image = np.full((40, 50, 3), (12, 24, 38), np.uint8)
    label = np.full((40, 50), 3, np.uint8)
    out_image, out_label = transform(cv2.imencode(".png", image)[1].tobytes(),
                                     cv2.imencode(".png", label)[1].tobytes(), np.array([0.3, 0.9, 0.9, 0.1]))
    assert out_image.shape == (3, 64, 64) and out_label.shape == (64, 64)
    np.testing.assert_allclose(out_image[:, :40, :50].reshape(3, -1).mean(axis=1), [1.0, 1.0, 1.0])
    assert np.all(out_image[:, 40:, :] == 0) and np.all(out_image[:, :, 50:] == 0)
    assert np.all(out_label[:40, :50] == 3) and np.all(out_label[40:] == 255) and np.all(out_label[:, 50:] == 255)


def _tutorial_crop(image, label, draws, crop, mean, std, min_scale=0.5, max_scale=2.0):
    """The tutorial's SegDataset.preprocess_dataset (resize, normalise all, pad, crop, flip) with given draws."""
    scale = min_scale + draws[0] * (max_scale - min_scale)
    new_h, new_w = int(scale * image.shape[0]), int(scale * image.shape[1])
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    image = (image - np.array(mean, np.float32)) / np.array(std, np.float32)
    out_h, out_w = max(new_h, crop), max(new_w, crop)
    image = cv2.copyMakeBorder(image, 0, out_h - new_h, 0, out_w - new_w, cv2.BORDER_CONSTANT, value=0)
    label = cv2.copyMakeBorder(label, 0, out_h - new_h, 0, out_w - new_w, cv2.BORDER_CONSTANT, value=255)
    top, left = int(draws[1] * (out_h - crop + 1)), int(draws[2] * (out_w - crop + 1))
    image, label = image[top:top + crop, left:left + crop], label[top:top + crop, left:left + crop]
    if draws[3] < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return image.transpose(2, 0, 1), label.astype(np.int32)


def test_train_transform_equals_the_tutorial_pipeline_for_the_same_draws(rng):
    mean, std = [103.53, 116.28, 123.675], [57.375, 57.120, 58.395]
    image = cv2.GaussianBlur(rng.integers(0, 256, (75, 100, 3), dtype=np.uint8), (5, 5), 1)
    label = rng.integers(0, 21, (75, 100), dtype=np.uint8)
    data, label_png = cv2.imencode(".png", image)[1].tobytes(), cv2.imencode(".png", label)[1].tobytes()
    transform = TrainTransform(crop_size=96, min_scale=0.5, max_scale=2.0, preprocessor=Preprocessor(mean, std))
    for _ in range(16):
        draws = rng.random(4)
        out_image, out_label = transform(data, label_png, draws)
        ref_image, ref_label = _tutorial_crop(image, label, draws, 96, mean, std)
        np.testing.assert_array_equal(out_label, ref_label)
        np.testing.assert_array_equal(out_image, ref_image)  # the same float32 values, not just close


def test_normalize_writes_the_region_only_and_takes_any_strides(rng):
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)[:, ::-1]  # a flipped (negative-stride) view
    out = np.full((3, 32, 40), 7.0, np.float32)
    prep = Preprocessor((1, 2, 3), (2, 4, 8))
    assert prep.normalize(image, out=out) is out
    expected = ((image - np.float32([1, 2, 3])) / np.float32([2, 4, 8])).transpose(2, 0, 1)
    np.testing.assert_array_equal(out[:, :20, :30], expected)
    assert (out[:, 20:, :] == 7).all() and (out[:, :, 30:] == 7).all()
    np.testing.assert_array_equal(prep.normalize(image), expected)
    # RGB images give the network the same BGR planes
    rgb = Preprocessor((1, 2, 3), (2, 4, 8), channel_order="rgb")
    np.testing.assert_array_equal(rgb.normalize(np.ascontiguousarray(image[..., ::-1])), expected)


@pytest.mark.parametrize("image, message", [
    (np.zeros((4, 5, 3), np.float32), "got a float32 array of shape (4, 5, 3)"),
    (np.zeros((4, 5), np.uint8), "got a uint8 array of shape (4, 5)"),
    (np.zeros((4, 5, 4), np.uint8), "got a uint8 array of shape (4, 5, 4)"),
    ([[1, 2, 3]], "got a list"),
])
def test_preprocessor_refuses_what_is_not_an_hxwx3_uint8_image(image, message):
    with pytest.raises(FCNError) as error:
        Preprocessor((0, 0, 0), (1, 1, 1), channel_order="rgb").normalize(image)
    assert str(error.value) == f"expected an HxWx3 uint8 image (RGB), {message}"


def test_preprocessor_pads_to_the_size_divisor_with_its_pad_value():
    prep = Preprocessor((0, 0, 0), (1, 1, 1), image_pad=-1.0)
    assert [prep.padded_size(n) for n in (1, 32, 33, 75)] == [32, 32, 64, 96]
    assert prep.padded_size(33, minimum=128) == 128 and prep.padded_size(130, minimum=128) == 160
    padded = prep.pad_images(np.ones((2, 3, 5, 7), np.float32), 32, 64)
    assert padded.shape == (2, 3, 32, 64) and padded[:, :, :5, :7].min() == 1
    assert (padded[:, :, 5:] == -1).all() and (padded[:, :, :, 7:] == -1).all()
    with pytest.raises(FCNError, match="channel_order 'hsv': choose from bgr, rgb"):
        Preprocessor((0, 0, 0), (1, 1, 1), channel_order="hsv")


def test_train_transform_scales_labels_with_nearest_and_flips_together():
    transform = TrainTransform(crop_size=256, min_scale=2.0, max_scale=2.0,
                               preprocessor=Preprocessor((0, 0, 0), (1, 1, 1)))
    label = np.zeros((30, 40), np.uint8)
    label[:, :10] = 4
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :10] = 200
    flips = set()
    for i in range(12):
        draws = np.random.default_rng(i).random(4)
        out_image, out_label = transform(cv2.imencode(".png", image)[1].tobytes(),
                                         cv2.imencode(".png", label)[1].tobytes(), draws)
        assert set(np.unique(out_label)) == {0, 4, 255}  # no interpolated in-between classes
        cols = np.flatnonzero((out_label != 255).any(axis=0))
        assert len(cols) == 80 and cols[-1] - cols[0] == 79 and (out_label[60:] == 255).all()
        valid = out_label[:60, cols[0]:cols[-1] + 1]
        bright = out_image[0, :60, cols[0]:cols[-1] + 1] > 100
        assert np.mean(bright == (valid == 4)) > 0.97
        flipped = bool(valid[0, -1] == 4)
        assert flipped == (draws[3] < 0.5)
        # as in the tutorial (pad right, then flip the crop): a flipped crop has its padding on the left
        assert cols[0] == (256 - 80 if flipped else 0)
        assert (out_image[:, :, :cols[0]] == 0).all() and (out_image[:, :, cols[-1] + 1:] == 0).all()
        flips.add(flipped)
    assert flips == {True, False}


def test_eval_pipeline_keeps_original_size(converted, synth_voc):
    cfg = load_config(None, [f"data.val={converted / 'val.mindrecord'}"])
    for image, label, name in create_eval_dataset(cfg.data).create_tuple_iterator(output_numpy=True, num_epochs=1):
        with Image.open(synth_voc / "JPEGImages" / f"{name}.jpg") as im:
            assert image.shape == (im.height, im.width, 3) and label.shape == (im.height, im.width)
            assert image.dtype == np.uint8   # normalised by the predictor's Preprocessor, not here


def test_sharded_files_and_reader_shards_split_without_overlap(synth_voc, tmp_path):
    convert_voc(synth_voc, tmp_path, num_classes=NUM_CLASSES, shards=3)
    assert sorted(p.name for p in tmp_path.glob("train.mindrecord?")) == [f"train.mindrecord{i}" for i in range(3)]
    everything = {str(r["file_name"]) for r in _records(tmp_path / "train.mindrecord0")}
    parts = [{str(r["file_name"]) for r in _records(tmp_path / "train.mindrecord0", num_shards=2, shard_id=i)}
             for i in range(2)]
    assert len(everything) == 10 and parts[0] | parts[1] == everything and not parts[0] & parts[1]
    cfg = load_config(None, [f"data.train={tmp_path / 'train.mindrecord'}", "data.crop_size=64",
                             "data.num_workers=1"])
    assert create_train_dataset(cfg.data, 1, num_shards=2, shard_id=0).get_dataset_size() == 5


def _make_sbd(root, voc, ids_train, ids_val, label_value):
    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "img").mkdir(parents=True)
    (dataset / "cls").mkdir()
    for image_id in ids_train + ids_val:
        src = voc / "JPEGImages" / f"{image_id}.jpg"
        if not src.exists():
            cv2.imwrite(str(src.with_name("x.jpg")), np.zeros((40, 40, 3), np.uint8))
            src = src.with_name("x.jpg")
        shutil.copy(src, dataset / "img" / f"{image_id}.jpg")
        h, w = cv2.imread(str(src)).shape[:2]
        seg = np.full((h, w), label_value, np.uint8)
        savemat(dataset / "cls" / f"{image_id}.mat",
                {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros(1), "CategoriesPresent": np.zeros(1)}})
    (dataset / "train.txt").write_text("\n".join(ids_train) + "\n")
    (dataset / "val.txt").write_text("\n".join(ids_val) + "\n")
    return dataset


def test_trainaug_is_sbd_plus_voc_train_minus_voc_val(synth_voc, tmp_path):
    voc = _copy_voc(synth_voc, tmp_path)
    voc_train = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    voc_val = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    sbd_only = ["2008_000001", "2008_000002"]
    # SBD holds one VOC train id (VOC's label must win) and one VOC val id (must be excluded)
    _make_sbd(tmp_path, voc, sbd_only + [voc_train[0]], [voc_val[0]], label_value=5)
    out = tmp_path / "mr"
    convert_voc(tmp_path / "VOCdevkit", out, sbd_root=tmp_path / "benchmark_RELEASE", num_classes=NUM_CLASSES)
    rows = {str(r["file_name"]): r for r in _records(out / "train.mindrecord")}
    assert set(rows) == set(voc_train) | set(sbd_only)
    assert not set(rows) & set(voc_val)
    assert set(np.unique(decode_label(rows["2008_000001"]["label"].tobytes()))) == {5}
    original = np.array(Image.open(voc / "SegmentationClass" / f"{voc_train[0]}.png"))
    np.testing.assert_array_equal(decode_label(rows[voc_train[0]]["label"].tobytes()), original)
    assert (out / "train_ids.txt").read_text().split() == sorted(rows)


def _encoded(array, fmt=".jpg"):
    return cv2.imencode(fmt, array)[1].tobytes()


def _pil_bytes(mode, size=(64, 48), fmt="PNG"):
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format=fmt)
    return buffer.getvalue()


BAD_INPUTS = {
    "corrupt jpeg": (lambda img, lbl: (b"\xff\xd8 this is not a jpeg", None), "unreadable or truncated image"),
    "truncated jpeg": (lambda img, lbl: (img[: len(img) // 2], None), "unreadable or truncated image"),
    "grayscale image": (lambda img, lbl: (_pil_bytes("L", fmt="JPEG"), None), "grayscale image (mode L)"),
    "rgba image": (lambda img, lbl: (_pil_bytes("RGBA"), None), "RGBA image (mode RGBA)"),
    "16-bit image": (lambda img, lbl: (_pil_bytes("I;16"), None), "16-bit image"),
    "label size": (lambda img, lbl: (None, index_png_bytes(np.zeros((10, 12), np.uint8))),
                   "label is 12x10 but its image is"),
    "label range": (lambda img, lbl: (None, index_png_bytes(np.full((48, 64), 9, np.uint8))),
                    "label values 9 outside 0..5 and 255"),
    "rgb label": (lambda img, lbl: (None, _pil_bytes("RGB")), "label mode RGB (a colour-coded picture"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_are_named_and_leave_nothing(case, synth_voc, tmp_path):
    voc = _copy_voc(synth_voc, tmp_path)
    victim = (voc / "ImageSets/Segmentation/train.txt").read_text().split()[2]
    image_path, label_path = voc / "JPEGImages" / f"{victim}.jpg", voc / "SegmentationClass" / f"{victim}.png"
    # every bad case starts from a consistent 64x48 pair
    image_path.write_bytes(_encoded(np.full((48, 64, 3), 90, np.uint8)))
    label_path.write_bytes(index_png_bytes(np.zeros((48, 64), np.uint8)))
    make, message = BAD_INPUTS[case]
    new_image, new_label = make(image_path.read_bytes(), label_path.read_bytes())
    if new_image is not None:
        image_path.write_bytes(new_image)
    if new_label is not None:
        label_path.write_bytes(new_label)
    out = tmp_path / "mr"
    with pytest.raises(FCNError) as err:
        convert_voc(voc, out, num_classes=NUM_CLASSES)
    assert message in str(err.value) and victim in str(err.value) and "--skip-bad" in str(err.value)
    assert list(out.iterdir()) == []
    convert_voc(voc, out, num_classes=NUM_CLASSES, skip_bad=True)
    assert victim in (out / "train_skipped.txt").read_text()
    assert victim not in (out / "train_ids.txt").read_text().split()
    assert len((out / "train_ids.txt").read_text().split()) == 9


def test_listed_id_without_files_and_empty_dir(synth_voc, tmp_path, capsys):
    voc = _copy_voc(synth_voc, tmp_path)
    with open(voc / "ImageSets/Segmentation/val.txt", "a") as f:
        f.write("2099_000001\n")
    with pytest.raises(FCNError, match=r"2099_000001.jpg: listed as '2099_000001' but missing"):
        convert_voc(voc, tmp_path / "mr", num_classes=NUM_CLASSES)
    (tmp_path / "empty").mkdir()
    assert main(["convert", "--voc-root", str(tmp_path / "empty"), "-o", str(tmp_path / "mr")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fcn8s: error: ") and "empty: no VOC 2012 layout found" in err and "\n" not in err


def test_val_id_in_train_list_is_refused(synth_voc, tmp_path):
    voc = _copy_voc(synth_voc, tmp_path)
    val_id = (voc / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    with open(voc / "ImageSets/Segmentation/train.txt", "a") as f:
        f.write(val_id + "\n")
    with pytest.raises(FCNError, match=f"1 ids are in both train and val \\({val_id}\\)"):
        convert_voc(voc, tmp_path / "mr", num_classes=NUM_CLASSES)


def test_check_data_clean_voc_and_mindrecord(synth_voc, converted, capsys):
    from fcn8s.data.check import check_data
    assert check_data(synth_voc.parent, num_classes=NUM_CLASSES) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "void (255)" in out
    assert [line.split()[:2] for line in out.splitlines()[1:4]] == [["train", "10"], ["trainval", "14"],
                                                                    ["val", "4"]]
    assert check_data(converted / "val.mindrecord", num_classes=NUM_CLASSES) == 0
    assert "val" in capsys.readouterr().out


def test_check_data_names_every_problem(synth_voc, tmp_path, capsys):
    from fcn8s.data.check import check_data
    voc = _copy_voc(synth_voc, tmp_path)
    lists = voc / "ImageSets/Segmentation"
    train, val = (lists / "train.txt").read_text().split(), (lists / "val.txt").read_text().split()
    (lists / "train.txt").write_text("\n".join(train + [val[0], "2099_000009"]) + "\n")
    (voc / "SegmentationClass" / f"{train[1]}.png").write_bytes(index_png_bytes(np.full((3, 3), 40, np.uint8)))
    label = np.array(Image.open(voc / "SegmentationClass" / f"{train[2]}.png"))
    label[0, 0] = 17
    (voc / "SegmentationClass" / f"{train[2]}.png").write_bytes(index_png_bytes(label))
    assert check_data(voc, num_classes=NUM_CLASSES) == 1
    out = capsys.readouterr().out
    assert f"'{val[0]}' is in both train.txt and val.txt" in out
    assert "2099_000009.jpg: listed as '2099_000009' but missing" in out
    assert f"{train[1]}.png: label is 3x3 but its image is" in out
    assert f"{train[2]}.png: label values 17 outside 0..5 and 255" in out
    assert "4 problem(s)" in out


def test_check_data_names_the_mindrecord_row_for_image_and_label_problems(tmp_path, capsys):
    from mindspore.mindrecord import FileWriter
    from fcn8s.data.check import check_data
    from fcn8s.data.mindrecord import SCHEMA
    path = tmp_path / "val.mindrecord"
    writer = FileWriter(str(path), shard_num=1)
    writer.add_schema(SCHEMA, "bad rows")
    image = _encoded(np.zeros((48, 64, 3), np.uint8))
    writer.write_raw_data([{"file_name": "rgb", "data": image, "label": _pil_bytes("RGB")},
                           {"file_name": "range", "data": image,
                            "label": index_png_bytes(np.full((48, 64), 40, np.uint8))},
                           {"file_name": "gray", "data": _pil_bytes("L", fmt="JPEG"),
                            "label": index_png_bytes(np.zeros((48, 64), np.uint8))}])
    writer.commit()
    assert check_data(path, num_classes=NUM_CLASSES) == 1
    out = capsys.readouterr().out
    assert f"{path}[rgb]: label mode RGB (a colour-coded picture" in out
    assert f"{path}[range]: label values 40 outside 0..5 and 255" in out
    assert f"{path}[gray]: grayscale image (mode L)" in out


def test_augmentation_is_reproducible_with_several_workers(converted):
    cfg = load_config(None, [f"data.train={converted / 'train.mindrecord'}", "data.crop_size=64",
                             "data.num_workers=2", "data.shuffle=false"])
    runs = [np.concatenate([label for _, label in create_train_dataset(cfg.data, 2, seed=7).create_tuple_iterator(
        output_numpy=True, num_epochs=1)]) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    other = np.concatenate([label for _, label in create_train_dataset(cfg.data, 2, seed=8).create_tuple_iterator(
        output_numpy=True, num_epochs=1)])
    assert (other != runs[0]).any()


@pytest.mark.parametrize("texture", synth.TEXTURES)
def test_a_texture_computed_over_an_objects_box_is_the_whole_images_texture_there(texture):
    h, w = 50, 70
    whole = synth._texture(texture, h, w, (200, 40, 90), np.random.default_rng(5), (slice(0, h), slice(0, w)))
    box = (slice(11, 30), slice(23, 61))
    rng = np.random.default_rng(5)
    part = synth._texture(texture, h, w, (200, 40, 90), rng, box)
    np.testing.assert_array_equal(part, whole[box])
    # the draws do not depend on the box: what comes next from the generator is the same
    after_whole = np.random.default_rng(5)
    synth._texture(texture, h, w, (200, 40, 90), after_whole, (slice(0, h), slice(0, w)))
    assert rng.integers(1 << 30) == after_whole.integers(1 << 30)
