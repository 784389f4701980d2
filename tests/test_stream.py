"""Streamed datasets: WebDataset shards, Hugging Face datasets and captioned folders read record by
record; the order is a pure function of (seed, step), ranks read disjoint shares of the global
batch, a resumed stream continues with the same batches, buckets give one shape per batch, and bad
files are skipped and counted."""

import io
import json
import logging

import numpy as np
import pytest
import torch
import webdataset as wds
from conftest import tiny_ldm_config
from PIL import Image
from test_conditional_train import TEXT

from latentdiff.checkpoints import read_metadata, read_tensors
from latentdiff.config import DataConfig
from latentdiff.data.records import read_records
from latentdiff.data.stream import (Augment, StreamedImages, bucket_shapes, open_stream,
                                    resize_crop)
from latentdiff.errors import UserError
from latentdiff.train.diffusion import train_latent_diffusion

CAPTIONS = ["a red circle", "two squares", "a cat left of a dog", "blue", "green star", "dots",
            "a big triangle", "small ring", "lines", "a right arrow", "grey", "white moon"]


def _png(value: int, width: int = 24, height: int = 20) -> bytes:
    """An image whose every pixel is `value` (which says which record it is)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buffer, "png")
    return buffer.getvalue()


def _value(i: int) -> int:
    return 5 + 10 * i


def make_shards(folder, n=12, per_shard=5, sizes=None, caption_in="txt"):
    """n samples in ceil(n / per_shard) shards: image i is filled with _value(i), captioned
    CAPTIONS[i % 12] in a .txt member (or the .json member's "caption"), class i % 3 in .cls."""
    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / "%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i in range(n):
            sample = {"__key__": f"{i:06d}", "png": _png(_value(i), *(sizes[i] if sizes else ())),
                      "cls": str(i % 3).encode()}
            caption = CAPTIONS[i % len(CAPTIONS)]
            sample.update({"txt": caption} if caption_in == "txt" else
                          {"json": json.dumps({"caption": caption}).encode()})
            sink.write(sample)
    return str(folder) + "/{000000..%06d}.tar" % ((n - 1) // per_shard)


def make_folder(folder, n=12):
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        (folder / f"{i:03d}.png").write_bytes(_png(_value(i)))
        rows.append({"file_name": f"{i:03d}.png", "text": CAPTIONS[i % len(CAPTIONS)]})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def _pairs(records) -> list[tuple[int, str]]:
    """(pixel value, caption) of every record."""
    return [(int(np.asarray(Image.open(io.BytesIO(records.read(i))))[0, 0, 0]), records.captions[i])
            for i in range(len(records))]


def test_shards_hf_datasets_and_folders_pair_each_image_with_its_caption(tmp_path):
    import datasets

    expected = [(_value(i), CAPTIONS[i]) for i in range(12)]
    shards = read_records(DataConfig(dataset="webdataset", path=make_shards(tmp_path / "wds")))
    assert _pairs(shards) == expected and len(shards.files) == 3
    assert shards.labels.tolist() == [i % 3 for i in range(12)] and shards.class_names == ("0", "1", "2")
    # a URL in a scheme webdataset opens (here a pipe): copied into the cache once, then indexed
    piped = read_records(DataConfig(dataset="webdataset",
                                    path="pipe:cat " + make_shards(tmp_path / "wds")))
    assert _pairs(piped) == expected and all("/latentdiff/shards/" in f for f in piped.files)
    json_captions = read_records(DataConfig(dataset="webdataset", caption_field="caption",
                                            path=str(make_shards(tmp_path / "json", caption_in="json"))))
    assert _pairs(json_captions) == expected
    folder = read_records(DataConfig(dataset="folder", path=make_folder(tmp_path / "folder")))
    assert _pairs(folder) == expected

    table = datasets.Dataset.from_dict(
        {"picture": [{"bytes": _png(v), "path": None} for v, _ in expected],
         "caption": [c for _, c in expected], "label": [i % 3 for i in range(12)]},
        features=datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["x", "y", "z"])}))
    table.save_to_disk(str(tmp_path / "hf"))
    table.to_parquet(str(tmp_path / "parquet" / "train.parquet"))
    for path in (tmp_path / "hf", tmp_path / "parquet"):
        hf = read_records(DataConfig(dataset="hf", path=str(path), image_field="picture",
                                     caption_field="caption"))
        assert _pairs(hf) == expected and hf.class_names == ("x", "y", "z")
    with pytest.raises(UserError, match="data.image_field=image is not a column"):
        read_records(DataConfig(dataset="hf", path=str(tmp_path / "hf")))
    with pytest.raises(UserError, match="no shard matches"):
        read_records(DataConfig(dataset="webdataset", path=str(tmp_path / "none-{0..3}.tar")))


