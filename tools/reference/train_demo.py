"""One seeded command that trains the whole demo model on CPU and writes its checkpoint directory.

    nice -n 19 python tools/reference/train_demo.py --out tools/reference/demo_model

Stages (each logged with its wall time): render the image pool -> BPE tokenizer -> DC-AE (f8) ->
Qwen2-VL understanding (answers "What shape is it?", "What colour is it?", "Describe the image.") ->
LaTtE-Flow replica with the VLM frozen (layerwise flow-matching loss, MODEL.md §3) -> checkpoint (f16).
This module owns the training loops. It must not define model math (replica.py, vlm.py do).
"""

import argparse
import copy
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import autoencoder
import checkpoint
import demo_spec as S
import shapes_data as d
import tokenizer_bpe
import vlm as vlm_mod
from gen_config import GenerationConfig, uniform_boundaries
from replica import PromptContext, Replica

T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:7.1f}s, cpu {time.process_time():7.1f}s] {msg}", flush=True)


def cosine_lr(opt, base, step, total, warmup=100):
    lr = base * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
    for g in opt.param_groups:
        g["lr"] = lr


def render_pool(n, seed):
    rng = np.random.default_rng(seed)
    scenes = [d.random_scene(rng) for _ in range(n)]
    return scenes, np.stack([d.render(s) for s in scenes])


def train_autoencoder(imgs, seed):
    torch.manual_seed(seed)
    ae = autoencoder.tiny_dcae(S.LATENT_CHANNELS, S.AE_WIDTHS).train()
    opt = torch.optim.AdamW(ae.parameters(), lr=S.AE_LR, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for step in range(S.AE_STEPS):
        cosine_lr(opt, S.AE_LR, step, S.AE_STEPS)
        x = autoencoder.to_pixels(imgs[rng.integers(0, len(imgs), S.AE_BATCH)])
        y = ae.decode(ae.encode(x).latent).sample
        loss = F.mse_loss(y, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == S.AE_STEPS - 1:
            log(f"dcae step {step} mse {loss.item():.5f}")
    ae.eval()
    with torch.no_grad():
        z = torch.cat([ae.encode(autoencoder.to_pixels(imgs[i:i + 256])).latent for i in range(0, len(imgs), 256)])
    scale = float(1.0 / z.std())
    ae.register_to_config(scaling_factor=scale)
    log(f"dcae scaling_factor {scale:.5f}")
    return ae, z * scale


def vlm_batch(tok, processor, model, scenes, imgs, idx, kinds):
    pv = processor(images=[Image.fromarray(imgs[i]) for i in idx], return_tensors="pt")
    n_img = vlm_mod.merged_tokens(pv["image_grid_thw"][0], S.VISION["spatial_merge_size"])
    img_id = model.config.image_token_id
    end = tok.convert_tokens_to_ids("<|im_end|>")
    seqs, labels = [], []
    for i, k in zip(idx, kinds):
        prompt = vlm_mod.understanding_ids(tok, d.QUESTIONS[k], img_id, n_img)
        ans = tok(scenes[i].answer(k), add_special_tokens=False)["input_ids"] + [end]
        seqs.append(prompt + ans)
        labels.append([-100] * len(prompt) + ans)
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), n), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for r, (s, l) in enumerate(zip(seqs, labels)):
        ids[r, : len(s)] = torch.tensor(s)
        lab[r, : len(l)] = torch.tensor(l)
        mask[r, : len(s)] = 1
    return ids, lab, mask, pv["pixel_values"], pv["image_grid_thw"]


def train_vlm(tok, processor, scenes, imgs, seed):
    torch.manual_seed(seed)
    text = dict(S.TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id)
    vision = dict(S.VISION, hidden_size=S.TEXT["hidden_size"])
    model = vlm_mod.build_vlm(text, vision, tokenizer_bpe.special_ids(tok), S.TIE).train()
    opt = torch.optim.AdamW(model.parameters(), lr=S.VLM_LR, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    kinds_all = list(d.QUESTIONS)
    for step in range(S.VLM_STEPS):
        cosine_lr(opt, S.VLM_LR, step, S.VLM_STEPS)
        idx = rng.integers(0, len(imgs), S.VLM_BATCH)
        kinds = [kinds_all[k] for k in rng.integers(0, 3, S.VLM_BATCH)]
        ids, lab, mask, pv, grid = vlm_batch(tok, processor, model, scenes, imgs, idx, kinds)
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pv, image_grid_thw=grid,
                    mm_token_type_ids=(ids == model.config.image_token_id).int(), use_cache=False)
        loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), lab[:, 1:].flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == S.VLM_STEPS - 1:
            log(f"vlm step {step} loss {loss.item():.4f}")
    return model.eval()


