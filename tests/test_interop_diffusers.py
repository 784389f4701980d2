"""diffusers pipeline folders: latentdiff writes them and diffusers runs them
(StableDiffusionPipeline from the folder against latentdiff's generate); diffusers writes them
(save_pretrained of its own randomly initialised models) and latentdiff runs them; ours → diffusers
folder → ours is bit-identical."""

import json

import pytest
import torch
from test_interop_compvis import assert_same_guided_run, relative, sd_text_file

from latentdiff.autoencoder import LatentCodec, LatentStats, build_autoencoder
from latentdiff.cli import main
from latentdiff.conditioning import Cond

from latentdiff.conditioning.text import CaptionTokenizer, TextConditioner
from latentdiff.config import (
    AutoencoderConfig,
    ConditioningConfig,
    NoiseScheduleConfig,
    TextEncoderConfig,
    UNetConfig,
)
from latentdiff.errors import UserError
from latentdiff.checkpoints import load_model
from latentdiff.checkpoints.interop.diffusers_folder import save_diffusers
from latentdiff.ldm import LatentDiffusion
from latentdiff.noise import NoiseSchedule
from latentdiff.pipelines import generate
from latentdiff.samplers import run_sampler, sigma_grid
from latentdiff.unet import UNetModel

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

def randomize(*modules: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial weights everywhere (zero-initialised output layers would hide naming
    mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    for module in modules:
        for p in module.parameters():
            p.data = 0.05 * torch.randn(p.shape, generator=generator)

def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])][:3]

def joint_text_model(regularizer: str = "vq") -> LatentDiffusion:
    """latentdiff's own text-to-image layout: a BPE tokenizer, τ_θ trained jointly (here random), a
    VQ first stage, per-channel latent statistics, v-prediction."""
    tokenizer = CaptionTokenizer.train(["a red circle", "a blue square above a red circle"], 64, 10)
    text = TextEncoderConfig(vocab_size=64, max_length=10, width=16, depth=1, num_heads=2)
    conditioner = TextConditioner(ConditioningConfig(kind="text", text=text), tokenizer)
    unet = UNetModel(UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                attention_resolutions=(2,),
                                head_channels=16, context_dim=16, use_scale_shift_norm=True))
    autoencoder = build_autoencoder(AutoencoderConfig(base_channels=32,
                                                      channel_mult=(1, 2), num_res_blocks=1,
                                                      resolution=16,
                                                      regularizer=regularizer, codebook_size=32,
                                                      norm_groups=8))
    randomize(unet, autoencoder, conditioner)
    codec = LatentCodec(autoencoder, LatentStats((0.1, -0.2, 0.0, 0.3), (0.5, 0.6, 0.7, 0.8)))
    return LatentDiffusion(unet=unet.eval(), codec=codec.eval(), conditioner=conditioner.eval(),
                           schedule=NoiseSchedule(NoiseScheduleConfig(kind="cosine")),
                           prediction="v",
                           image_size=16, trained_with_null=True)

@torch.no_grad()
def test_stable_diffusion_layout_round_trips_and_runs_in_diffusers(tmp_path):
    """An SD-v1 single file (tiny, random, CLIP text encoder) → `latentdiff convert` → a diffusers
    folder that StableDiffusionPipeline.from_pretrained runs to the same images as latentdiff;
    loading the folder back gives the very same tensors."""
    _, _, path, yaml, _ = sd_text_file(tmp_path)
    model = load_model(path, yaml, tokenizer=tmp_path / "tokenizer")
    folder = tmp_path / "pipeline"
    assert main(["convert", str(path), str(folder), "--config", str(yaml), "--tokenizer",
                 str(tmp_path / "tokenizer")]) == 0
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["vae"] == ["diffusers", "AutoencoderKL"]

    back = load_model(folder)
    assert_same_weights(back.unet, model.unet)
    assert_same_weights(back.codec.autoencoder, model.codec.autoencoder)
    assert_same_weights(back.conditioner.tokenizer.model, model.conditioner.tokenizer.model)
    assert torch.equal(back.codec.scale, model.codec.scale) and back.image_size == model.image_size
    assert back.schedule.config == model.schedule.config and back.trained_with_null

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    assert_same_guided_run(back, pipe, [5, 6], 4.0)

