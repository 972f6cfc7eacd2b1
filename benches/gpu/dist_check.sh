#!/usr/bin/env bash
# The data-parallel step on a GPU at world size 1 (one GPU cannot host two NCCL ranks), see
# docs/training.md#data-parallel-training. From the repo root, on the GPU machine, with incc built
# `--features cuda,mpi` and NCCL on the library path (pip install nvidia-nccl-cu13; link its
# nvidia/nccl/lib/libnccl.so.2 as libnccl.so in a folder on LD_LIBRARY_PATH):
#   bash benches/gpu/dist_check.sh [INCC_BINARY]
# inception_resnet_v2 on CUDA, synthetic 299x299 data, batch 32: the single step graph against the
# step split in two with the gradients averaged by NCCL in between (`--split-step`), then the same
# split under `mpirun -np 1` (an MPI world: the NCCL id travels over MPI). Prints each run's summary line:
# images/s and the all-reduce time per step. Writes them to $OUT (default /tmp/incc-gpu).
set -uo pipefail
OUT=${OUT:-/tmp/incc-gpu}; mkdir -p "$OUT"
ARCH=${ARCH:-archs/inception_resnet_v2.inc}
STEPS=${STEPS:-60}
[ -n "${ORT_DYLIB_PATH:-}" ] || source .ortgpu/on-device.sh .ortgpu
BIN=${1:-target/release/incc}
run() {  # NAME, EXTRA_OPTIONS, then the command that starts incc
  local name=$1 extra=$2; shift 2
  echo "== $name"
  rm -rf "/tmp/irv2-dist-$name"
  # shellcheck disable=SC2086 # EXTRA_OPTIONS: words
  "$@" train "$ARCH" --data synthetic:$((32 * STEPS + 32)),299,1000 --provider cuda --batch 32 --epochs 1 \
    --max-steps "$STEPS" --limit-val 32 --workers 12 --quiet --out "/tmp/irv2-dist-$name" $extra 2>&1 | tail -2
}
{
  run single "" "$BIN"
  run split --split-step "$BIN"
  if command -v mpirun >/dev/null; then run mpi-1 --split-step mpirun --allow-run-as-root -np 1 "$BIN"; fi
} | tee "$OUT/dist_check.txt"
