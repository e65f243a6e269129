"""The demo model's shapes and training hyper-parameters (one place, so the command is reproducible).

This module owns numbers only. It must not build or train anything.
"""

SEED = 20261126
THREADS = 1  # two threads spin-wait on a busy shared machine: slower, not faster
# Sized for 2 shared CPU cores (CPU seconds per step, one thread: dcae 0.16, vlm 0.23, flow 0.14).

TOKENIZER_VOCAB = 320

TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]})
VISION = dict(depth=2, embed_dim=64, num_heads=4, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2)
TIE = True
# 64x64 renders are resized by the processor to 112x112: 8x8 ViT patches, 16 merged image tokens.
MIN_PIXELS = 112 * 112
MAX_PIXELS = 112 * 112

AE_WIDTHS = (8, 16, 32, 32)  # f8: 64x64x3 <-> 8x8xC
LATENT_CHANNELS = 8

GROUPS = 4  # K = 4 groups of M = 2 layers (the VLM's 8)
FLOW_PATCH = 2  # 2x2 latent patches: 16 image tokens, ~4x cheaper steps than p = 1 (README)

AE_STEPS, AE_BATCH, AE_LR = 2000, 16, 2e-3
VLM_STEPS, VLM_BATCH, VLM_LR = 1000, 16, 1e-3
# Phase 2 of understanding: a new, larger vision tower trained against the frozen phase-1 language model
# (phase 1's tower reached only ~45% on "What shape is it?"; a linear probe on its tokens, 76%).
VISION_PHASE2 = dict(depth=4, embed_dim=96, num_heads=4, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
                     temporal_patch_size=2)
PHASE2_PIXELS = 112 * 112  # input size of the phase-2 tower (the shipped one); see README for 56 * 56
VISION_STEPS, VISION_LR = 2000, 2e-3
VISION2_STEPS = 2000  # stage vision2 continues the phase-2 tower with a fresh schedule
# Auxiliary shape/colour classifier on pooled tower tokens (train_demo.ShapeColourProbe). 0 = off (the
# shipped recipe): with the language model frozen it did not help (README "Demo model", measured).
VISION_AUX_WEIGHT = 0.0
FLOW_STEPS, FLOW_BATCH, FLOW_LR = 10000, 32, 1e-3
POOL = 12000  # rendered training images (latents for the flow, pixels for the autoencoder and VLM)
FLOW2_STEPS = 0  # optional phase 2 of the flow (continues phase 1 with a fresh schedule); unused
CFG_DROP = 0.1
EMA = 0.999
GUIDANCE = 4.0