@torch.no_grad()
def test_fp16_variant_folders_load_the_variant_weights(tmp_path):
    """A pipeline folder whose components diffusers and transformers saved only as fp16 variants
    (diffusion_pytorch_model.fp16.safetensors, model.fp16.safetensors): found without being named,
    read as those weights (the fp32 originals rounded to fp16), and run to the same images as
    diffusers' pipeline loaded with variant="fp16"; a folder with two variants and no plain weights
    asks for --variant in one line."""
    import shutil

    import transformers

    _, _, path, yaml, _ = sd_text_file(tmp_path)
    folder = save_diffusers(load_model(path, yaml, tokenizer=tmp_path / "tokenizer"),
                            tmp_path / "pipeline")
    for name, cls in (("unet", diffusers.UNet2DConditionModel), ("vae", diffusers.AutoencoderKL),
                      ("text_encoder", transformers.CLIPTextModel)):
        component = cls.from_pretrained(folder / name).half()
        shutil.rmtree(folder / name)
        component.save_pretrained(folder / name, variant="fp16")
    assert not (folder / "unet" / "diffusion_pytorch_model.safetensors").exists()

    model = load_model(folder)
    original = load_model(path, yaml, tokenizer=tmp_path / "tokenizer")
    for ours, reference in ((model.unet, original.unet),
                            (model.codec.autoencoder, original.codec.autoencoder)):
        theirs = reference.state_dict()
        assert all(torch.equal(v, theirs[k].half().float()) for k, v in ours.state_dict().items())
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, variant="fp16",
                                                             torch_dtype=torch.float32)
    assert_same_guided_run(model, pipe, [5, 6], 4.0)

    shutil.copy(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors",
                folder / "unet" / "diffusion_pytorch_model.ema.safetensors")
    assert main(["sample", str(folder), "--prompt", "a", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["sample", str(folder), "--variant", "fp16", "--prompt", "a",
                 "--n", "1", "--steps", "2",
                 "--out", str(tmp_path / "x.png")]) == 0

@torch.no_grad()
def test_folder_written_by_diffusers_loads_with_the_same_numbers(tmp_path):
    """SD-2-style models made and saved by diffusers itself (linear projections, per-level head
    counts, v-prediction, a VAE with four levels): UNet outputs, VAE round trips and a whole DDIM
    run agree."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4), cross_attention_dim=24, use_linear_projection=True).eval()
    vae = diffusers.AutoencoderKL(block_out_channels=(32, 32, 64, 64),
                                  layers_per_block=1, latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D",) * 4,
                                  up_block_types=("UpDecoderBlock2D",) * 4,
                                  sample_size=64, scaling_factor=0.3).eval()
    randomize(unet, vae, seed=3)
    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear",
                                        beta_start=0.00085, beta_end=0.012,
                                        prediction_type="v_prediction",
                                        set_alpha_to_one=True, clip_sample=False)
    folder = tmp_path / "sd2"
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))

    model = load_model(folder)
    assert model.prediction == "v" and model.unet.config.linear_projection
    assert model.unet.config.head_channels == 16
    assert model.image_size == 64 and model.conditioner is None
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 24, generator=g)
    t = torch.tensor([3, 800])
    theirs = unet(x, t, encoder_hidden_states=context).sample
    assert relative(model.unet(x, t, context=context), theirs) <= 1e-5
    images = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    ours, theirs = model.codec.autoencoder.encode(images).mean, vae.encode(images).latent_dist.mean
    assert relative(ours, theirs) <= 1e-5
    assert relative(model.codec.autoencoder.decode(ours), vae.decode(theirs).sample) <= 1e-5

    scheduler.set_timesteps(20)
    theirs = x.clone()
    for step in scheduler.timesteps:
        output = unet(theirs, step, encoder_hidden_states=context).sample
        theirs = scheduler.step(output, step, theirs).prev_sample
    sigmas = sigma_grid(model.schedule, 20, "leading")
    ours = run_sampler("ddim", model.denoiser,
                       x * (1 + sigmas[0] ** 2).sqrt(), sigmas, cond=Cond(context=context))
    assert relative(ours, theirs) <= 1e-5

@torch.no_grad()
@pytest.mark.parametrize("regularizer", ["vq", "kl"])
def test_jointly_trained_text_model_round_trips_bit_identical(tmp_path, regularizer):
    """latentdiff's own text model: UNet and first stage load in diffusers' classes with the same
    outputs (the padding mask passed as encoder_attention_mask); τ_θ, tokenizer and per-channel
    statistics come back from latentdiff.json; every tensor is bit-identical after the round
    trip."""
    model = joint_text_model(regularizer)
    folder = save_diffusers(model, tmp_path / "ours")
    back = load_model(folder)
    for a, b in ((back.unet, model.unet), (back.codec.autoencoder, model.codec.autoencoder),
                 (back.conditioner, model.conditioner)):
        assert_same_weights(a, b)
    assert back.codec.stats == model.codec.stats and back.prediction == "v"
    assert back.schedule.config == model.schedule.config
    assert torch.equal(generate(back, [0], prompts=["a red circle"], steps=3, guidance_scale=2.0),
                       generate(model, [0], prompts=["a red circle"], steps=3, guidance_scale=2.0))

    their_unet = diffusers.UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    cond = model.conditioner.encode(model.conditioner.tokens(["a blue square above "
                                                              "a red circle", "a red circle"]))
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([20, 600])
    theirs = their_unet(x, t, encoder_hidden_states=cond.context,
                        encoder_attention_mask=cond.context_mask).sample
    assert relative(model.unet(x, t, context=cond.context, context_mask=cond.context_mask), theirs) <= 1e-5
    vae_class, name = ((diffusers.VQModel, "vqvae") if regularizer == "vq"
                       else (diffusers.AutoencoderKL, "vae"))
    their_vae = vae_class.from_pretrained(folder / name).eval()
    z = torch.randn(1, 4, 8, 8)
    assert relative(model.codec.autoencoder.decode(z), their_vae.decode(z).sample) <= 1e-5

def ldm_pipeline_run(pipe, seeds: list[int], steps: int) -> torch.Tensor:
    """diffusers' LDMPipeline (unconditional LDM: UNet2DModel + VQModel + DDIM) as (N, C, H, W) in
    [0, 1]."""
    from latentdiff.samplers.randomness import per_sample_generators

    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=len(seeds), generator=per_sample_generators(seeds),
                  num_inference_steps=steps,
                  output_type="np").images
    return torch.from_numpy(images).permute(0, 3, 1, 2)

@torch.no_grad()
def test_ldm_pipeline_folder_written_by_diffusers_samples_the_same_images(tmp_path):
    """An unconditional LDM in diffusers' layout (UNet2DModel with self-attention blocks of
    16-channel heads, a VQModel, DDIM), saved by diffusers' LDMPipeline: UNet outputs and whole
    sampling runs agree."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3,
                                 block_out_channels=(32, 64),
                                 layers_per_block=2,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=16).eval()
    vqvae = diffusers.VQModel(block_out_channels=(32, 64), layers_per_block=1, latent_channels=3,
                              down_block_types=("DownEncoderBlock2D",) * 2,
                              up_block_types=("UpDecoderBlock2D",) * 2,
                              num_vq_embeddings=64, sample_size=16, scaling_factor=0.5).eval()
    randomize(unet, vqvae, seed=4)
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear", beta_start=0.0015, beta_end=0.0195,
                                        set_alpha_to_one=True, steps_offset=1, clip_sample=False)
    pipe = diffusers.LDMPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(tmp_path / "ldm")
    model = load_model(tmp_path / "ldm")
    assert model.conditioner is None and model.unet.config.context_dim is None and model.image_size == 16
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([3, 800])
    assert relative(model.unet(x, t), unet(x, t).sample) <= 1e-5
    # the latents each side decodes (theirs unscaled by 1/scaling_factor)
    decoded = {"ours": [], "theirs": []}
    for side, owner, name in (("ours", model.codec, "decode"), ("theirs", pipe.vqvae, "decode")):
        original = getattr(owner, name)
        setattr(owner, name,
                lambda z, *a, _f=original, _s=side, **k: decoded[_s].append(z) or _f(z, *a, **k))
    generate(model, [7, 8], steps=10, spacing="compvis")
    theirs = ldm_pipeline_run(pipe, [7, 8], 10)
    assert relative(decoded["ours"][0] / 0.5, decoded["theirs"][0]) <= 1e-5
    # decoders: on latents that are codebook vectors (these random-weight latents, |z| ~ 100, lie
    # within float error of two codes at some positions, which either side may pick: a tie, not a
    # loader difference)
    quantizer = model.codec.autoencoder.quantize
    snapped = quantizer(decoded["theirs"][0]).z_q
    assert relative(model.codec.decode(snapped * 0.5), pipe.vqvae.decode(snapped).sample) <= 1e-5
    assert theirs.shape == (2, 3, 16, 16)

