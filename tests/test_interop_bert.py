"""The original text-to-image LDMs (txt2img-1p4B, text2img256): a UNet cross-attending to
`BERTEmbedder`, i.e. the bert-base-uncased tokenizer and an x-transformers encoder trained jointly.
Random weights at small width in the original layout; the peers are x-transformers 0.8.4 (an early
release whose encoder the original repository vendors), transformers' BertTokenizerFast (the
original tokenizer class) and diffusers' own UNet conversion, driven through a guided DDIM run."""

import pytest
import torch
from omegaconf import OmegaConf
from test_interop_compvis import (SD_UNET, diffusers_unet, original_yaml,
                                  random_original_file, relative, sd_pipeline)

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.cli import main
from latentdiff.checkpoints import load_model
from latentdiff.checkpoints.interop.compvis import (ORIGINAL_CONFIGS, UNET, detect_original_config,
                                                    original_config)
from latentdiff.checkpoints.interop.diffusers_folder import save_diffusers
from latentdiff.checkpoints.interop.x_transformer import x_transformer_config, x_transformer_weights

x_transformers = pytest.importorskip("x_transformers")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")

WORDS = ["a", "the", "photo", "of", "cat", "dog", "red", "on", "mat", "cafe", "sitting",
         "##s", "##ing", "sit", "big",
         ",", "."]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
WIDTH, LAYERS = 48, 2
PROMPTS = ["A photo of a red cat", "the dogs sitting on a mat."]


def their_encoder(seed: int = 0):
    """BERTEmbedder's transformer: TransformerWrapper(Encoder(dim, depth)), every weight random
    (LNs included)."""
    torch.manual_seed(seed)
    encoder = x_transformers.TransformerWrapper(num_tokens=len(VOCAB), max_seq_len=77,
                                                attn_layers=x_transformers.Encoder(dim=WIDTH, depth=LAYERS))
    for p in encoder.parameters():
        p.data += 0.1 * torch.randn_like(p)
    return encoder.eval()


@pytest.fixture
def bert_file(tmp_path):
    """(model path, YAML, state, vocab folder, their encoder) for a txt2img-1p4B-layout file at tiny
    width."""
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    config = original_yaml({**SD_UNET, "context_dim": WIDTH}, cond_stage="BERTEmbedder",
                           cond_stage_trainable=True)
    config["model"]["params"]["cond_stage_config"]["params"] = {"n_embed": WIDTH, "n_layer": LAYERS,
                                                                "vocab_size": len(VOCAB)}
    path, yaml, state = random_original_file(tmp_path, config)
    encoder = their_encoder()
    state |= {f"cond_stage_model.transformer.{k}": v for k, v in encoder.state_dict().items()}
    torch.save({"state_dict": state}, path)
    return path, yaml, state, folder, encoder


def their_context(encoder, folder, prompts: list[str]) -> torch.Tensor:
    """BERTEmbedder.forward: BertTokenizerFast to 77 tokens (padding max_length, truncation), no
    mask."""
    # as BERTTokenizer: from_pretrained
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(folder))
    ids = tokenizer(prompts, truncation=True, max_length=77, padding="max_length",
                    return_tensors="pt")["input_ids"]
    return ids, encoder(ids, return_embeddings=True)


@torch.no_grad()
def test_bert_embedder_tokens_and_context_match_the_original_encoder(bert_file):
    path, yaml, _, folder, encoder = bert_file
    model = load_model(path, yaml, tokenizer=folder)
    conditioner = model.conditioner
    assert conditioner.kind == "text" and model.trained_with_null and conditioner.config.text.head_dim == 64
    # accents, wordpieces, truncation
    prompts = [*PROMPTS, "", "Café big cats", " ".join(["big"] * 100)]
    with pytest.warns(UserWarning, match="dropped"):
        tokens = conditioner.tokens(prompts)
    ids, context = their_context(encoder, folder, prompts)
    # every position attended, as the original
    assert torch.equal(tokens.ids, ids) and tokens.mask.all()
    assert relative(conditioner.encode(tokens).context, context) <= 1e-5


@torch.no_grad()
def test_text_to_image_bert_model_matches_a_guided_diffusers_run(bert_file):
    """Guided DDIM against "" (the original txt2img script's unconditional prompt): latentdiff's
    generate vs diffusers' converted UNet and DDIMScheduler driven by hand with the original
    encoder's contexts."""
    from latentdiff.pipelines import generate
    from latentdiff.samplers.randomness import per_sample_generators, randn_like

    path, yaml, state, folder, encoder = bert_file
    config = OmegaConf.to_container(OmegaConf.load(yaml))
    model = load_model(path, yaml, tokenizer=folder)
    their_unet = diffusers_unet(config, state)
    scheduler = sd_pipeline(their_unet, None, None, None).scheduler
    scheduler.set_timesteps(10)
    seeds, scale = [3, 4], 5.0
    latents = randn_like(torch.empty(2, 4, 8, 8), per_sample_generators(seeds))
    context, null = their_context(encoder, folder, PROMPTS)[1], their_context(encoder, folder, ["", ""])[1]
    for t in scheduler.timesteps:
        eps_c, eps_u = (their_unet(latents, t, encoder_hidden_states=c).sample
                        for c in (context, null))
        latents = scheduler.step(eps_u + scale * (eps_c - eps_u), t, latents).prev_sample
    ours = generate(model, seeds, prompts=PROMPTS, guidance_scale=scale,
                    steps=10, spacing="compvis")
    assert relative(ours, model.codec.decode(latents)) <= 1e-5


