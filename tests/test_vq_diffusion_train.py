"""VQ-Diffusion end to end on tiny configs: `latentdiff train-vq-diffusion` on a VQ autoencoder's
codes with text conditioning, exact resumption, loading, guided sampling, and its bad inputs."""

import pytest
import torch

from conftest import tiny_autoencoder_config
from latentdiff.checkpoints.io import read_tensors
from latentdiff.checkpoints.vq_diffusion import load_vq_diffusion
from latentdiff.cli import main
from latentdiff.config import load_config
from latentdiff.config_systems import VQDiffusionTrainConfig
from latentdiff.errors import UserError
from latentdiff.pipelines.vq_diffusion import generate_vq

CODES = 16
TINY = ["transformer.in_channels=16", f"transformer.out_channels={CODES}",
        "transformer.hidden_size=32", "transformer.depth=1", "transformer.num_heads=2",
        "transformer.context_dim=32", "conditioning.text.width=32", "conditioning.text.depth=1",
        "conditioning.text.num_heads=2", "mask_replace.num_timesteps=10", "preview_steps=2",
        "data.image_size=16", "data.holdout=50", "train.batch_size=8", "train.log_every=1",
        "train.sample_every=0", "ema_decay=0.9"]


@pytest.fixture(scope="module")
def vq_autoencoder(tmp_path_factory):
    """A tiny VQ autoencoder on 16×16 shapes (f = 2: 8×8 codes of a 16-code book), one step."""
    from latentdiff.train.autoencoder import train_autoencoder

    out = tmp_path_factory.mktemp("vq")
    return train_autoencoder(tiny_autoencoder_config(
        out, "data.dataset=shapes", "data.holdout=50", "model.in_channels=3",
        "model.regularizer=vq", f"model.codebook_size={CODES}", "train.max_steps=1",
        "train.checkpoint_every=1"))


def train(autoencoder, out, *extra: str) -> int:
    return main(["train-vq-diffusion", "vq-diffusion-shapes", f"autoencoder={autoencoder}",
                 *TINY, f"train.out_dir={out}", *extra])


@pytest.fixture(scope="module")
def model_path(vq_autoencoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqd")
    assert train(vq_autoencoder, out, "train.max_steps=3", "train.sample_every=3") == 0
    assert (out / "samples").is_dir() and any((out / "samples").iterdir())  # the preview grid
    return out / "checkpoints" / "last.safetensors"


def test_trains_loads_and_samples_with_guidance(model_path):
    model = load_vq_diffusion(model_path)
    assert model.code_grid == (8, 8) and model.trained_with_null and model.schedule.T == 10
    prompts = ["a red circle", "a blue square"]
    images = generate_vq(model, [5, 6], prompts=prompts, steps=3, guidance_scale=2.0)
    assert images.shape == (2, 3, 16, 16) and images.abs().max() <= 1
    codes = generate_vq(model, [5, 6], prompts=prompts, steps=3, decode=False)
    assert codes.shape == (2, 8, 8) and codes.max() < CODES  # no [MASK] left
    # a sample depends only on its seed and condition, not on its batch
    alone = generate_vq(model, [6], prompts=prompts[1:], steps=3, decode=False)
    assert torch.equal(alone[0], codes[1])
    with pytest.raises(UserError, match="this model's process has T = 10"):
        generate_vq(model, [0], prompts=prompts[:1], steps=11)
    with pytest.raises(UserError, match="conditioned on text; give"):
        generate_vq(model, [0], steps=2)


def test_resuming_continues_exactly(vq_autoencoder, model_path, tmp_path):
    """Two steps, stop, resume to three: the same weights as three steps at once."""
    assert train(vq_autoencoder, tmp_path, "train.max_steps=2") == 0
    assert train(vq_autoencoder, tmp_path, "train.max_steps=3", "--resume") == 0
    resumed = read_tensors(tmp_path / "checkpoints" / "last.safetensors", "transformer_ema.")
    straight = read_tensors(model_path, "transformer_ema.")
    assert resumed.keys() == straight.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)


@pytest.mark.parametrize("extra, message", [
    ([f"transformer.out_channels={CODES + 1}"], f"set transformer.out_channels={CODES}"),
    (["transformer.context_dim=null"], "needs transformer.context_dim=32"),
])
def test_mismatched_configs_get_one_line_errors(vq_autoencoder, tmp_path, capsys, extra, message):
    assert train(vq_autoencoder, tmp_path / "run", *extra) == 2
    assert message in capsys.readouterr().err


def test_a_kl_autoencoder_is_refused(trained_autoencoder, tmp_path, capsys):
    assert train(trained_autoencoder, tmp_path / "run") == 2
    assert "VQ-Diffusion models the codes of a VQ one" in capsys.readouterr().err


def test_spatial_conditioning_and_patches_are_refused():
    with pytest.raises(UserError, match="a code transformer cannot take"):
        load_config(VQDiffusionTrainConfig, "vq-diffusion-shapes", ["conditioning.kind=semantic"])
    with pytest.raises(UserError, match="patch_size=1"):
        load_config(VQDiffusionTrainConfig, "vq-diffusion-shapes", ["transformer.patch_size=2"])


