"""Original CompVis latent-diffusion / Stable Diffusion single files: random weights at small sizes
in the original layout and YAML, loaded by latentdiff and, independently, by diffusers' own
single-file conversion functions (`diffusers.loaders.single_file_utils`); UNet outputs, autoencoder
reconstructions and a whole DDIM run agree."""

import os

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from latentdiff.autoencoder import build_autoencoder
from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.cli import main
from latentdiff.conditioning import Cond
from latentdiff.errors import UserError
from latentdiff.checkpoints import load_model
from latentdiff.checkpoints.interop.compvis import FIRST_STAGE, UNET, ema_name, original_config
from latentdiff.samplers import run_sampler, sigma_grid
from latentdiff.unet import UNetModel

diffusers = pytest.importorskip("diffusers")
single_file = pytest.importorskip("diffusers.loaders.single_file_utils")


def original_yaml(unet: dict, first_stage: str = "AutoencoderKL",
                  cond_stage: str = "FrozenCLIPEmbedder",
                  conditioning_key: str | None = "crossattn", **params) -> dict:
    """A config in the layout of the published ones (v1-inference.yaml, cin256-v2.yaml, bsr_sr ...)
    at tiny width."""
    ddconfig = {"double_z": first_stage == "AutoencoderKL", "z_channels": 4,
                "resolution": 32, "in_channels": 3,
                "out_ch": 3, "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1,
                "attn_resolutions": [],
                "dropout": 0.0}
    first = {"target": f"ldm.models.autoencoder.{first_stage}",
             "params": {"embed_dim": 4, "ddconfig": ddconfig,
                        "lossconfig": {"target": "torch.nn.Identity"},
                        **({"n_embed": 64} if first_stage.startswith("VQ") else {})}}
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
        "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000,
        "image_size": 8, "channels": 4,
        "conditioning_key": conditioning_key, "scale_factor": 0.18215, "use_ema": False, **params,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                        "params": {"image_size": 8, "in_channels": 4,
                                   "out_channels": 4, "model_channels": 32,
                                   "attention_resolutions": [2, 1], "num_res_blocks": 2,
                                   "channel_mult": [1, 2],
                                   "use_checkpoint": True, **unet}},
        "first_stage_config": first,
        "cond_stage_config": {"target": f"ldm.modules.encoders.modules.{cond_stage}"}}}}


SD_UNET = {"num_heads": 2, "use_spatial_transformer": True, "transformer_depth": 1,
           "context_dim": 16, "legacy": False}


def random_original_file(tmp_path, config: dict,
                         ema_offset: float | None = None, fmt: str = "ckpt"):
    """(checkpoint path, YAML path, state dict) with random weights in the original key layout."""
    cfg = original_config(config)
    unet, autoencoder = UNetModel(cfg.unet), build_autoencoder(cfg.autoencoder)
    generator = torch.Generator().manual_seed(0)
    for p in [*unet.parameters(), *autoencoder.parameters()]:
        p.data = 0.05 * torch.randn(p.shape, generator=generator)
    state = {UNET + k: v for k, v in unet.state_dict().items()}
    state |= {FIRST_STAGE + k: v for k, v in autoencoder.state_dict().items()}
    if ema_offset is not None:  # LitEma shadows, dots removed, plus its two counters
        state |= {ema_name(k): v + ema_offset for k, v in unet.state_dict().items()}
        state |= {"model_ema.decay": torch.tensor(0.9999),
                  "model_ema.num_updates": torch.tensor(10, dtype=torch.int)}
    # schedule buffers
    state |= {"betas": torch.linspace(1e-4, 2e-2, 1000), "alphas_cumprod": torch.ones(1000)}
    path = tmp_path / f"model.{fmt}"
    if fmt == "ckpt":
        torch.save({"state_dict": state, "global_step": 5, "epoch": 0}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    yaml = tmp_path / "model.yaml"
    OmegaConf.save(OmegaConf.create(config), yaml)
    return path, yaml, state


def diffusers_unet(config: dict, state: dict):
    """The file's UNet through diffusers' own single-file conversion."""
    unet_cfg = single_file.create_unet_diffusers_config_from_ldm(config, state)
    unet = diffusers.UNet2DConditionModel(**unet_cfg)
    unet.load_state_dict(single_file.convert_ldm_unet_checkpoint(state, unet_cfg))
    return unet.eval()


def diffusers_models(config: dict, state: dict):
    unet = diffusers_unet(config, state)
    vae_cfg = single_file.create_vae_diffusers_config_from_ldm(config, state)
    vae = diffusers.AutoencoderKL(**vae_cfg)
    vae.load_state_dict(single_file.convert_ldm_vae_checkpoint(state, vae_cfg))
    return unet.eval(), vae.eval()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def sd_pipeline(unet, vae, text_encoder, tokenizer, prediction_type: str = "epsilon",
                set_alpha_to_one: bool = True):
    """diffusers' StableDiffusionPipeline with the DDIM scheduler latentdiff's `--spacing compvis`
    reproduces (set_alpha_to_one=False: with `--final t0` as well)."""
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000,
                                        beta_start=0.00085, beta_end=0.012,
                                        beta_schedule="scaled_linear",
                                        set_alpha_to_one=set_alpha_to_one, steps_offset=1,
                                        clip_sample=False, timestep_spacing="leading",
                                        prediction_type=prediction_type)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text_encoder,
                                             tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None,
                                             feature_extractor=None,
                                             requires_safety_checker=False)
    return pipe


