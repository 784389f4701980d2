import pytest
import torch

from latentdiff.conditioning.text import CaptionTokenizer, TextTransformer
from latentdiff.config import TextEncoderConfig
from latentdiff.errors import UserError

CAPTIONS = ["a large red circle above a small blue square",
            "woman detective: medium-dark skin tone",
            "a small green triangle", "grinning face with big eyes"] * 5


@pytest.fixture(scope="module")
def tokenizer():
    return CaptionTokenizer.train(CAPTIONS, vocab_size=120, max_length=12)


def test_tokens_are_bos_text_eos_then_padding(tokenizer):
    tokens = tokenizer(["a small green triangle", ""])
    assert tokens.ids.shape == (2, 12) and tokens.mask.dtype == torch.bool
    assert tokens.ids[0, 0] == tokenizer.bos_id and tokens.mask[0].sum() >= 3
    eos = int(tokens.mask[0].sum()) - 1
    assert tokens.ids[0, eos] == tokenizer.eos_id and (tokens.ids[0, eos + 1:] == tokenizer.pad_id).all()
    assert tokenizer.decode(tokens.ids[0]).replace(" ", "") == "asmallgreentriangle"
    assert tokens.ids[1, :2].tolist() == [tokenizer.bos_id, tokenizer.eos_id] and tokens.mask[1].sum() == 2


def test_long_prompts_are_truncated_with_a_warning(tokenizer):
    with pytest.warns(UserWarning, match="dropped"):
        tokens = tokenizer([" ".join(["a large red circle"] * 10)])
    assert tokens.mask.all() and tokens.ids[0, -1] == tokenizer.eos_id


def test_tokenizer_round_trips_through_json(tokenizer):
    again = CaptionTokenizer.from_json(tokenizer.to_json(),
                                       TextEncoderConfig(max_length=tokenizer.max_length))
    prompts = ["grinning face", "a large blue square", "zebra"]  # "zebra" has unseen letters: [UNK]
    assert torch.equal(again(prompts).ids, tokenizer(prompts).ids)


def test_text_transformer_ignores_padding(tokenizer):
    torch.manual_seed(0)
    cfg = TextEncoderConfig(max_length=12, width=32, depth=2, num_heads=4)
    encoder = TextTransformer(cfg, tokenizer.vocab_size).eval()
    tokens = tokenizer(["a small green triangle"])
    changed = tokens.ids.clone()
    changed[~tokens.mask] = 5  # garbage where the mask says padding
    out = encoder(tokens)
    assert out.shape == (1, 12, 32)
    real = tokens.mask[0]
    torch.testing.assert_close(out[:, real], encoder(type(tokens)(changed, tokens.mask))[:, real])


def test_text_config_errors():
    with pytest.raises(UserError, match="num_heads"):
        TextEncoderConfig(width=30, num_heads=4)
