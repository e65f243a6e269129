"""The committed fixtures must be what the reference computes from the committed checkpoints."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import checkpoint
import pipeline
import vlm as vlm_mod
from sampler import sample

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests", "fixtures", "reference")


@pytest.mark.parametrize("name", ["base", "alt", "no_tcra"])
def test_fixture_matches_reference(name):
    folder = os.path.join(ROOT, name)
    t = load_file(os.path.join(folder, "tensors.safetensors"))
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    assert set(manifest["tensors"]) == set(t)
    vlm, tok, proc, cfg, rep, ae = checkpoint.load(os.path.join(folder, "checkpoint"))
    pv, grid = vlm_mod.preprocess(proc, t["und.image"].numpy())
    assert torch.equal(pv, t["und.pixel_values"]) and torch.equal(grid, t["und.image_grid_thw"])
    logits = vlm_mod.logits(vlm, t["und.input_ids"].tolist(), pv, grid)[0]
    assert torch.allclose(logits, t["und.logits"], atol=1e-5)
    cond, uncond = pipeline.contexts(vlm, tok, rep, [manifest["prompt"]])
    x = sample(rep, t["gen.noise"][None], cond, uncond, manifest["steps"], None, manifest["sampler"])
    assert torch.allclose(x[0], t["gen.final_latent"], atol=1e-5)
    if "dense.final_latent" in t:
        xd = sample(rep, t["gen.noise"][None], cond, uncond, manifest["steps"], None, manifest["sampler"], dense=True)
        assert torch.allclose(xd[0], t["dense.final_latent"], atol=1e-5)
        assert not torch.allclose(xd[0], x[0], atol=1e-3)
    img = np.asarray(t["gen.image_u8"])
    assert img.shape == (cfg.image_size, cfg.image_size, 3)


@pytest.mark.parametrize("name", ["base", "alt"])
def test_image_prompt_fixture_matches_reference(name):
    folder = os.path.join(ROOT, name)
    t = load_file(os.path.join(folder, "image_prompt.safetensors"))
    manifest = json.load(open(os.path.join(folder, "image_prompt.json")))
    assert set(manifest["tensors"]) == set(t)
    vlm, tok, proc, cfg, rep, ae = checkpoint.load(os.path.join(folder, "checkpoint"))
    ids, out = pipeline.image_prompt(vlm, tok, proc, cfg, manifest["prompt"], t["img.image"].numpy())
    assert ids == t["img.cond_ids"].tolist()
    assert torch.equal(out.positions[0], t["img.positions"]) and int(out.start[0]) == int(t["img.start"])
    assert int(t["img.start"]) < len(ids)  # the image's tokens take fewer positions than tokens
    cond, uncond = pipeline.contexts(vlm, tok, rep, [manifest["prompt"]], t["img.image"].numpy(), proc)
    for l in range(cfg.num_layers):
        assert torch.allclose(cond.k[l][0], t[f"img.cond.k.{l}"], atol=1e-6)
    x = sample(rep, pipeline.noise_batch(cfg, [int(t["img.seed"])]), cond, uncond, manifest["steps"], None,
               manifest["sampler"])
    assert torch.allclose(x[0], t["img.final_latent"], atol=1e-5)
