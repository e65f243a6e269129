#!/usr/bin/env bash
# The demo model's one command: tools/reference/train_demo.sh [WORK_DIR] [OUT_DIR]
# Runs train_demo.py's stages as two processes on two cores (dcae beside tower -> vlm), then flow and
# assemble, one thread each (seeded: the same stages give the same weights), and prints the wall time.
# Stage outputs already in WORK_DIR are reused; delete it for a run from scratch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
work=${1:-/tmp/latte_demo_work}
out=${2:-$here/demo_model}
stage() { nice -n 19 "$py" "$here/train_demo.py" --work "$work" --out "$out" --stage "$1"; }
start=$(date +%s)
stage tokenizer
stage dcae > "$work.dcae.log" 2>&1 &
dcae=$!
stage tower
stage vlm
wait "$dcae" || { cat "$work.dcae.log"; exit 1; }
stage flow
stage assemble
echo "train_demo.sh: $(( $(date +%s) - start )) s wall"
