"""Deterministic image-preprocessing fixtures for the Rust engine (PIL and transformers are the oracle).

    /work/wt/reference/.venv/bin/python tools/make_image_fixtures.py [--out tests/fixtures/image]

Writes `image.safetensors` and `manifest.json`:
- `source`: a seeded random RGB image (uint8 [61, 97, 3]) with smooth gradients and noise (so every
  resampling weight matters), also stored losslessly as `source.png` and as `source.jpg` (quality 90)
  and `source.webp` (lossless);
- `resize.<W>x<H>`: PIL `Image.resize((W, H), Image.BICUBIC)` of `source`, for downscales,
  upscales and mixed sizes, on both sides of Pillow's pass-order rule;
- `smart_resize`: rows (height, width, min_pixels, max_pixels, out_h, out_w) from transformers'
  `smart_resize` (factor 28), including exact halves where Python rounds to even;
- `processor.pixel_values`, `processor.grid_thw`: `Qwen2VLImageProcessorPil` on `source` with
  min_pixels 3136, max_pixels 12544 (a downscale), and `processor_up.*` with min 6272 (an upscale);
- `decoded.jpg`: PIL's decoding of `source.jpg` (decoders may differ by a level or two).
This module owns these fixtures; it must not define model math.
"""

import argparse
import io
import json
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

SIZES = [(56, 28), (28, 56), (40, 30), (97, 61), (200, 120), (150, 35), (13, 90), (1, 1), (3, 200),
         (90, 20), (96, 30), (60, 50), (80, 26)]
SMART_CASES = [
    (61, 97, 3136, 12544), (40, 70, 3136, 50176), (64, 64, 12544, 12544), (14, 14, 3136, 12544),
    (42, 70, 3136, 1003520), (70, 42, 3136, 1003520), (1000, 1000, 3136, 12544), (5, 900, 3136, 50176),
    (4000, 3000, 3136, 1003520), (98, 126, 3136, 1003520), (224, 224, 3136, 12544), (111, 113, 3136, 12544),
]


def source_image() -> np.ndarray:
    rng = np.random.default_rng(20261126)
    h, w = 61, 97
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 255 / (w + h)], axis=-1)
    noisy = base + rng.normal(0, 40, size=(h, w, 3))
    # A few hard edges (saturated blocks) so the filter's negative lobes clip.
    noisy[10:20, 30:50] = [255, 0, 0]
    noisy[40:55, 60:70] = [0, 0, 255]
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/image")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    src = source_image()
    img = Image.fromarray(src)
    tensors, manifest = {}, {}

    def add(name, value, what):
        tensors[name] = np.ascontiguousarray(value)
        manifest[name] = dict(shape=list(np.shape(value)), dtype=str(np.asarray(value).dtype), what=what)

    add("source", src, "seeded random RGB image uint8 [61, 97, 3]")
    for w, h in SIZES:
        add(f"resize.{w}x{h}", np.asarray(img.resize((w, h), Image.BICUBIC)),
            f"PIL Image.resize(({w}, {h}), BICUBIC) of source, uint8 [{h}, {w}, 3]")
    rows = [(h, w, lo, hi, *smart_resize(h, w, 28, lo, hi)) for h, w, lo, hi in SMART_CASES]
    add("smart_resize", np.array(rows, dtype=np.int64),
        "transformers smart_resize(h, w, 28, min, max): rows (h, w, min, max, out_h, out_w)")
    for name, lo, hi in [("processor", 3136, 12544), ("processor_up", 6272, 1003520)]:
        proc = Qwen2VLImageProcessorPil(size={"shortest_edge": lo, "longest_edge": hi})
        out = proc(images=[img], return_tensors="np")
        add(f"{name}.pixel_values", out["pixel_values"].astype(np.float32),
            f"Qwen2VLImageProcessorPil(min_pixels={lo}, max_pixels={hi}) pixel_values of source")
        add(f"{name}.grid_thw", out["image_grid_thw"].astype(np.int64), "its image_grid_thw")

    img.save(os.path.join(args.out, "source.png"), optimize=False)
    img.save(os.path.join(args.out, "source.jpg"), quality=90)
    img.save(os.path.join(args.out, "source.webp"), lossless=True)
    add("decoded.jpg", np.asarray(Image.open(os.path.join(args.out, "source.jpg")).convert("RGB")),
        "PIL's decoding of source.jpg, uint8 [61, 97, 3]")
    save_file(tensors, os.path.join(args.out, "image.safetensors"))
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
