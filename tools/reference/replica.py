"""The LaTtE-Flow generation replica (MODEL.md §3-§5): replica blocks, TCRA, time embedding and the ends.

This module owns the velocity network v(x_t, t | prompt K/V) for any list of layers. It must not run the frozen
VLM (vlm.py computes prompt context) nor choose timesteps or groups (sampler.py does).
Tensor names (README.md) come straight from this module's structure.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from gen_config import GenerationConfig
from rope import apply_rope, image_positions, mrope_cos_sin


class RMSNorm(nn.Module):
    """Qwen2 RMSNorm: computed in f32, weight applied after normalising."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t [B] in [0, 1] -> [B, dim]: cat(cos, sin) of (1000 t) * 10000^(-i / (dim/2)), i < dim/2 (DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbed(nn.Module):
    def __init__(self, freq_dim: int, dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.linear_1 = nn.Linear(freq_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t):
        return self.linear_2(F.silu(self.linear_1(sinusoidal(t, self.freq_dim))))


class ImageHead(nn.Module):
    def __init__(self, dim: int, out: int, eps: float):
        super().__init__()
        self.norm = RMSNorm(dim, eps)
        self.proj = nn.Linear(dim, out)

    def forward(self, h):
        return self.proj(self.norm(h))


class Ends(nn.Module):
    """Patch embedding, time embedding and image head of one group (per_group_head) or of all groups."""

    def __init__(self, cfg: GenerationConfig):
        super().__init__()
        self.patch_embed = nn.Linear(cfg.token_dim, cfg.hidden_size)
        self.time_embed = TimeEmbed(cfg.time_freq_dim, cfg.hidden_size)
        self.image_head = ImageHead(cfg.hidden_size, cfg.token_dim, cfg.rms_norm_eps)


class ReplicaLayer(nn.Module):
    """One replica block (MODEL.md §4): sandwich-normed attention and SwiGLU, gated by the timestep."""

    def __init__(self, cfg: GenerationConfig):
        super().__init__()
        d, h, kv, dh, f = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            cfg.intermediate_size,
        )
        eps = cfg.rms_norm_eps
        self.cfg = cfg
        self.input_norm = RMSNorm(d, eps)
        self.q_proj = nn.Linear(d, h * dh)
        self.k_proj = nn.Linear(d, kv * dh)
        self.v_proj = nn.Linear(d, kv * dh)
        self.o_proj = nn.Linear(h * dh, d, bias=False)
        self.attn_out_norm = RMSNorm(d, eps)
        self.ffn_norm = RMSNorm(d, eps)
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)
        self.ffn_out_norm = RMSNorm(d, eps)
        self.modulation = nn.Linear(d, 4 * d)  # on SiLU(e): [a_attn, shift_ffn, scale_ffn, a_ffn]
        self.tcra_gate = nn.Linear(d, h)  # on e: g(t) = tanh(W e + b), one gate per query head
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        nn.init.zeros_(self.tcra_gate.weight)
        nn.init.zeros_(self.tcra_gate.bias)

    def heads(self, x, proj, n_heads):
        b, n, _ = x.shape
        return proj(x).view(b, n, n_heads, self.cfg.head_dim).transpose(1, 2)

    def context_kv(self, normed_ctx, ctx_pos):
        """ctx_kv = replica: this layer's K/V projections of the frozen layer's normed prompt input."""
        cfg = self.cfg
        cos, sin = mrope_cos_sin(ctx_pos, cfg.head_dim, cfg.rope_theta, cfg.mrope_section)
        k = apply_rope(self.heads(normed_ctx, self.k_proj, cfg.num_key_value_heads), cos, sin)
        v = self.heads(normed_ctx, self.v_proj, cfg.num_key_value_heads)
        return k, v

    def forward(self, h, e, ctx_k, ctx_v, ctx_mask, cos, sin, prev_block):
        """h [B,N,D]; e [B,D]; ctx_k/v [B,KV,P,dh]; ctx_mask [B,P] (True = real token).

        prev_block: the previous layer's image-image block [B,H,N,N] or None (first layer of a group).
        Returns (h, block) where block is what the next layer's TCRA adds (scores for pre_softmax,
        probabilities for post_softmax, None for none).
        """
        cfg = self.cfg
        b, n, _ = h.shape
        p = ctx_k.shape[2]
        a_attn, shift_ffn, scale_ffn, a_ffn = self.modulation(F.silu(e)).chunk(4, dim=-1)
        gate = torch.tanh(self.tcra_gate(e))  # [B, H]

        x = self.input_norm(h)
        q = apply_rope(self.heads(x, self.q_proj, cfg.num_attention_heads), cos, sin)
        k = apply_rope(self.heads(x, self.k_proj, cfg.num_key_value_heads), cos, sin)
        v = self.heads(x, self.v_proj, cfg.num_key_value_heads)
        k = torch.cat([ctx_k, k], dim=2)
        v = torch.cat([ctx_v, v], dim=2)
        rep = cfg.num_attention_heads // cfg.num_key_value_heads
        k = k.repeat_interleave(rep, dim=1)  # query head j uses KV head j // rep (Qwen2 repeat_kv)
        v = v.repeat_interleave(rep, dim=1)

        s = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.head_dim)  # [B, H, N, P+N]
        key_ok = torch.cat([ctx_mask, torch.ones(b, n, dtype=torch.bool, device=h.device)], dim=1)
        s = s.masked_fill(~key_ok[:, None, None, :], float("-inf"))
        block = None
        if cfg.tcra == "pre_softmax":
            if prev_block is not None:
                img = s[..., p:] + gate[:, :, None, None] * prev_block
                s = torch.cat([s[..., :p], img], dim=-1)
            block = s[..., p:]
            probs = torch.softmax(s, dim=-1)
        elif cfg.tcra == "post_softmax":
            probs = torch.softmax(s, dim=-1)
            if prev_block is not None:
                img = probs[..., p:] + gate[:, :, None, None] * prev_block
                probs = torch.cat([probs[..., :p], img], dim=-1)
                probs = probs / probs.sum(-1, keepdim=True)
            block = probs[..., p:]
        else:
            probs = torch.softmax(s, dim=-1)
        attn = (probs @ v).transpose(1, 2).reshape(b, n, -1)
        h = h + torch.tanh(a_attn)[:, None] * self.attn_out_norm(self.o_proj(attn))

        x = self.ffn_norm(h) * (1 + scale_ffn[:, None]) + shift_ffn[:, None]
        ffn = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        h = h + torch.tanh(a_ffn)[:, None] * self.ffn_out_norm(ffn)
        return h, block


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), C*p*p]; tokens row-major, features ordered (c, py, px)."""
    b, c, hh, ww = x.shape
    x = x.view(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (hh // p) * (ww // p), c * p * p)


def unpatchify(tokens: torch.Tensor, c: int, size: int, p: int) -> torch.Tensor:
    b = tokens.shape[0]
    g = size // p
    x = tokens.view(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, size, size)


class PromptContext:
    """Per-layer prompt K/V (RoPE applied) for a batch of prompts, plus where image positions start.

    Holds what MODEL.md §2 says to compute once per prompt. For ctx_kv = frozen, k/v come from the VLM's
    cache; for ctx_kv = replica, from `Replica.bind_context` applied to the VLM's normed layer inputs.
    """

    def __init__(self, k: list, v: list, mask: torch.Tensor, start: torch.Tensor):
        self.k, self.v, self.mask, self.start = k, v, mask, start

    def select(self, idx):
        return PromptContext(
            [x[idx] for x in self.k], [x[idx] for x in self.v], self.mask[idx], self.start[idx]
        )


class Replica(nn.Module):
    def __init__(self, cfg: GenerationConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.layers = nn.ModuleList([ReplicaLayer(cfg) for _ in range(cfg.num_layers)])
        if cfg.per_group_head:
            self.groups = nn.ModuleList([Ends(cfg) for _ in range(cfg.num_groups)])
        else:
            shared = Ends(cfg)
            self.patch_embed = shared.patch_embed
            self.time_embed = shared.time_embed
            self.image_head = shared.image_head

    def ends(self, group: int):
        return self.groups[group] if self.cfg.per_group_head else self

    def bind_context(self, vlm_ctx) -> PromptContext:
        """Turn the frozen VLM's prompt outputs (vlm.VlmPromptOutputs) into per-layer K/V (switch ctx_kv)."""
        if self.cfg.ctx_kv == "frozen":
            return PromptContext(vlm_ctx.cache_k, vlm_ctx.cache_v, vlm_ctx.mask, vlm_ctx.start)
        ks, vs = [], []
        for layer, normed in zip(self.layers, vlm_ctx.normed_inputs):
            k, v = layer.context_kv(normed, vlm_ctx.positions)
            ks.append(k)
            vs.append(v)
        return PromptContext(ks, vs, vlm_ctx.mask, vlm_ctx.start)

    def velocity(self, x, t, ctx: PromptContext, layers, group: int, trace=None):
        """v(x_t, t): x [B, C, H, W] latent, t [B]; runs `layers` (indices, in order); `group` picks the ends.

        TCRA residual resets at the first layer of each group (l % M == 0).
        trace: optional list that receives dicts {layer, hidden, block} for each layer run.
        """
        cfg = self.cfg
        ends = self.ends(group)
        h = ends.patch_embed(patchify(x, cfg.patch_size))
        e = ends.time_embed(t)
        pos = image_positions(ctx.start, cfg.grid, cfg.img_pos)
        cos, sin = mrope_cos_sin(pos, cfg.head_dim, cfg.rope_theta, cfg.mrope_section)
        block = None
        for li in layers:
            prev = block if li % cfg.layers_per_group != 0 else None
            h, block = self.layers[li](h, e, ctx.k[li], ctx.v[li], ctx.mask, cos, sin, prev)
            if trace is not None:
                trace.append({"layer": li, "hidden": h.detach().clone(), "block": block})
        v = ends.image_head(h)
        return unpatchify(v, cfg.latent_channels, cfg.latent_size, cfg.patch_size)
