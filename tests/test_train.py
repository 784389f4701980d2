"""End-to-end training of both stages on tiny configs: loss falls, resume is exact, checkpoints are
complete."""

import json

import pytest
import torch

from conftest import tiny_autoencoder_config, tiny_ldm_config
from test_distributed import ONE_STEP, assert_same_steps
from latentdiff.checkpoints import (load_autoencoder, load_latent_diffusion,
                                    read_metadata, read_tensors)
from latentdiff.checkpoints.models import export_latent_diffusion
from latentdiff.errors import UserError
from latentdiff.checkpoints.interop.diffusers_folder import save_diffusers
from latentdiff.pipelines import generate
from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.diffusion import train_latent_diffusion
from latentdiff.train.engine import seeded
from latentdiff.unet import UNetModel


def losses(run_dir) -> list[float]:
    return [r["loss"]
            for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def test_autoencoder_loss_falls(tmp_path):
    # 60 steps: at 40 the curve is still noisy enough that rounding (the fused AdamW kernel against
    # the multi-tensor one) moves the ratio between 0.48 and 0.61; at 60 both give 0.33–0.36
    train_autoencoder(tiny_autoencoder_config(tmp_path, "train.max_steps=60",
                                              "train.checkpoint_every=60"))
    curve = losses(tmp_path)
    assert sum(curve[-5:]) / 5 < 0.6 * sum(curve[:5]) / 5, curve


def test_autoencoder_resume_is_exact_and_overwriting_is_refused(tmp_path):
    straight = train_autoencoder(tiny_autoencoder_config(tmp_path / "a", "train.max_steps=4"))
    interrupted = tiny_autoencoder_config(tmp_path / "b", "train.max_steps=2")
    train_autoencoder(interrupted)
    with pytest.raises(UserError, match="already holds a run"):
        train_autoencoder(interrupted)
    resumed = train_autoencoder(tiny_autoencoder_config(tmp_path / "b", "train.max_steps=4"),
                                resume=True)
    a, b = read_tensors(straight), read_tensors(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert read_metadata(resumed)["train_state"]["step"] == 4


def test_ldm_resume_is_exact_including_ema(tmp_path, trained_autoencoder):
    straight = train_latent_diffusion(tiny_ldm_config(tmp_path / "a",
                                                      trained_autoencoder, "train.max_steps=4"))
    train_latent_diffusion(tiny_ldm_config(tmp_path / "b",
                                           trained_autoencoder, "train.max_steps=2"))
    resumed = train_latent_diffusion(tiny_ldm_config(tmp_path / "b",
                                                     trained_autoencoder, "train.max_steps=4"),
                                     resume=True)
    a, b = read_tensors(straight), read_tensors(resumed)
    assert {k.split(".")[0] for k in a} == {"unet", "unet_ema", "autoencoder", "optimizer"}
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    metadata = read_metadata(resumed)
    assert metadata["train_state"]["ema_updates"] == 4 and min(metadata["latent_stats"]["scale"]) > 0


def test_gradient_accumulation_takes_the_same_step(tmp_path, trained_autoencoder):
    """train.accumulate=4 runs each step's batch as 4 micro-batches with one backward each and ends
    at the weights of one backward over the batch."""
    extra = (*ONE_STEP, "train.max_steps=2", "unet.model_channels=64", "unet.head_channels=64")
    runs = {parts: train_latent_diffusion(tiny_ldm_config(tmp_path / str(parts), trained_autoencoder,
                                                          *extra, f"train.accumulate={parts}"))
            for parts in (1, 4)}
    cfg = tiny_ldm_config(tmp_path / "x", trained_autoencoder, *extra)
    initial = seeded(cfg.train.seed, lambda: UNetModel(cfg.unet)).state_dict()
    assert_same_steps(initial, runs[1], runs[4], "unet.", threshold=0.2 * cfg.train.lr,
                      coverage=0.3, skip=("qkv.bias",))
    assert losses(tmp_path / "4") == pytest.approx(losses(tmp_path / "1"), rel=1e-5)
    with pytest.raises(UserError, match="train.accumulate=16 must be"):
        tiny_ldm_config(tmp_path / "y", trained_autoencoder, "train.accumulate=16")


def test_ldm_checkpoint_samples_deterministically(tmp_path, trained_autoencoder):
    checkpoint = train_latent_diffusion(tiny_ldm_config(tmp_path,
                                                        trained_autoencoder, "train.max_steps=2"))
    model = load_latent_diffusion(checkpoint)
    assert model.latent_shape == (2, 8, 8) and model.class_names == tuple("0123456789")
    images = generate(model, seeds=[5, 6, 7], class_labels=[1, 2, 3], steps=3)
    assert images.shape == (3, 1, 16, 16) and images.abs().max() <= 1
    again = generate(model, seeds=[6], class_labels=[2], steps=3)
    torch.testing.assert_close(images[1:2], again)
    stochastic = generate(model, seeds=[6], class_labels=[2], steps=3, sampler="ddpm")
    assert not torch.allclose(stochastic, again)
    assert load_autoencoder(checkpoint).config == load_autoencoder(trained_autoencoder).config
    with pytest.raises(UserError, match="class-conditional"):
        generate(model, seeds=[0])
    with pytest.raises(UserError, match="unknown sampler 'ddim2'; choose one of ddim, ddpm, plms"):
        generate(model, seeds=[0], class_labels=[0], sampler="ddim2")
    with pytest.raises(UserError,
                       match="is a autoencoder checkpoint|is an? autoencoder checkpoint"):
        load_latent_diffusion(trained_autoencoder)


def test_incompatible_stages_are_user_errors(tmp_path, trained_autoencoder):
    with pytest.raises(UserError, match="unet.in_channels=2"):
        train_latent_diffusion(tiny_ldm_config(tmp_path / "a",
                                               trained_autoencoder, "unet.in_channels=4"))
    with pytest.raises(UserError,
                       match="not divisible by the autoencoder's f=2; use data.image_size="):
        train_latent_diffusion(tiny_ldm_config(tmp_path / "b",
                                               trained_autoencoder, "data.image_size=15"))
    with pytest.raises(UserError, match="unet.num_classes=3 but the data has 10 classes"):
        train_latent_diffusion(tiny_ldm_config(tmp_path / "c",
                                               trained_autoencoder, "unet.num_classes=3"))


def test_pixel_space_diffusion_is_ldm_1(tmp_path):
    """`autoencoder: pixels`: the UNet runs on the images (f = 1, c = C, no scaling); the checkpoint
    reloads and samples like any LDM."""
    checkpoint = train_latent_diffusion(tiny_ldm_config(tmp_path, "pixels", "unet.in_channels=1",
                                                        "unet.out_channels=1", "train.max_steps=2"))
    model = load_latent_diffusion(checkpoint)
    assert model.latent_shape == (1, 16, 16) and model.codec.downsampling_factor == 1
    assert model.codec.stats.scale == (1.0,) and not any(k.startswith("autoencoder.")
                                                         for k in read_tensors(checkpoint))
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.equal(model.codec.encode(x), x) and torch.equal(model.codec.decode(x), x)
    images = generate(model, seeds=[0, 1], class_labels=[3, 4], steps=2)
    assert images.shape == (2, 1, 16, 16)
    exported = export_latent_diffusion(checkpoint, tmp_path / "export.safetensors", "fp32")
    again = generate(load_latent_diffusion(exported), seeds=[0, 1], class_labels=[3, 4], steps=2)
    assert torch.equal(again, images)
    with pytest.raises(UserError, match="pixel-space model .* convert it to a .safetensors file"):
        save_diffusers(model, tmp_path / "diffusers")
    assert not (tmp_path / "diffusers").exists()
    with pytest.raises(UserError, match="unet.in_channels=1"):
        train_latent_diffusion(tiny_ldm_config(tmp_path / "b", "pixels", "train.max_steps=1"))
    with pytest.raises(UserError, match="nothing to train"):
        train_autoencoder(tiny_autoencoder_config(tmp_path / "c", "model.regularizer=none",
                                                  "model.channel_mult=[1]",
                                                  "model.latent_channels=1"))
    with pytest.raises(UserError, match="channel_mult=\\[1\\] and latent_channels=in_channels"):
        tiny_autoencoder_config(tmp_path / "d", "model.regularizer=none")


class SteppingClock:
    """A clock that advances `tick` seconds per reading: the time budget ends after a number of
    steps that does not depend on the machine's speed or load."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_time_budget_ends_training_with_a_checkpoint_and_kept_steps(tmp_path, trained_autoencoder,
                                                                    monkeypatch):
    """train.max_minutes stops the loop early (final checkpoint, log line, preview written);
    keep_checkpoints keeps each periodic checkpoint under its step number, each with its own
    weights."""
    monkeypatch.setattr("latentdiff.train.engine.clock", SteppingClock(5.0))
    checkpoint = train_latent_diffusion(tiny_ldm_config(
        tmp_path, trained_autoencoder, "train.max_steps=100000", "train.max_minutes=1",
        "train.checkpoint_every=2",
        "train.keep_checkpoints=true", "train.sample_every=0"))
    step = read_metadata(checkpoint)["train_state"]["step"]
    assert 3 <= step <= 12  # 60 s of a clock read once or twice per step at 5 s a reading
    kept = sorted(p.name for p in checkpoint.parent.glob("step-*.safetensors"))
    assert kept[0] == "step-0000002.safetensors" and kept[-1] == f"step-{step:07d}.safetensors"
    assert len(kept) == step // 2 + step % 2
    first, last = (read_tensors(checkpoint.parent / name, "unet.") for name in (kept[0], kept[-1]))
    assert not torch.equal(first["out.2.weight"], last["out.2.weight"])
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert losses(tmp_path) and last["step"] == step
    assert (tmp_path / "samples" / f"step-{step:07d}.png").exists()
    resumed = train_latent_diffusion(tiny_ldm_config(tmp_path, trained_autoencoder,
                                                     f"train.max_steps={step + 1}",
                                                     "train.checkpoint_every=2",
                                                     "train.keep_checkpoints=true"),
                                     resume=True)
    assert read_metadata(resumed)["train_state"]["step"] == step + 1
