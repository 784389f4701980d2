"""Captioned image folders: metadata.jsonl / metadata.csv (Hugging Face's imagefolder convention) and
sidecar .txt files, read into the folder dataset; a text model trains on one."""

import json
import logging

import numpy as np
import pytest
from conftest import tiny_autoencoder_config, tiny_ldm_config
from PIL import Image
from test_conditional_train import TEXT

from latentdiff.config import DataConfig
from latentdiff.data import load_dataset
from latentdiff.errors import UserError


def _images(folder, names, size=20):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        pixels = np.full((size, size + 4, 3), 20 * i, np.uint8)  # not square: resized and cropped
        Image.fromarray(pixels).save(folder / name)


def _load(folder, **options):
    return load_dataset(DataConfig(dataset="folder", path=str(folder), image_size=16, holdout=1,
                                   **options))


def test_metadata_jsonl_csv_and_sidecar_captions_follow_their_images(tmp_path):
    _images(tmp_path / "a", ["1.png", "2.png", "3.png"])
    rows = [{"file_name": "3.png", "text": "three"}, {"file_name": "1.png", "text": "one"},
            {"file_name": "2.png", "text": "two"}]
    (tmp_path / "a" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = _load(tmp_path / "a")
    assert data.captions == ("one", "two", "three") and data.images.shape == (3, 3, 16, 16)
    assert [int(x) for x in data.images[:, 0, 0, 0]] == [0, 20, 40]  # each caption with its image

    _images(tmp_path / "b", ["x.jpg", "y.jpg"])
    (tmp_path / "b" / "metadata.csv").write_text('file_name,caption\ny.jpg,"a, b"\nx.jpg,ex\n')
    assert _load(tmp_path / "b", caption_field="caption").captions == ("ex", "a, b")

    _images(tmp_path / "c", ["p.png", "q.png"])
    (tmp_path / "c" / "p.txt").write_text("a red circle\n")
    (tmp_path / "c" / "q.txt").write_text("a blue square")
    assert _load(tmp_path / "c").captions == ("a red circle", "a blue square")


def test_images_without_a_caption_are_skipped_and_counted(tmp_path, caplog):
    _images(tmp_path, ["1.png", "2.png", "3.png"])
    (tmp_path / "1.txt").write_text("one")
    (tmp_path / "3.txt").write_text("three")
    with caplog.at_level(logging.WARNING):
        data = _load(tmp_path)
    assert data.captions == ("one", "three") and len(data) == 2
    assert "skipped 1 image(s) without a caption of 3" in caplog.text


def test_bad_metadata_is_a_one_line_error(tmp_path):
    _images(tmp_path, ["1.png"])
    cases = {'{"file_name": "1.png", "text": "one"}\n{oops\n': "metadata.jsonl line 2 is not JSON",
             '{"file_name": "1.png", "caption": "one"}\n':
                 "data.caption_field=text is not a column .*caption",
             '{"image": "1.png", "text": "one"}\n': "no file_name column",
             '{"file_name": "missing.png", "text": "one"}\n': "no image under .* has a caption"}
    for metadata, message in cases.items():
        (tmp_path / "metadata.jsonl").write_text(metadata)
        with pytest.raises(UserError, match=message):
            _load(tmp_path)


def test_a_text_model_trains_on_a_captioned_folder(tmp_path):
    from latentdiff.checkpoints import load_latent_diffusion
    from latentdiff.pipelines import generate
    from latentdiff.train.autoencoder import train_autoencoder
    from latentdiff.train.diffusion import train_latent_diffusion

    names = [f"{i}.png" for i in range(12)]
    _images(tmp_path / "photos", names)
    (tmp_path / "photos" / "metadata.jsonl").write_text("\n".join(
        json.dumps({"file_name": n, "text": f"grey level {i}"}) for i, n in enumerate(names)))
    folder = ["data.dataset=folder", f"data.path={tmp_path / 'photos'}", "data.holdout=2"]
    ae = train_autoencoder(tiny_autoencoder_config(tmp_path / "ae", *folder, "model.in_channels=3",
                                                   "train.max_steps=2", "train.checkpoint_every=2"))
    checkpoint = train_latent_diffusion(tiny_ldm_config(
        tmp_path / "ldm", ae, *folder, "unet.num_classes=null", "conditioning.kind=text",
        "conditioning.drop_prob=0.2", *TEXT, "train.max_steps=2"))
    model = load_latent_diffusion(checkpoint)
    images = generate(model, [0], prompts=["grey level 3"], guidance_scale=2.0, steps=2)
    assert images.shape == (1, 3, 16, 16)
