"""End-to-end reference jobs: generate an image from a prompt, answer a question about an image.

This module owns the glue only (prompt text -> ids -> VLM -> replica -> sampler -> DC-AE). It must not
contain model math.
"""

import numpy as np
import torch

import autoencoder
import rng
import vlm as vlm_mod
from sampler import sample


def generation_ids(tokenizer, gen_cfg, prompt: str) -> list:
    text = gen_cfg.prompt_template.replace("{prompt}", prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def contexts(vlm, tokenizer, replica, prompts: list):
    """Conditional contexts for each prompt and the unconditional (empty prompt) context."""
    cfg = replica.cfg
    ids = [generation_ids(tokenizer, cfg, p) for p in prompts]
    cond = replica.bind_context(vlm_mod.prompt_outputs(vlm, ids))
    uncond = replica.bind_context(vlm_mod.prompt_outputs(vlm, [generation_ids(tokenizer, cfg, "")]))
    return cond, uncond


def noise_batch(cfg, seeds: list) -> torch.Tensor:
    c, s = cfg.latent_channels, cfg.latent_size
    return torch.from_numpy(np.stack([rng.latent_noise(sd, c, s, s) for sd in seeds]))


@torch.no_grad()
def generate(vlm, tokenizer, replica, ae, prompt: str, seed: int, steps=None, scale=None,
             method="euler", dense=False, record=None):
    """Returns (uint8 image [H, W, 3], final latent [1, C, h, w])."""
    cond, uncond = contexts(vlm, tokenizer, replica, [prompt])
    x = sample(replica, noise_batch(replica.cfg, [seed]), cond, uncond, steps, scale, method, dense, record)
    return autoencoder.to_uint8(autoencoder.decode(ae, x))[0], x


@torch.no_grad()
def answer(vlm, tokenizer, processor, image: np.ndarray, question: str, max_new: int = 12) -> str:
    pv, grid = vlm_mod.preprocess(processor, image)
    merge = vlm.config.vision_config.spatial_merge_size
    img_id = vlm.config.image_token_id
    ids = vlm_mod.understanding_ids(tokenizer, question, img_id, vlm_mod.merged_tokens(grid, merge))
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = vlm_mod.greedy(vlm, ids, pv, grid, max_new=max_new, stop=stop)
    return tokenizer.decode([t for t in out if t != stop]).strip()