def _stream(path, rank=0, world_size=2, batch_size=4, workers=0, **options):
    cfg = DataConfig(**{"dataset": "webdataset", "path": path, "image_size": 8, "holdout": 2,
                        **options})
    return open_stream(cfg, batch_size, seed=3, multiple=4, rank=rank, world_size=world_size)


def _seen(stream, start, stop) -> list[tuple[tuple[int, ...], tuple[str, ...], torch.Tensor]]:
    return [(tuple(int(v) for v in b["images"][:, 0, 0, 0]), b["captions"], b["images"])
            for b in stream.batches(start, stop)]


def test_ranks_read_disjoint_shares_of_the_one_process_batch(tmp_path):
    path = make_shards(tmp_path)
    # 8 training records: each step's batch lies within one epoch
    one = _seen(_stream(path, world_size=1, holdout=4), 0, 6)
    ranks = [_seen(_stream(path, rank=r, workers=2, holdout=4), 0, 6) for r in range(2)]
    for step, whole in enumerate(one):
        a, b = ranks[0][step], ranks[1][step]
        assert a[0] + b[0] == whole[0] and a[1] + b[1] == whole[1]  # the global batch, split
        assert not set(a[0]) & set(b[0])  # different samples on each rank
        assert torch.equal(torch.cat([a[2], b[2]]), whole[2])
    heldout = {_value(i) for i in range(12)} - {v for values, _, _ in one for v in values}
    assert len(heldout) == 4  # data.holdout records are never trained on


def test_a_resumed_stream_continues_with_the_batches_it_would_have_seen(tmp_path):
    path = make_shards(tmp_path, sizes=[(24 + 4 * i, 20) for i in range(12)])
    options = {"crop": "random", "flip": True, "workers": 2}
    straight = _seen(_stream(path, world_size=1, **options), 0, 9)
    resumed = _seen(_stream(path, world_size=1, **options), 4, 9)  # past an epoch's end (10 images)
    assert [s[:2] for s in straight[4:]] == [r[:2] for r in resumed]
    for a, b in zip(straight[4:], resumed):
        assert torch.equal(a[2], b[2])  # the same crops and flips
    other_seed = _seen(open_stream(DataConfig(dataset="webdataset", path=path, image_size=8,
                                              holdout=2), 4, seed=4, multiple=4), 0, 9)
    assert [s[0] for s in other_seed] != [s[0] for s in straight]


def test_flips_and_random_crops_are_drawn_per_sample_but_never_flip_left_or_right(tmp_path):
    gradient = np.tile(np.arange(40, dtype=np.uint8)[None, :, None] * 6, (20, 1, 3))
    image = resize_crop(Image.fromarray(gradient), 8, 8, (1.0, 0.5))
    assert image.shape == (3, 8, 8) and image[0, 0, -1] > image[0, 0, 0]
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, "png")
    with wds.ShardWriter(str(tmp_path / "%06d.tar"), maxcount=100, verbose=0) as sink:
        for i, caption in enumerate(["plain"] * 20 + ["left side"] * 20):
            sink.write({"__key__": f"{i:04d}", "png": buffer.getvalue(), "txt": caption})
    stream = _stream(str(tmp_path / "000000.tar"), world_size=1, batch_size=38, holdout=0,
                     flip=True, crop="random")
    batch = next(iter(stream.batches(0, 1)))
    increasing = batch["images"][:, 0, 0, -1] > batch["images"][:, 0, 0, 0]
    sides = torch.tensor(["left" in c for c in batch["captions"]])
    assert increasing[sides].all()  # "left" in the caption: never flipped
    assert 0 < (~increasing[~sides]).sum() < (~sides).sum()  # others: about half flipped
    assert len({tuple(im[0, 0].tolist()) for im in batch["images"][~sides & increasing]}) > 1  # crops