def assert_same_guided_run(model, pipe, seeds: list[int], guidance: float,
                           final: str = "zero") -> None:
    """10 guided steps from the same x_T and two prompts: the pipeline's pixels and latentdiff's
    generate agree."""
    from latentdiff.pipelines import generate
    from latentdiff.samplers.randomness import per_sample_generators, randn_like

    pipe.set_progress_bar_config(disable=True)
    prompts = ["the cat", "a dog"]
    x_T = randn_like(torch.empty(2, 4, 8, 8), per_sample_generators(seeds))
    theirs = pipe(prompts, height=32, width=32, num_inference_steps=10,
                  guidance_scale=guidance, latents=x_T,
                  output_type="pt").images
    ours = generate(model, seeds, prompts=prompts, guidance_scale=guidance, steps=10,
                    spacing="compvis", final=final)
    assert relative(ours * 0.5 + 0.5, theirs) <= 1e-5


def their_clip(model, state: dict):
    """The file's CLIP text encoder through diffusers' own conversion
    (convert_ldm_clip_checkpoint)."""
    import transformers

    text_encoder = transformers.CLIPTextModel(model.conditioner.tokenizer.source.config)
    converted = single_file.convert_ldm_clip_checkpoint(state)
    # transformers 5: a flat model
    if not any(k.startswith("text_model.") for k in text_encoder.state_dict()):
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    result = text_encoder.load_state_dict(converted, strict=False)
    assert not [k for k in [*result.missing_keys, *result.unexpected_keys] if "position_ids" not in k], result
    return text_encoder.eval()


def sd_model(tmp_path):
    # text encoder: not part of this test
    config = original_yaml(SD_UNET, cond_stage="__is_unconditional__")
    path, yaml, state = random_original_file(tmp_path, config)
    return config, state, load_model(path, yaml)


def clip_tokenizer_folder(folder):
    """A CLIP BPE tokenizer (vocab.json + merges.txt) over byte characters and a few merges, saved
    as transformers saves openai/clip-vit-large-patch14's."""
    import json

    from tokenizers.pre_tokenizers import ByteLevel

    transformers = pytest.importorskip("transformers")
    chars = sorted(ByteLevel.alphabet())
    merges = ["t h", "th e</w>", "c a", "ca t</w>", "d o", "do g</w>"]
    vocab = chars + [c + "</w>" for c in chars] + ["th", "the</w>", "ca",
                                                   "cat</w>", "do", "dog</w>"]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"),
                                           str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(folder)
    return tokenizer


def sd_text_file(tmp_path, unet: dict = SD_UNET, conditioning_key: str = "crossattn"):
    """A Stable-Diffusion-v1-layout file with a tiny CLIP text model under
    cond_stage_model.transformer.text_model (with the stale position_ids buffer of old transformers
    releases)."""
    import transformers

    tokenizer = clip_tokenizer_folder(tmp_path / "tokenizer")
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
        num_attention_heads=1, intermediate_size=32,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    config = original_yaml(unet, conditioning_key=conditioning_key)
    path, yaml, state = random_original_file(tmp_path, config)
    # the original layout, whatever this transformers release nests:
    # cond_stage_model.transformer.text_model.*
    state |= {f"cond_stage_model.transformer.text_model.{k.removeprefix('text_model.')}": v
              for k, v in clip.state_dict().items()}
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    torch.save({"state_dict": state}, path)
    return config, state, path, yaml, tokenizer


