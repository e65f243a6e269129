"""The demo model's training stages on CPU, seeded; writes its checkpoint directory.

    tools/reference/train_demo.sh            # the one command: every stage, two processes on two cores
    nice -n 19 python tools/reference/train_demo.py --stage all --out tools/reference/demo_model

Stages (each logged with wall and CPU time): tokenizer (render the image pool, BPE) -> dcae (f8) and,
independently, tower (the vision tower alone, SceneProbe) -> vlm (the language model on the frozen
tower: "What shape is it?", "What colour is it?", "Describe the image.", text-reading questions) ->
flow (the LaTtE-Flow replica with the VLM frozen, layerwise flow-matching loss, MODEL.md §3) ->
assemble (checkpoint in f16).
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


def optimizer_step(opt, params, loss, clip=1.0):
    opt.zero_grad()
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


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
        optimizer_step(opt, None, loss, clip=None)
        if step % 100 == 0 or step == S.AE_STEPS - 1:
            log(f"dcae step {step} mse {loss.item():.5f}")
    ae.eval()
    with torch.no_grad():
        z = torch.cat([ae.encode(autoencoder.to_pixels(imgs[i:i + 256])).latent for i in range(0, len(imgs), 256)])
    scale = float(1.0 / z.std())
    ae.register_to_config(scaling_factor=scale)
    log(f"dcae scaling_factor {scale:.5f}")
    return ae, z * scale


class SceneProbe(torch.nn.Module):
    """Classifier of shape, colour and position on the mean of one image's merged vision tokens.

    Trains the vision tower in stage `tower` and is thrown away afterwards. Through the language model
    alone the tower learnt shape slowly and the language model never learnt to tell shape words apart
    (README "Demo model"). Position is in it so that the tower writes each token's absolute place into
    its content: the language model's M-RoPE gives image columns only its lowest frequencies.
    """

    def __init__(self, dim):
        super().__init__()
        self.proj = torch.nn.Linear(dim, len(d.SHAPES) + len(d.COLOURS) + len(d.POSITIONS))

    def loss(self, merged, scenes):
        logits = self.proj(merged.view(len(scenes), -1, merged.shape[-1]).mean(1))
        loss = torch.zeros(())
        for names, value in ((d.SHAPES, lambda s: s.shape), (list(d.COLOURS), lambda s: s.colour),
                             (list(d.POSITIONS), lambda s: s.position)):
            target = torch.tensor([list(names).index(value(s)) for s in scenes])
            loss = loss + F.cross_entropy(logits[:, : len(names)], target)
            logits = logits[:, len(names):]
        return loss


class VlmRows:
    """Token ids of the training rows, each text tokenised once (there are only a few hundred)."""

    def __init__(self, tok, image_token_id, image_tokens):
        self.tok = tok
        self.end = tok.convert_tokens_to_ids("<|im_end|>")
        self.image_prompts = {k: vlm_mod.understanding_ids(tok, q, image_token_id, image_tokens)
                              for k, q in d.QUESTIONS.items()}
        self.cache = {}

    def _ids(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def answer(self, text):
        return self._ids(("answer", text), lambda: self.tok(text, add_special_tokens=False)["input_ids"] + [self.end])

    def text_prompt(self, caption, kind):
        def make():
            msgs = [{"role": "user", "content": f"{caption}\n{d.QUESTIONS[kind]}"}]
            text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            return self.tok(text, add_special_tokens=False)["input_ids"]
        return self._ids(("text", caption, kind), make)


def build_vlm(tok):
    text = dict(S.TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                eos_token_id=tok.eos_token_id)
    vision = dict(S.VISION, hidden_size=S.TEXT["hidden_size"])
    return vlm_mod.build_vlm(text, vision, tokenizer_bpe.special_ids(tok), S.TIE)


def image_grid():
    """Every pool image's `image_grid_thw` row (the renders are not resized)."""
    side = math.isqrt(S.IMAGE_PIXELS) // S.VISION["patch_size"]
    return torch.tensor([[1, side, side]])


