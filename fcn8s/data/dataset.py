"""MindDataset pipelines over the MindRecord files that ``fcn8s convert`` writes."""
import os

from .mindrecord import resolve_mindrecord
from .transforms import AugmentationDraws, EvalTransform, TrainTransform


def _open(path, columns, shuffle, num_shards=None, shard_id=None):
    import mindspore.dataset as ds
    return ds.MindDataset(str(resolve_mindrecord(path)), columns_list=columns, shuffle=shuffle,
                          num_shards=num_shards, shard_id=shard_id)


def create_train_dataset(data_cfg, batch_size, num_shards=None, shard_id=None, drop_remainder=True, seed=0):
    """Shuffled, augmented, batched (image NCHW float32, label NHW int32) batches of ``data_cfg.train``.

    The random draws come first, in row order; the transforms then run in ``num_workers`` threads
    (cv2 and numpy release the GIL; threads avoid copying every float32 crop between processes).
    """
    transform = TrainTransform(data_cfg.crop_size, data_cfg.min_scale, data_cfg.max_scale, data_cfg.mean,
                               data_cfg.std, data_cfg.ignore_label, data_cfg.flip)
    dataset = _open(data_cfg.train, ["data", "label"], data_cfg.shuffle, num_shards, shard_id)
    dataset = dataset.map(operations=AugmentationDraws(seed), input_columns=["label"],
                          output_columns=["label", "draws"], num_parallel_workers=1)
    dataset = dataset.map(operations=transform, input_columns=["data", "label", "draws"],
                          output_columns=["data", "label"],
                          num_parallel_workers=min(data_cfg.num_workers, os.cpu_count() or 1))
    return dataset.batch(batch_size, drop_remainder=drop_remainder)


def create_eval_dataset(data_cfg, path=None):
    """One full-size image at a time: (image CHW float32, label HW int32, file_name), in file order."""
    transform = EvalTransform(data_cfg.mean, data_cfg.std)
    dataset = _open(path or data_cfg.val, ["data", "label", "file_name"], shuffle=False)
    return dataset.map(operations=transform, input_columns=["data", "label"], num_parallel_workers=1)
