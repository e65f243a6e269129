"""The synthetic "shapes" dataset: 64x64 RGB renders of one coloured shape on a plain white background.

This module owns the vocabulary (shapes, colours, positions), the renderer (pure numpy, 4x supersampled, so
renders are identical everywhere) and the captions/questions/answers. It must not train or judge anything.
"""

from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 40),
    "purple": (140, 60, 180),
    "orange": (240, 130, 30),
}
POSITIONS = {"left": 16.0, "center": 32.0, "right": 48.0}
POSITION_PHRASE = {"left": "on the left", "center": "in the center", "right": "on the right"}
BACKGROUND = (255, 255, 255)
SIZE = 64
SUPERSAMPLE = 4

QUESTIONS = {
    "shape": "What shape is it?",
    "colour": "What colour is it?",
    "describe": "Describe the image.",
}


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    position: str
    cx: float
    cy: float
    radius: float

    def caption(self, with_position: bool = True) -> str:
        base = f"a {self.colour} {self.shape}"
        return f"{base} {POSITION_PHRASE[self.position]}" if with_position else base

    def answer(self, kind: str) -> str:
        if kind == "shape":
            return f"a {self.shape}"
        if kind == "colour":
            return self.colour
        return self.caption(True)


def polygon(shape: str, cx: float, cy: float, r: float) -> np.ndarray | None:
    """Vertices (x, y) of the shape's outline; None for the circle. Squares/triangles/stars are upright."""
    if shape == "square":
        s = r * 0.86  # about the circle's area
        return np.array([[cx - s, cy - s], [cx + s, cy - s], [cx + s, cy + s], [cx - s, cy + s]])
    if shape == "triangle":
        ang = np.deg2rad([-90.0, 30.0, 150.0])
        rr = r * 1.25
        return np.stack([cx + rr * np.cos(ang), cy + 0.15 * r + rr * np.sin(ang)], axis=1)
    if shape == "star":
        ang = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        rad = np.where(np.arange(10) % 2 == 0, r * 1.2, r * 0.5)
        return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
    return None


def coverage(shape: str, cx: float, cy: float, r: float, size: int = SIZE) -> np.ndarray:
    """Fraction of each pixel covered by the shape, [size, size] float32 (4x4 supersampling)."""
    ss = SUPERSAMPLE
    coords = (np.arange(size * ss) + 0.5) / ss
    x, y = np.meshgrid(coords, coords)
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    else:
        verts = polygon(shape, cx, cy, r)
        inside = np.zeros_like(x, dtype=bool)
        for (x0, y0), (x1, y1) in zip(verts, np.roll(verts, -1, axis=0)):
            crosses = (y0 > y) != (y1 > y)  # even-odd rule
            with np.errstate(divide="ignore", invalid="ignore"):
                xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
            inside ^= crosses & (x < xi)
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3)).astype(np.float32)


def render(scene: Scene) -> np.ndarray:
    """uint8 [64, 64, 3] image."""
    a = coverage(scene.shape, scene.cx, scene.cy, scene.radius)[..., None]
    fg = np.array(COLOURS[scene.colour], dtype=np.float32)
    bg = np.array(BACKGROUND, dtype=np.float32)
    return np.round(a * fg + (1 - a) * bg).astype(np.uint8)


def random_scene(rng: np.random.Generator, shape=None, colour=None, position=None) -> Scene:
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
    position = position or list(POSITIONS)[rng.integers(len(POSITIONS))]
    cx = POSITIONS[position] + rng.uniform(-3, 3)
    cy = 32.0 + rng.uniform(-8, 8)
    radius = rng.uniform(9.0, 12.0)
    return Scene(shape, colour, position, float(cx), float(cy), float(radius))


def all_captions() -> list:
    """Every caption the dataset can produce (used to train the BPE tokenizer)."""
    out = []
    for s in SHAPES:
        for c in COLOURS:
            out.append(f"a {c} {s}")
            for p in POSITIONS:
                out.append(f"a {c} {s} {POSITION_PHRASE[p]}")
    return out


# Held out of generation training (never captioned in training data): generation adherence is also
# reported on these unseen (colour, shape, position) combinations.
HELD_OUT = {("red", "star", "right"), ("blue", "triangle", "left"), ("yellow", "circle", "center"),
            ("purple", "square", "right"), ("green", "star", "left"), ("orange", "triangle", "center")}
