#!/usr/bin/env python3
"""gguf-py (gguf.GGUFReader, an independent reader) must read every file our writer produces.

Runs `cargo run --example write_sample_gguf -- OUT [ALIGNMENT]` (default alignment, then 64), reads
each file with gguf-py and checks every key, value type and value, tensor names, shapes (ggml
order in `ReaderTensor.shape`, numpy order reversed in `.data`), types, offsets and bytes against
values recomputed here from the formulas in examples/write_sample_gguf.rs.

Exit status: 0 when everything matches, 1 on any mismatch (each one is printed).
Usage: python3 tools/gguf_py_check.py   (needs `pip install gguf numpy` and cargo)
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import gguf
from gguf import GGUFValueType as VT, GGMLQuantizationType as QT

ROOT = Path(__file__).resolve().parent.parent
BOUNDARY = 16384

EXPECTED_KV = [
    ("general.architecture", [VT.STRING], "latte-sample"),
    ("sample.u8", [VT.UINT8], 200),
    ("sample.i8", [VT.INT8], -100),
    ("sample.u16", [VT.UINT16], 60000),
    ("sample.i16", [VT.INT16], -30000),
    ("sample.u32", [VT.UINT32], 4000000000),
    ("sample.i32", [VT.INT32], -2000000000),
    ("sample.f32", [VT.FLOAT32], -1.25),
    ("sample.bool", [VT.BOOL], True),
    ("sample.string", [VT.STRING], "latte wrote this: ünïcödé ✓"),
    ("sample.u64", [VT.UINT64], 2**64 - 2),
    ("sample.i64", [VT.INT64], -(2**63) + 1),
    ("sample.f64", [VT.FLOAT64], 3.141592653589793),
    ("sample.arr.u8", [VT.ARRAY, VT.UINT8], [0, 1, 255]),
    ("sample.arr.i8", [VT.ARRAY, VT.INT8], [-128, 0, 127]),
    ("sample.arr.u16", [VT.ARRAY, VT.UINT16], [0, 65535]),
    ("sample.arr.i16", [VT.ARRAY, VT.INT16], [-32768, 0, 32767]),
    ("sample.arr.u32", [VT.ARRAY, VT.UINT32], [16, 24, 24, 0]),
    ("sample.arr.i32", [VT.ARRAY, VT.INT32], [-1, 2, -3]),
    ("sample.arr.f32", [VT.ARRAY, VT.FLOAT32], [0.5, -0.25, 1024.0]),
    ("sample.arr.bool", [VT.ARRAY, VT.BOOL], [True, False, True]),
    ("sample.arr.string", [VT.ARRAY, VT.STRING], ["<s>", "</s>", "héllo", ""]),
    ("sample.arr.u64", [VT.ARRAY, VT.UINT64], [2**63, 1]),
    ("sample.arr.i64", [VT.ARRAY, VT.INT64], [-(2**63), -1]),
    ("sample.arr.f64", [VT.ARRAY, VT.FLOAT64], [1e-300, -2.5]),
]
NESTED_KEY = "sample.arr.nested"  # [[1, 2], [3]] of i32; gguf-py's contents() flattens it


def pattern(k: int, n: int) -> bytes:
    return bytes((j * 37 + 11 * k) % 251 for j in range(n))


PADDING_PREFIX = "latte.pad."


def expected_tensors():
    """(name, type, ggml dims, raw bytes, on 16 KiB boundary) in file order."""
    f32 = (np.arange(12, dtype=np.float32) * 0.5 - 3.0).tobytes()
    f16 = (np.arange(8, dtype=np.float32) / 4).astype(np.float16).tobytes()
    bf16_src = ((np.arange(32, dtype=np.float32) - 16) / 8).view(np.uint32)
    bf16 = (bf16_src >> 16).astype(np.uint16).tobytes()  # exact values: truncation is exact
    i32 = (np.arange(5, dtype=np.int32) * 1000 - 2000).tobytes()
    rows = [
        ("t.f32", QT.F32, [4, 3], f32, False),
        ("t.f16", QT.F16, [8], f16, False),
        ("t.bf16", QT.BF16, [16, 2], bf16, False),
        ("t.i32", QT.I32, [5], i32, False),
        ("t.q4_0", QT.Q4_0, [64, 2], None, False),
        ("t.q8_0", QT.Q8_0, [32, 3], None, False),
        ("t.q4_k", QT.Q4_K, [256, 1, 2], None, False),
        ("t.q6_k", QT.Q6_K, [256], None, False),
        ("grp.f32", QT.F32, [100], np.arange(100, dtype=np.float32).tobytes(), True),
        ("grp.q8_0", QT.Q8_0, [64], None, False),
    ]
    out = []
    for k, (name, ty, dims, data, boundary) in enumerate(rows):
        if data is None:
            block, size = gguf.GGML_QUANT_SIZES[ty]
            data = pattern(k, int(np.prod(dims)) // block * size)
        out.append((name, ty, dims, data, boundary))
    return out


def check_file(path: Path, alignment: int) -> list[str]:
    errors = []

    def expect(cond, msg):
        if not cond:
            errors.append(f"{path.name}: {msg}")

    r = gguf.GGUFReader(str(path))
    expect(r.fields["GGUF.version"].contents() == 3, "version is not 3")
    expect(r.alignment == alignment, f"alignment {r.alignment} != {alignment}")
    kv = list(EXPECTED_KV)
    if alignment != 32:
        # Our writer puts general.alignment first when it is not the default.
        kv.insert(0, ("general.alignment", [VT.UINT32], alignment))
    else:
        expect("general.alignment" not in r.fields, "default alignment written")
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    expect(keys == [k for k, _, _ in kv] + [NESTED_KEY], f"keys/order differ: {keys}")
    for key, types, value in kv:
        f = r.fields.get(key)
        if f is None:
            expect(False, f"missing key {key}")
            continue
        expect(f.types == types, f"{key}: types {f.types} != {types}")
        got = f.contents()
        expect(got == value, f"{key}: {got!r} != {value!r}")
    nested = r.fields.get(NESTED_KEY)
    if nested is None:
        expect(False, f"missing key {NESTED_KEY}")
    else:
        expect(nested.types == [VT.ARRAY, VT.ARRAY, VT.INT32], f"nested types {nested.types}")
        # parts after the key: outer type, elem type, count, then per inner array: type, count, items
        flat = [int(p[0]) for p in nested.parts[2:]]
        expect(flat == [9, 9, 2, 5, 2, 1, 2, 5, 1, 3], f"nested layout {flat}")

    tensors = expected_tensors()
    # The writer fills the gap before each 16 KiB boundary with a zero I8 tensor `latte.pad.N`, so
    # that tensors are packed back to back as llama.cpp's reader demands.
    padding = [t for t in r.tensors if t.name.startswith(PADDING_PREFIX)]
    real = [t for t in r.tensors if not t.name.startswith(PADDING_PREFIX)]
    expect(len(padding) == sum(1 for t in tensors if t[4]), f"{len(padding)} padding tensors")
    for t in padding:
        expect(t.tensor_type == QT.I8 and not t.data.any(), f"{t.name}: not zero I8 padding")
    expect([t.name for t in real] == [t[0] for t in tensors], "tensor names/order differ")
    offsets = sorted((int(t.data_offset), int(t.n_bytes)) for t in r.tensors)
    for (start, size), (next_start, _) in zip(offsets, offsets[1:]):
        expect(next_start == start + -(-size // alignment) * alignment, f"gap before offset {next_start}")
    for t, (name, ty, dims, data, boundary) in zip(real, tensors):
        expect(t.tensor_type == ty, f"{name}: type {t.tensor_type.name} != {ty.name}")
        expect(t.shape.tolist() == dims, f"{name}: ggml shape {t.shape.tolist()} != {dims}")
        if ty in (QT.F32, QT.F16, QT.I32):
            # gguf-py reverses the ggml dims to numpy order for plain types.
            expect(list(t.data.shape) == dims[::-1], f"{name}: numpy shape {t.data.shape}")
        expect(t.data_offset % alignment == 0, f"{name}: offset {t.data_offset} misaligned")
        if boundary:
            expect(t.data_offset % BOUNDARY == 0, f"{name}: offset {t.data_offset} not on 16 KiB")
        expect(int(t.n_bytes) == len(data), f"{name}: {t.n_bytes} bytes != {len(data)}")
        expect(t.data.tobytes() == data, f"{name}: bytes differ")
    if not errors:
        f32 = next(t for t in r.tensors if t.name == "t.f32")
        expect(np.array_equal(f32.data[1], np.array([-1.0, -0.5, 0.0, 0.5], dtype=np.float32)),
               "t.f32 row 1 values")
    return errors


def main() -> int:
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        for alignment in (32, 64):
            out = Path(tmp) / f"sample_{alignment}.gguf"
            args = ["cargo", "run", "--quiet", "--example", "write_sample_gguf", "--", str(out)]
            if alignment != 32:
                args.append(str(alignment))
            subprocess.run(args, cwd=ROOT, check=True)
            errors += check_file(out, alignment)
            print(f"checked {out.name}: {out.stat().st_size} bytes")
    for e in errors:
        print("MISMATCH:", e, file=sys.stderr)
    print("gguf-py check:", "FAILED" if errors else "ok")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
