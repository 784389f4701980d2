"""Pre-encoded latents: `latentdiff encode-latents` writes a dataset's posterior moments to shards
once (resumably, shards shared among processes), and `latentdiff train` reads them instead of
images with the same batches and losses."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_autoencoder_config
from PIL import Image
from safetensors import safe_open
from test_stream import _streamed_text, make_folder, make_shards

from latentdiff.checkpoints.models import load_autoencoder
from latentdiff.cli import main
from latentdiff.data import to_model_range
from latentdiff.data.stream import resize_crop
from latentdiff.data.latent_shards import MANIFEST, read_latent_records, shard_name
from latentdiff.errors import UserError
from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.diffusion import train_latent_diffusion


def _encode(data, autoencoder, out, *overrides) -> int:
    return main(["encode-latents", str(data), str(autoencoder), str(out), "data.image_size=16",
                 "shard_size=5", "batch_size=4", *overrides])


def test_shards_hold_each_images_moments_and_its_mirror(tmp_path, rgb_autoencoder):
    folder = make_folder(tmp_path / "images")
    ramp = np.tile(np.linspace(0, 255, 24, dtype=np.uint8)[None, :, None], (20, 1, 3))
    Image.fromarray(ramp).save(tmp_path / "images" / "006.png")  # not symmetric: flips show
    assert _encode(folder, rgb_autoencoder, tmp_path / "latents", "data.flip=true") == 0
    manifest = json.loads((tmp_path / "latents" / MANIFEST).read_text())
    assert manifest["count"] == 12 and [s["count"] for s in manifest["shards"]] == [5, 5, 2]
    assert manifest["latent_shape"] == [2, 8, 8] and manifest["has_std"] and manifest["flipped"]
    records = read_latent_records(tmp_path / "latents")
    model = load_autoencoder(rgb_autoencoder)
    x = to_model_range(resize_crop(Image.fromarray(ramp), 16, 16)[None])
    with safe_open(records.files[1], "pt") as f:  # image 6 is row 1 of the second shard
        assert not torch.equal(f.get_tensor("mean")[1], f.get_tensor("mean_flipped")[1])
        for suffix, view in (("", x), ("_flipped", x.flip(-1))):
            posterior = model.encode(view)
            torch.testing.assert_close(f.get_tensor("mean" + suffix)[1].float(), posterior.mean[0],
                                       rtol=2e-3, atol=2e-3)
            torch.testing.assert_close(f.get_tensor("std" + suffix)[1].float(), posterior.std[0],
                                       rtol=2e-3, atol=2e-3)
    assert records.captions[6] == "a big triangle"


def _contents(path) -> tuple[dict, dict]:
    with safe_open(str(path), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def test_an_interrupted_folder_is_completed_and_other_settings_are_refused(tmp_path, capsys,
                                                                        rgb_autoencoder):
    shards = make_shards(tmp_path / "wds")
    out = tmp_path / "latents"
    assert _encode(shards, rgb_autoencoder, out) == 0
    kept = (out / shard_name(0)).stat().st_mtime_ns
    before = _contents(out / shard_name(1))
    (out / shard_name(1)).unlink()
    (out / MANIFEST).unlink()
    with pytest.raises(UserError, match="no finished latents"):
        read_latent_records(out)
    assert _encode(shards, rgb_autoencoder, out) == 0
    assert (out / shard_name(0)).stat().st_mtime_ns == kept  # not encoded again
    after = _contents(out / shard_name(1))
    assert after[0] == before[0] and all(torch.equal(after[1][k], before[1][k]) for k in before[1])
    assert _encode(shards, rgb_autoencoder, out, "data.image_size=8") == 2
    assert "made with other settings (image_size)" in capsys.readouterr().err
    assert _encode(shards, rgb_autoencoder, out, "data.workers=0") == 0  # not a setting of the data


def test_training_on_latents_matches_training_on_the_images(tmp_path, rgb_autoencoder):
    folder = make_folder(tmp_path / "images")
    assert _encode(folder, rgb_autoencoder, tmp_path / "latents") == 0
    on_images = ["data.dataset=folder", "data.stream=true", f"data.path={folder}"]
    on_latents = ["data.dataset=latents", f"data.path={tmp_path / 'latents'}"]
    for name, data in (("images", on_images), ("latents", on_latents)):
        train_latent_diffusion(_streamed_text(tmp_path / name, rgb_autoencoder, data,
                                              "train.max_steps=2"))
    losses = {name: [json.loads(line)["loss"] for line in
                     (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
              for name in ("images", "latents")}
    # the same batches, noise and σ: the losses differ only by float16 storage of the moments
    assert losses["latents"] == pytest.approx(losses["images"], rel=1e-3)
    other = train_autoencoder(tiny_autoencoder_config(tmp_path / "other", "data.dataset=shapes",
                                                      "data.holdout=50", "model.in_channels=3",
                                                      "train.max_steps=1", "train.seed=5"))
    with pytest.raises(UserError, match="encoded by another first stage"):
        train_latent_diffusion(_streamed_text(tmp_path / "x", other, on_latents))
    with pytest.raises(UserError, match="no mirrored images"):
        train_latent_diffusion(_streamed_text(tmp_path / "y", rgb_autoencoder, on_latents,
                                              "data.flip=true"))


def test_encode_latents_bad_input_is_a_one_line_error(tmp_path, rgb_autoencoder, capsys):
    assert _encode(tmp_path / "missing", rgb_autoencoder, tmp_path / "out") == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert _encode(make_folder(tmp_path / "images"), rgb_autoencoder, tmp_path / "out",
                   "data.image_size=15") == 2
    assert "not divisible by the autoencoder's f=2" in capsys.readouterr().err
