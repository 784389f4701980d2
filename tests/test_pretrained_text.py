"""A frozen pretrained text encoder from a local Hugging Face folder (built here: a tiny random BERT
and a WordPiece tokenizer, saved with transformers' own save_pretrained), trained with a tiny shapes
LDM and sampled."""

import pytest
import torch
from conftest import tiny_autoencoder_config, tiny_ldm_config

from latentdiff.checkpoints import load_latent_diffusion, read_tensors
from latentdiff.errors import UserError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from latentdiff.data.shapes import make_shapes

    folder = tmp_path_factory.mktemp("tiny-bert")
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(make_shapes(200).captions,
                                  trainers.WordPieceTrainer(vocab_size=100,
                                                            special_tokens=specials))
    from tokenizers.processors import TemplateProcessing
    wordpiece.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", wordpiece.token_to_id("[CLS]")), ("[SEP]", wordpiece.token_to_id("[SEP]"))])
    transformers.PreTrainedTokenizerFast(tokenizer_object=wordpiece,
                                         pad_token="[PAD]", unk_token="[UNK]",
                                         cls_token="[CLS]", sep_token="[SEP]").save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=wordpiece.get_vocab_size(),
                                     hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def test_frozen_encoder_trains_checkpoints_without_its_weights_and_samples(tmp_path, bert_folder):
    from latentdiff.pipelines import generate
    from latentdiff.train.autoencoder import train_autoencoder
    from latentdiff.conditioning.kinds import build_conditioner
    from latentdiff.train.conditions import batch_condition
    from latentdiff.train.diffusion import train_latent_diffusion

    shapes = ["data.dataset=shapes", "data.holdout=100"]
    ae = train_autoencoder(tiny_autoencoder_config(tmp_path / "ae", *shapes, "model.in_channels=3",
                                                   "train.max_steps=1", "train.checkpoint_every=1"))
    cfg = tiny_ldm_config(tmp_path / "ldm", ae, *shapes, "unet.num_classes=null",
                          "conditioning.kind=text",
                          "conditioning.drop_prob=0.2",
                          f"conditioning.text.pretrained={bert_folder}",
                          "conditioning.text.max_length=16",
                          "unet.context_dim=32", "train.max_steps=2")
    checkpoint = train_latent_diffusion(cfg)
    prefixes = {k.split(".")[0] for k in read_tensors(checkpoint)}
    # the encoder stays in its folder
    assert "conditioner" not in prefixes and "conditioner_ema" not in prefixes
    model = load_latent_diffusion(checkpoint)
    assert model.conditioner.frozen and model.conditioner.context_dim == 32
    images = generate(model, seeds=[0, 1],
                      prompts=["a large red circle", "a small blue square"], steps=2,
                      guidance_scale=3.0)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()

    # the cached contexts are the encoder's outputs, and dropped rows get the empty prompt's context
    from latentdiff.data import load_dataset
    data = load_dataset(cfg.data).subset(torch.arange(50))
    conditioner = build_conditioner(cfg.conditioning, data, cfg.data.dataset)
    cached = conditioner.dataset_conditions(data)
    index = torch.arange(40)
    a = batch_condition(conditioner, data, index, torch.Generator().manual_seed(0), None,
                        (8, 8), None, 0.5, cached)
    null = conditioner.encode(conditioner.null_tokens(1)).context[0]
    dropped = (a.context - null).abs().flatten(1).amax(1) < 1e-5
    assert 5 < dropped.sum() < 35
    direct = conditioner.encode(conditioner.tokens([data.captions[i]
                                                    for i in index[~dropped].tolist()]))
    torch.testing.assert_close(a.context[~dropped], direct.context, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.context_mask[~dropped], direct.context_mask)


def test_missing_or_broken_folders_are_one_line_errors(tmp_path):
    from latentdiff.conditioning.pretrained import PretrainedText

    with pytest.raises(UserError, match="has no config.json"):
        PretrainedText.from_folder(tmp_path, 16)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="cannot load the text encoder"):
        PretrainedText.from_folder(tmp_path, 16)
