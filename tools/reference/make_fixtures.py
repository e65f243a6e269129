"""Deterministic parity fixtures for the Rust engine: tiny checkpoints plus the intermediate tensors.

    python tools/reference/make_fixtures.py [--out tests/fixtures/reference]

Writes, per configuration, `<name>/checkpoint/` (the README's checkpoint layout, f32),
`<name>/tensors.safetensors` and `<name>/manifest.json` (every tensor: what it is, shape, dtype); for the
configurations in IMAGE_PROMPT_CONFIGS also `<name>/image_prompt.safetensors` and `<name>/image_prompt.json`
(generation from a prompt holding an image, kept apart so the older files stay byte-identical); and
`rng.safetensors` (noise RNG test vectors) and a top-level `manifest.json`. This module owns the fixture
contents; it must not define model math. Re-running it reproduces the same bytes on the same software.
"""

import argparse
import copy
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file

import autoencoder
import checkpoint
import pipeline
import rng
import tiny
import vlm as vlm_mod
from sampler import sample, timesteps

CONFIGS = {
    "base": dict(
        doc="every default: ctx_kv frozen, img_pos mrope2d, tcra pre_softmax, shared ends, time_shift 1, "
            "uniform boundaries, K=2 x M=2, tied embeddings, Euler",
        tie=True, method="euler", switches={}),
    "alt": dict(
        doc="every alternative: ctx_kv replica, img_pos rope1d, tcra post_softmax, per_group_head, "
            "time_shift 3, boundaries [0, 0.35, 1], K=2 x M=2, untied embeddings, Heun",
        tie=False, method="heun",
        switches=dict(ctx_kv="replica", img_pos="rope1d", tcra="post_softmax", per_group_head=True,
                      time_shift=3.0, group_boundaries=[0.0, 0.35, 1.0])),
    "no_tcra": dict(
        doc="tcra none, K=4 x M=1, tied, Euler; also the dense sampler (all layers every step)",
        tie=True, method="euler", dense_too=True,
        switches=dict(tcra="none", num_groups=4, group_boundaries=[0.0, 0.25, 0.5, 0.75, 1.0])),
}
STEPS = 4
SEED = 1234
PROMPT = "a red star on the left"
QUESTION = "What shape is it?"
RNG_SEEDS = (0, 1, 42, 1234, 2**64 - 1)
# Generation from a prompt with an image: ctx_kv frozen (base) and replica (alt).
IMAGE_PROMPT_CONFIGS = ("base", "alt")
IMAGE_PROMPT = "a star like this"


def fixture_image():
    """The understanding fixture's raw image: uint8 [H=40, W=70, 3] (non-square)."""
    return np.random.default_rng(3).integers(0, 256, (40, 70, 3)).astype(np.uint8)


class Writer:
    def __init__(self):
        self.tensors, self.manifest = {}, {}

    def add(self, name, value, what):
        t = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value).detach().contiguous()
        if t.dtype == torch.float64:
            t = t.float()
        self.tensors[name] = t.clone()
        self.manifest[name] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                               "what": what}

    def save(self, folder, config_doc, extra):
        save_file(self.tensors, os.path.join(folder, "tensors.safetensors"))
        with open(os.path.join(folder, "manifest.json"), "w") as f:
            json.dump({"config": config_doc, **extra, "tensors": self.manifest}, f, indent=1)
            f.write("\n")


def understanding(w, model, tok, proc):
    img = fixture_image()
    pv, grid = vlm_mod.preprocess(proc, img)
    merge = model.config.vision_config.spatial_merge_size
    ids = vlm_mod.understanding_ids(tok, QUESTION, model.config.image_token_id, vlm_mod.merged_tokens(grid, merge))
    ids_t = torch.tensor([ids])
    mm = (ids_t == model.config.image_token_id).int()
    with torch.no_grad():
        vis = model.model.get_image_features(pv, grid)
        pos, _ = model.model.get_rope_index(ids_t, mm, image_grid_thw=grid)
    w.add("und.image", torch.from_numpy(img), "raw RGB image, uint8 [H=40, W=70, 3] (non-square)")
    w.add("und.pixel_values", pv, "transformers Qwen2VLImageProcessorPil output for und.image "
          "[patches, 3*2*14*14] (resized to 56x84)")
    w.add("und.image_grid_thw", grid, "grid (t, h, w) in 14-px patches")
    w.add("und.vision_hidden", vis.last_hidden_state, "ViT output before the merger [patches, embed_dim]")
    w.add("und.vision_embeds", vis.pooler_output[0], "vision encoder output after the merger [merged tokens, D]")
    w.add("und.input_ids", ids_t[0], f"chat-template prompt: image + '{QUESTION}', image pads expanded")
    w.add("und.position_ids", pos[:, 0], "M-RoPE position ids (t, h, w) [3, S] from get_rope_index")
    w.add("und.logits", vlm_mod.logits(model, ids, pv, grid)[0], "logits of every prompt position [S, vocab]")
    w.add("und.greedy_tokens", torch.tensor(vlm_mod.greedy(model, ids, pv, grid, max_new=8)),
          "8 greedy tokens after the prompt (no stop token)")


