"""Demo adherence of `latte generate` next to the PyTorch reference, same prompts and same seeds.

    nice -n 19 .venv/bin/python tools/reference/eval_generate.py --latte target/release/latte \
        --json docs/demo_generate_eval.json --grid docs/demo_generation_latte.png

Prompts: every "a {colour} {shape}" (24) with --seeds seeds each (default 9: 216 images), plus every
prompt with a position (72) with one seed. Seeds are 10000·(j+1) + prompt index, as evaluate.py uses.
Both sides start from the same noise (rng.py, bit-exact in latte) and sample with the model's defaults
(40 Euler steps, guidance 4); the reference runs the checkpoint in f32, `latte generate` the embedded
f16 GGUF (or --model), so images nearly but not exactly coincide. The judge (judge.py) scores both;
the report gives adherence side by side, how often the two verdicts agree, and the mean absolute
pixel difference. This module owns that comparison; it must not train or change either model.
Rerunnable: a retrained demo model only needs assets/demo-f16.gguf regenerated
(tools/make_demo_gguf.sh).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

import checkpoint
import shapes_data as d
from evaluate import generate_batch, save_grid
from judge import judge

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def rows():
    out = []
    for s in d.SHAPES:
        for c in d.COLOURS:
            out.append((f"a {c} {s}", s, c, None))
    plain = len(out)
    for s in d.SHAPES:
        for c in d.COLOURS:
            for p in d.POSITIONS:
                out.append((f"a {c} {s} {d.POSITION_PHRASE[p]}", s, c, p))
    return out, plain


def latte_image(exe, model, prompt, seed, steps, scale, workdir):
    path = os.path.join(workdir, f"latte-{seed}.png")
    cmd = [exe, "generate", "--prompt", prompt, "--seed", str(seed), "-o", path, "--quiet", "--threads", "1"]
    if model:
        cmd += ["-m", model]
    if steps:
        cmd += ["--steps", str(steps)]
    if scale is not None:
        cmd += ["--cfg", str(scale)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    img = np.asarray(Image.open(path).convert("RGB"))
    os.remove(path)
    return img


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latte", default=os.path.join(ROOT, "target/release/latte"))
    ap.add_argument("--model", default=None, help="GGUF for latte (default: its embedded demo model)")
    ap.add_argument("--checkpoint", default=os.path.join(HERE, "demo_model"))
    ap.add_argument("--seeds", type=int, default=9, help="seeds per plain prompt")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--scale", type=float, default=None)
    ap.add_argument("--grid", default=None, help="PNG: latte's first-seed image per plain prompt")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    vlm, tok, _proc, cfg, rep, ae = checkpoint.load(args.checkpoint)
    table, n_plain = rows()
    jobs = []  # (prompt, shape, colour, position, seed)
    for j in range(args.seeds):
        for i, (prompt, s, c, p) in enumerate(table[:n_plain]):
            jobs.append((prompt, s, c, p, 10_000 * (j + 1) + i))
    for i, (prompt, s, c, p) in enumerate(table[n_plain:]):
        jobs.append((prompt, s, c, p, 10_000 + n_plain + i))

    t0 = time.time()
    ref_imgs = []
    batch = 24
    for k in range(0, len(jobs), batch):
        part = jobs[k:k + batch]
        ref_imgs.extend(generate_batch(vlm, tok, rep, ae, [j[0] for j in part], [j[4] for j in part],
                                       args.steps, args.scale))
        print(f"reference: {len(ref_imgs)}/{len(jobs)}", file=sys.stderr)
    t_ref = time.time() - t0

    t0 = time.time()
    latte_imgs = []
    with tempfile.TemporaryDirectory() as work:
        for n, job in enumerate(jobs):
            latte_imgs.append(latte_image(args.latte, args.model, job[0], job[4], args.steps, args.scale, work))
            if (n + 1) % 24 == 0:
                print(f"latte: {n + 1}/{len(jobs)}", file=sys.stderr)
    t_latte = time.time() - t0

    def score(imgs):
        out = {"plain": [], "position": []}
        verdicts = []
        for (prompt, s, c, p, _), img in zip(jobs, imgs):
            v = judge(img)
            verdicts.append((v.shape, v.colour, v.position))
            ok = v.shape == s and v.colour == c
            if p is None:
                out["plain"].append(ok)
            else:
                out["position"].append({"shape_colour": ok, "all": ok and v.position == p})
        return {
            "plain_shape_and_colour": float(np.mean(out["plain"])),
            "position_shape_and_colour": float(np.mean([r["shape_colour"] for r in out["position"]])),
            "position_shape_colour_position": float(np.mean([r["all"] for r in out["position"]])),
        }, verdicts

    ref_score, ref_v = score(ref_imgs)
    latte_score, latte_v = score(latte_imgs)
    diffs = [np.abs(a.astype(np.int32) - b.astype(np.int32)) for a, b in zip(ref_imgs, latte_imgs)]
    report = {
        "checkpoint": args.checkpoint,
        "latte_model": args.model or "embedded demo (assets/demo-f16.gguf)",
        "n_plain": sum(1 for j in jobs if j[3] is None),
        "n_position": sum(1 for j in jobs if j[3] is not None),
        "reference": ref_score,
        "latte": latte_score,
        "plain_adherence_difference_points": 100 * (latte_score["plain_shape_and_colour"]
                                                    - ref_score["plain_shape_and_colour"]),
        "verdicts_agree": float(np.mean([a == b for a, b in zip(ref_v, latte_v)])),
        "mean_abs_pixel_difference": float(np.mean([x.mean() for x in diffs])),
        "max_abs_pixel_difference": int(max(x.max() for x in diffs)),
        "reference_seconds": t_ref,
        "latte_seconds": t_latte,
    }
    if args.grid:
        grid = {(j[1], j[2]): img for j, img in zip(jobs[:n_plain], latte_imgs[:n_plain])}
        save_grid(grid, args.grid)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
