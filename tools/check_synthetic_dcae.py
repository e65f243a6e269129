"""Checks the DC-AE decoder of `latte convert --synthetic latte-flow-2b` against diffusers.

The oracle is diffusers' `AutoencoderDC` built (on the meta device, no weights) with the DC-AE f32c32
configuration SANA uses: ResBlock ×3 then EfficientViTBlock ×3, widths 128..1024, 3 layers per decoder
stage, 5×5 multi-scale attention in the last three stages, interpolate upsampling, RMSNorm, SiLU. Every
`decoder.*` tensor must be in the file as `dcae.*` with the same shape (GGUF dims reversed), and
nothing more. Needs torch and diffusers (tools/reference/requirements.txt).

    cargo run --release -- convert --synthetic latte-flow-2b -o big.gguf --type q4_0
    python3 tools/check_synthetic_dcae.py big.gguf
"""

import json
import subprocess
import sys

import torch
from diffusers import AutoencoderDC

F32C32 = dict(
    encoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    decoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    upsample_block_type="interpolate",
    downsample_block_type="Conv",
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
)


def main(path: str) -> int:
    with torch.device("meta"):
        model = AutoencoderDC(**F32C32)
    expected = {
        "dcae." + name[len("decoder."):]: list(tensor.shape)
        for name, tensor in model.state_dict().items()
        if name.startswith("decoder.")
    }
    info = json.loads(subprocess.check_output(["cargo", "run", "-q", "--release", "--", "info", "--json", path]))
    found = {t["name"]: list(reversed(t["shape"])) for t in info["tensors"] if t["name"].startswith("dcae.")}

    def squeeze(shape):  # GGUF drops trailing unit dims that torch keeps (1×1 kernels)
        return [d for d in shape if d != 1]

    problems = [f"missing {n}" for n in sorted(set(expected) - set(found))]
    problems += [f"unexpected {n}" for n in sorted(set(found) - set(expected))]
    problems += [
        f"{n}: file {found[n]}, diffusers {expected[n]}"
        for n in sorted(set(expected) & set(found))
        if squeeze(found[n]) != squeeze(expected[n])
    ]
    for p in problems:
        print(p)
    params = sum(torch.Size(s).numel() for s in expected.values())
    print(f"{len(expected)} decoder tensors, {params / 1e6:.1f}M parameters: "
          + ("ok" if not problems else f"{len(problems)} problems"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