def pretrain_tower(tok, scenes, pixel_values, seed):
    """Stage `tower`: the vision tower (ViT + merger) alone learns shape, colour and position through
    SceneProbe, before any language model sees it. Returns the tower's state dict."""
    torch.manual_seed(seed)
    tower = build_vlm(tok).model.visual.train()
    probe = SceneProbe(S.TEXT["hidden_size"])
    params = list(tower.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=S.TOWER_LR, weight_decay=0.01)
    grid = image_grid()
    rng = np.random.default_rng(seed)
    for step in range(S.TOWER_STEPS):
        cosine_lr(opt, S.TOWER_LR, step, S.TOWER_STEPS)
        idx = rng.integers(0, len(scenes), S.TOWER_BATCH)
        merged = tower(pixel_values[idx].flatten(0, 1), grid_thw=grid.repeat(len(idx), 1)).pooler_output
        loss = probe.loss(merged, [scenes[i] for i in idx])
        optimizer_step(opt, params, loss)
        if step % 100 == 0 or step == S.TOWER_STEPS - 1:
            log(f"tower step {step} shape+colour+position loss {loss.item():.4f}")
    return tower.state_dict()


def train_vlm(tok, scenes, pixel_values, tower_state, seed):
    """The language model learns on top of stage `tower`'s vision tower, which stays frozen (trained
    further through the language model it forgot shape again: README "Demo model"): answer-token
    cross-entropy on image questions and on text-reading questions (demo_spec.TEXT_READING).
    pixel_values: [pool, patches, features], the processor's output for every pool image."""
    torch.manual_seed(seed)
    model = build_vlm(tok).train()
    model.model.visual.load_state_dict(tower_state)
    model.model.visual.eval()
    for p in model.model.visual.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=S.VLM_LR, weight_decay=0.01)
    img_id = model.config.image_token_id
    grid_one = image_grid()
    rows = VlmRows(tok, img_id, vlm_mod.merged_tokens(grid_one[0], S.VISION["spatial_merge_size"]))
    rng = np.random.default_rng(seed)
    kinds_all = list(d.QUESTIONS)
    for step in range(S.VLM_STEPS):
        cosine_lr(opt, S.VLM_LR, step, S.VLM_STEPS)
        idx = rng.integers(0, len(scenes), S.VLM_BATCH)
        seqs, labels, with_image = [], [], []
        for i in idx:
            sc = scenes[i]
            if rng.random() < S.TEXT_READING:
                kind = ("shape", "colour")[rng.integers(2)]
                prompt = rows.text_prompt(sc.caption(bool(rng.integers(2))), kind)
            else:
                kind = kinds_all[rng.integers(3)]
                prompt = rows.image_prompts[kind]
                with_image.append(i)
            ans = rows.answer(sc.answer(kind))
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
        images = {}
        if with_image:
            images = dict(pixel_values=pixel_values[with_image].flatten(0, 1),
                          image_grid_thw=grid_one.repeat(len(with_image), 1))
        out = model(input_ids=ids, attention_mask=mask, mm_token_type_ids=(ids == img_id).int(), use_cache=False,
                    **images)
        loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), lab[:, 1:].flatten(), ignore_index=-100)
        optimizer_step(opt, params, loss)
        if step % 100 == 0 or step == S.VLM_STEPS - 1:
            log(f"vlm step {step} answer loss {loss.item():.4f}")
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def pool_pixel_values(processor, imgs):
    """The processor's pixel values of every pool image, [pool, patches, features] (computed once)."""
    out = [processor(images=[Image.fromarray(x) for x in imgs[i:i + 512]], return_tensors="pt")["pixel_values"]
           for i in range(0, len(imgs), 512)]
    return torch.cat(out).view(len(imgs), -1, out[0].shape[-1])


