"""shapes: a procedural dataset with exact ground truth for every conditioning modality
(paper Sec. 3.3).

Each scene holds one or two coloured shapes (circle / square / triangle × red / green / blue /
yellow × small / large) on white. A scene yields the image, a caption ("a large red circle above a
small blue square"), its boxes as (x0, y0, x1, y1, category) in [0, 1] with
category = 3·colour + kind (the layout-to-image condition), and a semantic map (0 = background,
1 + category per pixel). Two-shape scenes place the shapes in opposite halves, so the relation in
the caption always holds. `metrics/shapes.py` detects the shapes again in generated images.
Rendering is 4× supersampled with Pillow and averaged down; generation is deterministic in the seed.
"""

import functools
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from latentdiff.data.image_data import ImageData

KINDS = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 40), "blue": (30, 60, 220),
           "yellow": (235, 195, 20)}
COLOUR_NAMES = tuple(COLOURS)
SIZES = {"small": 0.28, "large": 0.45}  # side of the shape's box as a fraction of the image side
# A relative to B
RELATIONS = {"above": (0, -1), "below": (0, 1), "left of": (-1, 0), "right of": (1, 0)}
NUM_CATEGORIES = len(KINDS) * len(COLOURS)
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1], y down

    @property
    def category(self) -> int:
        return COLOUR_NAMES.index(self.colour) * len(KINDS) + KINDS.index(self.kind)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """One or two shapes; with two, `relation` says where shapes[0] is relative to shapes[1]."""

    shapes: tuple[Shape, ...]
    relation: str | None = None

    def caption(self) -> str:
        if len(self.shapes) == 1:
            return self.shapes[0].phrase()
        return f"{self.shapes[0].phrase()} {self.relation} {self.shapes[1].phrase()}"

    def boxes(self) -> np.ndarray:
        """(n, 5) float32: x0, y0, x1, y1, category."""
        return np.array([[*s.box, s.category] for s in self.shapes], dtype=np.float32)


def scene_of(caption: str, boxes: np.ndarray) -> Scene:
    """The scene behind one (caption, boxes) record of the dataset: the inverse of Scene.caption and
    Scene.boxes."""
    shapes = tuple(Shape(KINDS[int(c) % len(KINDS)], COLOUR_NAMES[int(c) // len(KINDS)],
                         min(SIZES, key=lambda size: abs(SIZES[size] - (x1 - x0))),
                         (x0, y0, x1, y1))
                   for x0, y0, x1, y1, c in np.asarray(boxes, dtype=float))
    relation = next((r for r in RELATIONS if f" {r} " in caption), None) if len(shapes) == 2 else None
    return Scene(shapes, relation)

def _place(rng: np.random.Generator, side: float,
           region: tuple[float, float, float, float]) -> tuple:
    """A box of `side` uniformly inside region (x0, y0, x1, y1), with a small margin from the image
    border."""
    x0, y0, x1, y1 = region
    margin = 0.03
    lo_x, lo_y = max(x0, margin), max(y0, margin)
    hi_x, hi_y = min(x1, 1 - margin) - side, min(y1, 1 - margin) - side
    x, y = rng.uniform(lo_x, max(lo_x, hi_x)), rng.uniform(lo_y, max(lo_y, hi_y))
    return (x, y, x + side, y + side)


def random_scene(rng: np.random.Generator, two_shape_fraction: float = 0.7) -> Scene:
    def shape(region: tuple) -> Shape:
        kind, colour = KINDS[rng.integers(3)], COLOUR_NAMES[rng.integers(4)]
        size = ("small", "large")[rng.integers(2)]
        return Shape(kind, colour, size, _place(rng, SIZES[size], region))

    if rng.random() >= two_shape_fraction:
        return Scene((shape((0, 0, 1, 1)),))
    relation = tuple(RELATIONS)[rng.integers(4)]
    dx, dy = RELATIONS[relation]
    first = {(0, -1): (0, 0, 1, .5), (0, 1): (0, .5, 1, 1), (-1, 0): (0, 0, .5, 1), (1, 0): (.5, 0, 1, 1)}[(dx, dy)]
    second = {(0, -1): (0, .5, 1, 1), (0, 1): (0, 0, 1, .5), (-1, 0): (.5, 0, 1, 1), (1, 0): (0, 0, .5, 1)}[(dx, dy)]
    a, b = shape(first), shape(second)
    while (a.kind, a.colour) == (b.kind, b.colour):  # keep the two shapes distinguishable
        b = shape(second)
    return Scene((a, b), relation)


def _polygon(kind: str, box: tuple, scale: float) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = (v * scale for v in box)
    if kind == "triangle":
        return [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def render(scene: Scene, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, size, 3) uint8 image and (size, size) uint8 semantic map (0 background,
    1 + category)."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), (255, 255, 255))
    labels = Image.new("L", (size, size), 0)
    for shape in scene.shapes:
        for canvas, scale, fill in ((ImageDraw.Draw(image), big, COLOURS[shape.colour]),
                                    (ImageDraw.Draw(labels), size, 1 + shape.category)):
            if shape.kind == "circle":
                canvas.ellipse([v * scale for v in shape.box], fill=fill)
            else:
                canvas.polygon(_polygon(shape.kind, shape.box, scale), fill=fill)
    pixels = np.asarray(image, dtype=np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean((1, 3))
    return pixels.round().astype(np.uint8), np.asarray(labels)


@dataclass(frozen=True)
class ShapesData:
    """images (N, 3, S, S) uint8; semantic (N, S, S) uint8; scenes with captions and boxes;
    images[heldout_start:] are held out."""

    images: torch.Tensor
    semantic: torch.Tensor
    scenes: tuple[Scene, ...]
    heldout_start: int

    @property
    def captions(self) -> list[str]:
        return [s.caption() for s in self.scenes]


def make_shapes(count: int = 6000, image_size: int = 32, seed: int = 0,
                holdout: int = 500) -> ShapesData:
    """`count` scenes drawn from `seed`; the last `holdout` are the held-out split."""
    rng = np.random.default_rng(seed)
    scenes = tuple(random_scene(rng) for _ in range(count))
    rendered = [render(scene, image_size) for scene in scenes]
    images = torch.from_numpy(np.stack([r[0] for r in rendered])).permute(0, 3, 1, 2).contiguous()
    semantic = torch.from_numpy(np.stack([r[1] for r in rendered]))
    return ShapesData(images, semantic, scenes, heldout_start=count - min(holdout, count))


SHAPES_COUNT = 8000


@functools.lru_cache(maxsize=4)
def load_shapes(image_size: int = 32, holdout: int = 500) -> ImageData:
    """The shapes dataset as ImageData: label = the first shape's category, captions, boxes,
    semantic maps."""
    data = make_shapes(SHAPES_COUNT, image_size, seed=0, holdout=holdout)
    labels = torch.tensor([scene.shapes[0].category for scene in data.scenes])
    names = tuple(f"{colour} {kind}" for colour in COLOUR_NAMES for kind in KINDS)
    return ImageData(data.images, labels, names, heldout_start=data.heldout_start,
                     captions=tuple(data.captions),
                     boxes=tuple(scene.boxes() for scene in data.scenes), semantic=data.semantic,
                     semantic_classes=1 + NUM_CATEGORIES)
