"""The noise-aware classifier of classifier guidance: it trains on noised latents and resumes
exactly, reports its held-out accuracy per noise level, and guides an unconditional model from
Python and the command line (the PNG records it)."""

import pytest
import torch
from conftest import tiny_ldm_config

from latentdiff.checkpoints import load_latent_diffusion, read_metadata, read_tensors
from latentdiff.checkpoints.models import load_classifier
from latentdiff.cli import main
from latentdiff.config import ClassifierTrainConfig, load_config
from latentdiff.errors import UserError
from latentdiff.parameters import read_parameters
from latentdiff.pipelines import generate
from latentdiff.pipelines.guides import Guides
from latentdiff.train.classifier import ACCURACY_LEVELS, train_classifier
from latentdiff.train.diffusion import train_latent_diffusion

TINY = ["trunk.model_channels=32", "trunk.channel_mult=[1,1]", "trunk.attention_resolutions=[2]",
        "data.image_size=16", "data.holdout=200", "train.batch_size=8", "train.lr=1e-3",
        "train.log_every=1", "entropy_weight=0.1"]


@pytest.fixture(scope="module")
def unconditional(tmp_path_factory, trained_autoencoder):
    out = tmp_path_factory.mktemp("uncond")
    return train_latent_diffusion(tiny_ldm_config(out, trained_autoencoder, "unet.num_classes=null",
                                                  "train.max_steps=2"))


def _config(out, model, *extra) -> ClassifierTrainConfig:
    return load_config(ClassifierTrainConfig, None,
                       [f"model={model}", f"train.out_dir={out}", *TINY, *extra])


