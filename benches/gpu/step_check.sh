#!/usr/bin/env bash
# Where a CUDA training step's time and memory go, in one run (see docs/gpu.md). From the repo root:
#   bash benches/gpu/step_check.sh [INCC] [BASELINE_INCC]
# INCC defaults to target/release/incc or .gpubin/incc.xz; BASELINE_INCC (e.g. an earlier commit
# built with --features cuda, carried as .gpubin/incc-before.xz) is measured in the same run.
# inception_resnet_v2, synthetic 299x299 data, 1000 classes, batch 32, state on the GPU:
#   1. steady-state images/s and peak GPU memory of: the baseline binary; this binary; this binary
#      with --recompute blocks; with --cuda-option prefer_nhwc=1; with --cuda-option
#      arena_extend_strategy=kSameAsRequested;
#      each as a ratio to this binary's default run;
#   2. ONNX Runtime's profile of PROFILE_STEPS steps: time per op type and the slowest nodes;
#   3. PyTorch (timm's inception_resnet_v2, RMSprop as the paper), same batch, in the same run;
#   4. inference images/s at batch 32 and 128 with and without prefer_nhwc=1, and its profile;
#   5. correctness: every parameter, slot and statistic after 2 steps on CUDA and on the CPU.
# Results: $OUT/summary.txt and $OUT/step_check.tar.gz (every figure, both profiles).
# Knobs (environment): OUT, ARCH, BATCH, SIZE, CLASSES, STEPS, PROFILE_STEPS, PROVIDER, TORCH=0.
# A dry run without a GPU: PROVIDER=cpu ARCH=benches/small_inception_resnet.inc SIZE=64 CLASSES=10
# STEPS=15 PROFILE_STEPS=4 TORCH=0 bash benches/gpu/step_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/incc-gpu}; mkdir -p "$OUT"
# Everything is written to WORK and packed into $OUT/step_check.tar.gz at the end, with the summary
# beside it (the device tool brings back at most 8 files).
WORK=$(mktemp -d /tmp/incc-step-check.XXXX)
ARCH=${ARCH:-archs/inception_resnet_v2.inc}
BATCH=${BATCH:-32}; BATCH2=${BATCH2:-64}; SIZE=${SIZE:-299}; CLASSES=${CLASSES:-1000}
STEPS=${STEPS:-30}; PROFILE_STEPS=${PROFILE_STEPS:-10}
PROVIDER=${PROVIDER:-cuda}; TORCH=${TORCH:-1}
if [ "$PROVIDER" = cuda ] && [ -z "${ORT_DYLIB_PATH:-}" ]; then source .ortgpu/on-device.sh .ortgpu; fi

