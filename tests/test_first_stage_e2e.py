"""End to end for the first stage: adversarial training stays finite and writes a grid when D
starts, VQ + D resume exactly, `latentdiff eval-autoencoder` prints the table, bad input ends in one
line; the bundled photo and emoji data."""

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_autoencoder_config
from latentdiff.checkpoints import read_tensors
from latentdiff.cli import main
from latentdiff.config import DataConfig
from latentdiff.data import load_dataset, split_holdout
from latentdiff.train.autoencoder import train_autoencoder
from test_cli import one_line_error

WITH_DISC = ("loss.disc_start=2", "loss.disc_layers=1", "loss.disc_channels=8",
             "loss.feature_matching_weight=0.5",
             "loss.r1_weight=0.1")


def test_adversarial_training_is_finite_and_shows_the_switch(tmp_path):
    train_autoencoder(tiny_autoencoder_config(tmp_path, *WITH_DISC, "train.max_steps=6",
                                              "train.sample_every=0"))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert "adv" not in steps[1]
    assert {"adv", "adv_weight", "d_hinge", "r1", "feature_matching"} <= steps[2].keys()
    assert all(torch.isfinite(torch.tensor(v)) for r in steps for v in r.values())
    assert (tmp_path / "samples" / "step-0000002.png").is_file()  # the grid just before D starts


def test_vq_with_discriminator_resumes_exactly(tmp_path):
    extra = ("model.regularizer=vq", "model.codebook_size=32",
             "loss.restart_unused_after=1", *WITH_DISC)
    straight = train_autoencoder(tiny_autoencoder_config(tmp_path / "a",
                                                         *extra, "train.max_steps=4"))
    train_autoencoder(tiny_autoencoder_config(tmp_path / "b", *extra, "train.max_steps=2"))
    resumed = train_autoencoder(tiny_autoencoder_config(tmp_path / "b", *extra, "train.max_steps=4"),
                                resume=True)
    a, b = read_tensors(straight), read_tensors(resumed)
    assert a.keys() == b.keys() and any(k.startswith("disc_optimizer.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_eval_autoencoder_prints_the_table(capsys, tmp_path, trained_autoencoder):
    samples = tmp_path / "recon.png"
    assert main(["eval-autoencoder", str(trained_autoencoder), "--holdout", "100",
                 "--samples", str(samples)]) == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "rFD" in out and "bicubic ↓2↑2" in out and samples.is_file()
    model_row = next(line for line in out.splitlines() if line.startswith("ae"))
    assert " KL " in model_row and "100" in model_row


def test_eval_autoencoder_errors(capsys, tmp_path, trained_autoencoder):
    assert "does not exist" in one_line_error(capsys,
                                              ["eval-autoencoder", str(tmp_path / "x.safetensors")])
    (tmp_path / "lpips.safetensors").write_bytes(b"\x00" * 100)
    err = one_line_error(capsys, ["eval-autoencoder", str(trained_autoencoder), "--holdout", "50",
                                  "--lpips-weights", str(tmp_path / "lpips.safetensors")])
    assert "cannot read weights" in err
    save_file({"lin0.model.1.weight": torch.zeros(1, 32, 1, 1)}, tmp_path / "wrong.safetensors")
    err = one_line_error(capsys, ["eval-autoencoder", str(trained_autoencoder), "--holdout", "50",
                                  "--lpips-weights", str(tmp_path / "wrong.safetensors")])
    assert "not LPIPS-VGG16" in err
    err = one_line_error(capsys,
                         ["train-autoencoder", "ae-vq-f4-photos", "model.codebook_size=100000",
                          f"train.out_dir={tmp_path / 'r'}"])
    assert "codebook_size=100000 is out of range" in err
    err = one_line_error(capsys, ["train-autoencoder", "ae-kl-f4-digits", "loss.disc_start=0",
                                  "data.image_size=8", "model.resolution=8",
                                  f"train.out_dir={tmp_path / 's'}"])
    assert "too small for a 3-layer discriminator" in err


def test_photos_split_is_spatially_disjoint():
    data = load_dataset(DataConfig(dataset="photos", image_size=32))
    train, heldout = split_holdout(data, 10_000, 0)
    assert len(train) == data.heldout_start and len(heldout) == len(data) - data.heldout_start
    assert train.num_classes == heldout.num_classes == 8 and set(heldout.labels.tolist()) == set(range(8))
    # no held-out crop with any texture appears among the training crops (flat ones, e.g. saturated
    # sky, may)
    train_set = {bytes(img.numpy()) for img in train.images}
    textured = [img for img in heldout.images if img.float().std() > 2]
    assert len(textured) > 0.9 * len(heldout) and not any(bytes(img.numpy()) in train_set
                                                          for img in textured)


def test_emoji_render_in_colour():
    from latentdiff.data.emoji import EMOJI_FONT, load_emoji

    if not EMOJI_FONT.is_file():
        pytest.skip("Debian's fonts-noto-color-emoji is not installed (.ci/run installs it)")
    data, names = load_emoji(32)
    assert len(data) > 3000 and len(names) == len(data) and data.images.shape[1:] == (3, 32, 32)
    rgb = data.images.float()
    assert rgb.std(1).mean() > 5  # colourful
    detective = names.index("woman detective medium-dark skin tone")
    assert data.class_names[data.labels[detective]] == "People & Body/person-role"
    assert len(data.class_names) > 90 and len(set(data.labels.tolist())) == len(data.class_names)


def test_emoji_catalogue_has_unicode_names_and_subgroups():
    from latentdiff.data.emoji import emoji_catalogue

    catalogue = emoji_catalogue()  # Unicode's emoji-test.txt, fully-qualified, Emoji ≤ 15.0
    assert 3600 < len(catalogue) < 3800 and catalogue[0] == ("😀", "grinning face", "Smileys & "
                                                                                   "Emotion/face-smiling")
    assert all(":" not in name and "," not in name for _, name, _ in catalogue)
    assert ("🇫🇷", "flag France", "Flags/country-flag") in catalogue
