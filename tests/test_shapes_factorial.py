"""The factorial ablation's effect estimates on a design whose effects are known."""

from test_reports import experiment


def test_effects_of_a_two_level_design_are_the_textbook_contrasts():
    effects = experiment("experiments/shapes_factorial.py").effects
    factors = {"a": ["lo", "hi"], "b": ["lo", "hi"], "c": ["lo", "hi"]}
    # y = 1 + 2a + 3b + 4ab + 5abc with a, b, c = ±1 (c alone does nothing)
    cells = {}
    for a in (-1, 1):
        for b in (-1, 1):
            for c in (-1, 1):
                key = tuple("hi" if x > 0 else "lo" for x in (a, b, c))
                cells[key] = 1 + 2 * a + 3 * b + 4 * a * b + 5 * a * b * c
    # a ±1 coefficient β moves the mean between the two halves by 2β
    assert effects(cells, factors) == {"a": 4.0, "b": 6.0, "c": 0.0, "a × b": 8.0, "a × c": 0.0,
                                       "b × c": 0.0, "a × b × c": 10.0}
    # with b at one level only, its factor drops out of the contrasts
    one = {k[:1] + k[2:]: v for k, v in cells.items() if k[1] == "hi"}
    assert effects(one, {"a": ["lo", "hi"], "c": ["lo", "hi"]}) == {
        "a": 12.0, "c": 0.0, "a × c": 10.0}