unpack() {  # unpack FILE.xz to a temporary executable; print its path
  local dst=/tmp/incc-step-check-$(basename "$1" .xz)
  [ -x "$dst" ] || { python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$dst" && chmod +x "$dst"; }
  echo "$dst"
}
BIN=${1:-target/release/incc}
[ -x "$BIN" ] || BIN=$(unpack .gpubin/incc.xz)
BASE=${2:-}
[ -z "$BASE" ] && [ -f .gpubin/incc-before.xz ] && BASE=$(unpack .gpubin/incc-before.xz)

peak_memory() {  # samples nvidia-smi until killed; prints the peak MiB
  local peak=0; trap 'echo $peak; exit' TERM
  while true; do
    m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
    [ -n "$m" ] && [ "$m" -gt "$peak" ] && peak=$m
    sleep 0.2
  done
}

# run NAME BINARY [OPTIONS...]: trains STEPS steps; appends "NAME images/s peak_MiB" to $WORK/steps.txt
run() {
  local name=$1 bin=$2; shift 2
  echo "== $name: $bin train --provider $PROVIDER $*"
  peak_memory > "$WORK/peak_$name.txt" & local sampler=$!
  rm -rf "/tmp/step-check-$name"
  "$bin" train "$ARCH" --data synthetic:$((BATCH * (STEPS + 1))),$SIZE,$CLASSES --provider "$PROVIDER" --batch "$BATCH" \
    --epochs 1 --max-steps "$STEPS" --workers 8 --quiet --out "/tmp/step-check-$name" "$@" 2>&1 | tail -2
  kill -TERM $sampler; wait $sampler 2>/dev/null
  python3 - "/tmp/step-check-$name/metrics.jsonl" "$BATCH" "$name" "$(cat "$WORK/peak_$name.txt")" <<'PY' | tee -a "$WORK/steps.txt"
import json, sys
path, batch, name, peak = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    t = [json.loads(l)["elapsed_s"] for l in open(path) if '"kind":"step"' in l]
except OSError:
    t = []
warm = min(10, len(t) // 3)
rate = batch * (len(t) - 1 - warm) / (t[-1] - t[warm]) if len(t) > warm + 2 else float("nan")
print(f"{name} {rate:.1f} {peak}")
PY
}

# torch_step NAME BATCH: timm's inception_resnet_v2 step in PyTorch; appends "NAME images/s reserved_MiB"
torch_step() {
  echo "== PyTorch timm inception_resnet_v2, RMSprop, label smoothing 0.1, batch $2"
  python3 - "$2" "$STEPS" "$1" <<'PY' | tee -a "$WORK/steps.txt"
import sys, time, torch, timm, torch.nn.functional as F
batch, steps, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
model = timm.create_model("inception_resnet_v2", pretrained=False, drop_rate=0.2).cuda().train()
opt = torch.optim.RMSprop(model.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9)
x = torch.randn(batch, 3, 299, 299, device="cuda"); y = torch.randint(0, 1000, (batch,), device="cuda")
torch.cuda.reset_peak_memory_stats(); times = []
for i in range(steps):
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y, label_smoothing=0.1).backward(); opt.step()
    torch.cuda.synchronize(); times.append(time.perf_counter() - t)
print(f"{name} {batch * len(times[10:]) / sum(times[10:]):.1f} {torch.cuda.max_memory_reserved() // 2**20}")
PY
}

: > "$WORK/steps.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$WORK/gpu.txt"
# Most important first: a run cut short by the device's time limit keeps what it measured ($OUT/log).
run incc "$BIN"
[ "$TORCH" = 1 ] && torch_step torch "$BATCH"
[ -n "$BASE" ] && run baseline "$BASE"

echo "== profile of $PROFILE_STEPS steps"
rm -rf /tmp/step-check-profile
"$BIN" train "$ARCH" --data synthetic:$((BATCH * (PROFILE_STEPS + 1))),$SIZE,$CLASSES --provider "$PROVIDER" --batch "$BATCH" \
  --epochs 1 --max-steps "$PROFILE_STEPS" --workers 8 --quiet --out /tmp/step-check-profile --profile "$WORK/profile.json" 2>&1 \
  | tee "$WORK/profile.txt" | head -60
rm -f "$WORK/profile.trace.json"  # hundreds of MB for this network; the summary is what comes back
run recompute "$BIN" --recompute blocks

if [ "$PROVIDER" = cuda ]; then
  BATCH=$BATCH2 run "incc_b$BATCH2" "$BIN"
  [ "$TORCH" = 1 ] && torch_step "torch_b$BATCH2" "$BATCH2"
  run nhwc "$BIN" --cuda-option prefer_nhwc=1
  run arena_same "$BIN" --cuda-option arena_extend_strategy=kSameAsRequested
fi


if [ "$PROVIDER" = cuda ]; then
  echo "== inference: default layout against prefer_nhwc=1, batch 32 and 128"
  for round in 1; do
    for variant in default nhwc; do
      opt=(); [ $variant = nhwc ] && opt=(--cuda-option prefer_nhwc=1)
      "$BIN" bench "$ARCH" --provider cuda --batch 32,128 --min-time 1 --json "${opt[@]}" > "$WORK/bench_${variant}_$round.json" 2>/dev/null
    done
  done
  echo "== inference profile, batch 32: which nodes ONNX Runtime ran where, and their time"
  "$BIN" bench "$ARCH" --provider cuda --batch 32 --min-time 1 --profile "$WORK/inference_profile.json" 2>&1 | tee "$WORK/inference_profile.txt" | head -45
  rm -f "$WORK/inference_profile.trace.json"
  python3 - "$WORK" <<'PY' | tee "$WORK/inference.txt"
import json, sys
for variant in ("default", "nhwc"):
    for rnd in (1,):
        try:
            rows = json.load(open(f"{sys.argv[1]}/bench_{variant}_{rnd}.json"))["results"]
        except (OSError, ValueError, KeyError) as e:
            print(variant, rnd, "failed:", e); continue
        print(variant, rnd, " ".join("batch %d: %.1f images/s" % (r["batch"], r["images_per_s"]) for r in rows))
PY
fi

echo "== correctness: 2 steps from the same seeded start on $PROVIDER and on the CPU (batch 8)"
for p in "$PROVIDER" cpu; do
  rm -rf "/tmp/step-check-same-$p"
  "$BIN" train "$ARCH" --data synthetic:24,$SIZE,$CLASSES --provider "$p" --batch 8 --epochs 1 --max-steps 2 --quiet \
    --out "/tmp/step-check-same-$p" 2>&1 | tail -1
done
python3 - "/tmp/step-check-same-$PROVIDER/last.safetensors" /tmp/step-check-same-cpu/last.safetensors <<'PY' | tee "$WORK/same_start.txt"
# Every tensor of the two checkpoints (parameters, slots, running statistics): the largest
# difference relative to the tensor's largest value. safetensors: u64 header size, JSON, data.
import json, struct, sys
import numpy as np
def tensors(path):
    raw = open(path, "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; head = json.loads(raw[8:8 + n])
    out = {}
    for name, t in head.items():
        if name != "__metadata__" and t["dtype"] == "F32":
            a, b = t["data_offsets"]; out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], np.float32)
    return out
