"""The independent judge: a deterministic analyser of colour, shape and position of one shape on white.

This module owns the scoring rules; it must not use any trained model. Rules:
  * foreground = pixels whose largest channel difference from the white background exceeds 48; only the
    largest 4-connected component is kept (stray specks are ignored);
  * colour = nearest palette colour (Euclidean RGB) to the median of the component's strongly covered
    pixels (difference > 96, so anti-aliased edges do not pull the colour towards white);
  * shape = the best intersection-over-union between the component's half-covered pixels and each shape's
    template rendered by the dataset's own renderer with the same area and centroid (sub-pixel, from the
    coverage estimated as difference-to-white / the judged colour's difference-to-white);
  * position = centroid x in thirds of the width: left / center / right.
"""

from collections import deque
from dataclasses import dataclass

import numpy as np

import shapes_data as d

FG_THRESHOLD = 48
CORE_THRESHOLD = 96


@dataclass
class Verdict:
    shape: str | None
    colour: str | None
    position: str | None
    iou: float


def largest_component(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best: list = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        comp, queue = [], deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            comp.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(mask, dtype=bool)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


# Exact areas / r^2 and centroid offsets / r of the renderer's shapes (see shapes_data.polygon).
AREA_PER_R2 = {"circle": np.pi, "square": (2 * 0.86) ** 2, "triangle": 3 * np.sqrt(3) / 4 * 1.25**2,
               "star": 5 * 1.2 * 0.5 * np.sin(np.pi / 5)}
CENTROID_OFFSET = {"circle": (0.0, 0.0), "square": (0.0, 0.0), "triangle": (0.0, 0.15), "star": (0.0, 0.0)}


def judge(image: np.ndarray) -> Verdict:
    img = image.astype(np.int32)
    diff = np.abs(img - np.array(d.BACKGROUND)).max(axis=-1)
    comp = largest_component(diff > FG_THRESHOLD)
    area = int(comp.sum())
    if area < 20:
        return Verdict(None, None, None, 0.0)
    core = comp & (diff > CORE_THRESHOLD)
    pixels = img[core] if core.sum() >= 5 else img[comp]
    med = np.median(pixels, axis=0)
    names = list(d.COLOURS)
    dist = [np.linalg.norm(med - np.array(d.COLOURS[c])) for c in names]
    colour = names[int(np.argmin(dist))]
    # Per-pixel coverage estimated from the difference to white relative to the judged colour's, so
    # area and centroid are sub-pixel (anti-aliased edges count partly).
    full = np.abs(np.array(d.COLOURS[colour]) - np.array(d.BACKGROUND)).max()
    cov = np.where(comp, np.clip(diff / full, 0.0, 1.0), 0.0)
    area = float(cov.sum())
    solid = cov > 0.49  # a half-covered pixel renders to 0.5 +- one rounding step: count it
    ys, xs = np.mgrid[0 : d.SIZE, 0 : d.SIZE]
    cx, cy = float((cov * (xs + 0.5)).sum() / area), float((cov * (ys + 0.5)).sum() / area)
    best, best_iou = None, -1.0
    for s in d.SHAPES:
        r = float(np.sqrt(area / AREA_PER_R2[s]))
        ox, oy = CENTROID_OFFSET[s]
        tmpl = d.coverage(s, cx - ox * r, cy - oy * r, r) >= 0.5
        iou = float((tmpl & solid).sum()) / float((tmpl | solid).sum())
        if iou > best_iou:
            best, best_iou = s, iou
    third = d.SIZE / 3.0
    position = "left" if cx < third else ("right" if cx > 2 * third else "center")
    return Verdict(best, colour, position, best_iou)