def generation(w, model, tok, rep, ae, method, prefix="gen"):
    cfg = rep.cfg
    cond_ids = pipeline.generation_ids(tok, cfg, PROMPT)
    uncond_ids = pipeline.generation_ids(tok, cfg, "")
    outs = {"cond": vlm_mod.prompt_outputs(model, [cond_ids]), "uncond": vlm_mod.prompt_outputs(model, [uncond_ids])}
    ctx = {k: rep.bind_context(v) for k, v in outs.items()}
    w.add(f"{prefix}.cond_ids", torch.tensor(cond_ids), f"prompt_template with '{PROMPT}'")
    w.add(f"{prefix}.uncond_ids", torch.tensor(uncond_ids), "prompt_template with the empty prompt")
    for k in ("cond", "uncond"):
        for l in range(cfg.num_layers):
            w.add(f"{prefix}.{k}.k.{l}", ctx[k].k[l][0], f"{k} prompt keys the replica layer {l} attends to, "
                  f"RoPE applied [KV heads, P, head_dim] (ctx_kv={cfg.ctx_kv})")
            w.add(f"{prefix}.{k}.v.{l}", ctx[k].v[l][0], f"{k} prompt values of layer {l} [KV heads, P, head_dim]")
            if cfg.ctx_kv == "replica":
                w.add(f"{prefix}.{k}.normed_input.{l}", outs[k].normed_inputs[l][0],
                      f"frozen VLM layer {l} input after its input_layernorm [P, D]")
    noise = pipeline.noise_batch(cfg, [SEED])
    w.add(f"{prefix}.seed", torch.tensor(SEED), "noise seed (rng.py spec)")
    w.add(f"{prefix}.noise", noise[0], "initial latent x0 [C, H, W] from the seed")
    w.add(f"{prefix}.timesteps", torch.tensor(timesteps(STEPS, cfg.time_shift)), "t_0..t_steps (f64 -> f32)")
    record = []
    x = sample(rep, noise, ctx["cond"], ctx["uncond"], STEPS, cfg.guidance_scale, method, record=record)
    seen = set()
    for e, r in enumerate(record):
        w.add(f"{prefix}.eval{e}.t", torch.tensor(r["t"], dtype=torch.float32), "timestep of this evaluation")
        w.add(f"{prefix}.eval{e}.group", torch.tensor(r["group"]), "group that owns t")
        w.add(f"{prefix}.eval{e}.v_cond", r["v_cond"][0], "conditional velocity [C, H, W]")
        w.add(f"{prefix}.eval{e}.v_uncond", r["v_uncond"][0], "unconditional velocity [C, H, W]")
        w.add(f"{prefix}.eval{e}.v", r["v"][0], "guided velocity v_u + s (v_c - v_u) [C, H, W]")
        if r["group"] not in seen:
            seen.add(r["group"])
            for tr in r["trace"]:
                l = tr["layer"]
                w.add(f"{prefix}.eval{e}.cond.hidden.{l}", tr["hidden"][0],
                      f"conditional pass: image-token hidden state after layer {l} [N, D]")
                if tr["block"] is not None:
                    what = "scores after the TCRA update" if cfg.tcra == "pre_softmax" else "renormalised probabilities"
                    w.add(f"{prefix}.eval{e}.cond.block.{l}", tr["block"][0],
                          f"conditional pass: layer {l} image-image block ({what}) [H, N, N]")
    w.add(f"{prefix}.final_latent", x[0], f"latent after {STEPS} {method} steps [C, H, W]")
    img = autoencoder.decode(ae, x)
    w.add(f"{prefix}.image", img[0], "decode(final_latent / scaling_factor), clamped [3, H, W] in [-1, 1]")
    w.add(f"{prefix}.image_u8", torch.from_numpy(autoencoder.to_uint8(img)[0]), "PNG pixels [H, W, 3]")
    return x


