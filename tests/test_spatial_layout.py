import pytest
import torch

from latentdiff.conditioning.layout import BOS_ID, EOS_ID, LayoutTokenizer
from latentdiff.conditioning.spatial import (check_mask, degrade_realistic,
                                             downsample_bicubic, inpainting_concat,
                                             lowres_concat, paste_unmasked, semantic_concat)
from latentdiff.errors import UserError


def test_layout_tokens_are_corner_corner_class_triples():
    tokenizer = LayoutTokenizer(num_classes=12, bins=4, max_boxes=2)
    tokens = tokenizer([[(0.0, 0.0, 0.5, 0.5, 3)], []])
    assert tokens.ids.shape == (2, 8) and tokenizer.vocab_size == 3 + 16 + 12
    # top-left cell (0, 0) → 3; bottom-right corner 0.5 lies on a cell border: the last covered cell
    # is (1, 1) → 3+5
    assert tokens.ids[0, :5].tolist() == [BOS_ID, 3, 3 + 5, 3 + 16 + 3, EOS_ID]
    assert tokens.ids[1, :2].tolist() == [BOS_ID, EOS_ID] and tokens.mask.sum(1).tolist() == [5, 2]


@pytest.mark.parametrize("boxes, message", [([(0.1, 0.1, 1.2, 0.5, 0)], "outside"),
                                            ([(0.5, 0.1, 0.4, 0.5, 0)], "empty"),
                                            ([(0.1, 0.1, 0.4, 0.5, 12)], "class"),
                                            ([(0.1, 0.1, 0.4, 0.5, 0)] * 3, "at most")])
def test_bad_boxes_get_one_line_errors(boxes, message):
    with pytest.raises(UserError, match=message):
        LayoutTokenizer(num_classes=12, max_boxes=2)([boxes])


def test_semantic_map_becomes_area_fractions_at_latent_size():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, :4] = 2
    out = semantic_concat(labels, 3, (2, 2))
    assert out.shape == (1, 3, 2, 2)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 2, 2))
    assert out[0, 2, 0, 0] == 1 and out[0, 0, 1, 1] == 1
    with pytest.raises(UserError, match="labels"):
        semantic_concat(labels, 2, (2, 2))


def test_degradations_have_the_low_resolution_size_and_are_seeded():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert downsample_bicubic(x, 4).shape == (2, 3, 8, 8)
    a = degrade_realistic(x, 4, torch.Generator().manual_seed(0))
    b = degrade_realistic(x, 4, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 8, 8) and torch.equal(a, b) and a.abs().max() <= 1
    assert lowres_concat(a, (16, 16)).shape == (2, 3, 16, 16) and lowres_concat(a, (8, 8)) is a


def test_inpainting_mask_checks_and_exact_paste_back():
    image = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    generated = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    mask = torch.zeros(16, 16)
    mask[4:9, 5:11] = 1
    m = check_mask(mask, image.shape)
    out = paste_unmasked(image, generated, m)
    keep = ~m.bool().expand_as(image)
    assert torch.equal(out[keep], image[keep]) and torch.equal(out[~keep], generated[~keep])
    cond = inpainting_concat(torch.zeros(1, 4, 4, 4), m)
    # cells touching the hole: rows 1–2, cols 1–2
    assert cond.shape == (1, 5, 4, 4) and cond[0, 4].sum() == 4
    with pytest.raises(UserError, match="not binary"):
        check_mask(mask * 0.5, image.shape)
    with pytest.raises(UserError, match="mask is 8×8"):
        check_mask(torch.zeros(8, 8), image.shape)


def test_layout_corner_tokens_share_row_and_column_embeddings():
    from latentdiff.conditioning.layout import FIRST_POSITION, LayoutTokenizer
    from latentdiff.conditioning.text import TextTransformer
    from latentdiff.config import TextEncoderConfig

    tokenizer = LayoutTokenizer(num_classes=3, bins=4, max_boxes=1)
    encoder = TextTransformer(TextEncoderConfig(width=8, depth=1, num_heads=2,
                                                max_length=tokenizer.max_length),
                              tokenizer.vocab_size, grid=(FIRST_POSITION, tokenizer.bins))
    with torch.no_grad():
        encoder.token_embedding.weight.zero_()
        encoder.position_embedding.weight.zero_()
    ids = torch.tensor([[FIRST_POSITION + 0, FIRST_POSITION + 1, FIRST_POSITION + 4,
                         FIRST_POSITION + 5, 1]])
    x = encoder.embed(ids)[0]  # cells (0, 0), (0, 1), (1, 0), (1, 1), then BOS (not on the grid)
    torch.testing.assert_close(x[0] + x[3], x[1] + x[2])  # row + column: additive
    assert x[4].abs().sum() == 0
    layout = tokenizer([[(0.1, 0.1, 0.6, 0.6, 2)]])
    assert encoder(layout).shape == (1, tokenizer.max_length, 8)