@torch.no_grad()
def test_bert_model_converts_to_latentdiff_and_diffusers_layouts_and_back_bit_identical(bert_file, tmp_path):
    path, yaml, _, folder, _ = bert_file
    model = load_model(path, yaml, tokenizer=folder)
    tokens = model.conditioner.tokens(PROMPTS)
    context = model.conditioner.encode(tokens).context
    assert main(["convert", str(path), str(tmp_path / "ours.safetensors"), "--config",
                 str(yaml), "--tokenizer",
                 str(folder)]) == 0
    for again in (load_latent_diffusion(tmp_path / "ours.safetensors"),
                  load_model(save_diffusers(model, tmp_path / "folder"))):
        # the vocabulary travels along
        assert torch.equal(again.conditioner.tokens(PROMPTS).ids, tokens.ids)
        assert torch.equal(again.conditioner.encode(tokens).context, context)
        assert all(torch.equal(a, b) for a,
                   b in zip(again.unet.state_dict().values(), model.unet.state_dict().values()))


def test_txt2img_1p4b_is_detected_by_its_keys_and_has_the_published_size():
    """The bundled txt2img-1p4B-eval.yaml is chosen for its key layout (not SD-v1's, though both
    keep the text encoder under cond_stage_model.transformer.); built on the meta device it has the
    paper's sizes: UNet 872.3 M, BERTEmbedder 582 M of which 39.1 M are the unused LM head (the
    counts of the published checkpoint)."""
    from latentdiff.unet import UNetModel

    cfg = original_config(OmegaConf.to_container(OmegaConf.load(ORIGINAL_CONFIGS / "txt2img-1p4B-eval.yaml")))
    with torch.device("meta"):
        unet, encoder = UNetModel(cfg.unet), their_full_size_encoder()
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == 872.3
    weights = x_transformer_weights({f"cond_stage_model.transformer.{k}": v for k,
                                     v in encoder.state_dict().items()})
    text = x_transformer_config(cfg.cond_stage_params, weights)
    assert (text.width, text.depth, text.num_heads, text.head_dim, text.mlp_ratio) == (1280, 32, 8, 64, 4)
    head = encoder.to_logits.weight.numel() + encoder.to_logits.bias.numel()
    ours = sum(v.numel() for v in weights.values())
    assert round((ours + head) / 1e6, 1) == 582.0 and round(head / 1e6, 1) == 39.1
    keys = {UNET + "input_blocks.0.0.weight": torch.empty(320, 4, 3, 3, device="meta"),
            UNET + "input_blocks.1.1.proj_in.weight": torch.empty(320, 320, 1, 1, device="meta"),
            "cond_stage_model.transformer.token_emb.weight": torch.empty(30522, 1280, device="meta")}
    assert detect_original_config(keys).name == "txt2img-1p4B-eval.yaml"


def their_full_size_encoder():
    return x_transformers.TransformerWrapper(num_tokens=30522, max_seq_len=77,
                                             attn_layers=x_transformers.Encoder(dim=1280, depth=32))


def test_bert_models_without_their_vocabulary_or_with_bbox_tokens_are_refused_in_one_line(bert_file, tmp_path,
                                                                                          capsys):
    path, yaml, _, folder, _ = bert_file
    assert main(["sample", str(path), "--config", str(yaml), "--tokenizer",
                 str(tmp_path), "--prompt", "a cat",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "vocab.txt" in capsys.readouterr().err
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "vocab.txt").write_text("\n".join(VOCAB[:-1]) + "\n")
    assert main(["sample", str(path), "--config", str(yaml), "--tokenizer",
                 str(tmp_path / "short"), "--prompt", "a",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "entries" in capsys.readouterr().err
    config = OmegaConf.to_container(OmegaConf.load(yaml))
    # layout2img's bbox tokens
    config["model"]["params"]["cond_stage_config"]["params"]["use_tokenizer"] = False
    OmegaConf.save(OmegaConf.create(config), tmp_path / "layout.yaml")
    assert main(["sample", str(path), "--config", str(tmp_path / "layout.yaml"),
                 "--tokenizer", str(folder),
                 "--prompt", "a", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "bounding-box" in err and len(err.strip().splitlines()) == 1
