"""Every conditioning kind trains end to end on tiny configs, checkpoints completely, and samples
with guidance."""

import pytest
import torch
from conftest import tiny_autoencoder_config, tiny_ldm_config

from latentdiff.checkpoints import load_latent_diffusion, read_tensors
from latentdiff.errors import UserError
from latentdiff.pipelines import generate
from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.conditions import batch_condition, preview_conditions
from latentdiff.train.diffusion import train_latent_diffusion

SHAPES = ["data.dataset=shapes", "data.holdout=100"]
TEXT = ["unet.context_dim=32", "conditioning.text.width=32", "conditioning.text.depth=1",
        "conditioning.text.num_heads=2", "conditioning.text.max_length=16",
        "conditioning.text.vocab_size=64"]
KINDS = {"text": TEXT, "layout": TEXT,
         "class": ["unet.context_dim=32", "conditioning.text.width=32"],
         "semantic": ["unet.in_channels=15"],
         "superres": ["unet.in_channels=5", "conditioning.sr_factor=2"],
         "inpaint": ["unet.in_channels=5"]}


@pytest.fixture(scope="module")
def shapes_autoencoder(tmp_path_factory):
    """A tiny RGB autoencoder on 16×16 shapes (f = 2, 2 latent channels), trained for 2 steps."""
    out = tmp_path_factory.mktemp("ae-shapes")
    return train_autoencoder(tiny_autoencoder_config(out, *SHAPES,
                                                     "model.in_channels=3", "train.max_steps=2",
                                                     "train.checkpoint_every=2"))


def conditional_config(out_dir, autoencoder, kind, *extra):
    return tiny_ldm_config(out_dir, autoencoder, *SHAPES, "unet.num_classes=null",
                           f"conditioning.kind={kind}",
                           "conditioning.drop_prob=0.2", *KINDS[kind], *extra)


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_trains_checkpoints_and_samples_with_guidance(tmp_path, shapes_autoencoder, kind):
    checkpoint = train_latent_diffusion(conditional_config(tmp_path, shapes_autoencoder,
                                                           kind, "train.max_steps=2",
                                                           "train.sample_every=2",
                                                           "preview.guidance_scale=3"))
    assert (tmp_path / "samples").is_dir()
    model = load_latent_diffusion(checkpoint)
    assert model.conditioner.kind == kind and model.trained_with_null
    prefixes = {k.split(".")[0] for k in read_tensors(checkpoint)}
    assert ("conditioner_ema" in prefixes) == (kind in ("text", "layout", "class"))
    from latentdiff.data import load_dataset
    data = load_dataset(conditional_config(tmp_path, shapes_autoencoder, kind).data)
    options = preview_conditions(model, data, torch.tensor([0, 1]))
    images = generate(model, seeds=[1, 2], guidance_scale=4.0,
                      guidance_rescale=0.5, steps=2, **options)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    single = {k: (v[1:] if isinstance(v, list) else type(v)(concat=v.concat[1:])) for k,
              v in options.items()}
    torch.testing.assert_close(images[1:],
                               generate(model, seeds=[2], guidance_scale=4.0, guidance_rescale=0.5,
                                        steps=2, **single), atol=1e-5, rtol=1e-5)


