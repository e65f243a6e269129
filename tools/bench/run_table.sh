#!/usr/bin/env bash
# Reproduces docs/BENCHMARKS.md: the synthetic paper-size model (Qwen2-VL-2B shapes + 28-layer replica in
# 4 groups + DC-AE f32c32, 256x256) in each type, latte against its peers measured in the same run:
# llama.cpp (text decoder, built from llama-cpp-sys-2's vendored sources: cargo feature ggml-peer) and
# PyTorch on CPU running tools/reference at the same shapes (F32 and BF16).
#
#   PYTHON=.venv/bin/python tools/bench/run_table.sh [OUT_DIR]
#
# Env: TYPES (default "q4_0 q8_0 q4_k f16"), THREADS (default: all cores), REPS (3), STEPS (image steps,
# default 40), DENSE_STEPS (default 8: a dense step costs 4 layerwise ones), PYTHON (with torch,
# diffusers, matplotlib: tools/reference/requirements.txt + matplotlib). Needs ~20 GB of disk in OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench-out}
TYPES=${TYPES:-"q4_0 q8_0 q4_k f16"}
THREADS=${THREADS:-$(nproc)}
REPS=${REPS:-3}
STEPS=${STEPS:-40}
DENSE_STEPS=${DENSE_STEPS:-8}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
cargo build --release --features ggml-peer
LATTE=target/release/latte

for dtype in f32 bf16; do
  "$PYTHON" tools/bench/pytorch_peer.py --threads "$THREADS" --dtype "$dtype" --reps "$REPS" \
    --steps "$STEPS" --json "$OUT/pytorch-$dtype.json" > /dev/null
done

for ty in $TYPES; do
  model="$OUT/latte-flow-2b-$ty.gguf"
  [ -f "$model" ] || "$LATTE" convert --synthetic latte-flow-2b --type "$ty" --quiet -o "$model"
  "$LATTE" bench -m "$model" -t "$THREADS" -r "$REPS" --tests pp512,tg128,load --llama-cpp \
    -o md > "$OUT/text-$ty.md"
  "$LATTE" bench -m "$model" -t "$THREADS" -r "$REPS" --tests img,vae --steps "$STEPS" \
    --peer-json "$OUT/pytorch-f32.json" --peer-json "$OUT/pytorch-bf16.json" \
    --trace "$OUT/trace-img-$ty.json" -o md > "$OUT/img-$ty.md"
  "$LATTE" bench -m "$model" -t "$THREADS" -r 1 --tests img-dense --steps "$DENSE_STEPS" \
    --trace "$OUT/trace-dense-$ty.json" -o md > "$OUT/dense-$ty.md"
done

first=$(echo "$TYPES" | awk '{print $1}')
"$LATTE" bench -m "$OUT/latte-flow-2b-$first.gguf" -t "$THREADS" -r 1 --tests img --steps "$STEPS" \
  --mem-budget 1G --trace "$OUT/trace-budget-$first.json" -o md > "$OUT/budget-$first.md"
"$PYTHON" tools/bench/plot.py --steps "$OUT/trace-img-$first.json" \
  --memory "layerwise=$OUT/trace-img-$first.json" "layerwise --mem-budget=$OUT/trace-budget-$first.json" \
  "dense=$OUT/trace-dense-$first.json" --out docs
ls "$OUT"/*.md
