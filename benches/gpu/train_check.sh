#!/usr/bin/env bash
# Training on a GPU, in one run (see docs/gpu.md). From the repo root, on the GPU machine:
#   bash benches/gpu/train_check.sh [INCC_BINARY]
# Needs what benches/gpu/cuda_check.sh needs. Writes its figures to $OUT (default /tmp/incc-gpu).
# 1. incc train inception_resnet_v2 on CUDA, synthetic 299x299 data, 1000 classes, batch 32 and 64:
#    steady-state images/s (from the step timestamps, after 10 warm-up steps) and peak GPU memory;
# 2. the same steps in PyTorch (timm's inception_resnet_v2, RMSprop as the paper, label smoothing):
#    images/s and peak memory;
# 3. one training step from the same seeded start on CUDA and on the CPU: their losses.
set -uo pipefail
OUT=${OUT:-/tmp/incc-gpu}; mkdir -p "$OUT"
ARCH=${ARCH:-archs/inception_resnet_v2.inc}
STEPS32=${STEPS32:-100}
STEPS64=${STEPS64:-60}
[ -n "${ORT_DYLIB_PATH:-}" ] || source .ortgpu/on-device.sh .ortgpu
BIN=${1:-target/release/incc}
if [ ! -x "$BIN" ] && [ -f .gpubin/incc.xz ]; then
  BIN=/tmp/incc-gpu-bin
  [ -x $BIN ] || { python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(".gpubin/incc.xz"), open(sys.argv[1], "wb"))' "$BIN" && chmod +x "$BIN"; }
fi
peak_memory() {  # samples nvidia-smi until killed; prints the peak MiB at the end
  local peak=0; trap 'echo $peak; exit' TERM
  while true; do m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1); [ "$m" -gt "$peak" ] && peak=$m; sleep 0.2; done
}
for batch in 32 64; do
  steps=$([ $batch = 32 ] && echo $STEPS32 || echo $STEPS64)
  echo "== incc train, batch $batch, $steps steps"
  peak_memory > "$OUT/peak_incc_$batch.txt" & sampler=$!
  "$BIN" train "$ARCH" --data synthetic:$((batch * steps + batch)),299,1000 --provider cuda --batch $batch --epochs 1 \
    --max-steps $steps --workers 12 --quiet --out /tmp/irv2-$batch 2>&1 | tail -3
  kill -TERM $sampler; wait $sampler 2>/dev/null
  python3 - /tmp/irv2-$batch/metrics.jsonl $batch <<'PY' | tee "$OUT/train_incc_$batch.txt"
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l and '"kind":"step"' in l]
b = int(sys.argv[2]); t = [s["elapsed_s"] for s in steps]
if len(t) > 20:
    print(f"incc batch {b}: {len(t)} steps, steady state {b * (len(t) - 11) / (t[-1] - t[10]):.1f} images/s (steps 11..{len(t)}), loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}")
else:
    print(f"incc batch {b}: only {len(t)} steps ran")
PY
  echo "peak GPU memory (nvidia-smi, MiB): $(cat $OUT/peak_incc_$batch.txt)"
done
echo "== PyTorch timm inception_resnet_v2, RMSprop, label smoothing 0.1"
python3 - "$STEPS32" "$STEPS64" <<'PY' | tee "$OUT/train_torch.txt"
import sys, time, torch, timm, torch.nn.functional as F
steps = {32: int(sys.argv[1]), 64: int(sys.argv[2])}
for batch in (32, 64):
    torch.manual_seed(0)
    model = timm.create_model("inception_resnet_v2", pretrained=False, drop_rate=0.2).cuda().train()
    opt = torch.optim.RMSprop(model.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9)
    x = torch.randn(batch, 3, 299, 299, device="cuda"); y = torch.randint(0, 1000, (batch,), device="cuda")
    torch.cuda.reset_peak_memory_stats(); times = []
    for i in range(steps[batch]):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1); loss.backward(); opt.step()
        torch.cuda.synchronize(); times.append(time.perf_counter() - t)
    steady = times[10:]
    print(f"torch batch {batch}: {len(times)} steps, steady state {batch * len(steady) / sum(steady):.1f} images/s, "
          f"peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB, reserved {torch.cuda.max_memory_reserved() / 2**20:.0f} MiB")
    del model, opt; torch.cuda.empty_cache()
PY
echo "== one step from the same start: CUDA vs CPU"
for p in cuda cpu; do
  "$BIN" train "$ARCH" --data synthetic:16,299,1000 --provider $p --batch 8 --epochs 1 --max-steps 1 --quiet --out /tmp/irv2-one-$p 2>&1 | tail -1
done | tee "$OUT/one_step.txt"
