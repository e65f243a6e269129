"""Rotary position embedding for the replica: M-RoPE (Qwen2-VL) and the positions of image tokens.

This module owns the angle computation and the image-token position rule (switch `img_pos`). It must match
transformers' Qwen2-VL text rotary exactly (rotate-half layout, sections of the head_dim/2 frequencies taken
from the t, h, w position components in turn).
"""

import torch


def inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def mrope_cos_sin(pos: torch.Tensor, head_dim: int, theta: float, section: list):
    """pos [B, 3, N] (t, h, w) -> cos, sin [B, N, head_dim]."""
    freqs = inv_freq(head_dim, theta).to(pos.device)  # [dh/2]
    ang = pos.float()[..., None] * freqs  # [B, 3, N, dh/2]
    comp = torch.cat([torch.full((s,), i, dtype=torch.long) for i, s in enumerate(section)]).to(pos.device)
    ang = ang.permute(0, 2, 3, 1)  # [B, N, dh/2, 3]
    ang = torch.gather(ang, 3, comp.view(1, 1, -1, 1).expand(ang.shape[0], ang.shape[1], -1, 1))[..., 0]
    emb = torch.cat([ang, ang], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, N, dh]; cos/sin [B, N, dh]."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def image_positions(start: torch.Tensor, grid: int, img_pos: str) -> torch.Tensor:
    """Position ids [B, 3, grid*grid] of image tokens (row-major) placed after a prompt.

    start [B]: the first position after the prompt (max prompt position + 1; 0 for an empty prompt).
    mrope2d: (t, h, w) = (start, start + row, start + col), as Qwen2-VL places an image.
    rope1d: all three components = start + token index.
    """
    idx = torch.arange(grid * grid, device=start.device)
    row, col = idx // grid, idx % grid
    s = start.view(-1, 1)
    if img_pos == "mrope2d":
        t = s.expand(-1, grid * grid)
        return torch.stack([t, s + row, s + col], dim=1)
    if img_pos == "rope1d":
        p = s + idx
        return torch.stack([p, p, p], dim=1)
    raise ValueError(img_pos)