def test_buckets_give_one_shape_per_batch_near_each_images_aspect(tmp_path):
    shapes = bucket_shapes(64, 16)
    assert (64, 64) in shapes and all(h % 16 == 0 and w % 16 == 0 for h, w in shapes)
    assert all(0.75 * 64 ** 2 <= h * w <= 1.25 * 64 ** 2 and 0.5 <= w / h <= 2 for h, w in shapes)
    sizes = [(40, 20)] * 8 + [(20, 20)] * 8 + [(20, 40)] * 8
    stream = _stream(make_shards(tmp_path, n=24, sizes=sizes), world_size=1, batch_size=4,
                     holdout=0, buckets=True, image_size=16)
    aspect = {_value(i): w / h for i, (w, h) in enumerate(sizes)}
    for values, _, images in _seen(stream, 0, 12):
        height, width = images.shape[-2:]
        (members,) = {aspect[v] for v in values}  # wide, square or tall, never mixed
        assert np.sign(np.log(members)) == np.sign(np.log(width / height))  # the nearest bucket
    with pytest.raises(UserError, match="no aspect-ratio bucket holds a full batch"):
        _stream(make_shards(tmp_path / "few", n=5, sizes=sizes[:5]), world_size=1, batch_size=8,
                holdout=0, buckets=True, image_size=16)


def test_a_file_that_does_not_decode_is_replaced_and_counted(tmp_path):
    with wds.ShardWriter(str(tmp_path / "%06d.tar"), maxcount=100, verbose=0) as sink:
        for i in range(6):
            image = _png(_value(i))
            sink.write({"__key__": f"{i:04d}", "png": image[:40] if i == 2 else image,
                        "txt": CAPTIONS[i]})
    stream = _stream(str(tmp_path / "000000.tar"), world_size=1, batch_size=6, holdout=0)
    batch = next(iter(stream.batches(0, 1)))
    assert stream.skipped == 1 and _value(2) not in batch["images"][:, 0, 0, 0].tolist()
    assert len(batch["captions"]) == 6
    # the replacement is the next record of the training split, never a held-out one (3)
    training = StreamedImages(stream.records, Augment(), 0, np.array([0, 1, 2, 4, 5]))
    assert int(training[(2, 0, (8, 8))]["images"][0, 0, 0]) == _value(4)


def _streamed_text(out, autoencoder, data, *extra):
    return tiny_ldm_config(out, autoencoder, *data, "unet.num_classes=null",
                           "conditioning.kind=text", "conditioning.drop_prob=0.2", *TEXT,
                           "data.holdout=2", "train.batch_size=4", *extra)


def test_streamed_training_resumes_exactly_and_logs_the_data_wait(tmp_path, rgb_autoencoder, caplog):
    data = ["data.dataset=folder", "data.stream=true", f"data.path={make_folder(tmp_path / 'f')}",
            "data.flip=true", "data.crop=random", "data.workers=2"]
    straight = train_latent_diffusion(_streamed_text(tmp_path / "a", rgb_autoencoder, data,
                                                     "train.max_steps=5"))
    train_latent_diffusion(_streamed_text(tmp_path / "b", rgb_autoencoder, data, "train.max_steps=2"))
    resumed = train_latent_diffusion(_streamed_text(tmp_path / "b", rgb_autoencoder, data,
                                                    "train.max_steps=5"), resume=True)
    a, b = read_tensors(straight), read_tensors(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert read_metadata(resumed)["train_state"]["step"] == 5
    logged = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["data_wait"] <= 1 and r["skipped_files"] == 0 for r in logged)


def test_streaming_options_need_a_streamed_dataset():
    with pytest.raises(UserError, match="need a streamed dataset"):
        DataConfig(dataset="digits", flip=True)
    with pytest.raises(UserError, match="data.crop='middle'"):
        DataConfig(dataset="webdataset", path="x.tar", crop="middle")


def test_bad_webdataset_input_is_a_one_line_error(tmp_path, caplog):
    (tmp_path / "000000.tar").write_bytes(b"not a tar file" * 100)
    with caplog.at_level(logging.WARNING), pytest.raises(UserError, match="no sample with an image"):
        read_records(DataConfig(dataset="webdataset", path=str(tmp_path)))
    assert "skipped the unreadable shard" in caplog.text


def test_the_first_stage_trains_on_streamed_shards_and_resumes_exactly(tmp_path):
    from conftest import tiny_autoencoder_config
    from latentdiff.train.autoencoder import train_autoencoder

    data = ["data.dataset=webdataset", f"data.path={make_shards(tmp_path / 'wds', n=24)}",
            "data.holdout=4", "model.in_channels=3", "data.flip=true", "data.crop=random",
            "train.batch_size=4"]
    straight = train_autoencoder(tiny_autoencoder_config(tmp_path / "a", *data, "train.max_steps=3"))
    train_autoencoder(tiny_autoencoder_config(tmp_path / "b", *data, "train.max_steps=1"))
    resumed = train_autoencoder(tiny_autoencoder_config(tmp_path / "b", *data, "train.max_steps=3"),
                                resume=True)
    a, b = read_tensors(straight), read_tensors(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    logged = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert "heldout_psnr" in logged[-1] and all("data_wait" in r for r in logged[:-1])
