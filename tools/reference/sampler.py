"""Flow sampling with layerwise timestep experts (MODEL.md §3, §6): Euler or Heun, CFG, dense mode.

This module owns the timestep schedule, the timestep -> group -> layers choice, guidance and the update
rule. It must not know how a layer computes (replica.py) nor where prompt K/V come from (vlm.py).
"""

import torch

from gen_config import GenerationConfig
from replica import PromptContext, Replica


def timesteps(steps: int, shift: float) -> list:
    """t_0 = 0 (noise) ... t_steps = 1 (data), uniform then shifted.

    The shift acts on the noise level sigma = 1 - t as in SD3: sigma' = s sigma / (1 + (s - 1) sigma), so
    s > 1 spends more steps at high noise; s = 1 is the identity. Computed in f64, used as f32.
    """
    out = []
    for i in range(steps + 1):
        sigma = 1.0 - i / steps
        sigma = shift * sigma / (1.0 + (shift - 1.0) * sigma)
        out.append(1.0 - sigma)
    return out


def step_layers(cfg: GenerationConfig, t: float, dense: bool):
    g = cfg.group_of(t)
    layers = range(cfg.num_layers) if dense else cfg.layers_of(g)
    return g, layers


@torch.no_grad()
def guided_velocity(replica: Replica, x, t: float, cond: PromptContext, uncond, scale: float, dense: bool,
                    record=None):
    """v = v_u + s (v_c - v_u); with s == 1 or no unconditional context, v = v_c (one pass)."""
    cfg = replica.cfg
    g, layers = step_layers(cfg, t, dense)
    tt = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
    trace_c = [] if record is not None else None
    v_c = replica.velocity(x, tt, cond, layers, g, trace_c)
    if uncond is None or scale == 1.0:
        v_u, v = None, v_c
    else:
        v_u = replica.velocity(x, tt, uncond, layers, g)
        v = v_u + scale * (v_c - v_u)
    if record is not None:
        record.append({"t": t, "group": g, "v_cond": v_c, "v_uncond": v_u, "v": v, "trace": trace_c})
    return v


@torch.no_grad()
def sample(replica: Replica, noise, cond: PromptContext, uncond=None, steps=None, scale=None,
           method: str = "euler", dense: bool = False, record=None):
    """Integrate dx/dt = v from t = 0 (x = noise) to t = 1. Returns the final latent [B, C, H, W].

    Heun: x' = x + dt v(x, t_i); x_{i+1} = x + dt (v(x, t_i) + v(x', t_{i+1})) / 2 (every step), where
    the corrector uses the group that owns t_{i+1}.
    record: optional list; receives one dict per velocity evaluation (see guided_velocity).
    """
    cfg = replica.cfg
    steps = steps or cfg.num_steps
    scale = cfg.guidance_scale if scale is None else scale
    ts = timesteps(steps, cfg.time_shift)
    x = noise.clone()
    for i in range(steps):
        t0, t1 = ts[i], ts[i + 1]
        dt = t1 - t0
        v0 = guided_velocity(replica, x, t0, cond, uncond, scale, dense, record)
        if method == "euler":
            x = x + dt * v0
        elif method == "heun":
            x1 = x + dt * v0
            v1 = guided_velocity(replica, x1, t1, cond, uncond, scale, dense, record)
            x = x + dt * 0.5 * (v0 + v1)
        else:
            raise ValueError(method)
    return x