def image_generation(w, model, tok, proc, rep, ae, method):
    """A generation whose conditional prompt holds fixture_image() (unconditional: the empty text prompt)."""
    cfg = rep.cfg
    img = fixture_image()
    ids, out = pipeline.image_prompt(model, tok, proc, cfg, IMAGE_PROMPT, img)
    cond = rep.bind_context(out)
    uncond = rep.bind_context(vlm_mod.prompt_outputs(model, [pipeline.generation_ids(tok, cfg, "")]))
    w.add("img.image", torch.from_numpy(img), "raw RGB image in the prompt, uint8 [H=40, W=70, 3] (und.image)")
    w.add("img.cond_ids", torch.tensor(ids), f"prompt_template with '<|vision_start|><|image_pad|><|vision_end|>"
          f"{IMAGE_PROMPT}', the image pad expanded to one per merged token")
    w.add("img.positions", out.positions[0], "M-RoPE positions (t, h, w) of the prompt [3, P] (get_rope_index)")
    w.add("img.start", out.start[0], "next free position after the prompt: where the generated image tokens start")
    for l in range(cfg.num_layers):
        w.add(f"img.cond.k.{l}", cond.k[l][0], f"prompt keys the replica layer {l} attends to, RoPE applied "
              f"[KV heads, P, head_dim] (ctx_kv={cfg.ctx_kv})")
        w.add(f"img.cond.v.{l}", cond.v[l][0], f"prompt values of layer {l} [KV heads, P, head_dim]")
    w.add("img.seed", torch.tensor(SEED), "noise seed (rng.py spec); the noise is gen.noise")
    record = []
    x = sample(rep, pipeline.noise_batch(cfg, [SEED]), cond, uncond, STEPS, cfg.guidance_scale, method,
               record=record)
    for e, r in enumerate(record):
        w.add(f"img.eval{e}.t", torch.tensor(r["t"], dtype=torch.float32), "timestep of this evaluation")
        w.add(f"img.eval{e}.group", torch.tensor(r["group"]), "group that owns t")
        w.add(f"img.eval{e}.v_cond", r["v_cond"][0], "conditional velocity [C, H, W]")
        w.add(f"img.eval{e}.v_uncond", r["v_uncond"][0], "unconditional velocity [C, H, W]")
        w.add(f"img.eval{e}.v", r["v"][0], "guided velocity v_u + s (v_c - v_u) [C, H, W]")
    w.add("img.final_latent", x[0], f"latent after {STEPS} {method} steps [C, H, W]")
    w.add("img.image_u8", torch.from_numpy(autoencoder.to_uint8(autoencoder.decode(ae, x))[0]),
          "PNG pixels [H, W, 3]")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures", "reference"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # fixed reduction order
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    rw = Writer()
    for s in RNG_SEEDS:
        rw.add(f"rng.seed{s}.u64_first4", torch.tensor([int(x) for x in rng.splitmix64(s, 4)], dtype=torch.uint64),
               f"splitmix64 numbers 0..3 of seed {s}")
        rw.add(f"rng.seed{s}.normal_first8", torch.from_numpy(rng.normal_f32(s, 8)), f"first 8 normals, seed {s}")
    rw.add("rng.seed1234.latent_4x4x4", torch.from_numpy(rng.latent_noise(1234, 4, 4, 4)), "latent_noise(1234, 4, 4, 4)")
    save_file(rw.tensors, os.path.join(out, "rng.safetensors"))

    top = {"rng.safetensors": {k: v for k, v in rw.manifest.items()}, "configs": {}}
    tok = tiny.tokenizer()
    for i, (name, spec) in enumerate(CONFIGS.items()):
        folder = os.path.join(out, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        model = tiny.make_vlm(tok, tie=spec["tie"], seed=100 + i)
        cfg = tiny.gen_config(**spec["switches"])
        rep = tiny.make_replica(cfg, seed=200 + i)
        ae = tiny.make_ae(300 + i)
        proc = tiny.processor()
        checkpoint.save(os.path.join(folder, "checkpoint"), copy.deepcopy(model), tok, proc, cfg, rep, ae)
        w = Writer()
        understanding(w, model, tok, proc)
        generation(w, model, tok, rep, ae, spec["method"])
        if spec.get("dense_too"):
            ctx = [rep.bind_context(vlm_mod.prompt_outputs(model, [pipeline.generation_ids(tok, cfg, p)]))
                   for p in (PROMPT, "")]
            xd = sample(rep, pipeline.noise_batch(cfg, [SEED]), ctx[0], ctx[1], STEPS, cfg.guidance_scale,
                        spec["method"], dense=True)
            w.add("dense.final_latent", xd[0], f"latent after {STEPS} steps of the dense sampler (all layers)")
        extra = {"switches": spec["switches"], "tied_embeddings": spec["tie"], "sampler": spec["method"],
                 "steps": STEPS, "guidance_scale": cfg.guidance_scale, "prompt": PROMPT, "question": QUESTION}
        w.save(folder, spec["doc"], extra)
        if name in IMAGE_PROMPT_CONFIGS:
            wi = Writer()
            image_generation(wi, model, tok, proc, rep, ae, spec["method"])
            save_file(wi.tensors, os.path.join(folder, "image_prompt.safetensors"))
            with open(os.path.join(folder, "image_prompt.json"), "w") as f:
                json.dump({"config": spec["doc"], **extra, "prompt": IMAGE_PROMPT, "image": "img.image",
                           "tensors": wi.manifest}, f, indent=1)
                f.write("\n")
        top["configs"][name] = {"doc": spec["doc"], **extra}
        print(f"{name}: {len(w.tensors)} tensors")
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(top, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
