"""Published variants in single files, against diffusers' own conversion functions and pipelines:
2.x (the OpenCLIP text tower read to its penultimate layer, linear projections, v-prediction) and v1
inpainting (a 9-channel UNet fed [z_t, mask, E(masked image)], conditioning_key hybrid), and the
class-token ImageNet LDM (cin256-v2)."""

import pytest
import torch
from test_interop_compvis import (SD_UNET, assert_same_guided_run,
                                  clip_tokenizer_folder, diffusers_models,
                                  diffusers_unet, original_yaml,
                                  random_original_file, relative, sd_pipeline,
                                  sd_text_file, their_clip)

from latentdiff.errors import UserError
from latentdiff.checkpoints import load_model
from latentdiff.checkpoints.interop.diffusers_folder import save_diffusers

diffusers = pytest.importorskip("diffusers")
single_file = pytest.importorskip("diffusers.loaders.single_file_utils")


def open_clip_state(width: int, blocks: int, vocab: int,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """An OpenCLIP text tower in FrozenOpenCLIPEmbedder's layout (cond_stage_model.model.*), random
    weights."""
    def rand(*shape):
        return 0.05 * torch.randn(*shape, generator=generator)

    state = {"token_embedding.weight": rand(vocab, width), "positional_embedding": rand(77, width),
             "ln_final.weight": 1 + rand(width), "ln_final.bias": rand(width),
             "text_projection": rand(width, width),
             "logit_scale": torch.tensor(4.6)}
    for i in range(blocks):
        p = f"transformer.resblocks.{i}."
        state |= {p + "ln_1.weight": 1 + rand(width), p + "ln_1.bias": rand(width),
                  p + "ln_2.weight": 1 + rand(width),
                  p + "ln_2.bias": rand(width), p + "attn.in_proj_weight": rand(3 * width, width),
                  p + "attn.in_proj_bias": rand(3 * width),
                  p + "attn.out_proj.weight": rand(width, width),
                  p + "attn.out_proj.bias": rand(width),
                  p + "mlp.c_fc.weight": rand(4 * width, width),
                  p + "mlp.c_fc.bias": rand(4 * width),
                  p + "mlp.c_proj.weight": rand(width, 4 * width),
                  p + "mlp.c_proj.bias": rand(width)}
    return {f"cond_stage_model.model.{k}": v for k, v in state.items()}


def their_open_clip(state: dict[str, torch.Tensor], tokenizer):
    """The file's OpenCLIP tower (64 wide, 3 blocks, penultimate layer) through diffusers' own
    conversion (convert_open_clip_checkpoint) into a CLIPTextModel of 2 blocks."""
    import transformers

    clip_config = transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
        num_attention_heads=1, intermediate_size=256,
        max_position_embeddings=77, hidden_act="gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    text_encoder = transformers.CLIPTextModel(clip_config).eval()
    converted = single_file.convert_open_clip_checkpoint(text_encoder, state)
    if not any(k.startswith("text_model.") for k in text_encoder.state_dict()):
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    result = text_encoder.load_state_dict(converted, strict=False)
    assert not result.missing_keys or all("position_ids" in k for k in result.missing_keys), result
    return text_encoder


def sd2_file(tmp_path, in_channels: int = 4, conditioning_key: str = "crossattn", **params):
    """(model, config, state, tokenizer) of an SD-2-layout file: OpenCLIP penultimate, linear
    projections."""
    tokenizer = clip_tokenizer_folder(tmp_path / "tokenizer")
    unet = {"num_head_channels": 16, "use_spatial_transformer": True,
            "use_linear_in_transformer": True,
            "context_dim": 64, "legacy": False, "transformer_depth": 1, "in_channels": in_channels}
    config = original_yaml(unet, cond_stage="FrozenOpenCLIPEmbedder",
                           conditioning_key=conditioning_key, **params)
    config["model"]["params"]["cond_stage_config"]["params"] = {"freeze": True, "layer": "penultimate"}
    path, yaml, state = random_original_file(tmp_path, config)
    state |= open_clip_state(64, 3, len(tokenizer), torch.Generator().manual_seed(4))
    torch.save({"state_dict": state}, path)
    return path, yaml, config, state, tokenizer


@torch.no_grad()
def test_stable_diffusion_2_openclip_penultimate_v_prediction_matches_diffusers(tmp_path):
    """SD 2.x: OpenCLIP text tower read up to its penultimate block (diffusers:
    convert_open_clip_checkpoint into a CLIPTextModel of one block fewer), linear projections,
    64-channel heads, v-prediction; a whole guided run against StableDiffusionPipeline with a
    v-prediction DDIM scheduler."""
    path, yaml, config, state, tokenizer = sd2_file(tmp_path, parameterization="v")
    with pytest.raises(UserError, match="ε from v"):
        load_model(path)
    model = load_model(path, yaml, tokenizer=tmp_path / "tokenizer")
    assert model.prediction == "v" and model.unet.config.linear_projection

    text_encoder = their_open_clip(state, tokenizer)
    prompts = ["the cat", "a dog"]
    ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    ours = model.conditioner.encode(model.conditioner.tokens(prompts)).context
    assert relative(ours, text_encoder(ids).last_hidden_state) <= 1e-5

    their_unet, their_vae = diffusers_models(config, state)
    pipe = sd_pipeline(their_unet, their_vae, text_encoder, tokenizer,
                       prediction_type="v_prediction")
    assert_same_guided_run(model, pipe, [7, 8], 5.0)


def assert_same_inpainting_run(model, config: dict, state: dict, text_encoder, tokenizer):
    """latentdiff's generate with [mask, E(masked image)] concatenated against
    StableDiffusionInpaintPipeline (same x_T, prompts, guidance and masked-image latents), ≤ 1e-5 in
    pixels; returns the (image, mask) used."""
    from latentdiff.conditioning import Cond
    from latentdiff.pipelines import generate
    from latentdiff.samplers.randomness import per_sample_generators, randn_like

    their_unet, their_vae = diffusers_models(config, state)
    scheduler = sd_pipeline(their_unet, their_vae, None, tokenizer).scheduler
    pipe = diffusers.StableDiffusionInpaintPipeline(vae=their_vae,
                                                    text_encoder=text_encoder, tokenizer=tokenizer,
                                                    unet=their_unet,
                                                    scheduler=scheduler, safety_checker=None,
                                                    feature_extractor=None,
                                                    requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(9)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g)
    mask = torch.zeros(32, 32)
    mask[8:24, 4:20] = 1
    x = image[None].float() / 127.5 - 1
    masked_latent = model.codec.encode(x * (1 - mask))
    prompts, seeds = ["the cat", "a dog"], [1, 2]
    x_T = randn_like(torch.empty(2, 4, 8, 8), per_sample_generators(seeds))
    theirs = pipe(prompts, image=(x + 1) / 2, mask_image=mask[None, None],
                  masked_image_latents=masked_latent,
                  latents=x_T, height=32, width=32, num_inference_steps=10, guidance_scale=4.0, output_type="pt").images
    concat = model.conditioner.spatial((8, 8), masked_latent=masked_latent, mask=mask[None, None]).concat
    ours = generate(model, seeds, prompts=prompts,
                    spatial=Cond(concat=concat.expand(2, -1, -1, -1)),
                    guidance_scale=4.0, steps=10, spacing="compvis")
    assert relative(ours * 0.5 + 0.5, theirs) <= 1e-5
    return image, mask


@torch.no_grad()
def test_stable_diffusion_inpainting_matches_the_diffusers_inpaint_pipeline(tmp_path):
    """A 9-channel SD-v1 inpainting file: latentdiff's generate with [mask, E(masked image)]
    concatenated against StableDiffusionInpaintPipeline (same x_T, prompts, guidance and
    masked-image latents); `latentdiff inpaint` keeps every unmasked pixel."""
    from PIL import Image

    from latentdiff.cli import main
    from latentdiff.pipelines import conditional

    config, state, path, yaml, tokenizer = sd_text_file(tmp_path,
                                                        {**SD_UNET, "in_channels": 9}, "hybrid")
    model = load_model(path, yaml, tokenizer=tmp_path / "tokenizer")
    assert model.conditioner.inpaints and model.unet.config.in_channels == 9
    image, mask = assert_same_inpainting_run(model, config, state,
                                             their_clip(model, state), tokenizer)

    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "image.png")
    Image.fromarray((mask * 255).byte().numpy()).save(tmp_path / "mask.png")
    assert main(["inpaint", str(path), "--config", str(yaml), "--tokenizer",
                 str(tmp_path / "tokenizer"),
                 "--image", str(tmp_path / "image.png"), "--mask",
                 str(tmp_path / "mask.png"), "--prompt", "the cat",
                 "--n", "1", "--steps", "3", "--guidance", "3", "--out", str(tmp_path / "out.png")]) == 0
    out = conditional.inpaint(model, image, mask, [0], prompts=["a dog"],
                              steps=3, guidance_scale=3.0)
    keep = (mask == 0).expand(3, -1, -1)
    assert torch.equal(out[0][keep], image[keep]) and not torch.equal(out[0], image)

    folder = save_diffusers(model, tmp_path / "inpainting")
    their = diffusers.StableDiffusionInpaintPipeline.from_pretrained(folder, local_files_only=True)
    assert their.unet.config.in_channels == 9
    back = load_model(folder)
    assert back.conditioner.inpaints
    assert torch.equal(back.unet.input_blocks[0][0].weight, model.unet.input_blocks[0][0].weight)


