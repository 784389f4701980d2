"""The colour check of emoji samples (metrics/colour.py) on drawn glyphs whose answer is known."""

import torch

from latentdiff.metrics.colour import band_colours, colour_distance, matches

BLUE, RED, ORANGE = (0.0, 0.2, 0.6), (0.9, 0.1, 0.2), (1.0, 0.6, 0.1)


def glyph(left, middle, right, size: int = 12, margin: int = 3) -> torch.Tensor:
    """A (3, size, size) image in [-1, 1]: white, with a square of three vertical stripes inside
    a white margin (None: a white stripe)."""
    image = torch.ones(3, size, size)
    inner = size - 2 * margin
    for i, colour in enumerate((left, middle, right)):
        if colour is not None:
            columns = slice(margin + i * inner // 3, margin + (i + 1) * inner // 3)
            image[:, margin:size - margin, columns] = torch.tensor(colour)[:, None, None]
    return image * 2 - 1


def test_band_colours_are_the_mean_ink_colour_of_each_third():
    flag = glyph(BLUE, None, RED, size=12, margin=0)  # stripes exactly on the thirds
    colours = band_colours(flag[None])[0]
    torch.testing.assert_close(colours, torch.tensor([BLUE, (1.0, 1.0, 1.0), RED]))
    # the margin is background, not ink: a red square is red in every band that has ink
    torch.testing.assert_close(band_colours(glyph(RED, RED, RED)[None])[0],
                               torch.tensor([RED] * 3))


def test_colour_distance_is_in_eight_bit_units():
    a = torch.zeros(3, 3)
    b = a.clone()
    b[:, 0] = 1.0  # one channel off by 255 in every band
    assert colour_distance(a, b).item() == 255.0
    b[1:] = 0.0  # … in one band of three
    assert abs(colour_distance(a, b).item() - 85.0) < 1e-4


def test_matches_ignore_look_alike_siblings():
    red, orange = glyph(RED, RED, RED), glyph(ORANGE, ORANGE, ORANGE)
    near_red = glyph((0.88, 0.12, 0.2), RED, RED)  # a look-alike: within DISTINCT of red
    samples = band_colours(torch.stack([red, orange, near_red]))
    siblings = band_colours(torch.stack([red, near_red, orange]))
    assert matches(samples, siblings[0], siblings).tolist() == [True, False, True]
    # asked for orange, the red ones are confusions
    assert matches(samples, siblings[2], siblings).tolist() == [False, True, False]
    # nothing looks different: every sample matches
    assert matches(samples, siblings[0], siblings[:2]).all()