def test_text_model_resumes_exactly_with_its_vocabulary(tmp_path, shapes_autoencoder):
    straight = train_latent_diffusion(conditional_config(tmp_path / "a", shapes_autoencoder, "text",
                                                         "train.max_steps=4"))
    train_latent_diffusion(conditional_config(tmp_path / "b", shapes_autoencoder,
                                              "text", "train.max_steps=2"))
    resumed = train_latent_diffusion(conditional_config(tmp_path / "b", shapes_autoencoder, "text",
                                                        "train.max_steps=4"), resume=True)
    a, b = read_tensors(straight), read_tensors(resumed)
    assert any(k.startswith("conditioner.encoder.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_prompts_change_the_sample_and_negative_prompts_work(tmp_path, shapes_autoencoder):
    checkpoint = train_latent_diffusion(conditional_config(tmp_path, shapes_autoencoder,
                                                           "text", "train.max_steps=2"))
    model = load_latent_diffusion(checkpoint)
    with torch.no_grad():  # make the untrained UNet's output depend on the context
        for p in model.unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    a = generate(model, seeds=[0], prompts=["a large red circle"], steps=2)
    b = generate(model, seeds=[0], prompts=["a small blue square"], steps=2)
    assert (a - b).abs().max() > 1e-4
    negative = generate(model, seeds=[0], prompts=["a large red circle"],
                        negative_prompts=["a blue square"],
                        guidance_scale=3.0, steps=2)
    assert torch.isfinite(negative).all()
    with pytest.raises(UserError, match="give --prompt"):
        generate(model, seeds=[0], steps=2)
    with pytest.raises(UserError, match="it takes no layouts"):
        generate(model, seeds=[0], prompts=["a"], layouts=[[]], steps=2)


def test_condition_dropout_uses_the_null_condition(shapes_autoencoder, tmp_path):
    from latentdiff.autoencoder import LatentCodec, LatentStats
    from latentdiff.checkpoints.models import load_autoencoder
    from latentdiff.data import load_dataset
    from latentdiff.conditioning.kinds import build_conditioner

    cfg = conditional_config(tmp_path, shapes_autoencoder, "text")
    data = load_dataset(cfg.data)
    conditioner = build_conditioner(cfg.conditioning, data, cfg.data.dataset)
    codec = LatentCodec(load_autoencoder(shapes_autoencoder), LatentStats.global_scale(1.0, 2))
    index = torch.arange(64)
    cond = batch_condition(conditioner, data, index, torch.Generator().manual_seed(0),
                           codec, (8, 8), None, 0.5)
    null = conditioner.null_tokens(1).ids[0]
    dropped = (cond.tokens.ids == null).all(1)
    assert 16 < dropped.sum() < 48  # about half of 64
    kept = conditioner.tokens([data.captions[i] for i in index.tolist()]).ids
    assert torch.equal(cond.tokens.ids[~dropped], kept[~dropped])
    classes = batch_condition(None, data, index, torch.Generator().manual_seed(0),
                              codec, (8, 8), 13, 0.5)
    null = classes.class_labels == 12  # the extra, last class; the same draws drop the same rows
    assert torch.equal(null, dropped) and torch.equal(classes.class_labels[~null],
                                                      data.labels[index][~null])


def test_mismatched_unet_and_conditioning_are_user_errors(tmp_path, shapes_autoencoder):
    with pytest.raises(UserError, match="unet.in_channels=15"):
        train_latent_diffusion(conditional_config(tmp_path / "a", shapes_autoencoder, "semantic",
                                                  "unet.in_channels=2", "train.max_steps=1"))
    with pytest.raises(UserError, match="unet.context_dim=32"):
        train_latent_diffusion(conditional_config(tmp_path / "b", shapes_autoencoder, "text",
                                                  "unet.context_dim=null",
                                                  "train.max_steps=1"))
    with pytest.raises(UserError, match="needs captions"):
        train_latent_diffusion(conditional_config(tmp_path / "c", shapes_autoencoder, "text",
                                                  "data.dataset=digits", "data.channels=3",
                                                  "train.max_steps=1"))


@pytest.fixture(scope="module")
def trained_kinds(tmp_path_factory, shapes_autoencoder):
    """One 2-step checkpoint per spatial/layout kind."""
    out = tmp_path_factory.mktemp("kinds")
    return {kind: train_latent_diffusion(conditional_config(out / kind, shapes_autoencoder,
                                                            kind, "train.max_steps=2"))
            for kind in ("inpaint", "superres", "semantic", "layout")}


def test_task_pipelines_sample_beyond_the_training_size_and_inpainting_keeps_pixels(trained_kinds):
    from latentdiff.pipelines import conditional

    inpainter = load_latent_diffusion(trained_kinds["inpaint"])
    # larger than the 16×16 training images
    image = torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8)
    mask = torch.zeros(24, 32)
    mask[5:15, 8:20] = 1
    out = conditional.inpaint(inpainter, image, mask, seeds=[0, 1], steps=2)
    keep = mask == 0
    assert out.shape == (2, 3, 24, 32) and torch.equal(out[:, :, keep],
                                                       image[None].expand(2, -1, -1, -1)[:, :, keep])
    assert not torch.equal(out[:, :, ~keep], image[None].expand(2, -1, -1, -1)[:, :, ~keep])
    upscaled = conditional.upscale(load_latent_diffusion(trained_kinds["superres"]),
                                   torch.randint(0, 256, (3, 12, 16), dtype=torch.uint8), seeds=[0],
                                   steps=2)
    assert upscaled.shape == (1, 3, 24, 32)
    labels = torch.zeros(32, 32, dtype=torch.long)
    labels[4:20, 4:20] = 3
    assert conditional.semantic_synthesis(load_latent_diffusion(trained_kinds["semantic"]), labels,
                                          seeds=[0],
                                          steps=2).shape == (1, 3, 32, 32)
    layout = load_latent_diffusion(trained_kinds["layout"])
    assert conditional.layout_to_image(layout, [[0.1, 0.1, 0.5, 0.5, 3]], seeds=[0, 1], steps=2).shape[0] == 2
    with pytest.raises(UserError, match="conditioned on layout"):
        conditional.inpaint(layout, image, mask, seeds=[0])
    with pytest.raises(UserError, match="multiples of 2"):
        conditional.inpaint(inpainter, image[:, :23], mask[:23], seeds=[0])


def test_cli_task_input_errors_are_one_line(tmp_path, trained_kinds, capsys):
    import numpy as np
    from PIL import Image

    from latentdiff.cli import main

    Image.fromarray(np.full((16, 16, 4), 200, np.uint8), "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 4)).save(tmp_path / "mask.png")
    inpaint = ["inpaint", str(trained_kinds["inpaint"]), "--steps", "2", "--n", "1", "--out",
               str(tmp_path / "o.png")]
    # documented conversions: alpha is composited on white, 16-bit is scaled to 8 bits
    for image in ("alpha.png", "deep.png"):
        assert main([*inpaint, "--image", str(tmp_path / image), "--mask", str(tmp_path / "mask.png")]) == 0
    for mask, message in (("grey.png", "not binary"), ("small.png", "mask is 8×8"),
                          ("none.png", "does not exist")):
        assert main([*inpaint, "--image", str(tmp_path / "alpha.png"), "--mask", str(tmp_path / mask)]) == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
    layout = ["layout", str(trained_kinds["layout"]), "--steps", "2", "--out",
              str(tmp_path / "l.png")]
    for boxes, message in (("[[0.1, 0.1, 1.5, 0.5, 0]]", "outside [0, 1]"), ("[[0.1", "not JSON")):
        assert main([*layout, "--boxes", boxes]) == 2
        assert message in capsys.readouterr().err


def test_cli_layout_draws_its_boxes_over_the_samples(tmp_path, trained_kinds):
    import numpy as np
    from PIL import Image

    from latentdiff.cli import main

    out = tmp_path / "l.png"
    assert main(["layout", str(trained_kinds["layout"]), "--steps", "2", "--n", "1", "--out", str(out),
                 "--boxes", "[[0.25, 0.25, 0.75, 0.75, 0]]", "--draw-boxes"]) == 0
    drawn = np.asarray(Image.open(out))  # one image: no grid padding
    edge = drawn.shape[0] // 4
    assert (drawn[edge, edge:-edge] == 0).all() and (drawn[edge:-edge, edge] == 0).all()


def test_draw_boxes_outlines_each_box_and_leaves_the_rest():
    from latentdiff.images import draw_boxes
    images = torch.full((2, 3, 16, 16), 200, dtype=torch.uint8)
    out = draw_boxes(images, [[0.25, 0.25, 0.75, 0.75, 1], [0.0, 0.0, 1.0, 1.0, 2]])
    assert (out[:, :, 4, 4:12] == 0).all() and (out[:, :, 4:12, 11] == 0).all()  # pixels 4 … 11
    assert (out[:, :, 0, :] == 0).all() and (out[:, :, :, 15] == 0).all()  # the whole-image box
    assert (out[:, :, 5:11, 5:11] == 200).all() and (out[:, :, 2, 2] == 200).all()
    assert (images == 200).all()  # the input is not changed


def test_export_is_a_small_fp16_copy_that_samples_the_same(tmp_path, trained_kinds):
    from latentdiff.checkpoints.models import export_latent_diffusion

    source = trained_kinds["layout"]
    exported = export_latent_diffusion(source, tmp_path / "layout-fp16.safetensors")
    tensors = read_tensors(exported)
    assert {k.split(".")[0] for k in tensors} == {"unet_ema", "conditioner_ema", "autoencoder"}
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {torch.float16}
    assert exported.stat().st_size < 0.3 * source.stat().st_size
    layout = [[(0.1, 0.1, 0.5, 0.5, 3)]]
    a, b = (generate(load_latent_diffusion(path), seeds=[0], layouts=layout, steps=2)
            for path in (source, exported))
    torch.testing.assert_close(a, b, atol=2e-2, rtol=0)  # fp16 weights
    with pytest.raises(UserError, match="unknown dtype"):
        export_latent_diffusion(source, tmp_path / "x.safetensors", "int8")


def test_cli_eval_scores_alignment_against_real_and_shuffled_baselines(tmp_path, trained_kinds, capsys,
                                                                        monkeypatch):
    import json

    from latentdiff.cli import main
    from latentdiff.metrics.classifier import RECIPE

    monkeypatch.setitem(RECIPE, "epochs", 1)  # the evaluator's features only need to exist here

    out = tmp_path / "report.json"
    assert main(["eval", str(trained_kinds["layout"]), "--guidance", "0", "3",
                 "--n", "8", "--steps", "2",
                 "--json", str(out)]) == 0
    assert "mean box IoU" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["n"] == 8 and [r["guidance_scale"] for r in report["rows"]] == [0.0, 3.0]
    assert report["real"] > report["shuffled"] and all(0 <= r["alignment"][0] <= 1
                                                       for r in report["rows"])
    from latentdiff.autoencoder.perceptual import LPIPS

    # random LPIPS weights (non-negative, as trained ones) in an original
    lpips = tmp_path / "lpips.pth"
    # autoencoder checkpoint's layout
    weights = {k: v.abs() for k, v in LPIPS().state_dict().items()}
    torch.save({"state_dict": {f"loss.perceptual_loss.{k}": v for k, v in weights.items()}}, lpips)
    assert main(["eval", str(trained_kinds["superres"]), "--n", "8", "--steps",
                 "2", "--json", str(out),
                 "--lpips-weights", str(lpips)]) == 0
    table = capsys.readouterr().out
    assert "LDM-SR seed 0" in table and "bicubic ×2" in table and "autoencoder (ceiling)" in table
    # the shared LPIPS column
    assert all(row["lpips"] > 0 for row in json.loads(out.read_text())["rows"])
    assert main(["eval", str(trained_kinds["layout"]), "--lpips-weights", str(lpips)]) == 2
    assert "no paired images" in capsys.readouterr().err
    assert main(["eval", str(trained_kinds["semantic"])]) == 2
    assert "text or layout model" in capsys.readouterr().err


def test_cli_eval_adds_the_clip_score_of_text_models(tmp_path,
                                                     shapes_autoencoder, capsys, monkeypatch):
    from latentdiff.cli import main
    from latentdiff.metrics.classifier import RECIPE
    from tests.test_sample_quality import tiny_clip_folder

    monkeypatch.setitem(RECIPE, "epochs", 1)
    tiny_clip_folder(tmp_path / "clip")
    checkpoint = train_latent_diffusion(conditional_config(tmp_path / "t",
                                                           shapes_autoencoder, "text",
                                                           "train.max_steps=2"))
    assert main(["eval", str(checkpoint), "--guidance", "1", "3", "--n", "4", "--steps", "2",
                 "--clip", str(tmp_path / "clip")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert lines[0].endswith("CLIP score |") and len(lines) == 4
    assert all(0 <= float(line.split("|")[-2].split("±")[0]) <= 100 for line in lines[2:])


def test_every_configurable_kind_has_one_class():
    from latentdiff.conditioning.kinds import KINDS
    from latentdiff.config import CONDITIONING_KINDS

    assert set(KINDS) | {"none"} == set(CONDITIONING_KINDS)
    assert all(cls.kind == name for name, cls in KINDS.items())
