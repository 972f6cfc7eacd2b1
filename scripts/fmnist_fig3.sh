#!/usr/bin/env bash
# The paper's Fig 3 at small scale: a plain Inception network and its residual twin trained on
# Fashion-MNIST with identical settings, then both curves on one figure. About 45 minutes on 2 cores.
#   scripts/fmnist_fig3.sh [OUT_DIR]   (default runs/)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs}
cargo build --release --quiet
data=fashion-mnist:/usr/share/datasets/fashion-mnist
for variant in plain residual; do
  arch=archs/mini/inception_fmnist.inc
  [ $variant = residual ] && arch=archs/mini/inception_resnet_fmnist.inc
  target/release/incc train $arch --data $data --epochs 10 --batch 128 --optimizer rmsprop --lr 0.045 \
    --ema 0.999 --seed 1 --out "$out/fmnist-$variant"
done
target/release/incc plot "$out/fmnist-plain" "$out/fmnist-residual" --out docs/fmnist-fig3.png
target/release/incc plot "$out/fmnist-plain" "$out/fmnist-residual" --out docs/fmnist-fig3.svg
