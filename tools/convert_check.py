#!/usr/bin/env python3
"""Independent check of `latte convert` output with gguf-py and numpy (no latte code).

usage: convert_check.py CHECKPOINT_DIR OUT.gguf

For an F32 output every tensor must equal its checkpoint source exactly, through a mapping written
here from tools/reference/README.md and llama.cpp's names (not from latte's tables); for other
types the names, shapes and metadata are checked. Also: every expert group is contiguous and
starts on a 16 KiB boundary, tensors are packed back to back (llama.cpp's rule), and every
checkpoint tensor (but the DC-AE encoder and a tied lm_head) appears in the output.
"""
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader

DT = {"F32": np.float32, "F16": np.float16, "BF16": None}


def load_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        buf = data[b:end]
        if e["dtype"] == "BF16":
            a = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(buf, DT[e["dtype"]]).astype(np.float32)
        out[name] = a.reshape(e["shape"])
    return out


def load_set(d, stem):
    index = d / f"{stem}.safetensors.index.json"
    if index.exists():
        out = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            out.update(load_safetensors(d / shard))
        return out
    return load_safetensors(d / f"{stem}.safetensors")


def expected_tensors(ckpt):
    """GGUF name -> numpy array (torch order), and the set of source names used."""
    vlm = {re.sub(r"^model\.language_model\.", "model.", re.sub(r"^model\.visual\.", "visual.", k)): v
           for k, v in load_set(ckpt, "model").items()}
    out, used = {}, set()

    def take(src, dst, value=None):
        used.add(src)
        out[dst] = vlm[src] if value is None else value

    text = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
            "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
            "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down"}
    vis = {"norm1": "ln1", "norm2": "ln2", "attn.proj": "attn_out", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}
    for k in list(vlm):
        m = re.match(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)$", k)
        if m:
            take(k, f"blk.{m[1]}.{text[m[2]]}.{m[3]}")
            continue
        m = re.match(r"visual\.blocks\.(\d+)\.(.+)\.(weight|bias)$", k)
        if m and m[2] == "attn.qkv":
            for i, part in enumerate(np.split(vlm[k], 3, axis=0)):
                take(k, f"v.blk.{m[1]}.attn_{'qkv'[i]}.{m[3]}", part)
        elif m:
            take(k, f"v.blk.{m[1]}.{vis[m[2]]}.{m[3]}")
    take("model.embed_tokens.weight", "token_embd.weight")
    take("model.norm.weight", "output_norm.weight")
    if "lm_head.weight" in vlm:
        used.add("lm_head.weight")
        cfg = json.loads((ckpt / "config.json").read_text())
        if not cfg.get("tie_word_embeddings", cfg.get("text_config", {}).get("tie_word_embeddings", False)):
            out["output.weight"] = vlm["lm_head.weight"]
    pe = vlm["visual.patch_embed.proj.weight"]
    used.add("visual.patch_embed.proj.weight")
    for t in range(pe.shape[2]):
        out["v.patch_embd.weight" + (f".{t}" if t else "")] = pe[:, :, t]
    for a, b in [("ln_q", "v.post_ln"), ("mlp.0", "mm.0"), ("mlp.2", "mm.2")]:
        for s in ("weight", "bias"):
            take(f"visual.merger.{a}.{s}", f"{b}.{s}")
    missing = set(vlm) - used
    assert not missing, f"unused VLM tensors: {missing}"

    gdir = ckpt / "generation"
    if gdir.exists():
        gen = load_set(gdir, "model")
        layer = {"input_norm": "attn_norm", "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
                 "o_proj": "attn_output", "attn_out_norm": "attn_post_norm", "ffn_norm": "ffn_norm",
                 "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
                 "ffn_out_norm": "ffn_post_norm", "modulation": "modulation", "tcra_gate": "tcra_gate"}
        ends = {"patch_embed": "patch_embd", "time_embed.linear_1": "time_embd_1",
                "time_embed.linear_2": "time_embd_2", "image_head.norm": "head_norm", "image_head.proj": "head"}
        for k, v in gen.items():
            m = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", k)
            if m:
                out[f"flow.blk.{m[1]}.{layer[m[2]]}.{m[3]}"] = v
                continue
            m = re.match(r"(groups\.(\d+)\.)?(.+)\.(weight|bias)$", k)
            prefix = f"flow.group.{m[2]}." if m[1] else "flow."
            out[f"{prefix}{ends[m[3]]}.{m[4]}"] = v
        for k, v in load_set(ckpt / "autoencoder", "diffusion_pytorch_model").items():
            if k.startswith("decoder."):
                out["dcae." + k[len("decoder."):]] = v
    return out


def main(ckpt, gguf_path):
    ckpt = Path(ckpt)
    r = GGUFReader(gguf_path)
    fields = {f.name for f in r.fields.values()}
    for key in ["general.architecture", "qwen2vl.rope.dimension_sections", "tokenizer.ggml.tokens",
                "tokenizer.chat_template", "clip.vision.image_mean", "clip.vision.image_min_pixels"]:
        assert key in fields, key
    expected = expected_tensors(ckpt)
    got = {t.name: t for t in r.tensors if not t.name.startswith("latte.pad.")}
    assert set(got) == set(expected), (set(got) ^ set(expected))
    exact = 0
    for name, t in got.items():
        want = expected[name]
        assert tuple(int(d) for d in t.shape) == tuple(reversed(want.shape)), (name, t.shape, want.shape)
        if t.tensor_type.name == "F32":
            assert np.array_equal(np.asarray(t.data).reshape(want.shape), want), name
            exact += 1
    # Packed back to back, and groups on 16 KiB boundaries.
    ts = sorted(r.tensors, key=lambda t: t.data_offset)
    for a, b in zip(ts, ts[1:]):
        assert a.data_offset + ((int(a.n_bytes) + 31) // 32 * 32) == b.data_offset, (a.name, b.name)
    groups = {}
    for i, t in enumerate(r.tensors):
        m = re.match(r"flow\.(blk|group)\.(\d+)\.", t.name)
        if m:
            layers = int(r.fields["latte.flow.layer_count"].parts[-1][0])
            k = int(r.fields["latte.flow.group_count"].parts[-1][0])
            g = int(m[2]) // (layers // k) if m[1] == "blk" else int(m[2])
            groups.setdefault(g, []).append(i)
    for g, idx in groups.items():
        assert idx == list(range(idx[0], idx[-1] + 1)), f"group {g} not contiguous"
        assert r.tensors[idx[0]].data_offset % 16384 == 0, f"group {g} not on 16 KiB"
    print(f"ok: {gguf_path}: {len(got)} tensors ({exact} compared exactly), {len(groups)} groups")


if __name__ == "__main__":
    main(*sys.argv[1:3])