def test_the_sample_command_draws_a_grid_and_refuses_latent_options(model_path, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", str(model_path), "--prompt", "a red circle", "--prompt", "a blue square",
                 "--n", "2", "--steps", "2", "--guidance", "2", "--out", str(out)]) == 0
    assert out.is_file() and "(4 images)" in capsys.readouterr().out
    refused = tmp_path / "refused.png"
    assert main(["sample", str(model_path), "--prompt", "a", "--sampler", "ddim",
                 "--out", str(refused)]) == 2
    assert "--sampler does not apply to a VQ-Diffusion model" in capsys.readouterr().err
    assert not refused.exists()


def test_alignment_is_scored_as_for_a_latent_model(model_path, monkeypatch):
    from latentdiff.evaluation.alignment import evaluate_alignment
    from latentdiff.evaluation.autoencoder import stored_data_config
    from latentdiff.metrics.classifier import RECIPE

    monkeypatch.setitem(RECIPE, "epochs", 1)  # the evaluator's features only need to exist here
    report = evaluate_alignment(load_vq_diffusion(model_path), stored_data_config(model_path),
                                [0.0, 2.0], n=8, steps=2)
    assert "caption-match" in report.metric and report.n == 8
    assert [row.guidance_scale for row in report.rows] == [0.0, 2.0]
    assert all(0 <= row.alignment[0] <= 1 and row.fd[0] > 0 for row in report.rows)


def test_the_eval_command_scores_alignment_and_refuses_latent_options(model_path, tmp_path,
                                                                       monkeypatch, capsys):
    import json

    from latentdiff.metrics.classifier import RECIPE

    monkeypatch.setitem(RECIPE, "epochs", 1)
    out = tmp_path / "report.json"
    assert main(["eval", str(model_path), "--guidance", "0", "3", "--n", "6", "--steps", "2",
                 "--json", str(out)]) == 0
    assert "caption" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["n"] == 6 and [r["guidance_scale"] for r in report["rows"]] == [0.0, 3.0]
    assert main(["eval", str(model_path), "--quality"]) == 2
    assert "--quality does not apply to a VQ-Diffusion model" in capsys.readouterr().err


def test_importance_sampling_is_unbiased_and_follows_the_loss_history():
    from latentdiff.discrete_objective import TimestepImportance
    importance = TimestepImportance(4, warmup=2)
    generator = torch.Generator().manual_seed(0)
    t, weight = importance.draw(6, generator)
    assert importance.probabilities() is None and torch.equal(weight, torch.ones(6, dtype=torch.float64))
    losses = {1: 4.0, 2: 1.0, 3: 0.25, 4: 1.0}
    for _ in range(2):
        importance.update(torch.tensor([1, 2, 3, 4]), torch.tensor([losses[i] for i in range(1, 5)]))
    p = importance.probabilities()  # ∝ √E[L²] = L here
    torch.testing.assert_close(p, torch.tensor([4.0, 1.0, 0.25, 1.0], dtype=torch.float64) / 6.25)
    # E_p[w(t)·L_t] is the uniform mean of L_t: the reweighted loss is unbiased
    t, weight = importance.draw(200_000, generator)
    values = torch.tensor([losses[i] for i in t.tolist()], dtype=torch.float64)
    assert (weight * values).mean().item() == pytest.approx(sum(losses.values()) / 4, rel=0.01)
    assert (t == 1).double().mean().item() == pytest.approx(4 / 6.25, abs=0.01)
    # the running mean: 0.1·new + 0.9·old after the first
    importance.update(torch.tensor([1]), torch.tensor([0.0]))
    assert importance.history[0] == pytest.approx(0.9 * 16.0)


def test_importance_sampled_training_resumes_exactly(vq_autoencoder, tmp_path):
    """With t importance-sampled (its loss history past the warm-up), 2 steps + resume + 2 steps
    equal 4 steps at once."""
    from latentdiff.checkpoints.io import read_metadata
    extra = ["mask_replace.num_timesteps=2", "train.batch_size=16", "preview_steps=1",
             "importance_sampling=true", "adaptive_aux_weight=true"]
    assert train(vq_autoencoder, tmp_path / "straight", "train.max_steps=4", *extra) == 0
    assert train(vq_autoencoder, tmp_path / "resumed", "train.max_steps=2", *extra) == 0
    state = read_metadata(tmp_path / "resumed" / "checkpoints" / "last.safetensors")["train_state"]
    assert min(state["t_importance"]["count"]) >= 10  # past the warm-up: t is importance-sampled
    assert train(vq_autoencoder, tmp_path / "resumed", "train.max_steps=4", *extra, "--resume") == 0
    straight = read_tensors(tmp_path / "straight" / "checkpoints" / "last.safetensors",
                            "transformer_ema.")
    resumed = read_tensors(tmp_path / "resumed" / "checkpoints" / "last.safetensors",
                           "transformer_ema.")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)
