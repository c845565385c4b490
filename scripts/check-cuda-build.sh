#!/usr/bin/env bash
# Compile-checks the `cuda` cargo feature on a machine with no GPU and no CUDA install:
# NVIDIA's CUDA compiler comes from its Python wheels (pinned to a toolkit version that
# cudarc, candle's CUDA binding, knows) in .venv-cuda, candle's CUDA kernels are compiled
# for compute capability 8.0 (no GPU to ask), then `cargo check --features cuda`.
#
#   scripts/check-cuda-build.sh            # the whole gateway with `--features cuda`
#   scripts/check-cuda-build.sh -p slmgate-local-model
#
# Not part of scripts/test.sh: with candle's kernels it takes ~11 minutes on 2 cores, and
# nothing can run them here. Metal cannot be checked on Linux (it needs Apple's SDK).
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_VERSION="${CUDA_VERSION:-13.4.92}"
CCCL_VERSION="${CCCL_VERSION:-13.3.5.0.6}"
if [ ! -x .venv-cuda/bin/python ]; then
  python3 -m venv .venv-cuda
fi
.venv-cuda/bin/python -m pip install --quiet --disable-pip-version-check \
  "nvidia-cuda-nvcc==$CUDA_VERSION" "nvidia-cuda-runtime==$CUDA_VERSION" \
  "nvidia-cuda-crt==$CUDA_VERSION" "nvidia-nvvm==$CUDA_VERSION" \
  "nvidia-cuda-cccl==$CCCL_VERSION"
root=$(.venv-cuda/bin/python -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
# The wheels do not always keep the executable bits.
chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
export PATH="$root/bin:$PATH" CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
nvcc --version | tail -n 1
if [ "$#" -eq 0 ]; then
  set -- -p slmgate
fi
exec cargo check --features cuda --target-dir target/cuda-check "$@"
