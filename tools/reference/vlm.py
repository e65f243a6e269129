"""The frozen understanding model: a transformers Qwen2-VL, and what generation needs from it.

This module owns building a (tiny) Qwen2-VL from a spec, image preprocessing through transformers' own
processor, understanding prompts and greedy decoding, and the per-layer prompt outputs of MODEL.md §2
(the KV cache, the normed layer inputs, positions). It must not implement any generation math.
"""

from dataclasses import dataclass

import numpy as np
import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

IMAGE_PAD = "<|image_pad|>"


def build_vlm(text: dict, vision: dict, tokens: dict, tie: bool) -> Qwen2VLForConditionalGeneration:
    """text/vision: Qwen2VLTextConfig / Qwen2VLVisionConfig fields; tokens: special token ids."""
    text = dict(text, tie_word_embeddings=tie)
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie, **tokens)
    model = Qwen2VLForConditionalGeneration(cfg)
    return model.eval()


def image_processor(min_pixels: int, max_pixels: int, patch_size: int = 14) -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                                    patch_size=patch_size)


def preprocess(processor, image: np.ndarray):
    """uint8 [H, W, 3] -> (pixel_values [n_patches, 3*2*14*14], image_grid_thw [1, 3]) via transformers."""
    from PIL import Image

    out = processor(images=[Image.fromarray(image)], return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def expand_image_pads(ids: list, image_token_id: int, n_tokens: int) -> list:
    """The chat template writes one <|image_pad|>; the model needs one per merged image token."""
    out = []
    for i in ids:
        out.extend([i] * n_tokens if i == image_token_id else [i])
    return out


def merged_tokens(grid_thw: torch.Tensor, merge: int) -> int:
    return int(grid_thw.prod()) // (merge * merge)


def understanding_ids(tokenizer, question: str, image_token_id: int, n_image_tokens: int) -> list:
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return expand_image_pads(ids, image_token_id, n_image_tokens)


@torch.no_grad()
def logits(model, input_ids, pixel_values=None, grid_thw=None):
    """Full-sequence logits [1, S, vocab] (no cache: positions recomputed from scratch each call)."""
    ids = torch.as_tensor(input_ids).view(1, -1)
    kw = {}
    if pixel_values is not None:
        kw = dict(
            pixel_values=pixel_values,
            image_grid_thw=grid_thw,
            mm_token_type_ids=(ids == model.config.image_token_id).int(),
        )
    return model(input_ids=ids, use_cache=False, **kw).logits


@torch.no_grad()
def greedy(model, input_ids, pixel_values=None, grid_thw=None, max_new: int = 8, stop: int | None = None):
    """Greedy decoding by full recomputation (slow but obviously correct; sequences here are tiny)."""
    ids = list(input_ids)
    new = []
    for _ in range(max_new):
        nxt = int(logits(model, ids, pixel_values, grid_thw)[0, -1].argmax())
        new.append(nxt)
        ids.append(nxt)
        if stop is not None and nxt == stop:
            break
    return new


@dataclass
class VlmPromptOutputs:
    """What the frozen VLM gives generation for a batch of (right-padded) prompts.

    cache_k/cache_v: per layer [B, KV, P, dh], keys with M-RoPE applied (the KV cache).
    normed_inputs: per layer [B, P, D]: input_layernorm of that layer's input (for ctx_kv = replica).
    positions [B, 3, P] (t, h, w); mask [B, P] (True = real token); start [B] = the next free position
    after the prompt (its largest position + 1: P for a text prompt, less when it holds an image).
    """

    cache_k: list
    cache_v: list
    normed_inputs: list
    positions: torch.Tensor
    mask: torch.Tensor
    start: torch.Tensor


@torch.no_grad()
def prompt_outputs(model, prompts: list) -> VlmPromptOutputs:
    """Run text prompts (lists of token ids, possibly empty) once through the frozen VLM."""
    lm = model.model.language_model
    b = len(prompts)
    p = max(1, max(len(x) for x in prompts))
    pad = 0
    ids = torch.full((b, p), pad, dtype=torch.long)
    mask = torch.zeros(b, p, dtype=torch.bool)
    for i, x in enumerate(prompts):
        ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = True
    # Right padding: real tokens sit at positions 0..len-1 and never see the pads (causal attention).
    pos = torch.arange(p).view(1, 1, p).expand(3, b, p)
    out = lm(
        input_ids=ids,
        attention_mask=mask.long(),
        position_ids=pos,
        use_cache=True,
        output_hidden_states=True,
    )
    cache = out.cache
    ks = [layer.keys.clone() for layer in cache.layers]
    vs = [layer.values.clone() for layer in cache.layers]
    normed = [lm.layers[i].input_layernorm(out.hidden_states[i]) for i in range(len(lm.layers))]
    start = torch.tensor([len(x) for x in prompts], dtype=torch.long)
    return VlmPromptOutputs(ks, vs, normed, pos.permute(1, 0, 2).contiguous(), mask, start)


@torch.no_grad()
def image_prompt_outputs(model, ids: list, pixel_values, grid_thw) -> VlmPromptOutputs:
    """Run one prompt holding one image once through the frozen VLM, as transformers runs it for understanding.

    ids: the prompt with its <|image_pad|> run expanded (expand_image_pads); pixel_values / grid_thw from
    `preprocess`. The vision tower's merged features replace the pads' embeddings inside transformers'
    Qwen2VLModel.forward; positions are transformers' own get_rope_index (t, h, w), and start is its
    next free position (prompt length + its mrope delta), not the prompt length.
    """
    ids_t = torch.as_tensor(ids, dtype=torch.long).view(1, -1)
    mm = (ids_t == model.config.image_token_id).int()
    pos, delta = model.model.get_rope_index(ids_t, mm, image_grid_thw=grid_thw)
    out = model.model(
        input_ids=ids_t,
        pixel_values=pixel_values,
        image_grid_thw=grid_thw,
        mm_token_type_ids=mm,
        position_ids=pos,  # given, so the model keeps no rope_deltas state between calls
        use_cache=True,
        output_hidden_states=True,
    )
    lm = model.model.language_model
    ks = [layer.keys.clone() for layer in out.cache.layers]
    vs = [layer.values.clone() for layer in out.cache.layers]
    normed = [lm.layers[i].input_layernorm(out.hidden_states[i]) for i in range(len(lm.layers))]
    start = torch.tensor([ids_t.shape[1]], dtype=torch.long) + delta.view(-1)
    mask = torch.ones(1, ids_t.shape[1], dtype=torch.bool)
    return VlmPromptOutputs(ks, vs, normed, pos.permute(1, 0, 2).contiguous(), mask, start)
