"""Checks latte's DC-AE decoder on a full-size file against diffusers, numerically.

The oracle is diffusers' `AutoencoderDC` built from the file's `latte.dcae.config_json`, with every
`dcae.*` tensor of the file (read by gguf-py, an independent reader; F32/F16 only) loaded as
`decoder.*`. It decodes the latent `examples/dcae_decode.rs` decodes (the reference noise RNG, seed
42) with MODEL.md's rule, `clamp(decode(latent / scaling_factor), -1, 1)`, and compares with the raw
f32 image that example wrote. Needs torch, diffusers, gguf, numpy (tools/reference/requirements.txt).

    latte convert --synthetic latte-flow-2b --type q4_0 --tensor-type 'dcae\\.=f32' -o big.gguf
    cargo run --release --example dcae_decode -- big.gguf --size 8 --raw big.f32
    python3 tools/check_dcae_decode.py big.gguf big.f32 8

Exit status 0 when the worst absolute difference on the [-1, 1] image is at most 1e-3 (f32
summation order over ~40 layers with up to 1024-channel reductions; measured 1.2e-4 on the seed-0
synthetic latte-flow-2b), 1 otherwise.
"""

import json
import os
import sys

import numpy as np
import torch
from diffusers import AutoencoderDC
from gguf import GGUFReader

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "reference"))
import rng  # noqa: E402  (the reference noise RNG)


def main(path: str, raw: str, size: int) -> int:
    reader = GGUFReader(path)
    field = reader.fields["latte.dcae.config_json"]
    config = json.loads(bytes(field.parts[field.data[0]]).decode())
    keep = {k: v for k, v in config.items() if not k.startswith("_")}
    ae = AutoencoderDC(**keep).eval()
    state = {}
    for t in reader.tensors:
        if t.name.startswith("dcae."):
            state["decoder." + t.name[len("dcae."):]] = torch.from_numpy(np.array(t.data, dtype=np.float32))
    own = ae.decoder.state_dict()
    loaded = {}
    for name, value in own.items():
        if name.endswith("num_batches_tracked"):
            continue
        src = state.pop("decoder." + name)
        loaded[name] = src.reshape(value.shape)
    if state:
        print("tensors diffusers does not have:", sorted(state)[:5])
        return 1
    ae.decoder.load_state_dict(loaded, strict=False)
    c = config["latent_channels"]
    latent = torch.from_numpy(rng.latent_noise(42, c, size, size)).reshape(1, c, size, size)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with torch.no_grad():
        want = ae.decode(latent / config["scaling_factor"]).sample.clamp(-1, 1)[0].numpy()
    got = np.fromfile(raw, dtype="<f4").reshape(want.shape)
    diff = np.abs(got - want)
    inner = (np.abs(want) < 1).mean()
    print(f"image {want.shape}: worst |diff| {diff.max():.3e}, mean {diff.mean():.3e}; "
          f"{inner:.1%} of values unsaturated")
    return 0 if diff.max() <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 8))