@torch.no_grad()
def test_unet_and_autoencoder_match_diffusers_single_file_loading(tmp_path):
    config, state, model = sd_model(tmp_path)
    their_unet, their_vae = diffusers_models(config, state)
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 16, generator=g)
    t = torch.tensor([10, 700])
    ours = model.unet(x, t, context=context)
    assert relative(ours, their_unet(x, t, encoder_hidden_states=context).sample) <= 1e-5
    images = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    posterior, their_posterior = model.codec.autoencoder.encode(images), their_vae.encode(images).latent_dist
    assert relative(posterior.mean, their_posterior.mean) <= 1e-5
    assert relative(posterior.std, their_posterior.std) <= 1e-5
    decoded = model.codec.autoencoder.decode(posterior.mean)
    assert relative(decoded, their_vae.decode(posterior.mean).sample) <= 1e-5
    assert model.codec.scale.flatten()[0].item() == pytest.approx(0.18215)
    assert model.image_size == 32 and model.prediction == "eps"
    assert model.schedule.config.kind == "scaled_linear"


@torch.no_grad()
def test_whole_ddim_run_matches_diffusers(tmp_path):
    """25 DDIM steps from the same x_T and context, decoded: diffusers' DDIMScheduler (the options
    of docs/samplers.md's table) driving its converted UNet, against latentdiff's DDIM on the loaded
    model."""
    config, state, model = sd_model(tmp_path)
    their_unet, their_vae = diffusers_models(config, state)
    g = torch.Generator().manual_seed(2)
    z_T, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 16, generator=g)
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000,
                                        beta_start=0.00085, beta_end=0.012,
                                        beta_schedule="scaled_linear",
                                        set_alpha_to_one=True, steps_offset=0,
                                        clip_sample=False, timestep_spacing="leading")
    scheduler.set_timesteps(25)
    theirs = z_T.clone()
    for t in scheduler.timesteps:
        output = their_unet(theirs, t, encoder_hidden_states=context).sample
        theirs = scheduler.step(output, t, theirs).prev_sample
    their_images = their_vae.decode(theirs / 0.18215).sample
    sigmas = sigma_grid(model.schedule, 25, "leading")
    denoiser = model.denoiser
    ours = run_sampler("ddim", denoiser, z_T * (1 + sigmas[0] ** 2).sqrt(), sigmas,
                       cond=Cond(context=context))
    assert relative(ours, theirs) <= 1e-5
    assert relative(model.codec.autoencoder.decode(model.codec.denormalize(ours)), their_images) <= 1e-5


@torch.no_grad()
@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_ema_shadows_with_dots_removed_are_chosen_as_the_yaml_says(tmp_path, fmt):
    """The original samples with the EMA shadows only when the YAML's use_ema is true (its default);
    files whose YAML says use_ema: False (SD v1-inference, txt2img-1p4B-eval) are sampled with the
    raw weights, even when they hold model_ema.*. --ema / --no-ema override the YAML."""
    # use_ema: False, as SD's v1-inference
    config = original_yaml(SD_UNET, cond_stage="__is_unconditional__")
    path, yaml, state = random_original_file(tmp_path, config, ema_offset=0.01, fmt=fmt)
    name = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    assert ema_name(name) == "model_ema.diffusion_modelinput_blocks11transformer_blocks0attn1to_qweight"
    ema, raw = load_model(path, yaml, use_ema=True), load_model(path, yaml)
    assert torch.equal(ema.unet.state_dict()[name], state[UNET + name] + 0.01)
    assert torch.equal(raw.unet.state_dict()[name], state[UNET + name])
    config["model"]["params"].pop("use_ema")  # the original's default: True
    OmegaConf.save(OmegaConf.create(config), tmp_path / "ema.yaml")
    assert torch.equal(load_model(path, tmp_path / "ema.yaml").unet.state_dict()[name],
                       state[UNET + name] + 0.01)
    assert torch.equal(load_model(path, tmp_path / "ema.yaml", use_ema=False).unet.state_dict()[name],
                       state[UNET + name])
    (tmp_path / "pruned").mkdir()
    pruned, yaml2, _ = random_original_file(tmp_path / "pruned", config)
    with pytest.raises(UserError, match="no \\(complete\\) EMA"):
        load_model(pruned, yaml2, use_ema=True)