def test_the_classifier_trains_resumes_exactly_and_reports_accuracy_per_level(tmp_path,
                                                                              unconditional):
    straight = train_classifier(_config(tmp_path / "a", unconditional, "train.max_steps=4"))
    train_classifier(_config(tmp_path / "b", unconditional, "train.max_steps=2"))
    resumed = train_classifier(_config(tmp_path / "b", unconditional, "train.max_steps=4"),
                               resume=True)
    a, b = read_tensors(straight), read_tensors(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    levels = read_metadata(straight)["heldout_accuracy"]
    assert len(levels) == ACCURACY_LEVELS and all(0 <= r["accuracy"] <= 1 for r in levels)
    assert levels[0]["sigma"] < levels[-1]["sigma"]


def test_classifier_guidance_of_an_unconditional_model(tmp_path, unconditional, trained_autoencoder):
    checkpoint = train_classifier(_config(tmp_path / "cls", unconditional, "train.max_steps=2"))
    model = load_latent_diffusion(unconditional)
    classifier = load_classifier(checkpoint, model)
    plain = generate(model, seeds=[0, 1], steps=3)
    for aware in (False, True):
        guided = generate(model, seeds=[0, 1], steps=3,
                          guides=Guides(classifier, classes=[3, 5], classifier_scale=4.0,
                                        entropy_aware=aware))
        assert torch.isfinite(guided).all() and not torch.equal(guided, plain)
    with pytest.raises(UserError, match="one class in 0..9 per image"):
        generate(model, seeds=[0, 1], steps=3, guides=Guides(classifier, classes=[3]))
    out = tmp_path / "guided.png"
    assert main(["sample", str(unconditional), "--classifier", str(checkpoint), "--class", "7",
                 "--classifier-scale", "2", "--entropy-aware", "--n", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    recorded = read_parameters(out).guides
    assert recorded["classifier"] == "last" and recorded["classifier_scale"] == 2.0
    assert recorded["entropy_aware"] is True and len(recorded["classifier_hash"]) == 12
    # a classifier of another latent space is refused before sampling
    other = train_latent_diffusion(tiny_ldm_config(tmp_path / "other", trained_autoencoder,
                                                   "unet.num_classes=null", "train.max_steps=1",
                                                   "scale_factor=0.5"))
    with pytest.raises(UserError, match="trained for another latent space"):
        load_classifier(checkpoint, load_latent_diffusion(other))


def test_autoguidance_and_the_prior_from_python_and_the_command_line(tmp_path, unconditional,
                                                                     trained_autoencoder):
    """A weaker model (fewer steps) of the same kind autoguides; an unconditional model of the same
    latent space is the prior; a model of another kind is refused."""
    weak_path = train_latent_diffusion(tiny_ldm_config(tmp_path / "weak", trained_autoencoder,
                                                       "unet.num_classes=null", "train.max_steps=1"))
    model, weak = load_latent_diffusion(unconditional), load_latent_diffusion(weak_path)
    plain = generate(model, seeds=[0, 1], steps=3)
    autoguided = generate(model, seeds=[0, 1], steps=3, guidance_scale=2.0,
                          guides=Guides(autoguide=weak))
    mixed = generate(model, seeds=[0, 1], steps=3, guides=Guides(prior=weak, prior_weight=0.5))
    for images in (autoguided, mixed):
        assert torch.isfinite(images).all() and not torch.equal(images, plain)
    out = tmp_path / "auto.png"
    assert main(["sample", str(unconditional), "--autoguide", str(weak_path), "--guidance", "2",
                 "--prior", str(weak_path), "--prior-weight", "-0.5", "--n", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    assert read_parameters(out).guides["prior_weight"] == -0.5
    conditional = train_latent_diffusion(tiny_ldm_config(tmp_path / "cond", trained_autoencoder,
                                                         "train.max_steps=1"))
    with pytest.raises(UserError, match="conditioned differently"):
        generate(model, seeds=[0], steps=2, guidance_scale=2.0,
                 guides=Guides(autoguide=load_latent_diffusion(conditional)))
    with pytest.raises(UserError, match="prior weight 1.5 must be ≤ 1"):
        generate(model, seeds=[0], steps=2, guides=Guides(prior=weak, prior_weight=1.5))
    with pytest.raises(UserError, match="the prior must be an unconditional model"):
        generate(model, seeds=[0], steps=2, guides=Guides(prior=load_latent_diffusion(conditional)))


def test_semantic_guidance_with_clip_and_with_the_evaluator(tmp_path, unconditional):
    """Language, content and style guidance through a (tiny, random) CLIP folder from the command
    line; content and style through the evaluator network from Python; text without CLIP is a
    one-line error."""
    from test_sample_quality import tiny_clip_folder

    from latentdiff.images import save_image_grid
    from latentdiff.metrics.classifier import DigitClassifier
    from latentdiff.semantic_guidance import EvaluatorEmbedder, SemanticTargets

    model = load_latent_diffusion(unconditional)
    tiny_clip_folder(tmp_path / "clip")
    target = tmp_path / "target.png"
    save_image_grid(torch.randint(0, 255, (1, 1, 16, 16), dtype=torch.uint8), target, 1)
    out = tmp_path / "semantic.png"
    assert main(["sample", str(unconditional), "--clip", str(tmp_path / "clip"), "--guide-text",
                 "a seven", "--guide-content", str(target), "--guide-style", str(target),
                 "--n", "2", "--steps", "2", "--out", str(out)]) == 0
    assert read_parameters(out).guides["semantic"]["text"] == "a seven"
    assert read_parameters(out).guides["semantic"]["step"] == "x0"
    evaluator = EvaluatorEmbedder(DigitClassifier(1, 10))
    image = torch.rand(1, 16, 16) * 2 - 1
    plain = generate(model, seeds=[0, 1], steps=3)
    guided = generate(model, seeds=[0, 1], steps=3, guides=Guides(
        semantic=SemanticTargets(content=image, content_scale=50.0, style=image, style_scale=50.0),
        embedder=evaluator))
    assert torch.isfinite(guided).all() and not torch.equal(guided, plain)
    tilt = generate(model, seeds=[0, 1], steps=3, guides=Guides(
        semantic=SemanticTargets(content=image, content_scale=50.0, step="tilt"), embedder=evaluator))
    assert torch.isfinite(tilt).all() and not torch.equal(tilt, plain)
    with pytest.raises(UserError, match="step 'x1' is unknown"):
        generate(model, seeds=[0], steps=2, guides=Guides(
            semantic=SemanticTargets(content=image, content_scale=1.0, step="x1"), embedder=evaluator))
    with pytest.raises(UserError, match="needs a joint image-text model"):
        generate(model, seeds=[0], steps=2, guides=Guides(
            semantic=SemanticTargets(text="a seven", text_scale=1.0), embedder=evaluator))


def test_class_accuracy_of_a_dropout_model_asks_only_for_the_datas_classes(tmp_path,
                                                                          trained_autoencoder):
    """A model trained with condition dropout has an 11th (null) class; the class-conditional
    evaluation samples the 10 classes of the data, never the null one."""
    from latentdiff.evaluation.conditional import evaluate_class_conditional

    checkpoint = train_latent_diffusion(tiny_ldm_config(tmp_path / "drop", trained_autoencoder,
                                                        "conditioning.drop_prob=0.2",
                                                        "unet.num_classes=11", "train.max_steps=1"))
    model = load_latent_diffusion(checkpoint)
    cfg = tiny_ldm_config(tmp_path / "x", trained_autoencoder).data
    assert model.num_classes == 11 and model.trained_with_null
    report = evaluate_class_conditional(model, cfg, seeds=(0,), steps=2)
    assert len(report.per_class_accuracy) == 10
