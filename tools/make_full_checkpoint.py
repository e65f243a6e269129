#!/usr/bin/env python3
"""Writes a LaTtE-Flow checkpoint directory with the paper's full shapes (Qwen2-VL-2B, a 28-layer
replica in 4 groups of 7, a DC-AE f32c32 decoder and encoder stub) in the layout of
tools/reference/README.md, for measuring `latte convert`'s peak memory and time.

usage: make_full_checkpoint.py OUT_DIR [--dtype F16|BF16|F32] [--shards N]

Weights are a 16 MiB block of seeded random numbers tiled over every tensor (realistic for the
quantizers, cheap to write); tokenizer files come from the tiny reference fixture (its ids all lie
below the real vocabulary size). Writes about 7.3 GB for F16.
"""
import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/reference/base/checkpoint"
V, D, F, L, H, KV, DH = 151936, 1536, 8960, 28, 12, 2, 128
E, DEPTH, RATIO = 1280, 32, 4
C, FT = 32, 256


def vlm_tensors():
    q, kv = H * DH, KV * DH
    yield "model.embed_tokens.weight", [V, D]
    for n in range(L):
        p = f"model.layers.{n}"
        yield f"{p}.input_layernorm.weight", [D]
        yield f"{p}.post_attention_layernorm.weight", [D]
        for proj, rows in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)]:
            yield f"{p}.self_attn.{proj}.weight", [rows, D]
            yield f"{p}.self_attn.{proj}.bias", [rows]
        yield f"{p}.self_attn.o_proj.weight", [D, q]
        yield f"{p}.mlp.gate_proj.weight", [F, D]
        yield f"{p}.mlp.up_proj.weight", [F, D]
        yield f"{p}.mlp.down_proj.weight", [D, F]
    yield "model.norm.weight", [D]
    yield "visual.patch_embed.proj.weight", [E, 3, 2, 14, 14]
    for n in range(DEPTH):
        p = f"visual.blocks.{n}"
        for norm in ["norm1", "norm2"]:
            yield f"{p}.{norm}.weight", [E]
            yield f"{p}.{norm}.bias", [E]
        yield f"{p}.attn.qkv.weight", [3 * E, E]
        yield f"{p}.attn.qkv.bias", [3 * E]
        yield f"{p}.attn.proj.weight", [E, E]
        yield f"{p}.attn.proj.bias", [E]
        yield f"{p}.mlp.fc1.weight", [E * RATIO, E]
        yield f"{p}.mlp.fc1.bias", [E * RATIO]
        yield f"{p}.mlp.fc2.weight", [E, E * RATIO]
        yield f"{p}.mlp.fc2.bias", [E]
    yield "visual.merger.ln_q.weight", [E]
    yield "visual.merger.ln_q.bias", [E]
    yield "visual.merger.mlp.0.weight", [4 * E, 4 * E]
    yield "visual.merger.mlp.0.bias", [4 * E]
    yield "visual.merger.mlp.2.weight", [D, 4 * E]
    yield "visual.merger.mlp.2.bias", [D]


def gen_tensors():
    q, kv = H * DH, KV * DH
    for l in range(L):
        p = f"layers.{l}"
        for n in ["input_norm", "attn_out_norm", "ffn_norm", "ffn_out_norm"]:
            yield f"{p}.{n}.weight", [D]
        for proj, rows in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)]:
            yield f"{p}.{proj}.weight", [rows, D]
            yield f"{p}.{proj}.bias", [rows]
        yield f"{p}.o_proj.weight", [D, q]
        yield f"{p}.gate_proj.weight", [F, D]
        yield f"{p}.up_proj.weight", [F, D]
        yield f"{p}.down_proj.weight", [D, F]
        yield f"{p}.modulation.weight", [4 * D, D]
        yield f"{p}.modulation.bias", [4 * D]
        yield f"{p}.tcra_gate.weight", [H, D]
        yield f"{p}.tcra_gate.bias", [H]
    yield "patch_embed.weight", [D, C]
    yield "patch_embed.bias", [D]
    yield "time_embed.linear_1.weight", [D, FT]
    yield "time_embed.linear_1.bias", [D]
    yield "time_embed.linear_2.weight", [D, D]
    yield "time_embed.linear_2.bias", [D]
    yield "image_head.norm.weight", [D]
    yield "image_head.proj.weight", [C, D]
    yield "image_head.proj.bias", [C]


