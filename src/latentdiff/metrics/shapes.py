"""The analytic checker of the shapes dataset: detect coloured shapes in an image and score them
against a scene.

Detection: each pixel takes the nearest of white and the four palette colours (within
`COLOUR_TOLERANCE` in RGB); the connected components of each colour (scipy.ndimage) larger than a
third of the smallest shape are shapes. A shape's box is its pixel extent; its kind comes from two
scale-free features: the share of its pixels in the top half of its box (a triangle pointing up
has ≈ 1/4, circles and squares 1/2) and its fill of the box (square ≈ 1, circle ≈ π/4); its size
from the box side (threshold halfway between small and large). Scores: caption match (every shape
found with its kind, colour and size, no extra shapes, the relation holds along its axis) and the
mean IoU of each condition box with the detected box of the same colour (layout-to-image).
"""

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from latentdiff.data.shapes import COLOUR_NAMES, COLOURS, RELATIONS, SIZES, Scene

COLOUR_TOLERANCE = 110.0
TRIANGLE_TOP_SHARE = 0.38
SQUARE_FILL = 0.89


@dataclass(frozen=True)
class Detection:
    kind: str
    colour: str
    size: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1]

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def colour_labels(image: np.ndarray) -> np.ndarray:
    """(S, S, 3) RGB in [0, 255] → (S, S) int: −1 white or unclear, else the palette index."""
    palette = np.array([(255, 255, 255), *COLOURS.values()], dtype=np.float32)  # (5, 3)
    # (S, S, 5)
    distance = np.linalg.norm(image[:, :, None, :].astype(np.float32) - palette, axis=-1)
    nearest = distance.argmin(-1)
    labels = nearest - 1
    labels[distance.min(-1) > COLOUR_TOLERANCE] = -1
    return labels


def detect_shapes(image: np.ndarray) -> list[Detection]:
    """image: (S, S, 3) uint8 RGB → the shapes in it, largest first."""
    side = image.shape[0]
    labels = colour_labels(image)
    min_area = (SIZES["small"] * side) ** 2 / 6  # a third of the smallest triangle
    found = []
    for index, colour in enumerate(COLOUR_NAMES):
        components, _ = ndimage.label(labels == index)
        for component, (rows, cols) in enumerate(ndimage.find_objects(components), start=1):
            # within the component's bounding box
            ys, xs = np.nonzero(components[rows, cols] == component)
            ys, xs = ys + rows.start, xs + cols.start
            if len(ys) < min_area:
                continue
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            fill = len(ys) / ((y1 - y0) * (x1 - x0))
            top_share = (ys < (y0 + y1) / 2).mean()
            kind = ("triangle" if top_share < TRIANGLE_TOP_SHARE
                    else "square" if fill > SQUARE_FILL else "circle")
            size = "large" if max(y1 - y0, x1 - x0) / side > sum(SIZES.values()) / 2 else "small"
            found.append((len(ys),
                          Detection(kind, colour, size,
                                    (x0 / side, y0 / side, x1 / side, y1 / side))))
    return [d for _, d in sorted(found, key=lambda item: -item[0])]


def box_iou(a: tuple, b: tuple) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


CAPTION_FAILURES = ("match", "count", "kind", "colour or size", "relation")


def caption_failure(scene: Scene, detections: list[Detection]) -> str:
    """Why the detections miss the caption, the first that applies of CAPTION_FAILURES: "count"
    (more or fewer shapes than the caption), "kind" (a shape of the right colour and size drawn as
    another kind), "colour or size", "relation" (the right shapes, placed against the relation) —
    or "match"."""
    if len(detections) != len(scene.shapes):
        return "count"
    matched = []
    for shape in scene.shapes:
        hits = [d for d in detections
                if (d.kind, d.colour, d.size) == (shape.kind, shape.colour, shape.size)]
        if not hits:
            near = any((d.colour, d.size) == (shape.colour, shape.size) for d in detections)
            return "kind" if near else "colour or size"
        matched.append(hits[0])
    if scene.relation is None:
        return "match"
    dx, dy = RELATIONS[scene.relation]
    (ax, ay), (bx, by) = matched[0].centre, matched[1].centre
    return "match" if (ax - bx) * dx + (ay - by) * dy > 0 else "relation"


def matches_caption(scene: Scene, detections: list[Detection]) -> bool:
    """Every shape of the scene is detected with its kind, colour and size, nothing else is, the
    relation holds."""
    return caption_failure(scene, detections) == "match"


def layout_iou(scene: Scene, detections: list[Detection]) -> float:
    """Mean over the scene's boxes of the best IoU with a detected shape of the same colour
    (0 when none)."""
    ious = [max((box_iou(shape.box, d.box) for d in detections if d.colour == shape.colour),
                default=0.0)
            for shape in scene.shapes]
    return float(np.mean(ious))


def score_shapes(scenes: list[Scene], images: torch.Tensor) -> dict[str, float]:
    """images: (N, 3, S, S) uint8 → caption-match accuracy and mean box IoU over the N scenes."""
    pixels = images.permute(0, 2, 3, 1).cpu().numpy()
    detections = [detect_shapes(p) for p in pixels]
    return {"caption_accuracy": float(np.mean([matches_caption(s, d) for s,
                                               d in zip(scenes, detections)])),
            "box_iou": float(np.mean([layout_iou(s, d) for s, d in zip(scenes, detections)]))}
