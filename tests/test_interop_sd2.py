"""Stable Diffusion 2.x single files: the OpenCLIP text tower (FrozenOpenCLIPEmbedder, penultimate layer), linear
projections and v-prediction, against diffusers' own conversion (`convert_open_clip_checkpoint`) and
StableDiffusionPipeline."""

import pytest
import torch
from test_interop_compvis import (
    assert_same_guided_run,
    clip_tokenizer_folder,
    diffusers_models,
    original_yaml,
    random_original_file,
    relative,
    sd_pipeline,
)

from latentdiff.errors import UserError
from latentdiff.interop import load_model

diffusers = pytest.importorskip("diffusers")
single_file = pytest.importorskip("diffusers.loaders.single_file_utils")


def open_clip_state(width: int, blocks: int, vocab: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """An OpenCLIP text tower in FrozenOpenCLIPEmbedder's layout (cond_stage_model.model.*), random weights."""
    def rand(*shape):
        return 0.05 * torch.randn(*shape, generator=generator)

    state = {"token_embedding.weight": rand(vocab, width), "positional_embedding": rand(77, width),
             "ln_final.weight": 1 + rand(width), "ln_final.bias": rand(width), "text_projection": rand(width, width),
             "logit_scale": torch.tensor(4.6)}
    for i in range(blocks):
        p = f"transformer.resblocks.{i}."
        state |= {p + "ln_1.weight": 1 + rand(width), p + "ln_1.bias": rand(width), p + "ln_2.weight": 1 + rand(width),
                  p + "ln_2.bias": rand(width), p + "attn.in_proj_weight": rand(3 * width, width),
                  p + "attn.in_proj_bias": rand(3 * width), p + "attn.out_proj.weight": rand(width, width),
                  p + "attn.out_proj.bias": rand(width), p + "mlp.c_fc.weight": rand(4 * width, width),
                  p + "mlp.c_fc.bias": rand(4 * width), p + "mlp.c_proj.weight": rand(width, 4 * width),
                  p + "mlp.c_proj.bias": rand(width)}
    return {f"cond_stage_model.model.{k}": v for k, v in state.items()}


@torch.no_grad()
def test_stable_diffusion_2_openclip_penultimate_v_prediction_matches_diffusers(tmp_path):
    """SD 2.x: OpenCLIP text tower read up to its penultimate block (diffusers: convert_open_clip_checkpoint into a
    CLIPTextModel of one block fewer), linear projections, 64-channel heads, v-prediction; a whole guided run
    against StableDiffusionPipeline with a v-prediction DDIM scheduler."""
    import transformers

    tokenizer = clip_tokenizer_folder(tmp_path / "tokenizer")
    unet = {"num_head_channels": 16, "use_spatial_transformer": True, "use_linear_in_transformer": True,
            "context_dim": 64, "legacy": False, "transformer_depth": 1}
    config = original_yaml(unet, cond_stage="FrozenOpenCLIPEmbedder", parameterization="v")
    config["model"]["params"]["cond_stage_config"]["params"] = {"freeze": True, "layer": "penultimate"}
    path, yaml, state = random_original_file(tmp_path, config)
    state |= open_clip_state(64, 3, len(tokenizer), torch.Generator().manual_seed(4))
    torch.save({"state_dict": state}, path)
    with pytest.raises(UserError, match="ε from v"):
        load_model(path)
    model = load_model(path, yaml, tokenizer=tmp_path / "tokenizer")
    assert model.prediction == "v" and model.unet.config.linear_projection

    clip_config = transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=256,
        max_position_embeddings=77, hidden_act="gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    text_encoder = transformers.CLIPTextModel(clip_config).eval()
    converted = single_file.convert_open_clip_checkpoint(text_encoder, state)
    if not any(k.startswith("text_model.") for k in text_encoder.state_dict()):
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    result = text_encoder.load_state_dict(converted, strict=False)
    assert not result.missing_keys or all("position_ids" in k for k in result.missing_keys), result
    prompts = ["the cat", "a dog"]
    ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    ours = model.conditioner.encode(model.conditioner.tokens(prompts)).context
    assert relative(ours, text_encoder(ids).last_hidden_state) <= 1e-5

    their_unet, their_vae = diffusers_models(config, state)
    pipe = sd_pipeline(their_unet, their_vae, text_encoder, tokenizer, prediction_type="v_prediction")
    assert_same_guided_run(model, pipe, [7, 8], 5.0)
