"""The demo model's shapes and training hyper-parameters (one place, so the command is reproducible).

This module owns numbers only. It must not build or train anything.
"""

SEED = 20261126
THREADS = 1  # two threads spin-wait on a busy shared machine: slower, not faster
# Sized for 2 CPU cores (CPU seconds per step, one thread: dcae 0.16, tower 0.125, vlm 0.165, flow 0.034).

TOKENIZER_VOCAB = 320

TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]})
# The renders go in unresized: 64x64 with 8-px patches (8x8 patches, 16 merged image tokens). The earlier
# 112x112 input (64 -> 112 bicubic, 14-px patches) carried the same pixels at twice the tower cost.
VISION = dict(depth=4, embed_dim=96, num_heads=4, mlp_ratio=2, patch_size=8, spatial_merge_size=2,
              temporal_patch_size=2)
TIE = True
IMAGE_PIXELS = 64 * 64

AE_WIDTHS = (8, 16, 32, 32)  # f8: 64x64x3 <-> 8x8xC
LATENT_CHANNELS = 8

GROUPS = 4  # K = 4 groups of M = 2 layers (the VLM's 8)
# Image-token positions of the replica: rope1d (raster order, every RoPE frequency) rather than the
# default mrope2d, whose column component gets only the lowest frequencies (10000^(-20/32) ... rad per
# column at dh = 32): on a 4x4 token grid the columns were nearly indistinguishable (README "Demo model").
IMG_POS = "rope1d"
FLOW_PATCH = 2  # 2x2 latent patches: 16 image tokens, ~4x cheaper steps than p = 1 (README)

AE_STEPS, AE_BATCH, AE_LR = 2000, 16, 2e-3
# Stage `tower`: the vision tower alone learns shape, colour and position (train_demo.SceneProbe); the
# VLM phase then trains the language model on top of it, frozen (README "Demo model").
TOWER_STEPS, TOWER_BATCH, TOWER_LR = 3000, 32, 2e-3
VLM_STEPS, VLM_BATCH, VLM_LR = 3000, 16, 1e-3
# Fraction of training rows that ask about a caption given as text, without an image ("a red circle on
# the left\nWhat shape is it?" -> "a circle"): the language model must keep shape and colour words apart
# in its prompt K/V, which is all that generation reads.
TEXT_READING = 0.25
FLOW_STEPS, FLOW_BATCH, FLOW_LR = 30000, 32, 1e-3
POOL = 12000  # rendered training images (latents for the flow, pixels for the autoencoder and VLM)
CFG_DROP = 0.1
EMA = 0.999
# The default guidance scale written at assembly. Measured on the shipped replica (evaluate.py's 216
# plain-prompt images, 40 Euler steps): s = 2 / 2.5 / 3 / 4 / 5 / 6 -> 95.4 / 96.3 / 94.0 / 91.7 / 90.3 /
# 83.3% shape and colour right; prompts with a position 99.5-100% for s <= 5.
GUIDANCE = 2.5
