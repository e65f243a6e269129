#!/usr/bin/env python3
"""Regenerate tests/fixtures/gguf/gguf_py_sample.{gguf,json} with gguf-py (an independent writer).

The .gguf is written by gguf.GGUFWriter; the .json records what was *given* to the writer (keys in
order, value types, values, tensor names, ggml-order dims, types, raw bytes as hex), so the Rust
test (tests/gguf_py_fixture.rs) checks our reader against gguf-py's writer, not against itself.

Usage: python3 tools/make_gguf_fixture.py   (needs `pip install gguf numpy`; deterministic output)
"""

import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGUFValueType as VT, GGMLQuantizationType as QT

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "gguf"
ALIGNMENT = 64

TYPE_NAMES = {
    VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16", VT.UINT32: "u32",
    VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool", VT.STRING: "string", VT.ARRAY: "array",
    VT.UINT64: "u64", VT.INT64: "i64", VT.FLOAT64: "f64",
}


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / "gguf_py_sample.gguf"
    w = gguf.GGUFWriter(str(path), arch="latte-fixture")
    w.add_custom_alignment(ALIGNMENT)
    # The writer adds general.architecture first, then general.alignment.
    expected_kv = [
        {"key": "general.architecture", "type": "string", "value": "latte-fixture"},
        {"key": "general.alignment", "type": "u32", "value": ALIGNMENT},
    ]

    def scalar(key, vt, value):
        w.add_key_value(key, value, vt)
        expected_kv.append({"key": key, "type": TYPE_NAMES[vt], "value": value})

    def array(key, sub, values):
        w.add_key_value(key, values, VT.ARRAY, sub_type=sub)
        expected_kv.append({"key": key, "type": "array", "elem": TYPE_NAMES[sub], "value": values})

    # Values exactly representable in their type, so JSON round trips them without rounding.
    scalar("test.u8", VT.UINT8, 200)
    scalar("test.i8", VT.INT8, -100)
    scalar("test.u16", VT.UINT16, 60000)
    scalar("test.i16", VT.INT16, -30000)
    scalar("test.u32", VT.UINT32, 4000000000)
    scalar("test.i32", VT.INT32, -2000000000)
    scalar("test.f32", VT.FLOAT32, -1.25)
    scalar("test.bool", VT.BOOL, True)
    scalar("test.string", VT.STRING, "gguf-py wrote this: ünïcödé ✓")
    scalar("test.u64", VT.UINT64, 2**64 - 2)
    scalar("test.i64", VT.INT64, -(2**63) + 1)
    scalar("test.f64", VT.FLOAT64, 3.141592653589793)
    array("test.arr.u8", VT.UINT8, [0, 1, 255])
    array("test.arr.i16", VT.INT16, [-32768, 0, 32767])
    array("test.arr.u32", VT.UINT32, [16, 24, 24, 0])
    array("test.arr.i32", VT.INT32, [-1, 2, -3])
    array("test.arr.f32", VT.FLOAT32, [0.5, -0.25, 1024.0])
    array("test.arr.bool", VT.BOOL, [True, False, True])
    array("test.arr.string", VT.STRING, ["<s>", "</s>", "héllo", ""])
    array("test.arr.u64", VT.UINT64, [2**63, 1])
    array("test.arr.f64", VT.FLOAT64, [1e-300, -2.5])
    # Nested: gguf-py infers the inner element type (int -> i32).
    w.add_key_value("test.arr.nested", [[1, 2], [3]], VT.ARRAY)
    expected_kv.append({
        "key": "test.arr.nested", "type": "array", "elem": "array",
        "value": [{"elem": "i32", "value": [1, 2]}, {"elem": "i32", "value": [3]}],
    })

    tensors = []

    def tensor(name, array_np, raw_dtype=None, ggml_dims=None):
        if raw_dtype is None:
            w.add_tensor(name, array_np)
            ty = {np.float32: "F32", np.float16: "F16", np.int8: "I8"}[array_np.dtype.type]
        else:
            w.add_tensor(name, array_np, raw_dtype=raw_dtype)
            ty = raw_dtype.name
        dims = ggml_dims if ggml_dims is not None else list(reversed(array_np.shape))
        tensors.append({"name": name, "type": ty, "dims": [int(d) for d in dims],
                        "hex": array_np.tobytes().hex()})

    f32 = (np.arange(12, dtype=np.float32) * 0.5 - 3.0).reshape(3, 4)
    tensor("w.f32", f32)
    tensor("w.f16", (np.arange(6, dtype=np.float32) / 4).astype(np.float16).reshape(2, 3))
    tensor("w.i8", np.arange(-4, 4, dtype=np.int8))
    src = np.sin(np.arange(2 * 64, dtype=np.float32)).reshape(2, 64)
    for qt in (QT.Q8_0, QT.Q4_0, QT.Q5_1, QT.BF16):
        q = gguf.quants.quantize(src, qt)
        tensor(f"w.{qt.name.lower()}", q, raw_dtype=qt, ggml_dims=[64, 2])
    # A K-quant as raw bytes (gguf-py has no K-quant quantizer): one Q6_K row of 256.
    q6k = (np.arange(210, dtype=np.uint32) * 37 % 251).astype(np.uint8).reshape(1, 210)
    tensor("w.q6_k", q6k, raw_dtype=QT.Q6_K, ggml_dims=[256, 1])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    manifest = {"version": 3, "alignment": ALIGNMENT, "metadata": expected_kv, "tensors": tensors}
    (OUT_DIR / "gguf_py_sample.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes) and its manifest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
