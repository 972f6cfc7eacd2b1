#!/usr/bin/env bash
# The CUDA check of incc, in one run on a GPU machine (see docs/gpu.md). From the repo root:
#   bash benches/gpu/cuda_check.sh [INCC_BINARY]
# Needs: an incc built with `--features cuda` (default: target/release/incc, or .gpubin/incc.xz),
# the ONNX Runtime CUDA kit in .ortgpu/ (../shared/gpu/make-ort-gpu-kit.sh .ortgpu, plus a copy of
# on-device.sh there), python3 with torch and timm. Writes its figures to $OUT (default /tmp/incc-gpu).
# 1. which provider ran (CUDA requested with error_on_failure: no silent CPU fallback);
# 2. the same batch on CUDA and on the CPU: logits agree within 1e-3 relative;
# 3. incc bench on CUDA against timm's PyTorch eager fp32 (cudnn.benchmark off and on), same batches.
set -uo pipefail
OUT=${OUT:-/tmp/incc-gpu}; mkdir -p "$OUT"
ARCH=${ARCH:-archs/inception_resnet_v2.inc}
TIMM=${TIMM:-inception_resnet_v2}
BATCHES=${BATCHES:-1,8,32,128}
source .ortgpu/on-device.sh .ortgpu
BIN=${1:-target/release/incc}
if [ ! -x "$BIN" ] && [ -f .gpubin/incc.xz ]; then
  BIN=/tmp/incc-gpu-bin
  python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(".gpubin/incc.xz"), open(sys.argv[1], "wb"))' "$BIN" && chmod +x "$BIN"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch, timm; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "timm", timm.__version__)' | tee -a "$OUT/gpu.txt"

echo "== 1-2. provider and CPU/CUDA agreement (batch 8, synthetic input, seeded weights)"
"$BIN" run "$ARCH" --provider cuda --batch 8 --save-output "$OUT/cuda.npy" 2>&1 | tee "$OUT/run.txt"
"$BIN" run "$ARCH" --provider cpu --batch 8 --save-output "$OUT/cpu.npy" 2>&1 | tee -a "$OUT/run.txt"
python3 - "$OUT" <<'PY' | tee -a "$OUT/run.txt"
import sys, numpy as np
out = sys.argv[1]
a, b = np.load(f"{out}/cuda.npy"), np.load(f"{out}/cpu.npy")
rel = float(np.abs(a - b).max() / np.abs(b).max())
print(f"CUDA vs CPU logits: max|diff|/max|cpu| = {rel:.2e} ({'ok' if rel < 1e-3 else 'TOO LARGE'}), argmax equal: {bool((a.argmax(1) == b.argmax(1)).all())}")
PY

echo "== 3. incc bench on CUDA"
"$BIN" bench "$ARCH" --provider cuda --batch "$BATCHES" --min-time 2 --json > "$OUT/bench_incc.json" 2> "$OUT/bench_incc.log"
cat "$OUT/bench_incc.log"
echo "== 3. timm $TIMM in PyTorch, eager fp32"
python3 - "$OUT" "$TIMM" "$BATCHES" <<'PY'
import json, sys, time, torch, timm
out, name, batches = sys.argv[1], sys.argv[2], [int(b) for b in sys.argv[3].split(",")]
model = timm.create_model(name, pretrained=False).cuda().eval()
results = {}
for bench_mode in (False, True):
    torch.backends.cudnn.benchmark = bench_mode
    for n in batches:
        x = torch.randn(n, 3, 299, 299, device="cuda")
        with torch.no_grad():
            for _ in range(3):
                model(x)
            torch.cuda.synchronize()
            times, start = [], time.perf_counter()
            while len(times) < 10 or time.perf_counter() - start < 2.0:
                t = time.perf_counter(); model(x); torch.cuda.synchronize(); times.append((time.perf_counter() - t) * 1e3)
        times.sort()
        med = times[len(times) // 2]
        results[f"{'cudnn_benchmark' if bench_mode else 'default'}/{n}"] = {"batch": n, "median_ms": med, "images_per_s": n / med * 1e3, "runs": len(times)}
results["settings"] = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32, "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}
json.dump(results, open(f"{out}/bench_torch.json", "w"), indent=1)
incc = {r["batch"]: r for r in json.load(open(f"{out}/bench_incc.json"))["results"]}
print(f"{'batch':>5} {'incc img/s':>11} {'torch img/s':>12} {'torch+bench':>12} {'incc/torch':>10} {'incc/torch+bench':>16}")
for n in batches:
    i, d, c = incc[n]["images_per_s"], results[f"default/{n}"]["images_per_s"], results[f"cudnn_benchmark/{n}"]["images_per_s"]
    print(f"{n:>5} {i:>11.1f} {d:>12.1f} {c:>12.1f} {i/d:>10.2f} {i/c:>16.2f}")
print("torch settings:", results["settings"])
PY
