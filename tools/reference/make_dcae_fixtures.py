"""Deterministic DC-AE decoder fixtures for the Rust engine: tiny diffusers `AutoencoderDC` models that
exercise what the reference fixtures' ResBlock-only autoencoder does not.

    /work/wt/reference/.venv/bin/python tools/reference/make_dcae_fixtures.py [--out tests/fixtures/dcae]

Writes, per configuration, `<name>/autoencoder/` (`config.json` + `diffusion_pytorch_model.safetensors`,
as diffusers' `save_pretrained` writes them, f32) and `<name>/tensors.safetensors` with pairs
`latent.{i}` [C, h, w] -> `image.{i}` [3, H, W] = `AutoencoderDC.decode(latent).sample` (no scaling, no
clamp), plus `manifest.json` describing both. Every parameter and buffer is seeded random (norm weights
near 1, batch-norm running variances positive), so no layer is an identity. This module owns the
fixture contents; the model math is diffusers'. Re-running it reproduces the same bytes on the same
software (torch CPU, one thread).
"""

import argparse
import json
import os
import shutil

import torch
from diffusers import AutoencoderDC
from safetensors.torch import save_file

LATENT = 4
CONFIGS = {
    # EfficientViT stages with one and two multi-scale branches, pixel-shuffle up-sampling with its
    # channel-repeat shortcuts, the decoder's input shortcut, and stage 0 without layers, so conv_out
    # is a pixel-shuffle up-block without shortcut. The 2x2 latent takes diffusers' quadratic
    # attention path (H*W <= head_dim) in the narrowest stage.
    "vit_shuffle": dict(
        doc="EfficientViT (qkv multiscales [5] and [3, 5]), pixel_shuffle up-sampling with shortcuts, "
            "in_shortcut, layers_per_block[0] = 0 (conv_out is a DCUpBlock2d), rms_norm, silu",
        decoder=dict(
            decoder_block_types=["ResBlock", "EfficientViTBlock", "EfficientViTBlock"],
            decoder_block_out_channels=[8, 16, 16],
            decoder_layers_per_block=[0, 1, 2],
            decoder_qkv_multiscales=[[], [5], [3, 5]],
            upsample_block_type="pixel_shuffle",
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
            decoder_in_shortcut=True,
            decoder_conv_act_fn="relu",
        ),
        latents=[(5, 3), (2, 2)],
    ),
    # Batch norm everywhere (ResBlocks and the attention's norm_out), other activations per stage
    # (mish, gelu, and none), interpolate up-sampling, no input shortcut, silu before conv_out.
    "batchnorm_acts": dict(
        doc="batch_norm, per-stage act_fns [mish, gelu, null], interpolate, no in_shortcut, conv_act silu, "
            "EfficientViT in the last stage",
        decoder=dict(
            decoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock"],
            decoder_block_out_channels=[8, 16, 16],
            decoder_layers_per_block=[1, 2, 1],
            decoder_qkv_multiscales=[[], [], [3]],
            upsample_block_type="interpolate",
            decoder_norm_types="batch_norm",
            decoder_act_fns=["mish", "gelu", None],
            decoder_in_shortcut=False,
            decoder_conv_act_fn="silu",
        ),
        latents=[(4, 4)],
    ),
    # Interpolate with stage 0 empty: conv_out is an interpolate up-block without shortcut.
    "interpolate_out": dict(
        doc="ResBlocks, interpolate, layers_per_block[0] = 0 (conv_out is an interpolate DCUpBlock2d), "
            "relu blocks, conv_act gelu",
        decoder=dict(
            decoder_block_types="ResBlock",
            decoder_block_out_channels=[8, 16],
            decoder_layers_per_block=[0, 2],
            decoder_qkv_multiscales=[[], []],
            upsample_block_type="interpolate",
            decoder_norm_types="rms_norm",
            decoder_act_fns="relu",
            decoder_in_shortcut=True,
            decoder_conv_act_fn="gelu",
        ),
        latents=[(3, 4)],
    ),
}


def build(decoder: dict, seed: int) -> AutoencoderDC:
    n = len(decoder["decoder_block_out_channels"])
    torch.manual_seed(seed)
    # The encoder is the smallest valid one: the engine never reads it.
    ae = AutoencoderDC(
        in_channels=3,
        latent_channels=LATENT,
        attention_head_dim=8,
        encoder_block_types="ResBlock",
        encoder_block_out_channels=[LATENT] * n,
        encoder_layers_per_block=[1] * n,
        encoder_qkv_multiscales=[[]] * n,
        downsample_block_type="Conv",
        scaling_factor=1.25,
        **decoder,
    ).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in list(ae.named_parameters()) + list(ae.named_buffers()):
            if not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            noise = torch.randn(t.shape, generator=g)
            if leaf == "running_var":
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif leaf == "running_mean":
                t.copy_(0.2 * noise)
            elif t.dim() == 1 and leaf == "weight":  # norm scales
                t.copy_(1.0 + 0.2 * noise)
            elif t.dim() == 1:  # biases
                t.copy_(0.1 * noise)
            else:  # convolution and linear weights: variance-preserving
                fan_in = t[0].numel()
                t.copy_(noise / fan_in**0.5)
    return ae


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/dcae")
    args = ap.parse_args()
    torch.set_num_threads(1)
    manifest = {}
    for seed, (name, spec) in enumerate(sorted(CONFIGS.items())):
        ae = build(spec["decoder"], 100 + seed)
        out = os.path.join(args.out, name)
        shutil.rmtree(out, ignore_errors=True)
        ae.save_pretrained(os.path.join(out, "autoencoder"), safe_serialization=True)
        g = torch.Generator().manual_seed(200 + seed)
        tensors, entries = {}, {}
        for i, (h, w) in enumerate(spec["latents"]):
            latent = torch.randn((1, LATENT, h, w), generator=g)
            with torch.no_grad():
                image = ae.decode(latent).sample
            tensors[f"latent.{i}"] = latent[0].contiguous()
            tensors[f"image.{i}"] = image[0].contiguous()
            entries[f"latent.{i}"] = dict(shape=list(latent.shape[1:]), what="decoder input [C, h, w]")
            entries[f"image.{i}"] = dict(shape=list(image.shape[1:]),
                                         what=f"AutoencoderDC.decode(latent.{i}).sample [3, H, W], unclamped")
        save_file(tensors, os.path.join(out, "tensors.safetensors"))
        manifest[name] = dict(doc=spec["doc"], tensors=entries)
        print(name, {k: list(v.shape) for k, v in tensors.items()})
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
