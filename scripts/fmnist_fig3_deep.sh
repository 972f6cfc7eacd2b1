#!/usr/bin/env bash
# The paper's Fig 3 where depth can matter: archs/mini/deep_inception_fmnist.inc (3 stages of 5
# width-preserving Inception blocks) trained plain, as its residual twin with the paper's scaling
# (--residualize scale=0.2) and without scaling (scale=1.0), identical settings, on the first
# 20,000 Fashion-MNIST training images; then the curves of all three on one figure.
# Each run takes 35-75 minutes on 2 cores.   scripts/fmnist_fig3_deep.sh [OUT_DIR] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs}
epochs=${2:-10}
cargo build --release --quiet
common=(--data fashion-mnist:/usr/share/datasets/fashion-mnist --epochs "$epochs" --batch 128 --optimizer rmsprop
  --lr 0.045 --ema 0.999 --seed 1 --limit-train 20000)
arch=archs/mini/deep_inception_fmnist.inc
target/release/incc train $arch "${common[@]}" --out "$out/deep-plain"
target/release/incc train $arch "${common[@]}" --residualize scale=0.2 --out "$out/deep-residual-0.2"
target/release/incc train $arch "${common[@]}" --residualize scale=1.0 --out "$out/deep-residual-1.0"
for ext in png svg; do
  target/release/incc plot "$out/deep-plain" "$out/deep-residual-0.2" "$out/deep-residual-1.0" --out docs/fmnist-fig3-deep.$ext
done
