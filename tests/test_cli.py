"""User errors end in one line on stderr and exit code 2, never a traceback."""

import subprocess
import sys

import pytest

from latentdiff.cli import main


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latentdiff: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_config_errors(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    assert "'train.max_stepz'" in one_line_error(capsys, ["train-autoencoder", str(bad)])
    assert "not found" in one_line_error(capsys, ["train", str(tmp_path / "nope.yaml")])


def test_data_errors(capsys, tmp_path):
    err = one_line_error(capsys, ["train-autoencoder", "ae-kl-f4-digits", "data.dataset=folder",
                                  f"data.path={tmp_path / 'photos'}",
                                  f"train.out_dir={tmp_path / 'run'}"])
    assert "not a folder" in err
    (tmp_path / "empty").mkdir()
    err = one_line_error(capsys, ["train-autoencoder", "ae-kl-f4-digits", "data.dataset=folder",
                                  f"data.path={tmp_path / 'empty'}",
                                  f"train.out_dir={tmp_path / 'run2'}"])
    assert "no images" in err
    err = one_line_error(capsys, ["train-autoencoder", "ae-kl-f4-digits", "data.image_size=30",
                                  f"train.out_dir={tmp_path / 'run3'}"])
    assert "data.image_size=30 is not divisible by the autoencoder's f=4; use data.image_size=32" in err


def test_checkpoint_errors(capsys, tmp_path, trained_autoencoder):
    assert "does not exist" in one_line_error(capsys,
                                              ["sample", str(tmp_path / "none.safetensors")])
    err = one_line_error(capsys, ["sample", str(trained_autoencoder)])
    assert "autoencoder checkpoint" in err and "latentdiff train" in err


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(["train", "ldm-digits", "train.max_steps=3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 3" in out and "num_classes: 10" in out


def test_console_command_exit_code_and_sample_grid(tmp_path, trained_autoencoder):
    done = subprocess.run([sys.executable, "-m", "latentdiff", "sample", str(trained_autoencoder)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr


@pytest.mark.slow
def test_sample_command_writes_a_grid(tmp_path, trained_autoencoder):
    from conftest import tiny_ldm_config
    from latentdiff.train.diffusion import train_latent_diffusion

    checkpoint = train_latent_diffusion(tiny_ldm_config(tmp_path,
                                                        trained_autoencoder, "train.max_steps=1"))
    out = tmp_path / "grid.png"
    assert main(["sample", str(checkpoint), "--class", "3", "--n", "4", "--steps", "2",
                 "--out", str(out)]) == 0
    from PIL import Image

    assert Image.open(out).size == (4 * 18 + 2, 18 + 2)
    assert main(["sample", str(checkpoint), "--n", "20", "--steps", "2", "--sampler", "ddpm",
                 "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * 18 + 2, 10 * 18 + 2)  # one row per class, 2 per class
    assert main(["sample", str(checkpoint), "--class", "12", "--steps", "2", "--out", str(out)]) == 2


def test_the_bundled_model_samples_from_prompts_without_a_checkpoint(tmp_path, capsys, monkeypatch):
    """The README's main command: `latentdiff sample --prompt ...` with the shipped emoji model."""
    from PIL import Image

    from latentdiff.checkpoints import load_latent_diffusion
    from latentdiff.checkpoints.models import BUNDLED_MODEL

    assert BUNDLED_MODEL.is_file() and BUNDLED_MODEL.stat().st_size <= 30 * 2**20
    model = load_latent_diffusion(BUNDLED_MODEL)
    assert model.conditioner.kind == "text" and model.trained_with_null and model.image_size == 64
    out = tmp_path / "emoji.png"
    assert main(["sample", "--prompt", "grinning face", "--prompt", "red heart",
                 "--n", "2", "--steps", "3",
                 "--guidance", "3", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 2 * 64 and "4 images" in capsys.readouterr().out
    # beyond the training size, with post-hoc image guidance towards a small image
    Image.new("RGB", (16, 16), (220, 30, 30)).save(tmp_path / "red.png")
    assert main(["sample", "--prompt", "", "--n", "1", "--steps", "3",
                 "--size", "64", "--guide-image",
                 str(tmp_path / "red.png"), "--out", str(out)]) == 0
    assert Image.open(out).size == (64, 64)  # one image: the image itself, no grid border
    assert main(["sample", "--prompt", "x", "--size", "30", "--out", str(out)]) == 2
    assert "multiple of" in capsys.readouterr().err
    monkeypatch.setattr("latentdiff.checkpoints.models.BUNDLED_MODEL",
                        tmp_path / "missing.safetensors")
    assert main(["sample", "--prompt", "x", "--out", str(out)]) == 2
    assert "bundled model" in capsys.readouterr().err


def test_samplers_lists_every_sampler_with_order_and_nfe(capsys):
    from latentdiff.samplers import SAMPLERS

    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    for name, info in SAMPLERS.items():
        assert f"| {name} | {info.order} | {info.nfe_per_step} |" in out
    assert "karras" in out
