#!/usr/bin/env python3
"""`incc compile archs/inception_resnet_v2.inc -o m.onnx` (seeded weights) against
`torch.onnx.export` of timm's inception_resnet_v2 (its default exporter, torch.export-based, and
the legacy TorchScript one, `dynamo=False`), alternating: wall time and peak resident memory of
each process, the export call alone, and the model's bytes.

    cargo build --release
    python3 benches/compile_vs_torch_export.py [--rounds 3] [--lock /tmp/incc-heavy.lock]

Needs torch, timm, onnx and onnxscript (the default exporter's). Peak memory is the child's
ru_maxrss (wait4).
"""
import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export_child(path, exporter):
    import torch
    import timm

    torch.manual_seed(0)
    net = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=1000).eval()
    x = torch.randn(1, 3, 299, 299)
    t = time.time()
    torch.onnx.export(net, (x,), path, opset_version=18, dynamo=exporter == "dynamo")
    print(json.dumps({"export_s": time.time() - t, "torch": torch.__version__}), flush=True)


def run(cmd, lock):
    f = open(lock, "a") if lock else None
    if f:
        fcntl.flock(f, fcntl.LOCK_EX)
    try:
        # The child's output goes to files: a pipe left unread while waiting could fill and stall it.
        with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
            start = time.time()
            p = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True)
            _, status, usage = os.wait4(p.pid, 0)
            wall = time.time() - start
            out_f.seek(0), err_f.seek(0)
            out, err = out_f.read(), err_f.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
        return wall, usage.ru_maxrss * 1024, out
    finally:
        if f:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


def size(path):
    return sum(p.stat().st_size for p in Path(path).parent.glob(Path(path).name + "*"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--incc", default=str(ROOT / "target/release/incc"))
    ap.add_argument("--arch", default=str(ROOT / "archs/inception_resnet_v2.inc"))
    ap.add_argument("--lock", default=None, help="hold this file locked (flock) during each run")
    a = ap.parse_args()
    exporters = ["dynamo", "legacy"]
    runs = {who: [] for who in ["incc"] + exporters}
    with tempfile.TemporaryDirectory(prefix="incc-export-") as d:
        for r in range(a.rounds):
            for who in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                path = os.path.join(d, f"{who}.onnx")
                if who == "incc":
                    wall, peak, _ = run([a.incc, "compile", a.arch, "-o", path], a.lock)
                    runs[who].append({"wall": wall, "peak": peak, "bytes": size(path)})
                else:
                    wall, peak, out = run([sys.executable, __file__, "--export-child", path, who], a.lock)
                    r_ = json.loads(out.strip().splitlines()[-1])
                    runs[who].append({"wall": wall, "peak": peak, "bytes": size(path), "export": r_["export_s"], "version": r_["torch"]})
                print(f"round {r + 1} {who}: " + json.dumps(runs[who][-1]), file=sys.stderr, flush=True)
    med = lambda rs, k: statistics.median(x[k] for x in rs)
    mb = lambda b: f"{b / 1e6:.0f} MB"
    incc = runs["incc"]
    print(f"\ninception_resnet_v2 to ONNX, {a.rounds} runs each alternating (medians); torch {runs['legacy'][0]['version']}")
    print("| | wall (process) | export call | peak RSS | model bytes | peak / model bytes |")
    print("|---|---|---|---|---|---|")
    print(f"| incc compile | {med(incc, 'wall'):.2f} s | - | {mb(med(incc, 'peak'))} | {mb(med(incc, 'bytes'))} | {med(incc, 'peak') / med(incc, 'bytes'):.2f}x |")
    for who in exporters:
        t = runs[who]
        print(f"| torch.onnx.export ({who}) | {med(t, 'wall'):.2f} s | {med(t, 'export'):.2f} s | {mb(med(t, 'peak'))} | {mb(med(t, 'bytes'))} | "
              f"{med(t, 'peak') / med(t, 'bytes'):.2f}x |")
    for who in exporters:
        t = runs[who]
        print(f"torch.onnx.export ({who}) / incc compile: {med(t, 'export') / med(incc, 'wall'):.1f}x (export call alone), "
              f"{med(t, 'wall') / med(incc, 'wall'):.1f}x (whole processes), peak {med(t, 'peak') / med(incc, 'peak'):.1f}x")

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--export-child":
        export_child(sys.argv[2], sys.argv[3])
    else:
        main()
