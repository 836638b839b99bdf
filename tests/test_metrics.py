import numpy as np
import pytest

from fcn8s.metrics import ConfusionMatrix, segmentation_scores


def test_confusion_matrix_counts_and_ignores_void():
    label = np.array([[0, 0, 1, 255], [1, 2, 2, 7]])
    pred = np.array([[0, 1, 1, 2], [1, 2, 0, 0]])
    cm = ConfusionMatrix(3).update(pred, label)
    # rows truth, columns prediction; 255 and the out-of-range 7 are ignored
    expected = np.array([[1, 1, 0],
                         [0, 2, 0],
                         [1, 0, 1]])
    np.testing.assert_array_equal(cm.matrix, expected)


def test_scores_hand_computed():
    cm = np.array([[1, 1, 0],
                   [0, 2, 0],
                   [1, 0, 1]])
    s = segmentation_scores(cm)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)
    np.testing.assert_allclose(s["accuracy"], [1 / 2, 1, 1 / 2])
    assert s["mean_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    # IoU = tp / (truth + pred - tp): class0 1/(2+2-1), class1 2/(2+3-2), class2 1/(2+1-1)
    np.testing.assert_allclose(s["iou"], [1 / 3, 2 / 3, 1 / 2])
    assert s["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s["fw_iou"] == pytest.approx((2 / 6) * (1 / 3) + (2 / 6) * (2 / 3) + (2 / 6) * (1 / 2))
    np.testing.assert_array_equal(s["pixels"], [2, 2, 2])


def test_absent_classes_are_nan_and_left_out_of_means():
    # class 2 never appears in truth or prediction; class 3 is predicted but never true
    cm = np.zeros((4, 4), dtype=np.int64)
    cm[0, 0], cm[1, 1], cm[1, 3] = 5, 3, 2
    s = segmentation_scores(cm)
    assert np.isnan(s["iou"][2]) and np.isnan(s["accuracy"][2])
    assert s["iou"][3] == 0 and np.isnan(s["accuracy"][3])
    assert s["mean_iou"] == pytest.approx((1 + 3 / 5 + 0) / 3)
    assert s["mean_accuracy"] == pytest.approx((1 + 3 / 5) / 2)


def test_accumulates_batches_of_any_shape(rng):
    a = ConfusionMatrix(5)
    preds, labels = [], []
    for shape in [(2, 7, 9), (13, 4), (1, 1, 3, 5)]:
        p, t = rng.integers(0, 5, shape), rng.integers(0, 5, shape)
        t[rng.random(shape) < 0.2] = 255
        a.update(p, t)
        preds.append(p.ravel())
        labels.append(t.ravel())
    p, t = np.concatenate(preds), np.concatenate(labels)
    keep = t != 255
    expected = np.zeros((5, 5), np.int64)
    np.add.at(expected, (t[keep], p[keep]), 1)
    np.testing.assert_array_equal(a.matrix, expected)
    b = ConfusionMatrix(5).update(p, t)
    np.testing.assert_array_equal(ConfusionMatrix(5).merge(b).matrix, expected)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_empty_matrix_gives_nan_not_crash():
    s = segmentation_scores(np.zeros((3, 3)))
    assert np.isnan(s["mean_iou"]) and np.isnan(s["pixel_accuracy"])