x, y = tensors(sys.argv[1]), tensors(sys.argv[2])
worst = max((float(np.abs(x[k] - y[k]).max() / max(1e-12, np.abs(y[k]).max())), k) for k in y if y[k].size)
print(f"{len(y)} tensors after 2 steps: largest relative difference {worst[0]:.2e} ({worst[1]}); {'within' if worst[0] < 1e-3 else 'OVER'} 1e-3")
PY

echo "== summary (ratios against runs measured in this run)"
python3 - "$WORK/steps.txt" "$BATCH" "$BATCH2" <<'PY' | tee "$WORK/summary.txt"
import sys
rows = {l.split()[0]: (float(l.split()[1]), l.split()[2]) for l in open(sys.argv[1]) if len(l.split()) == 3}
b1, b2 = sys.argv[2], sys.argv[3]
print(f"| run | images/s | ratio to incc (batch {b1}) | peak GPU memory (MiB) |\n|---|---|---|---|")
ref = rows.get("incc", (float("nan"),))[0]
for name, (rate, peak) in rows.items():
    print(f"| {name} | {rate:.1f} | {rate / ref:.2f} | {peak} |")
for batch, mine, theirs in ((b1, "incc", "torch"), (b2, f"incc_b{b2}", f"torch_b{b2}")):
    if mine in rows and theirs in rows:
        (r1, m1), (r2, m2) = rows[mine], rows[theirs]
        memory = float(m1) / float(m2) if m1.isdigit() and m2.isdigit() and float(m2) > 0 else float("nan")
        print(f"batch {batch}: incc / PyTorch images/s {r1 / r2:.2f}, peak memory (nvidia-smi) / PyTorch reserved {memory:.2f}")
PY
cp "$WORK/summary.txt" "$OUT/summary.txt"
tar czf "$OUT/step_check.tar.gz" -C "$WORK" .
echo "results: $OUT/summary.txt, $OUT/step_check.tar.gz"
