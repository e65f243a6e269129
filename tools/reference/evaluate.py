"""Evaluate the demo checkpoint with the independent judge (judge.py) and write a sample grid.

    nice -n 19 python tools/reference/evaluate.py --model tools/reference/demo_model

Reports: the judge's own accuracy on fresh renders and on DC-AE reconstructions; understanding accuracy on
held-out images (renders from a seed never used in training); generation adherence (shape and colour both
right, by the judge) for every "a {colour} {shape}" prompt and for position prompts, including the
(colour, shape, position) combinations held out of training captions. This module owns the evaluation
protocol; it must not train.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image

import autoencoder
import checkpoint
import pipeline
import shapes_data as d
from judge import judge
from sampler import sample

EVAL_SEED = 777  # training renders use demo_spec.SEED; this stream is disjoint


def judge_accuracy(ae, n):
    rng = np.random.default_rng(EVAL_SEED)
    scenes = [d.random_scene(rng) for _ in range(n)]
    imgs = np.stack([d.render(s) for s in scenes])
    with torch.no_grad():
        rec = autoencoder.to_uint8(autoencoder.decode(ae, autoencoder.encode(ae, autoencoder.to_pixels(imgs))))
    out = {}
    for name, batch in (("renders", imgs), ("dcae_reconstructions", rec)):
        v = [judge(x) for x in batch]
        out[name] = {k: float(np.mean([getattr(a, k) == getattr(s, k) for a, s in zip(v, scenes)]))
                     for k in ("shape", "colour", "position")}
    return out


def understanding(vlm, tok, proc, n):
    rng = np.random.default_rng(EVAL_SEED + 1)
    hits = {k: 0 for k in d.QUESTIONS}
    examples = []
    for i in range(n):
        sc = d.random_scene(rng)
        img = d.render(sc)
        for k, q in d.QUESTIONS.items():
            a = pipeline.answer(vlm, tok, proc, img, q)
            hits[k] += a == sc.answer(k)
            if i < 3:
                examples.append({"truth": sc.answer(k), "question": q, "answer": a})
    acc = {k: v / n for k, v in hits.items()}
    acc["shape_and_colour_questions"] = (hits["shape"] + hits["colour"]) / (2 * n)
    acc["all_questions"] = sum(hits.values()) / (3 * n)
    return acc, examples


def generate_batch(vlm, tok, rep, ae, prompts, seeds, steps, scale, dense=False):
    cond, uncond = pipeline.contexts(vlm, tok, rep, prompts)
    uncond = uncond.select(torch.zeros(len(prompts), dtype=torch.long))
    x = sample(rep, pipeline.noise_batch(rep.cfg, seeds), cond, uncond, steps, scale, dense=dense)
    return autoencoder.to_uint8(autoencoder.decode(ae, x))


def adherence(vlm, tok, rep, ae, n_seeds, steps, scale):
    rows = []
    for s in d.SHAPES:
        for c in d.COLOURS:
            rows.append((f"a {c} {s}", s, c, None))
            for p in d.POSITIONS:
                rows.append((f"a {c} {s} {d.POSITION_PHRASE[p]}", s, c, p))
    res = {"plain": [], "position": [], "position_held_out": []}
    grid = {}
    for j in range(n_seeds):
        prompts = [r[0] for r in rows]
        seeds = [10_000 * (j + 1) + i for i in range(len(rows))]
        imgs = generate_batch(vlm, tok, rep, ae, prompts, seeds, steps, scale)
        for (prompt, s, c, p), img in zip(rows, imgs):
            v = judge(img)
            ok = v.shape == s and v.colour == c
            if p is None:
                res["plain"].append(ok)
                if j == 0:
                    grid[(s, c)] = img
            else:
                key = "position_held_out" if (c, s, p) in d.HELD_OUT else "position"
                res[key].append({"shape_colour": ok, "all": ok and v.position == p})
    out = {"plain_shape_and_colour": float(np.mean(res["plain"])), "n_plain": len(res["plain"])}
    for key in ("position", "position_held_out"):
        out[f"{key}_shape_and_colour"] = float(np.mean([r["shape_colour"] for r in res[key]]))
        out[f"{key}_shape_colour_position"] = float(np.mean([r["all"] for r in res[key]]))
        out[f"n_{key}"] = len(res[key])
    return out, grid


def save_grid(grid, path, scale=2):
    size, pad = d.SIZE * scale, 2
    cols, rows = list(d.COLOURS), list(d.SHAPES)
    canvas = np.full((len(rows) * (size + pad) + pad, len(cols) * (size + pad) + pad, 3), 128, np.uint8)
    for r, s in enumerate(rows):
        for c, col in enumerate(cols):
            img = np.kron(grid[(s, col)], np.ones((scale, scale, 1), np.uint8))
            y, x = pad + r * (size + pad), pad + c * (size + pad)
            canvas[y:y + size, x:x + size] = img
    Image.fromarray(canvas).save(path, optimize=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_model"))
    ap.add_argument("--seeds", type=int, default=2, help="images per generation prompt")
    ap.add_argument("--images", type=int, default=100, help="held-out images for understanding")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--scale", type=float, default=None)
    ap.add_argument("--grid", default=None, help="PNG path: one image per 'a {colour} {shape}' prompt")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", choices=["understanding", "generation"], default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on the shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vlm, tok, proc, cfg, rep, ae = checkpoint.load(args.model)
    report = {"model": args.model, "steps": args.steps or cfg.num_steps,
              "guidance": cfg.guidance_scale if args.scale is None else args.scale}
    t = time.time()
    report["judge"] = judge_accuracy(ae, 300)
    if args.only != "generation":
        report["understanding"], report["understanding_examples"] = understanding(vlm, tok, proc, args.images)
    if args.only != "understanding":
        report["generation"], grid = adherence(vlm, tok, rep, ae, args.seeds, args.steps, args.scale)
    report["eval_seconds"] = time.time() - t
    if args.grid and args.only != "understanding":
        save_grid(grid, args.grid)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