def vision_upgrade(tok, lm_model, seed):
    """A fresh, larger vision tower (demo_spec.VISION_PHASE2) on top of phase 1's language model."""
    torch.manual_seed(seed)
    text = dict(S.TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id)
    vision = dict(S.VISION_PHASE2, hidden_size=S.TEXT["hidden_size"])
    model = vlm_mod.build_vlm(text, vision, tokenizer_bpe.special_ids(tok), S.TIE)
    state = {k: v for k, v in lm_model.state_dict().items() if not k.startswith("model.visual.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("model.visual.") for k in missing):
        raise RuntimeError(f"language model transfer failed: {missing} {unexpected}")
    return model


class ShapeColourProbe(torch.nn.Module):
    """Auxiliary classifier on the mean of one image's merged vision tokens (shape and colour logits).

    Used only while training the vision tower: the answer-token loss alone reaches the tower through the
    frozen language model and learnt shape slowly (README "Demo model"). Thrown away afterwards; position
    is left out because RoPE-only ViT tokens, mean-pooled, carry no absolute position.
    """

    def __init__(self, dim):
        super().__init__()
        self.proj = torch.nn.Linear(dim, len(d.SHAPES) + len(d.COLOURS))

    def loss(self, merged, n_images, scenes, idx):
        logits = self.proj(merged.view(n_images, -1, merged.shape[-1]).mean(1))
        shape = torch.tensor([d.SHAPES.index(scenes[i].shape) for i in idx])
        colour = torch.tensor([list(d.COLOURS).index(scenes[i].colour) for i in idx])
        n = len(d.SHAPES)
        return F.cross_entropy(logits[:, :n], shape) + F.cross_entropy(logits[:, n:], colour)


def train_vision(tok, processor, scenes, imgs, model, seed, steps):
    """Phase 2 of understanding: only the vision tower (ViT + merger) learns; the language model stays
    exactly as phase 1 left it, so text-only prompt K/V (all that generation reads) do not change and the
    replica can be trained at the same time. Loss: answer-token cross-entropy plus VISION_AUX_WEIGHT times
    the auxiliary shape/colour classification of the pooled merged tokens (ShapeColourProbe)."""
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("model.visual."))
    probe = ShapeColourProbe(S.TEXT["hidden_size"]) if S.VISION_AUX_WEIGHT > 0 else None
    params = [p for p in model.parameters() if p.requires_grad]
    params += list(probe.parameters()) if probe is not None else []
    model.train()
    opt = torch.optim.AdamW(params, lr=S.VISION_LR, weight_decay=0.01)
    merged = []
    hook = model.model.visual.register_forward_hook(lambda m, i, out: merged.append(out.pooler_output))
    rng = np.random.default_rng(seed)
    kinds_all = list(d.QUESTIONS)
    for step in range(steps):
        cosine_lr(opt, S.VISION_LR, step, steps)
        idx = rng.integers(0, len(imgs), S.VLM_BATCH)
        kinds = [kinds_all[k] for k in rng.integers(0, 3, S.VLM_BATCH)]
        ids, lab, mask, pv, grid = vlm_batch(tok, processor, model, scenes, imgs, idx, kinds)
        merged.clear()
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pv, image_grid_thw=grid,
                    mm_token_type_ids=(ids == model.config.image_token_id).int(), use_cache=False)
        answer = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), lab[:, 1:].flatten(), ignore_index=-100)
        aux = probe.loss(merged[0], len(idx), scenes, idx) if probe is not None else torch.zeros(())
        loss = answer + S.VISION_AUX_WEIGHT * aux
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"vision step {step} answer loss {answer.item():.4f} aux loss {aux.item():.4f}")
    hook.remove()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def generation_config(scaling_factor) -> GenerationConfig:
    t = S.TEXT
    return GenerationConfig(
        num_layers=t["num_hidden_layers"], hidden_size=t["hidden_size"],
        num_attention_heads=t["num_attention_heads"], num_key_value_heads=t["num_key_value_heads"],
        head_dim=t["hidden_size"] // t["num_attention_heads"], intermediate_size=t["intermediate_size"],
        rms_norm_eps=t["rms_norm_eps"], rope_theta=t["rope_parameters"]["rope_theta"],
        mrope_section=list(t["rope_parameters"]["mrope_section"]), num_groups=S.GROUPS,
        group_boundaries=uniform_boundaries(S.GROUPS), latent_channels=S.LATENT_CHANNELS, latent_size=8,
        patch_size=S.FLOW_PATCH, scaling_factor=scaling_factor, image_size=64, num_steps=40, guidance_scale=S.GUIDANCE,
    )