@torch.no_grad()
def test_vq_class_conditional_and_superresolution_layouts_load_and_sample(tmp_path):
    """cin256-style (num_classes label embedding) on a VQ first stage; bsr_sr-style (Identity cond
    stage, low-res pixels concatenated) on a VQ first stage: they load, and sample through the
    ordinary pipelines."""
    from latentdiff.pipelines import conditional, generate

    (tmp_path / "cin").mkdir()
    cin = original_yaml({"num_heads": 2, "num_classes": 10}, first_stage="VQModelInterface",
                        cond_stage="__is_unconditional__", conditioning_key=None, scale_factor=1.0)
    path, yaml, state = random_original_file(tmp_path / "cin", cin)
    model = load_model(path, yaml)
    assert model.num_classes == 10 and model.codec.autoencoder.config.regularizer == "vq"
    assert torch.equal(model.codec.autoencoder.quantize.embedding.weight,
                       state[FIRST_STAGE + "quantize.embedding.weight"])
    images = generate(model, seeds=[0, 1], class_labels=[3, 4], steps=3)
    assert images.shape == (2, 3, 32, 32) and images.isfinite().all()

    (tmp_path / "sr").mkdir()
    sr = original_yaml({"num_heads": 2, "in_channels": 7},
                       first_stage="VQModelInterface", cond_stage="Identity",
                       conditioning_key="concat", scale_factor=1.0)
    path, yaml, _ = random_original_file(tmp_path / "sr", sr)
    model = load_model(path, yaml)
    assert model.conditioner.kind == "superres"
    lowres = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    out = conditional.upscale(model, lowres, [0], steps=3)
    assert out.shape[-2:] == (32, 32)
    from PIL import Image

    Image.fromarray(lowres.permute(1, 2, 0).numpy()).save(tmp_path / "low.png")
    assert main(["upscale", str(path), "--config", str(yaml), "--image",
                 str(tmp_path / "low.png"), "--n", "1",
                 "--steps", "2", "--out", str(tmp_path / "up.png")]) == 0


@torch.no_grad()
def test_stable_diffusion_text_to_image_matches_the_diffusers_pipeline(tmp_path):
    """The CLIP text encoder from the file (diffusers: convert_ldm_clip_checkpoint) and a whole
    guided DDIM run: diffusers' StableDiffusionPipeline against latentdiff's generate, same x_T,
    prompts and guidance scale."""
    config, state, path, yaml, tokenizer = sd_text_file(tmp_path)
    model = load_model(path, yaml, tokenizer=tmp_path / "tokenizer")
    assert model.trained_with_null and model.conditioner.frozen
    their_unet, their_vae = diffusers_models(config, state)
    text_encoder = their_clip(model, state)
    prompts = ["the cat", "a dog"]
    ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    ours = model.conditioner.encode(model.conditioner.tokens(prompts))
    assert ours.context.shape == (2, 77, 16) and ours.context_mask.all()
    assert relative(ours.context, text_encoder(ids).last_hidden_state) <= 1e-5

    assert_same_guided_run(model,
                           sd_pipeline(their_unet, their_vae, text_encoder, tokenizer), [3, 4], 4.0)
    # CompVis's own ending (the last step to ᾱ_0, not ᾱ = 1): diffusers' set_alpha_to_one=False, our
    # --final t0
    compvis_ending = sd_pipeline(their_unet, their_vae, text_encoder, tokenizer,
                                 set_alpha_to_one=False)
    assert_same_guided_run(model, compvis_ending, [3, 4], 4.0, final="t0")