def generation_config(scaling_factor) -> GenerationConfig:
    t = S.TEXT
    return GenerationConfig(
        num_layers=t["num_hidden_layers"], hidden_size=t["hidden_size"],
        num_attention_heads=t["num_attention_heads"], num_key_value_heads=t["num_key_value_heads"],
        head_dim=t["hidden_size"] // t["num_attention_heads"], intermediate_size=t["intermediate_size"],
        rms_norm_eps=t["rms_norm_eps"], rope_theta=t["rope_parameters"]["rope_theta"],
        mrope_section=list(t["rope_parameters"]["mrope_section"]), num_groups=S.GROUPS,
        group_boundaries=uniform_boundaries(S.GROUPS), latent_channels=S.LATENT_CHANNELS, latent_size=8,
        patch_size=S.FLOW_PATCH, img_pos=S.IMG_POS, scaling_factor=scaling_factor, image_size=64, num_steps=40, guidance_scale=S.GUIDANCE,
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


def train_flow(tok, model, latents, scenes, scaling_factor, seed, steps):
    torch.manual_seed(seed)
    cfg = generation_config(scaling_factor)
    replica = Replica(cfg)
    init_from_vlm(replica, model)
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
        optimizer_step(opt, replica.parameters(), loss)
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
    ap.add_argument("--stage", default="all", choices=["all", "tokenizer", "dcae", "tower", "vlm", "flow", "assemble"],
                    help="order: tokenizer; dcae and tower (independent, may run as two processes); vlm after "
                         "tower; flow after dcae and vlm; then assemble (train_demo.sh runs them so)")
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
    processor = vlm_mod.image_processor(S.IMAGE_PIXELS, S.IMAGE_PIXELS, S.VISION["patch_size"])
    times["render+tokenizer"] = time.time() - t
    log(f"rendered {len(imgs)} images; tokenizer: {len(tok)} tokens")
    run = lambda st: args.stage in ("all", st)  # noqa: E731

    ae_path = os.path.join(args.work, "autoencoder")
    if run("dcae") and not os.path.exists(ae_path):
        t = time.time()
        ae, _ = train_autoencoder(imgs, S.SEED + 1)
        ae.save_pretrained(ae_path)
        times["dcae"] = time.time() - t
    tower_path = os.path.join(args.work, "tower.safetensors")
    vlm_path = os.path.join(args.work, "vlm")
    pixel_values = None
    if run("tower") and not os.path.exists(tower_path):
        t = time.time()
        pixel_values = pool_pixel_values(processor, imgs)
        save_file(pretrain_tower(tok, scenes, pixel_values, S.SEED + 4), tower_path + ".tmp")
        os.rename(tower_path + ".tmp", tower_path)
        times["tower"] = time.time() - t
    if run("vlm") and not os.path.exists(vlm_path):
        if not os.path.exists(tower_path):
            raise SystemExit(f"stage vlm needs stage tower's {tower_path}")
        t = time.time()
        pixel_values = pool_pixel_values(processor, imgs) if pixel_values is None else pixel_values
        model = train_vlm(tok, scenes, pixel_values, load_file(tower_path), S.SEED + 2)
        model.save_pretrained(vlm_path)
        times["vlm"] = time.time() - t
    flow_path = os.path.join(args.work, "generation")
    if run("flow") and not os.path.exists(flow_path):
        ae = AutoencoderDC.from_pretrained(ae_path).eval()
        model = Qwen2VLForConditionalGeneration.from_pretrained(vlm_path).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            latents = torch.cat([autoencoder.encode(ae, autoencoder.to_pixels(imgs[i:i + 256]))
                                 for i in range(0, len(imgs), 256)])
        t = time.time()
        cfg, replica = train_flow(tok, model, latents, scenes, ae.config.scaling_factor, S.SEED + 3, S.FLOW_STEPS)
        times["flow"] = time.time() - t
        os.makedirs(flow_path + ".tmp", exist_ok=True)
        cfg.save(os.path.join(flow_path + ".tmp", "config.json"))
        save_file({k: v.contiguous() for k, v in replica.state_dict().items()},
                  os.path.join(flow_path + ".tmp", "model.safetensors"))
        os.rename(flow_path + ".tmp", flow_path)
    if run("assemble"):
        ae = AutoencoderDC.from_pretrained(ae_path).eval()
        model = Qwen2VLForConditionalGeneration.from_pretrained(vlm_path).eval()
        cfg = GenerationConfig.load(os.path.join(flow_path, "config.json"))
        cfg.guidance_scale = S.GUIDANCE  # a sampling default, chosen after training (demo_spec)
        replica = Replica(cfg)
        replica.load_state_dict(load_file(os.path.join(flow_path, "model.safetensors")))
        checkpoint.save(args.out, model, tok, processor, cfg, replica, ae, dtype=torch.float16)
        log(f"checkpoint written to {args.out}")
    log("stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
