#!/usr/bin/env bash
# The GPU benchmark, one prepared run on a lent machine (tools/gpu/prepare.sh first; carry .gpu,
# .gl and .whl): the full-size synthetic Q4_0 model (the paper's shapes) through wgpu on Vulkan —
# seconds per step per group, per image, dense, the DC-AE decode, device memory per phase with
# --vram-budget 1G — and PyTorch BF16 on CUDA at the same shapes (tools/bench/pytorch_peer.py),
# attached as peer rows. Everything goes to $OUT (the device tool brings it back); the run keeps
# within ~6 minutes on an H200.
#
#   device run: bash tools/gpu/bench.sh        (timeout_s 560, carry [".gpu", ".gl", ".whl"])
#
# LATTE_GPU_BENCH_QUICK=1 shrinks it to a smoke run (4 steps, 1 repetition, no PyTorch) for trying
# the script on any machine with a Vulkan adapter (lavapipe included: its times are not GPU figures);
# LATTE_GPU_BENCH_MODEL=FILE benchmarks that file instead of the full-size synthetic one.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/latte-gpu-bench}
mkdir -p "$OUT"
LATTE=${LATTE:-.gpu/latte}
[ -x "$LATTE" ] || LATTE=target/release/latte
quick=${LATTE_GPU_BENCH_QUICK:-0}
steps=40; reps=3
[ "$quick" = 1 ] && { steps=4; reps=1; }
log() { echo "== $*" | tee -a "$OUT/bench.log"; }

# The Vulkan loader, if the image lacks one; the NVIDIA ICD from the driver's folder.
if ! ldconfig -p | grep -q libvulkan.so.1; then
  for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -e "$icd" ] && export VK_DRIVER_FILES=$icd
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null; "$LATTE" devices; } | tee "$OUT/devices.txt"
model=${LATTE_GPU_BENCH_MODEL:-}
if [ -z "$model" ]; then
  model=/tmp/latte-q4_0.gguf
  log "full-size synthetic model (Q4_0)"
  "$LATTE" convert --synthetic latte-flow-2b --type q4_0 --quiet -o "$model" 2>&1 | tail -1 | tee -a "$OUT/bench.log"
fi

peer=()
if [ "$quick" != 1 ] && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  log "PyTorch BF16 on CUDA, the same shapes"
  PYTHONUNBUFFERED=1 timeout 200 python3 tools/bench/pytorch_peer.py --device cuda --dtype bf16 \
    --reps "$reps" --steps "$steps" --json "$OUT/peer-cuda-bf16.json" > "$OUT/peer.log" 2>&1 \
    && peer=(--peer-json "$OUT/peer-cuda-bf16.json") || tail -5 "$OUT/peer.log"
fi

log "latte bench --device wgpu (img, img-dense, vae; $steps steps, $reps repetitions)"
timeout 300 "$LATTE" bench -m "$model" --device wgpu --tests img,img-dense,vae --steps "$steps" -r "$reps" \
  "${peer[@]}" -o md > "$OUT/bench.md" 2> "$OUT/bench.stderr"
cat "$OUT/bench.md"

log "latte generate --device wgpu --vram-budget 1G (device memory per phase)"
ids=1,2,3,4,5,6,7,8,9,10,11,12,13,14
"$LATTE" generate -m "$model" --prompt-ids "$ids" --uncond-ids 1,2,3,4,5 --steps "$steps" --device wgpu \
  --vram-budget 1G --dry-run > "$OUT/plan-1g.txt" 2>&1
timeout 120 "$LATTE" generate -m "$model" --prompt-ids "$ids" --uncond-ids 1,2,3,4,5 --steps "$steps" \
  --device wgpu --vram-budget 1G --quiet -o "$OUT/full-1g.png" 2>&1 | tee "$OUT/generate-1g.txt"
log "done"