@torch.no_grad()
def test_convert_writes_a_latentdiff_checkpoint_with_the_same_numbers(tmp_path):
    _, _, path, yaml, _ = sd_text_file(tmp_path)
    model = load_model(path, yaml, tokenizer=tmp_path / "tokenizer")
    assert main(["convert", str(path), str(tmp_path / "ours.safetensors"), "--config", str(yaml),
                 "--tokenizer", str(tmp_path / "tokenizer")]) == 0
    assert (tmp_path / "ours-text-encoder" / "config.json").is_file()
    converted = load_latent_diffusion(tmp_path / "ours.safetensors")
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([300]), torch.randn(1, 3, 16)
    assert torch.equal(converted.unet(x, t, context=context), model.unet(x, t, context=context))
    assert torch.equal(converted.codec.scale, model.codec.scale)
    tokens = model.conditioner.tokens(["the cat"])
    assert torch.equal(converted.conditioner.encode(tokens).context,
                       model.conditioner.encode(tokens).context)
    assert main(["sample", str(path), "--config", str(yaml), "--tokenizer",
                 str(tmp_path / "tokenizer"),
                 "--prompt", "the cat", "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.png")]) == 0


def test_stable_diffusion_v1_is_detected_from_its_keys_without_a_config(tmp_path):
    """The full-size SD-v1 layout (built on the meta device: shapes only, no memory) is recognised
    and its bundled v1-inference YAML rebuilds exactly those shapes; a layout it does not know asks
    for --config."""
    from latentdiff.checkpoints.interop.compvis import (
        ORIGINAL_CONFIGS,
        detect_original_config,
        read_yaml,
    )

    sd = original_config(read_yaml(ORIGINAL_CONFIGS / "sd-v1-inference.yaml"))
    with torch.device("meta"):
        unet = UNetModel(sd.unet)
    state = {UNET + k: v for k, v in unet.state_dict().items()}
    state["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.empty(49408, 768,
                                                                                                     device="meta")
    assert detect_original_config(state).name == "sd-v1-inference.yaml"
    inpainting = {**state,
                  UNET + "input_blocks.0.0.weight": torch.empty(320, 9, 3, 3, device="meta")}
    assert detect_original_config(inpainting).name == "sd-v1-inpainting-inference.yaml"
    assert original_config(read_yaml(detect_original_config(inpainting))).unet.in_channels == 9
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # the published SD-v1 UNet
    with pytest.raises(UserError, match="--config"):
        detect_original_config({k: v for k, v in state.items() if "cond_stage" not in k})
    config = original_yaml(SD_UNET, cond_stage="__is_unconditional__")
    path, _, _ = random_original_file(tmp_path, config)
    with pytest.raises(UserError, match="cannot tell the architecture"):
        load_model(path)


@torch.no_grad()
def test_half_precision_unet_keeps_the_autoencoder_in_fp32(tmp_path):
    from latentdiff.pipelines import generate

    _, _, path, yaml, _ = sd_text_file(tmp_path)
    full = load_model(path, yaml, tokenizer=tmp_path / "tokenizer")
    half = load_model(path, yaml, tokenizer=tmp_path / "tokenizer", dtype=torch.bfloat16)
    assert next(half.unet.parameters()).dtype == torch.bfloat16
    assert next(half.codec.autoencoder.parameters()).dtype == torch.float32
    assert next(half.conditioner.tokenizer.model.parameters()).dtype == torch.bfloat16
    options = {"prompts": ["the cat"], "guidance_scale": 3.0, "steps": 4}
    reference, low = generate(full, [0], **options), generate(half, [0], **options)
    assert low.dtype == torch.float32 and low.isfinite().all()
    assert (low - reference).abs().max() < 0.05


def test_malformed_files_give_one_line_errors_and_run_nothing(tmp_path, capsys):
    config = original_yaml(SD_UNET, cond_stage="__is_unconditional__")
    path, yaml, _ = random_original_file(tmp_path, config, fmt="safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:5000])
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.ones(1)}, "payload": Payload()},
               evil)
    other = tmp_path / "other.safetensors"
    save_file({"encoder.conv_in.weight": torch.ones(1)}, str(other))
    cases = {truncated: "truncated", evil: "refusing to load", other: "not a CompVis"}
    for file, message in cases.items():
        assert main(["sample", str(file), "--config", str(yaml), "--n", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, err
    assert not marker.exists()
    assert main(["sample", str(path), "--n", "1"]) == 2
    assert "--config" in capsys.readouterr().err
    bad = original_yaml({**SD_UNET, "adm_in_channels": 2816}, cond_stage="__is_unconditional__")
    OmegaConf.save(OmegaConf.create(bad), tmp_path / "bad.yaml")
    assert main(["sample", str(path), "--config", str(tmp_path / "bad.yaml"), "--n", "1"]) == 2
    assert "adm_in_channels" in capsys.readouterr().err

