"""Understanding accuracy of `latte describe` against the PyTorch reference, on held-out renders.

    nice -n 19 /work/wt/reference/.venv/bin/python tools/reference/eval_describe.py \\
        --model tools/reference/demo_model --latte target/release/latte \\
        --gguf /work/scratch/demo-f16.gguf --gguf /work/scratch/demo-q8_0.gguf --json report.json

Renders `--images` scenes with shapes_data.py from `--seed` (default 4242: neither the training seed
demo_spec.SEED nor evaluate.py's 777/778), asks each the reference's three questions
(shapes_data.QUESTIONS) of the PyTorch model (pipeline.answer: greedy, 12 new tokens, stop at
<|im_end|>) and of `latte describe` (greedy, `-n 12`, one process per question, one thread) for every
GGUF given, and scores both as evaluate.py does: an answer is right when it equals
`Scene.answer(kind)` exactly (after strip). Reports per-question accuracy side by side, the rate at
which latte's answer string equals PyTorch's, timings, and disagreements (first 20). Rerunnable on any
checkpoint directory and the GGUFs converted from it. This module owns the comparison protocol; it
must not train or convert.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checkpoint  # noqa: E402
import pipeline  # noqa: E402
import shapes_data as d  # noqa: E402


def score(hits, n):
    acc = {k: hits[k] / n for k in d.QUESTIONS}
    acc["shape_and_colour_questions"] = (hits["shape"] + hits["colour"]) / (2 * n)
    acc["all_questions"] = sum(hits[k] for k in d.QUESTIONS) / (3 * n)
    return acc


def latte_answer(exe, gguf, image_path, question, max_new):
    cmd = ["nice", "-n", "10", exe, "describe", "-m", gguf, "--image", image_path, "-p", question,
           "-n", str(max_new), "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(here, "demo_model"), help="checkpoint directory")
    ap.add_argument("--gguf", action="append", required=True, help="GGUF converted from --model (repeatable)")
    ap.add_argument("--latte", default="target/release/latte", help="the latte binary")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--max-new", type=int, default=12)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    vlm, tok, proc, _, _, _ = checkpoint.load(args.model)

    rng = np.random.default_rng(args.seed)
    scenes = [d.random_scene(rng) for _ in range(args.images)]
    names = ["pytorch"] + [os.path.basename(g) for g in args.gguf]
    hits = {name: {k: 0 for k in d.QUESTIONS} for name in names}
    agree = {name: 0 for name in names[1:]}
    seconds = {name: 0.0 for name in names}
    disagreements = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, sc in enumerate(scenes):
            img = d.render(sc)
            path = os.path.join(tmp, f"{i}.png")
            Image.fromarray(img).save(path)
            for kind, question in d.QUESTIONS.items():
                truth = sc.answer(kind)
                t = time.time()
                reference = pipeline.answer(vlm, tok, proc, img, question, max_new=args.max_new)
                seconds["pytorch"] += time.time() - t
                hits["pytorch"][kind] += reference == truth
                for gguf, name in zip(args.gguf, names[1:]):
                    t = time.time()
                    ours = latte_answer(args.latte, gguf, path, question, args.max_new)
                    seconds[name] += time.time() - t
                    hits[name][kind] += ours == truth
                    agree[name] += ours == reference
                    if ours != reference and len(disagreements) < 20:
                        disagreements.append({"image": i, "scene": sc.caption(), "question": question,
                                              "gguf": name, "pytorch": reference, "latte": ours})
    n = len(scenes)
    report = {
        "checkpoint": args.model,
        "images": n,
        "seed": args.seed,
        "questions": d.QUESTIONS,
        "accuracy": {name: score(hits[name], n) for name in names},
        "answer_equals_pytorch": {name: agree[name] / (3 * n) for name in names[1:]},
        "seconds": seconds,
        "disagreements": disagreements,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
