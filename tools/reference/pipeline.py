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


IMAGE_ITEM = "<|vision_start|><|image_pad|><|vision_end|>"


def generation_ids(tokenizer, gen_cfg, prompt: str, image_tokens: int = 0, image_token_id=None) -> list:
    """prompt_template with {prompt} replaced. With an image (image_tokens > 0) the image item goes before
    the text inside the user turn, the layout understanding_ids uses, its one pad expanded to image_tokens."""
    if image_tokens:
        prompt = IMAGE_ITEM + prompt
    text = gen_cfg.prompt_template.replace("{prompt}", prompt)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return vlm_mod.expand_image_pads(ids, image_token_id, image_tokens) if image_tokens else ids


def image_prompt(vlm, tokenizer, processor, gen_cfg, prompt: str, image: np.ndarray):
    """(ids with the pad run expanded, VlmPromptOutputs) of one prompt with an image (uint8 [H, W, 3])."""
    pv, grid = vlm_mod.preprocess(processor, image)
    n = vlm_mod.merged_tokens(grid, vlm.config.vision_config.spatial_merge_size)
    ids = generation_ids(tokenizer, gen_cfg, prompt, n, vlm.config.image_token_id)
    return ids, vlm_mod.image_prompt_outputs(vlm, ids, pv, grid)


def contexts(vlm, tokenizer, replica, prompts: list, image=None, processor=None):
    """Conditional contexts for each prompt and the unconditional context.

    The unconditional prompt is always the empty text prompt, also when the conditional one holds an
    image (one prompt, with `processor`): guidance then pushes towards prompt and image together.
    """
    cfg = replica.cfg
    if image is None:
        ids = [generation_ids(tokenizer, cfg, p) for p in prompts]
        cond = replica.bind_context(vlm_mod.prompt_outputs(vlm, ids))
    else:
        if len(prompts) != 1 or processor is None:
            raise ValueError("a prompt with an image: one prompt, and the image processor")
        cond = replica.bind_context(image_prompt(vlm, tokenizer, processor, cfg, prompts[0], image)[1])
    uncond = replica.bind_context(vlm_mod.prompt_outputs(vlm, [generation_ids(tokenizer, cfg, "")]))
    return cond, uncond


def noise_batch(cfg, seeds: list) -> torch.Tensor:
    c, s = cfg.latent_channels, cfg.latent_size
    return torch.from_numpy(np.stack([rng.latent_noise(sd, c, s, s) for sd in seeds]))


@torch.no_grad()
def generate(vlm, tokenizer, replica, ae, prompt: str, seed: int, steps=None, scale=None,
             method="euler", dense=False, record=None, image=None, processor=None):
    """Returns (uint8 image [H, W, 3], final latent [1, C, h, w]).

    image: optional uint8 [H, W, 3] the VLM sees in the prompt (then `processor` is needed)."""
    cond, uncond = contexts(vlm, tokenizer, replica, [prompt], image, processor)
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