@torch.no_grad()
def test_stable_diffusion_2_inpainting_matches_the_diffusers_inpaint_pipeline(tmp_path):
    """SD 2 inpainting (512-inpainting-ema): a 9-channel UNet (hybrid) with linear projections and
    16-channel heads fed by the OpenCLIP tower's penultimate layer, ε-prediction, against
    StableDiffusionInpaintPipeline."""
    path, yaml, config, state, tokenizer = sd2_file(tmp_path, in_channels=9,
                                                    conditioning_key="hybrid")
    model = load_model(path, yaml, tokenizer=tmp_path / "tokenizer")
    assert model.conditioner.inpaints and model.unet.config.linear_projection and model.prediction == "eps"
    assert_same_inpainting_run(model, config, state, their_open_clip(state, tokenizer), tokenizer)


@torch.no_grad()
def test_class_token_model_cin256_v2_layout_matches_a_guided_diffusers_run(tmp_path):
    """cin256-v2: the label as one cross-attention token (`cond_stage_model.embedding`,
    ClassEmbedder) with a null class after the real ones, a VQ first stage; latentdiff's guided DDIM
    against diffusers' converted UNet and DDIMScheduler driven by hand with the same class-token
    contexts."""
    from latentdiff.pipelines import generate
    from latentdiff.samplers.randomness import per_sample_generators, randn_like

    config = original_yaml({"num_heads": 1, "use_spatial_transformer": True, "context_dim": 24,
                            "transformer_depth": 1},
                           first_stage="VQModelInterface",
                           cond_stage="ClassEmbedder", scale_factor=1.0)
    config["model"]["params"]["cond_stage_config"]["params"] = {"embed_dim": 24, "n_classes": 10,
                                                                "key": "class_label"}
    path, yaml, state = random_original_file(tmp_path, config)
    # 10 classes + the null class 10
    table = torch.randn(11, 24, generator=torch.Generator().manual_seed(5))
    state["cond_stage_model.embedding.weight"] = table
    torch.save({"state_dict": state}, path)
    model = load_model(path, yaml)
    assert model.conditioner.kind == "class" and model.num_classes == 11 and model.trained_with_null
    their_unet = diffusers_unet(config, state)
    scheduler = sd_pipeline(their_unet, None, None, None).scheduler
    scheduler.set_timesteps(10)
    labels, seeds, scale = torch.tensor([3, 7]), [1, 2], 3.0
    latents = randn_like(torch.empty(2, 4, 8, 8), per_sample_generators(seeds))
    context, null = table[labels][:, None], table[[10, 10]][:, None]
    for t in scheduler.timesteps:
        eps_c, eps_u = (their_unet(latents, t, encoder_hidden_states=c).sample
                        for c in (context, null))
        latents = scheduler.step(eps_u + scale * (eps_c - eps_u), t, latents).prev_sample
    ours = generate(model, seeds, class_labels=labels.tolist(), guidance_scale=scale,
                    steps=10, spacing="compvis")
    assert relative(ours, model.codec.decode(latents)) <= 1e-5
    with pytest.raises(UserError, match="class labels"):
        generate(model, [0], class_labels=[11], steps=2)


