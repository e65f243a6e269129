#!/usr/bin/env python3
"""Writes tests/fixtures/quant/: inputs and gguf-py's quantizations / dequantizations of them.

gguf-py (`pip install gguf numpy`) is an oracle we did not write: tests/quant_gguf_py.rs checks
latte's quantizers and dequantizers against these files bit for bit. Deterministic (numpy seed);
rerun to regenerate:  python3 tools/make_quant_fixtures.py

Layout (all little-endian, no headers):
  input.f32        N_ROWS x 256 float32 values (random rows and edge cases)
  <type>.bin       blocks of <type>: gguf-py's quantize(input) for the types it quantizes; for
                   Q4_K / Q5_K / Q6_K (gguf-py has no K-quant quantizer) random blocks with finite
                   f16 scales
  <type>.f32       gguf-py's dequantize(<type>.bin)
  manifest.json    gguf version, row count, and which files are quantizer fixtures
Only finite inputs: numpy's float16 cast keeps NaN payloads where ggml makes a canonical NaN.
"""

import json
import pathlib

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROW = 256
OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quant"

QUANTIZED_BY_GGUF_PY = [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
K_QUANTS = [T.Q4_K, T.Q5_K, T.Q6_K]


def rows(rng: np.random.Generator) -> np.ndarray:
    out = []
    for s in [1e-3, 1e-1, 1.0, 10.0, 1e3]:
        out.append(rng.standard_normal(ROW) * s)
    out.append(rng.uniform(-1, 1, ROW))
    # heavy tails
    r = rng.standard_normal(ROW) * 0.02
    r[[3, 77, 140, 255]] = [-55.0, 40.0, 40.0, -55.0]
    out.append(r)
    # sign-constant rows
    out.append(-np.abs(rng.standard_normal(ROW)) - 0.1)
    out.append(np.abs(rng.standard_normal(ROW)) + 0.1)
    # zero and constant
    out.append(np.zeros(ROW))
    out.append(np.full(ROW, -3.25))
    # tiny (f16 scale underflows; f32 subnormal inputs) and huge (f16 scale overflows)
    for s in [1e-8, 1e-30, 1e-40, 6e4, 1e30]:
        out.append(rng.standard_normal(ROW) * s)
    # rounding ties: x/d lands on .5
    j = np.arange(ROW)
    out.append((j % 17) - 8.0)
    out.append((j % 33) - 16.0)
    out.append(((j % 16) - 8.0) * 0.5)
    out.append(np.round(rng.standard_normal(ROW) * 8.0) * 0.5)
    # equal magnitudes of opposite sign; one spike; mixed scales per 32
    out.append(np.where(j % 2 == 0, 1.0, -1.0))
    spike = np.zeros(ROW)
    spike[200] = -7.0
    out.append(spike)
    out.append(rng.standard_normal(ROW) * 10.0 ** ((j // 32) - 4))
    return np.stack(out).astype(np.float32)


def random_k_blocks(rng: np.random.Generator, qtype: T, n_blocks: int) -> np.ndarray:
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    scales = (rng.standard_normal((n_blocks, 2)) * 0.01).astype(np.float16).view(np.uint8)
    if qtype == T.Q6_K:
        raw[:, -2:] = scales[:, :2]  # d is the last field
    else:
        raw[:, :4] = scales  # d, dmin lead
    return raw


def main() -> None:
    rng = np.random.default_rng(20261126)
    OUT.mkdir(parents=True, exist_ok=True)
    x = rows(rng)
    x.tofile(OUT / "input.f32")
    manifest = {"gguf": gguf.__version__ if hasattr(gguf, "__version__") else "unknown",
                "rows": int(x.shape[0]), "row_len": ROW, "quantized": [], "dequantized": []}
    for qtype in QUANTIZED_BY_GGUF_PY:
        blocks = np.ascontiguousarray(quantize(x, qtype)).view(np.uint8)
        blocks.tofile(OUT / f"{qtype.name.lower()}.bin")
        dequantize(blocks, qtype).astype(np.float32).tofile(OUT / f"{qtype.name.lower()}.f32")
        manifest["quantized"].append(qtype.name)
        manifest["dequantized"].append(qtype.name)
    for qtype in K_QUANTS:
        blocks = random_k_blocks(rng, qtype, 24)
        blocks.tofile(OUT / f"{qtype.name.lower()}.bin")
        dequantize(blocks, qtype).astype(np.float32).tofile(OUT / f"{qtype.name.lower()}.f32")
        manifest["dequantized"].append(qtype.name)
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
