import numpy as np
import pytest
import torch

from latentdiff.data.shapes import (KINDS, NUM_CATEGORIES, RELATIONS, Scene, Shape,
                                    make_shapes, render, scene_of)
from latentdiff.metrics.shapes import (box_iou, caption_failure, detect_shapes, layout_iou,
                                       matches_caption, score_shapes)


@pytest.fixture(scope="module")
def shapes64():
    return make_shapes(300, 64, seed=3, holdout=50)


def test_scenes_are_deterministic_and_consistent(shapes64):
    again = make_shapes(300, 64, seed=3, holdout=50)
    assert torch.equal(shapes64.images, again.images) and shapes64.captions == again.captions
    assert shapes64.images.shape == (300, 3, 64, 64) and shapes64.heldout_start == 250
    for scene, semantic in zip(shapes64.scenes[:50], shapes64.semantic[:50]):
        present = set(np.unique(semantic.numpy())) - {0}
        # the semantic map holds exactly its shapes
        assert present == {1 + s.category for s in scene.shapes}
        assert all(0 <= s.category < NUM_CATEGORIES for s in scene.shapes)
        if scene.relation is not None:
            assert scene.caption().count(" a ") == 1 and scene.relation in scene.caption()
            dx, dy = RELATIONS[scene.relation]
            (ax, ay), (bx, by) = scene.shapes[0].centre, scene.shapes[1].centre
            assert (ax - bx) * dx + (ay - by) * dy > 0


def test_scenes_are_recovered_from_their_dataset_records(shapes64):
    for scene in shapes64.scenes:
        again = scene_of(scene.caption(), scene.boxes())
        assert again.caption() == scene.caption() and np.allclose(again.boxes(), scene.boxes())


def test_checker_recognises_real_scenes_and_rejects_wrong_captions(shapes64):
    scenes = list(shapes64.scenes)
    real = score_shapes(scenes, shapes64.images)
    assert real["caption_accuracy"] >= 0.97 and real["box_iou"] >= 0.85
    shuffled = score_shapes(scenes[1:] + scenes[:1], shapes64.images)
    assert shuffled["caption_accuracy"] < 0.05 and shuffled["box_iou"] < 0.2
    blank = score_shapes(scenes, torch.full_like(shapes64.images, 255))
    assert blank == {"caption_accuracy": 0.0, "box_iou": 0.0}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_detected_with_its_box(kind):
    shape = Shape(kind, "blue", "large", (0.2, 0.3, 0.65, 0.75))
    image, _ = render(Scene((shape,)), 48)
    (found,) = detect_shapes(image)
    assert (found.kind, found.colour, found.size) == (kind, "blue", "large")
    assert box_iou(found.box, shape.box) > 0.85


def test_relation_and_extra_shapes_are_checked():
    a = Shape("circle", "red", "small", (0.1, 0.1, 0.38, 0.38))
    b = Shape("square", "green", "large", (.5, .5, .95, .95))
    image, _ = render(Scene((a, b), "above"), 64)
    found = detect_shapes(image)
    assert matches_caption(Scene((a, b), "above"), found)
    assert not matches_caption(Scene((a, b), "below"), found)
    assert not matches_caption(Scene((a,)), found)  # the green square is an extra shape
    assert caption_failure(Scene((a, b), "above"), found) == "match"
    assert caption_failure(Scene((a, b), "below"), found) == "relation"
    assert caption_failure(Scene((a,)), found) == "count"
    wrong_kind = Shape("triangle", "red", "small", a.box)
    assert caption_failure(Scene((wrong_kind, b), "above"), found) == "kind"
    wrong_colour = Shape("circle", "blue", "small", a.box)
    assert caption_failure(Scene((wrong_colour, b), "above"), found) == "colour or size"
    assert layout_iou(Scene((a,)), found) > 0.8
