"""The checkpoint directory (the convert tool's input contract, README.md "Checkpoint layout").

This module owns saving and loading the three parts: the Qwen2-VL (as transformers saves it, plus
tokenizer and preprocessor files), generation/ (config.json + model.safetensors) and autoencoder/ (as
diffusers saves it). It must not define model math.
"""

import json
import os

import torch
from diffusers import AutoencoderDC
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

from gen_config import GenerationConfig
from replica import Replica
from vlm import Qwen2VLImageProcessorPil

GEN_DIR = "generation"
AE_DIR = "autoencoder"


def save(path, vlm, tokenizer, processor, gen_cfg: GenerationConfig, replica: Replica, ae: AutoencoderDC,
         dtype=torch.float32):
    os.makedirs(path, exist_ok=True)
    vlm_copy = vlm.to(dtype)
    vlm_copy.save_pretrained(path)
    vlm.float()
    tokenizer.save_pretrained(path)
    # The contract: the chat template lives in tokenizer_config.json (transformers 5 also
    # writes chat_template.jinja; both hold the same text).
    tc_path = os.path.join(path, "tokenizer_config.json")
    with open(tc_path) as f:
        tc = json.load(f)
    tc["chat_template"] = tokenizer.chat_template
    with open(tc_path, "w") as f:
        json.dump(tc, f, indent=2)
    processor.save_pretrained(path)
    # Hub Qwen2-VL files also carry the flat min_pixels / max_pixels keys; write both spellings.
    pc_path = os.path.join(path, "preprocessor_config.json")
    with open(pc_path) as f:
        pc = json.load(f)
    pc["min_pixels"], pc["max_pixels"] = pc["size"]["shortest_edge"], pc["size"]["longest_edge"]
    with open(pc_path, "w") as f:
        json.dump(pc, f, indent=2)

    gdir = os.path.join(path, GEN_DIR)
    os.makedirs(gdir, exist_ok=True)
    gen_cfg.save(os.path.join(gdir, "config.json"))
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in replica.state_dict().items()}
    save_file(tensors, os.path.join(gdir, "model.safetensors"), metadata={"format": "pt"})

    ae.to(dtype).save_pretrained(os.path.join(path, AE_DIR))
    ae.float()


def load(path):
    """Returns (vlm, tokenizer, processor, gen_cfg, replica, ae), all in f32 and eval mode."""
    vlm = Qwen2VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    processor = Qwen2VLImageProcessorPil.from_pretrained(path)
    gen_cfg = GenerationConfig.load(os.path.join(path, GEN_DIR, "config.json"))
    replica = Replica(gen_cfg)
    state = {k: v.float() for k, v in load_file(os.path.join(path, GEN_DIR, "model.safetensors")).items()}
    replica.load_state_dict(state, strict=True)
    replica.eval()
    ae = AutoencoderDC.from_pretrained(os.path.join(path, AE_DIR), torch_dtype=torch.float32).eval()
    return vlm, tokenizer, processor, gen_cfg, replica.float(), ae.float()
