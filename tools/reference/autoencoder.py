"""The image autoencoder: diffusers' AutoencoderDC (DC-AE), tiny configs for fixtures and the demo.

This module owns the DC-AE configurations and the pixel <-> latent conventions (images in [-1, 1],
latents multiplied by scaling_factor before the flow sees them). It must not train.
"""

import numpy as np
import torch
from diffusers import AutoencoderDC


def tiny_dcae(latent_channels: int, widths: tuple, scaling_factor: float = 1.0) -> AutoencoderDC:
    """A ResBlock-only DC-AE; downsampling factor 2**(len(widths) - 1)."""
    n = len(widths)
    return AutoencoderDC(
        in_channels=3,
        latent_channels=latent_channels,
        attention_head_dim=8,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_block_out_channels=tuple(widths),
        decoder_block_out_channels=tuple(widths),
        encoder_layers_per_block=(1,) * n,
        decoder_layers_per_block=(1,) * n,
        encoder_qkv_multiscales=((),) * n,
        decoder_qkv_multiscales=((),) * n,
        upsample_block_type="interpolate",
        downsample_block_type="Conv",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=scaling_factor,
    ).eval()


def to_pixels(image_u8: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    x = torch.as_tensor(image_u8).float().permute(0, 3, 1, 2)
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3] (round to nearest)."""
    x = ((x.clamp(-1, 1) + 1.0) * 127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).numpy()


@torch.no_grad()
def encode(ae: AutoencoderDC, pixels: torch.Tensor) -> torch.Tensor:
    return ae.encode(pixels).latent * ae.config.scaling_factor


@torch.no_grad()
def decode(ae: AutoencoderDC, latent: torch.Tensor) -> torch.Tensor:
    """MODEL.md §6: decode(x / scaling_factor), clamp to [-1, 1]."""
    return ae.decode(latent / ae.config.scaling_factor).sample.clamp(-1.0, 1.0)