def init_from_vlm(replica: Replica, model):
    """LMFusion-style start: each replica layer begins as a copy of the frozen VLM layer."""
    lm = model.model.language_model
    with torch.no_grad():
        for layer, src in zip(replica.layers, lm.layers):
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                getattr(layer, name).load_state_dict(getattr(src.self_attn, name).state_dict())
            for name in ("gate_proj", "up_proj", "down_proj"):
                getattr(layer, name).load_state_dict(getattr(src.mlp, name).state_dict())
            layer.input_norm.weight.copy_(src.input_layernorm.weight)
            layer.ffn_norm.weight.copy_(src.post_attention_layernorm.weight)


def caption_table(tok, model, cfg, captions):
    """Prompt K/V of every distinct caption, computed once (MODEL.md §2)."""
    from pipeline import generation_ids

    out = vlm_mod.prompt_outputs(model, [generation_ids(tok, cfg, c) for c in captions])
    return out


def train_flow(tok, model, latents, scenes, scaling_factor, seed, steps, start=None):
    """start: None (phase 1: replica initialised from the VLM) or a Replica to continue (phase 2)."""
    torch.manual_seed(seed)
    cfg = generation_config(scaling_factor)
    replica = Replica(cfg)
    if start is None:
        init_from_vlm(replica, model)
    else:
        replica.load_state_dict(start.state_dict())
    replica.train()
    ema = copy.deepcopy(replica).eval()
    captions = [""] + d.all_captions()
    index = {c: i for i, c in enumerate(captions)}
    table = replica.bind_context(caption_table(tok, model, cfg, captions))
    opt = torch.optim.AdamW(replica.parameters(), lr=S.FLOW_LR, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        cosine_lr(opt, S.FLOW_LR, step, steps)
        k = step % cfg.num_groups
        idx = rng.integers(0, len(latents), S.FLOW_BATCH)
        caps = []
        for i in idx:
            sc = scenes[i]
            u = rng.random()
            if u < S.CFG_DROP:
                caps.append(index[""])
            elif (sc.colour, sc.shape, sc.position) in d.HELD_OUT or u < 0.5 + S.CFG_DROP / 2:
                caps.append(index[sc.caption(False)])
            else:
                caps.append(index[sc.caption(True)])
        ctx = table.select(torch.tensor(caps))
        b0, b1 = cfg.group_boundaries[k], cfg.group_boundaries[k + 1]
        t = b0 + (b1 - b0) * torch.rand(S.FLOW_BATCH, generator=gen)
        x1 = latents[idx]
        x0 = torch.randn(x1.shape, generator=gen)
        tt = t.view(-1, 1, 1, 1)
        xt = tt * x1 + (1 - tt) * x0
        v = replica.velocity(xt, t, ctx, cfg.layers_of(k), k)
        loss = F.mse_loss(v, x1 - x0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(replica.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), replica.parameters()):
                pe.lerp_(p, 1.0 - S.EMA)
        if step % 100 == 0 or step == steps - 1:
            log(f"flow step {step} group {k} loss {loss.item():.4f}")
    return cfg, ema


def load_or_train_tokenizer(work):
    from transformers import AutoTokenizer

    path = os.path.join(work, "tokenizer")
    if os.path.exists(path):
        return AutoTokenizer.from_pretrained(path)
    tok = tokenizer_bpe.train_bpe(tokenizer_bpe.corpus() * 20, S.TOKENIZER_VOCAB)
    tok.save_pretrained(path)
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_model"))
    ap.add_argument("--work", default="/tmp/latte_demo_work", help="stage outputs (reused when present)")
    ap.add_argument("--stage", default="all", choices=["all", "dcae", "vlm", "vision", "vision2", "flow", "flow2", "assemble"],
                    help="order: dcae and vlm (independent); then vision and flow (independent: vision "
                         "does not change the language model); flow2 continues flow; then assemble")
    ap.add_argument("--threads", type=int, default=S.THREADS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    from diffusers import AutoencoderDC
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2VLForConditionalGeneration

    times = {}
    t = time.time()
    scenes, imgs = render_pool(S.POOL, S.SEED)
    tok = load_or_train_tokenizer(args.work)
    processor = vlm_mod.image_processor(S.MIN_PIXELS, S.MAX_PIXELS)  # phase 1
    # phase 2 (the shipped tower) may read another input size: the frozen language model takes any number
    # of image tokens (M-RoPE gives them their grid positions)
    vision_processor = vlm_mod.image_processor(S.PHASE2_PIXELS, S.PHASE2_PIXELS)
    times["render+tokenizer"] = time.time() - t
    log(f"rendered {len(imgs)} images; tokenizer: {len(tok)} tokens")
    run = lambda st: args.stage in ("all", st)  # noqa: E731

    ae_path = os.path.join(args.work, "autoencoder")
    if run("dcae") and not os.path.exists(ae_path):
        t = time.time()
        ae, _ = train_autoencoder(imgs, S.SEED + 1)
        ae.save_pretrained(ae_path)
        times["dcae"] = time.time() - t
    lm_path = os.path.join(args.work, "vlm_phase1")
    if run("vlm") and not os.path.exists(lm_path):
        t = time.time()
        train_vlm(tok, processor, scenes, imgs, S.SEED + 2).save_pretrained(lm_path)
        times["vlm"] = time.time() - t
    vlm_path = os.path.join(args.work, "vlm_phase2")
    if run("vision") and not os.path.exists(vlm_path):
        t = time.time()
        model = vision_upgrade(tok, Qwen2VLForConditionalGeneration.from_pretrained(lm_path), S.SEED + 4)
        train_vision(tok, vision_processor, scenes, imgs, model, S.SEED + 4, S.VISION_STEPS).save_pretrained(vlm_path)
        times["vision"] = time.time() - t
    vlm3_path = os.path.join(args.work, "vlm_phase3")
    if run("vision2") and S.VISION2_STEPS and not os.path.exists(vlm3_path):  # continue the phase-2 tower, fresh schedule
        t = time.time()
        model = Qwen2VLForConditionalGeneration.from_pretrained(vlm_path)
        train_vision(tok, vision_processor, scenes, imgs, model, S.SEED + 6, S.VISION2_STEPS).save_pretrained(vlm3_path)
        times["vision2"] = time.time() - t
    flow_path = os.path.join(args.work, "generation")
    flow2_path = os.path.join(args.work, "generation_phase2")
    for phase, path, steps, seed in ((1, flow_path, S.FLOW_STEPS, S.SEED + 3),
                                     (2, flow2_path, S.FLOW2_STEPS, S.SEED + 5)):
        if not run(f"flow{phase}" if phase == 2 else "flow") or not steps or os.path.exists(path):
            continue
        ae = AutoencoderDC.from_pretrained(ae_path).eval()
        model = Qwen2VLForConditionalGeneration.from_pretrained(lm_path).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            latents = torch.cat([autoencoder.encode(ae, autoencoder.to_pixels(imgs[i:i + 256]))
                                 for i in range(0, len(imgs), 256)])
        start = None
        if phase == 2:  # continue from phase 1's EMA weights with a fresh optimiser and schedule
            start = Replica(GenerationConfig.load(os.path.join(flow_path, "config.json")))
            start.load_state_dict(load_file(os.path.join(flow_path, "model.safetensors")))
        t = time.time()
        cfg, replica = train_flow(tok, model, latents, scenes, ae.config.scaling_factor, seed, steps, start)
        times[f"flow{phase}"] = time.time() - t
        os.makedirs(path + ".tmp", exist_ok=True)
        cfg.save(os.path.join(path + ".tmp", "config.json"))
        save_file({k: v.contiguous() for k, v in replica.state_dict().items()},
                  os.path.join(path + ".tmp", "model.safetensors"))
        os.rename(path + ".tmp", path)
    if run("assemble"):
        ae = AutoencoderDC.from_pretrained(ae_path).eval()
        final_vlm = vlm3_path if os.path.exists(vlm3_path) else vlm_path
        model = Qwen2VLForConditionalGeneration.from_pretrained(final_vlm).eval()
        log(f"vlm from {final_vlm}")
        lm = Qwen2VLForConditionalGeneration.from_pretrained(lm_path).eval()
        # the shipped language model must be the one the replica was trained against
        lm_state = lm.state_dict()
        for n, a in model.state_dict().items():
            if not n.startswith("model.visual.") and not torch.equal(a, lm_state[n]):
                raise RuntimeError(f"language model changed in the vision phase: {n}")
        final = flow2_path if os.path.exists(flow2_path) else flow_path
        cfg = GenerationConfig.load(os.path.join(final, "config.json"))
        replica = Replica(cfg)
        replica.load_state_dict(load_file(os.path.join(final, "model.safetensors")))
        log(f"replica from {final}")
        checkpoint.save(args.out, model, tok, vision_processor, cfg, replica, ae, dtype=torch.float16)
        log(f"checkpoint written to {args.out}")
    log("stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
