"""The one confusion matrix, and the one place it becomes PA / MPA / mIoU / FWIoU / per-class scores."""
import numpy as np


class ConfusionMatrix:
    """Accumulates a (num_classes x num_classes) int64 matrix: rows = ground truth, columns = prediction.

    Pixels whose label is outside 0..num_classes-1 (255 = void, padding) are ignored; any batch
    and image size work as long as prediction and label have the same shape.
    """

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction, label):
        prediction = np.asarray(prediction)
        label = np.asarray(label)
        if prediction.shape != label.shape:
            raise ValueError(f"prediction shape {prediction.shape} != label shape {label.shape}")
        n = self.num_classes
        label = label.astype(np.int64, copy=False).ravel()
        prediction = prediction.astype(np.int64, copy=False).ravel()
        valid = (label >= 0) & (label < n) & (prediction >= 0) & (prediction < n)
        self.matrix += np.bincount(n * label[valid] + prediction[valid], minlength=n * n).reshape(n, n)
        return self

    def merge(self, other):
        self.matrix += other.matrix
        return self

    def scores(self):
        return segmentation_scores(self.matrix)


def segmentation_scores(matrix):
    """Scores from a confusion matrix (rows = truth).

    Returns pixel_accuracy, mean_accuracy, mean_iou, fw_iou (floats) and per-class ``iou``,
    ``accuracy``, ``pixels`` arrays. A class absent from both truth and prediction has IoU NaN and
    is left out of the means; a class absent from the truth only has accuracy NaN.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    truth = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    total = matrix.sum()
    union = truth + predicted - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = np.where(truth > 0, tp / truth, np.nan)
        iou = np.where(union > 0, tp / union, np.nan)
    freq = truth / total if total > 0 else np.zeros_like(truth)
    present = ~np.isnan(iou)
    return {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_accuracy": float(np.nanmean(accuracy)) if np.any(truth > 0) else float("nan"),
        "mean_iou": float(np.nanmean(iou)) if present.any() else float("nan"),
        "fw_iou": float((freq[present] * iou[present]).sum()) if total > 0 else float("nan"),
        "iou": iou,
        "accuracy": accuracy,
        "pixels": truth.astype(np.int64),
    }
