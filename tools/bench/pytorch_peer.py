"""PyTorch as a benchmark peer of `latte bench`: the reference implementation (tools/reference) at the
paper's shapes, random weights, F32 or BF16, on the CPU (the same thread count) or a CUDA GPU
(`--device cuda`, what `latte bench --device wgpu` is compared with on a lent GPU).

Measures what `latte bench`'s `img`, `img-dense` and `vae` tests measure, with the reference's own
sampler (cond and uncond passes per step, as tools/reference/sampler.py does them):
  * seconds per guided sampling step for each expert group (layerwise) and for a dense step,
  * seconds per image = the sum of the steps each group owns (40 Euler steps over uniform boundaries
    give each group 10) + one DC-AE f32c32 decode at 256x256 (diffusers' AutoencoderDC).
Prints one JSON object (stdout or --json FILE) in the form `latte bench --peer-json` reads: rows named
as latte's (`img`, `img gK step`, `img-dense`, `img-dense step`, `vae`), each a summary of --reps
repetitions after one warm-up. `img` / `img-dense` per image are composed from the measured step times
(steps each group owns x its step time) plus the measured decode: the reference has no prefill here
(its prompt K/V are random), so it is a slight underestimate. Python and torch are for tools only; the
Rust test suite never runs this.

    python tools/bench/pytorch_peer.py --threads 2 --dtype f32 --json /tmp/peer-f32.json
    python tools/bench/pytorch_peer.py --device cuda --dtype bf16 --json /tmp/peer-cuda-bf16.json
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import torch  # noqa: E402
from diffusers import AutoencoderDC  # noqa: E402

from gen_config import GenerationConfig, uniform_boundaries  # noqa: E402
from replica import PromptContext, Replica  # noqa: E402
import sampler  # noqa: E402

# The paper's model (MODEL.md §1, §7): Qwen2-VL-2B text shapes, 28 replica layers in 4 groups, DC-AE f32c32.
PAPER = dict(num_layers=28, hidden_size=1536, num_attention_heads=12, num_key_value_heads=2, head_dim=128,
             intermediate_size=8960, rms_norm_eps=1e-6, rope_theta=1e6, mrope_section=[16, 24, 24],
             num_groups=4, group_boundaries=uniform_boundaries(4), latent_channels=32, latent_size=8,
             image_size=256, time_freq_dim=256)
F32C32 = dict(encoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
              decoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
              upsample_block_type="interpolate", downsample_block_type="Conv",
              decoder_norm_types="rms_norm", decoder_act_fns="silu")


SYNC = lambda: None  # noqa: E731  (replaced by torch.cuda.synchronize on a GPU)


def timed(fn, reps):
    fn()  # warm-up
    SYNC()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        SYNC()
        out.append(time.perf_counter() - start)
    return out


def summary(test, seconds):
    return {"test": test, "unit": "s", "median": statistics.median(seconds), "mean": statistics.fmean(seconds),
            "std_dev": statistics.stdev(seconds) if len(seconds) > 1 else 0.0, "min": min(seconds),
            "max": max(seconds), "reps": len(seconds)}


def prompt_context(cfg, prompt_tokens, dtype, seed, device):
    g = torch.Generator().manual_seed(seed)
    shape = (1, cfg.num_key_value_heads, prompt_tokens, cfg.head_dim)
    k = [torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(cfg.num_layers)]
    v = [torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(cfg.num_layers)]
    return PromptContext(k, v, torch.ones(1, prompt_tokens, dtype=torch.bool, device=device),
                         torch.tensor([prompt_tokens], device=device))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="steps of the image the per-image time assumes")
    ap.add_argument("--prompt-tokens", type=int, default=14, help="conditional prompt length (P); latte bench uses 14")
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--tests", default="img,img-dense,vae")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    global SYNC
    device = torch.device(args.device)
    if args.device == "cuda":
        SYNC = torch.cuda.synchronize
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # BF16 as PyTorch users run it: f32 weights under autocast (the reference's sinusoidal time
    # features are f32 and would not mix with bf16 weights).
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    autocast.__enter__()
    dtype = torch.float32
    tests = set(args.tests.split(","))
    name = f"pytorch-{args.dtype}" if args.device == "cpu" else f"pytorch-cuda-{args.dtype}"
    result = {"peer": name, "torch": torch.__version__, "threads": args.threads,
              "dtype": args.dtype, "device": str(device), "rows": []}
    rows = result["rows"]
    composed = {}

    if tests & {"img", "img-dense"}:
        cfg = GenerationConfig(**PAPER)
        replica = Replica(cfg).to(device=device, dtype=dtype).eval()
        cond = prompt_context(cfg, args.prompt_tokens, dtype, 1, device)
        # The unconditional prompt is the template around an empty string: 5 tokens (latte bench's too).
        uncond = prompt_context(cfg, 5, dtype, 2, device)
        x = torch.randn(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size).to(device=device, dtype=dtype)
        ts = sampler.timesteps(args.steps, cfg.time_shift)
        if "img" in tests:
            sampling = [0.0] * args.reps
            for k in range(cfg.num_groups):
                # The first step the group owns, and how many steps it owns.
                t = next(t for t in ts[:-1] if cfg.group_of(t) == k)
                owned = sum(1 for u in ts[:-1] if cfg.group_of(u) == k)
                secs = timed(lambda: sampler.guided_velocity(replica, x, t, cond, uncond, args.guidance, False),
                             args.reps)
                rows.append(summary(f"img g{k} step", secs))
                sampling = [a + owned * b for a, b in zip(sampling, secs)]
            composed["img"] = sampling
        if "img-dense" in tests:
            t = ts[0]
            secs = timed(lambda: sampler.guided_velocity(replica, x, t, cond, uncond, args.guidance, True),
                         args.reps)
            rows.append(summary("img-dense step", secs))
            composed["img-dense"] = [args.steps * b for b in secs]
        del replica

    if "vae" in tests:
        ae = AutoencoderDC(**F32C32).to(device=device, dtype=dtype).eval()
        latent = torch.randn(1, 32, 8, 8).to(device=device, dtype=dtype)
        with torch.no_grad():
            secs = timed(lambda: ae.decode(latent), args.reps)
        rows.append(summary("vae", secs))
        for name, sampling in composed.items():
            rows.append(summary(name, [a + b for a, b in zip(sampling, secs)]))
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
