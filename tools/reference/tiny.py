"""Tiny, randomly initialised models for tests and fixtures (no training, deterministic from a seed).

This module owns the tiny shapes and the "every weight non-trivial" initialisation (zero-initialised gates
and modulations would hide bugs). It must not be used for the demo model.
"""

import torch

import autoencoder
import tokenizer_bpe
import vlm as vlm_mod
from gen_config import GenerationConfig, uniform_boundaries
from replica import Replica

TEXT = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
VISION = dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2)
LATENT_CHANNELS = 4
AE_WIDTHS = (8, 16, 16)  # f4: a 16x16 image <-> 4x4 latent
IMAGE_SIZE = 16
PIXELS = 56 * 56


def tokenizer():
    return tokenizer_bpe.train_bpe(tokenizer_bpe.corpus() * 3, 300)


def make_vlm(tok, tie: bool, seed: int, layers: int = 4):
    torch.manual_seed(seed)
    text = dict(TEXT, vocab_size=len(tok), num_hidden_layers=layers, pad_token_id=tok.pad_token_id,
                bos_token_id=None, eos_token_id=tok.eos_token_id)
    vision = dict(VISION, hidden_size=TEXT["hidden_size"])
    return vlm_mod.build_vlm(text, vision, tokenizer_bpe.special_ids(tok), tie)


def gen_config(layers: int = 4, groups: int = 2, **switches) -> GenerationConfig:
    t = TEXT
    base = dict(
        num_layers=layers, hidden_size=t["hidden_size"], num_attention_heads=t["num_attention_heads"],
        num_key_value_heads=t["num_key_value_heads"], head_dim=t["hidden_size"] // t["num_attention_heads"],
        intermediate_size=t["intermediate_size"], rms_norm_eps=t["rms_norm_eps"],
        rope_theta=t["rope_parameters"]["rope_theta"], mrope_section=list(t["rope_parameters"]["mrope_section"]),
        num_groups=groups, group_boundaries=uniform_boundaries(groups), latent_channels=LATENT_CHANNELS,
        latent_size=IMAGE_SIZE // 2 ** (len(AE_WIDTHS) - 1), image_size=IMAGE_SIZE, num_steps=8,
        guidance_scale=3.0, time_freq_dim=32, scaling_factor=1.5,
    )
    base.update(switches)
    cfg = GenerationConfig(**base)
    cfg.validate()
    return cfg


def randomize(module: torch.nn.Module, seed: int, std: float = 0.2):
    """Every parameter random: norms around 1, everything else N(0, std)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("norm.weight") or ".norm." in name:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(std * noise)
    return module


def make_replica(cfg: GenerationConfig, seed: int) -> Replica:
    return randomize(Replica(cfg), seed).eval()


def make_ae(seed: int):
    torch.manual_seed(seed)
    return autoencoder.tiny_dcae(LATENT_CHANNELS, AE_WIDTHS, scaling_factor=1.5)


def processor():
    return vlm_mod.image_processor(PIXELS, 28 * 28 * 64)
