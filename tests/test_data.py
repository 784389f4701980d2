import gzip
import logging
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff.config import DataConfig
from latentdiff.data import (batch_indices, load_dataset, load_digits, load_image_folder,
                             load_mnist, rank_slice,
                             split_holdout, to_model_range)
from latentdiff.errors import UserError


def test_digits_are_upsampled_real_digits():
    data = load_digits(32)
    assert data.images.shape == (1797, 1, 32, 32) and data.images.dtype == torch.uint8
    assert data.num_classes == 10 and sorted(data.labels.unique().tolist()) == list(range(10))
    x = to_model_range(data.images)
    assert x.min() == -1 and x.max() == 1


def test_holdout_split_is_disjoint_and_seeded():
    data = load_digits(8)
    train, held = split_holdout(data, 400, seed=0)
    assert len(train) == 1397 and len(held) == 400
    train2, _ = split_holdout(data, 400, seed=0)
    assert torch.equal(train.images, train2.images)
    pairs = {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(held.images, held.labels)}
    assert sum(tuple(x.flatten().tolist()) + (int(y),) in pairs for x, y in zip(train.images, train.labels)) < 20
    with pytest.raises(UserError, match="holdout"):
        split_holdout(data, 1797, seed=0)


def test_batch_schedule_is_deterministic_and_covers_each_epoch():
    first_epoch = torch.cat([batch_indices(10, 4, step, seed=1) for step in range(3)])[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert torch.equal(batch_indices(10, 4, 7, seed=1), batch_indices(10, 4, 7, seed=1))
    assert not torch.equal(batch_indices(10, 4, 7, seed=1), batch_indices(10, 4, 7, seed=2))
    batch = batch_indices(10, 4, 5, seed=0)
    assert torch.equal(torch.cat([rank_slice(batch, r, 2) for r in range(2)]), batch)


def _write_png(path, value, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_image_folder_with_classes_and_a_broken_file(tmp_path, caplog):
    _write_png(tmp_path / "cats" / "a.png", (255, 0, 0))
    _write_png(tmp_path / "cats" / "b.jpg", (250, 0, 0))
    _write_png(tmp_path / "dogs" / "c.png", (0, 0, 255))
    good = (tmp_path / "dogs" / "c.png").read_bytes()
    (tmp_path / "dogs" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "dogs" / "garbage.jpg").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING):
        data = load_image_folder(tmp_path, 8)
    assert data.images.shape == (3, 3, 8, 8) and data.class_names == ("cats", "dogs")
    assert data.labels.tolist() == [0, 0, 1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 unreadable" in warnings[0].getMessage()
    assert data.images[0, 0].float().mean() > 240 and data.images[2, 2].float().mean() > 240


def test_image_folder_without_classes_and_bad_folders(tmp_path):
    _write_png(tmp_path / "x.png", (10, 20, 30))
    _write_png(tmp_path / "sub" / "y.png", (10, 20, 30))
    data = load_image_folder(tmp_path, 4, channels=1)
    assert data.num_classes is None and data.labels.tolist() == [-1, -1] and data.channels == 1
    with pytest.raises(UserError, match="is not a folder"):
        load_image_folder(tmp_path / "missing", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_dataset(DataConfig(dataset="folder", path=str(tmp_path / "empty")))


def _write_idx(path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_and_npz(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    labels = np.array([0, 1, 2, 3, 9])
    _write_idx(tmp_path / "train-images.idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels.idx1-ubyte.gz", labels)
    data = load_mnist(tmp_path, 28)
    assert torch.equal(data.images[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert data.labels.tolist() == labels.tolist() and data.num_classes == 10
    np.savez(tmp_path / "digits.npz", x=images, y=labels)
    assert load_mnist(tmp_path / "digits.npz", 32).images.shape == (5, 1, 32, 32)
    raw = gzip.open(tmp_path / "train-images.idx3-ubyte.gz").read()
    with gzip.open(tmp_path / "train-images.idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(UserError, match="truncated"):
        load_mnist(tmp_path, 28)


def test_channel_conversion():
    data = load_dataset(DataConfig(dataset="digits", image_size=8, channels=3))
    assert data.channels == 3 and torch.equal(data.images[:, 0], data.images[:, 2])