@torch.no_grad()
@pytest.mark.parametrize("rows, n_classes, ucg_rate, guided",
                         [(1001, 1001, None, True), (1000, 1000, None, False),
                          (10, 10, 0.1, True), (11, 10, None, True)])
def test_class_embedder_null_class_is_found_as_the_original_configs_declare_it(tmp_path, rows, n_classes, ucg_rate,
                                                                                 guided):
    """The published cin256-v2 has n_classes 1001 and 1001 rows, class 1000 the null its notebook
    guides against; cin256 (LDM-8) has 1000 rows and no null; a ClassEmbedder trained with ucg_rate
    has its null at n_classes − 1."""
    from latentdiff.pipelines import generate

    config = original_yaml({"num_heads": 1, "use_spatial_transformer": True, "context_dim": 8,
                            "transformer_depth": 1},
                           first_stage="VQModelInterface",
                           cond_stage="ClassEmbedder", scale_factor=1.0)
    params = {"embed_dim": 8, "n_classes": n_classes, "key": "class_label"}
    if ucg_rate:
        params["ucg_rate"] = ucg_rate
    config["model"]["params"]["cond_stage_config"]["params"] = params
    path, yaml, state = random_original_file(tmp_path, config)
    generator = torch.Generator().manual_seed(5)
    state["cond_stage_model.embedding.weight"] = torch.randn(rows, 8, generator=generator)
    torch.save({"state_dict": state}, path)
    model = load_model(path, yaml)
    assert model.num_classes == rows and model.trained_with_null == guided
    if guided:
        generate(model, [0], class_labels=[rows - 2], guidance_scale=3.0, steps=2)
    else:
        with pytest.raises(UserError, match="without condition dropout"):
            generate(model, [0], class_labels=[3], guidance_scale=3.0, steps=2)


