#!/usr/bin/env bash
# Regenerates assets/demo-f16.gguf, the demo model embedded in the `latte` binary (used by
# `latte generate` without -m), from the demo checkpoint tools/reference/demo_model (written by
# tools/reference/train_demo.py). Deterministic: tests/demo_model.rs converts the checkpoint again
# and requires byte-identical output, so rerun this after retraining the demo model.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet -- convert tools/reference/demo_model --type f16 --quiet -o assets/demo-f16.gguf
ls -l assets/demo-f16.gguf
