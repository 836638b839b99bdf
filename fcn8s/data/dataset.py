"""MindDataset pipelines over the MindRecord files that ``fcn8s convert`` writes."""
import os

import numpy as np

from .mindrecord import mindrecord_rows, resolve_mindrecord
from .preprocess import Preprocessor
from .transforms import AugmentationDraws, TrainTransform, decode_sample


def _open(path, columns, sampler=None):
    """The rows ``sampler`` picks, in its order; all rows in file order without one."""
    import mindspore.dataset as ds
    return ds.MindDataset(str(resolve_mindrecord(path)), columns_list=columns,
                          shuffle=False if sampler is None else None, sampler=sampler)


def epoch_indices(num_rows, epoch, seed, shuffle=True, num_shards=None, shard_id=None):
    """The rows one shard reads in ``epoch``, in order: a function of (seed, epoch) alone.

    Every epoch's order is computed, not carried over from the previous epoch, so a run resumed
    at epoch k reads exactly what an uninterrupted run reads there. Shards take every
    ``num_shards``-th row of the same order (disjoint, equally many: the tail that does not
    divide is left out of this epoch, as a drop_remainder batch would be).
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_rows) if shuffle else np.arange(num_rows)
    if num_shards and num_shards > 1:
        order = order[:num_rows - num_rows % num_shards][shard_id::num_shards]
    return order


def epoch_rows(data_cfg, epoch, seed, num_shards=None, shard_id=None):
    """The rows of ``data_cfg.train`` that one shard reads in ``epoch``, in order (see epoch_indices)."""
    return epoch_indices(mindrecord_rows(data_cfg.train), epoch, seed, data_cfg.shuffle, num_shards, shard_id)


def create_train_dataset(data_cfg, batch_size, num_shards=None, shard_id=None, drop_remainder=True, seed=0,
                         epoch=1):
    """One epoch of shuffled, augmented, batched (image NCHW float32, label NHW int32) batches of ``data_cfg.train``.

    The order and the augmentation draws depend on (seed, epoch, shard) only (see epoch_indices),
    so any epoch can be rebuilt exactly. The draws come first, in row order; the transforms then
    run in ``num_workers`` threads (cv2 and numpy release the GIL; threads avoid copying every
    float32 crop between processes).
    """
    import mindspore.dataset as ds
    transform = TrainTransform(data_cfg.crop_size, data_cfg.min_scale, data_cfg.max_scale,
                               Preprocessor.from_config(data_cfg), data_cfg.flip)
    rows = epoch_rows(data_cfg, epoch, seed, num_shards, shard_id)
    dataset = _open(data_cfg.train, ["data", "label"], sampler=ds.SubsetSampler(rows.tolist()))
    dataset = dataset.map(operations=AugmentationDraws([seed, epoch, shard_id or 0]), input_columns=["label"],
                          output_columns=["label", "draws"], num_parallel_workers=1)
    dataset = dataset.map(operations=transform, input_columns=["data", "label", "draws"],
                          output_columns=["data", "label"],
                          num_parallel_workers=min(data_cfg.num_workers, os.cpu_count() or 1))
    return dataset.batch(batch_size, drop_remainder=drop_remainder)


def create_eval_dataset(data_cfg, path=None):
    """One full-size image at a time: (image HxWx3 uint8 BGR, label HW int32, file_name), in file order."""
    dataset = _open(path or data_cfg.val, ["data", "label", "file_name"])
    return dataset.map(operations=decode_sample, input_columns=["data", "label"], num_parallel_workers=1)