@torch.no_grad()
def test_semantic_synthesis_spatial_rescaler_layout_loads_converts_and_samples(tmp_path):
    """semantic_synthesis256-style: the one-hot map halved n_stages times (bilinear) and projected
    by `cond_stage_model.channel_mapper` (182 → 3 in the original), concatenated to z_t; the
    concatenated input equals that computation written out here, and survives `latentdiff
    convert`."""
    import torch.nn.functional as F

    from latentdiff.checkpoints import load_latent_diffusion
    from latentdiff.cli import main
    from latentdiff.pipelines import conditional

    config = original_yaml({"num_heads": 2, "in_channels": 7}, first_stage="VQModelInterface",
                           cond_stage="SpatialRescaler",
                           conditioning_key="concat", scale_factor=1.0)
    config["model"]["params"]["cond_stage_config"]["params"] = {"n_stages": 2, "in_channels": 6, "out_channels": 3,
                                                                "multiplier": 0.5, "method": "bilinear"}
    path, yaml, state = random_original_file(tmp_path, config)
    generator = torch.Generator().manual_seed(2)
    state["cond_stage_model.channel_mapper.weight"] = torch.randn(3, 6, 1, 1, generator=generator)
    torch.save({"state_dict": state}, path)
    model = load_model(path, yaml)
    labels = torch.randint(0, 6, (1, 32, 32), generator=torch.Generator().manual_seed(3))
    one_hot = F.one_hot(labels, 6).permute(0, 3, 1, 2).float()
    for _ in range(2):
        one_hot = F.interpolate(one_hot, scale_factor=0.5, mode="bilinear")
    expected = F.conv2d(one_hot, state["cond_stage_model.channel_mapper.weight"])
    concat = model.conditioner.spatial((8, 8), semantic=labels).concat
    assert relative(concat, expected) <= 1e-6
    images = conditional.semantic_synthesis(model, labels[0], [0, 1], steps=3)
    assert images.shape == (2, 3, 32, 32)
    assert main(["convert", str(path), str(tmp_path / "ours.safetensors"), "--config", str(yaml)]) == 0
    converted = load_latent_diffusion(tmp_path / "ours.safetensors")
    assert torch.equal(converted.conditioner.spatial((8, 8), semantic=labels).concat, concat)


@torch.no_grad()
def test_inpainting_big_layout_first_stage_condition_resblock_updown_and_no_attention_first_stage(tmp_path):
    """inpainting_big-style: the cond stage is the first stage itself (`__is_first_stage__`: its
    weights appear twice in the file), [E(masked image), mask resized by nearest neighbour]
    concatenated, a VQ first stage with attn_type none, a resblock_updown UNet; the concatenated
    input equals the original inpaint script's computation written out, and every unmasked pixel is
    kept."""
    import torch.nn.functional as F

    from latentdiff.pipelines import conditional

    config = original_yaml({"num_heads": 2, "in_channels": 9, "resblock_updown": True},
                           first_stage="VQModelInterface", cond_stage="__is_first_stage__",
                           conditioning_key="concat",
                           scale_factor=1.0)
    config["model"]["params"]["first_stage_config"]["params"]["ddconfig"]["attn_type"] = "none"
    path, yaml, state = random_original_file(tmp_path, config)
    state |= {k.replace("first_stage_model.", "cond_stage_model.", 1): v for k, v in state.items()
              if k.startswith("first_stage_model.")}
    torch.save({"state_dict": state}, path)
    model = load_model(path, yaml)
    assert model.conditioner.kind == "inpaint" and not model.codec.autoencoder.config.mid_attention
    assert not any("attn_1" in k for k in model.codec.autoencoder.state_dict())
    g = torch.Generator().manual_seed(6)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g)
    mask = torch.zeros(32, 32)
    mask[5:19, 9:30] = 1
    masked = (image[None].float() / 127.5 - 1) * (1 - mask)
    # VQModelInterface.encode
    h = model.codec.autoencoder.quant_conv(model.codec.autoencoder.encoder(masked))
    expected = torch.cat([h, F.interpolate(mask[None, None], size=h.shape[-2:])], dim=1)
    concat = model.conditioner.spatial((8, 8), masked_latent=model.codec.encode(masked),
                                       mask=mask[None, None]).concat
    assert relative(concat, expected) <= 1e-6
    out = conditional.inpaint(model, image, mask, [0, 1], steps=3)
    keep = (mask == 0).expand(3, -1, -1)
    assert all(torch.equal(o[keep], image[keep]) for o in out)
