#!/usr/bin/env bash
# Prepares, on the development machine, what tools/gpu/bench.sh needs on a lent GPU machine, where
# nothing can be fetched or built with cargo: a stripped release build of latte (.gpu/latte), the
# Vulkan loader packages (.gl/*.deb) and the diffusers wheel the PyTorch peer imports (.whl/).
# All three folders are git-ignored locally (.git/info/exclude) and carried by the device tool:
#   carry: [".gpu", ".gl", ".whl"]
# Run from the repository root: `bash tools/gpu/prepare.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."

for d in .gpu .gl .whl; do
  grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
mkdir -p .gpu .gl .whl

# Without debug info and stripped, the binary fits the 64 MiB the device tool carries.
CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release
cp target/release/latte .gpu/latte
strip .gpu/latte
ls -la .gpu/latte

# The Vulkan loader (the NVIDIA driver brings its ICD; the image has no loader).
mkdir -p /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
apt-get $o update -qq
(cd .gl && apt-get $o download libvulkan1)

# diffusers (AutoencoderDC) for tools/bench/pytorch_peer.py; its other needs are in the image.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
  -d .whl diffusers==0.42.1 importlib-metadata zipp
ls -la .gl .whl