@torch.no_grad()
def test_unconditional_models_become_ldm_pipeline_folders_and_come_back_bit_identical(tmp_path):
    """latentdiff's unconditional UNet (self-attention with the original fused, legacy-ordered qkv;
    4 heads) with a VQ first stage → an LDMPipeline folder that diffusers runs to the same images;
    loading it back gives the very same tensors."""
    unet = UNetModel(UNetConfig(in_channels=4, out_channels=4,
                                model_channels=32, channel_mult=(1, 2),
                                num_res_blocks=1, attention_resolutions=(2,), head_channels=16))
    autoencoder = build_autoencoder(AutoencoderConfig(base_channels=32,
                                                      channel_mult=(1, 2), num_res_blocks=1,
                                                      resolution=16, regularizer="vq",
                                                      codebook_size=32, norm_groups=8))
    randomize(unet, autoencoder, seed=6)
    model = LatentDiffusion(unet=unet.eval(),
                            codec=LatentCodec(autoencoder, LatentStats.global_scale(0.7, 4)).eval(),
                            schedule=NoiseSchedule(NoiseScheduleConfig()),
                            prediction="eps", image_size=16)
    folder = save_diffusers(model, tmp_path / "ldm")
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "LDMPipeline"
    pipe = diffusers.LDMPipeline.from_pretrained(folder, local_files_only=True)
    ours = generate(model, [1, 2], steps=10, spacing="compvis")
    assert relative(ours * 0.5 + 0.5, ldm_pipeline_run(pipe, [1, 2], 10)) <= 1e-5
    back = load_model(folder)
    assert_same_weights(back.unet, model.unet)
    assert_same_weights(back.codec.autoencoder, model.codec.autoencoder)

def test_what_diffusers_cannot_hold_is_refused_in_one_line(tmp_path, capsys):
    from latentdiff.checkpoints.models import bundled_model

    # DC-AE shortcuts in its VAE
    assert main(["convert", str(bundled_model()), str(tmp_path / "emoji")]) == 2
    err = capsys.readouterr().err.strip()
    assert "residual shortcuts" in err and "\n" not in err
    assert not (tmp_path / "emoji").exists() and not list(tmp_path.iterdir())
    model = joint_text_model()
    save_diffusers(model, tmp_path / "once")
    with pytest.raises(UserError, match="exists"):
        save_diffusers(model, tmp_path / "once")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model_index.json").write_text("{}")
    assert main(["sample", str(tmp_path / "broken"), "--n", "1"]) == 2
    assert "unet/config.json is missing" in capsys.readouterr().err