def dcae_tensors():
    """diffusers AutoencoderDC f32c32 decoder layout (as in src/convert/synthetic.rs) plus one encoder tensor."""
    widths, per_block = [128, 256, 512, 512, 1024, 1024], [3] * 6
    yield "encoder.conv_in.weight", [128, 3, 3, 3]
    yield "decoder.conv_in.weight", [1024, C, 3, 3]
    yield "decoder.conv_in.bias", [1024]
    for i, (c, n) in enumerate(zip(widths, per_block)):
        p = f"decoder.up_blocks.{i}"
        j = 0
        if i + 1 < len(widths):
            yield f"{p}.0.conv.weight", [c, widths[i + 1], 3, 3]
            yield f"{p}.0.conv.bias", [c]
            j = 1
        for b in range(j, j + n):
            q = f"{p}.{b}"
            if i < 3:
                yield f"{q}.conv1.weight", [c, c, 3, 3]
                yield f"{q}.conv1.bias", [c]
                yield f"{q}.conv2.weight", [c, c, 3, 3]
                yield f"{q}.norm.weight", [c]
                yield f"{q}.norm.bias", [c]
            else:
                for proj in ["to_q", "to_k", "to_v"]:
                    yield f"{q}.attn.{proj}.weight", [c, c]
                yield f"{q}.attn.to_qkv_multiscale.0.proj_in.weight", [3 * c, 1, 5, 5]
                yield f"{q}.attn.to_qkv_multiscale.0.proj_out.weight", [3 * c, 32, 1, 1]
                yield f"{q}.attn.to_out.weight", [c, 2 * c]
                yield f"{q}.attn.norm_out.weight", [c]
                yield f"{q}.attn.norm_out.bias", [c]
                yield f"{q}.conv_out.conv_inverted.weight", [8 * c, c, 1, 1]
                yield f"{q}.conv_out.conv_inverted.bias", [8 * c]
                yield f"{q}.conv_out.conv_depth.weight", [8 * c, 1, 3, 3]
                yield f"{q}.conv_out.conv_depth.bias", [8 * c]
                yield f"{q}.conv_out.conv_point.weight", [c, 4 * c, 1, 1]
                yield f"{q}.conv_out.norm.weight", [c]
                yield f"{q}.conv_out.norm.bias", [c]
    yield "decoder.norm_out.weight", [128]
    yield "decoder.norm_out.bias", [128]
    yield "decoder.conv_out.weight", [3, 128, 3, 3]
    yield "decoder.conv_out.bias", [3]


def write_safetensors(path, tensors, dtype, block):
    size = {"F16": 2, "BF16": 2, "F32": 4}[dtype]
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * size
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in tensors:
            left = int(np.prod(shape)) * size
            while left:
                k = min(left, len(block))
                f.write(block[:k])
                left -= k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dtype", default="F16")
    args = ap.parse_args()
    out = Path(args.out)
    (out / "generation").mkdir(parents=True, exist_ok=True)
    (out / "autoencoder").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(4 << 20) * 0.02).astype(np.float32)
    if args.dtype == "F16":
        block = values.astype(np.float16).tobytes()
    elif args.dtype == "BF16":
        block = (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    else:
        block = values.tobytes()
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json",
              "generation_config.json"]:
        shutil.copy(FIXTURE / f, out / f)
    cfg = json.loads((FIXTURE / "config.json").read_text())
    cfg["text_config"].update(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                              num_attention_heads=H, num_key_value_heads=KV, max_position_embeddings=32768,
                              layer_types=["full_attention"] * L)
    cfg["text_config"]["rope_parameters"].update(mrope_section=[16, 24, 24], rope_theta=1000000.0)
    cfg["vision_config"].update(depth=DEPTH, embed_dim=E, num_heads=16, mlp_ratio=RATIO, hidden_size=D)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    gen = json.loads((FIXTURE / "generation/config.json").read_text())
    gen.update(num_layers=L, hidden_size=D, num_attention_heads=H, num_key_value_heads=KV, head_dim=DH,
               intermediate_size=F, rope_theta=1000000.0, mrope_section=[16, 24, 24], num_groups=4,
               group_boundaries=[0.0, 0.25, 0.5, 0.75, 1.0], latent_channels=C, latent_size=8, patch_size=1,
               scaling_factor=0.41407, image_size=256, time_freq_dim=FT, num_steps=40, guidance_scale=4.0)
    (out / "generation/config.json").write_text(json.dumps(gen, indent=2))
    ae = json.loads((FIXTURE / "autoencoder/config.json").read_text())
    ae.update(latent_channels=C, scaling_factor=0.41407,
              decoder_block_out_channels=[128, 256, 512, 512, 1024, 1024])
    (out / "autoencoder/config.json").write_text(json.dumps(ae, indent=2))
    write_safetensors(out / "model.safetensors", list(vlm_tensors()), args.dtype, block)
    write_safetensors(out / "generation/model.safetensors", list(gen_tensors()), args.dtype, block)
    write_safetensors(out / "autoencoder/diffusion_pytorch_model.safetensors", list(dcae_tensors()), args.dtype, block)


if __name__ == "__main__":
    main()
