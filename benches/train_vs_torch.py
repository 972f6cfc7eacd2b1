#!/usr/bin/env python3
"""Training inception_resnet_v2 on the CPU: `incc train` against timm + PyTorch, one process each,
alternating, same batch size, same threads. Prints, per batch size, the steady step time (median),
the peak resident memory and the start-up (process start to the first step finished) of both and
their ratios, and where incc's start-up and tail go.

    cargo build --release
    python3 benches/train_vs_torch.py [--batch 8,32] [--steps 4] [--rounds 2] [--threads 2] \
        [--baseline OLD_INCC] [--lean] [--accumulate K] [--recompute] [--lock /tmp/incc-heavy.lock]

Needs torch and timm (PyTorch side). It takes minutes: a round is one PyTorch run and one incc run (and one of
`--baseline`, one of `incc train --lean-memory` with `--lean`, one of `incc train --accumulate K` with
`--accumulate K`, one of `incc train --recompute blocks` with `--recompute`, and with both `--lean` and
`--recompute` one of the two options together) per batch size.

PyTorch: timm's `inception_resnet_v2` (1000 classes) in training mode, cross-entropy with label
smoothing 0.1, `torch.optim.RMSprop(lr=0.045, alpha=0.9, eps=1.0, momentum=0.9)`, a fixed random
batch (no loader). incc: `incc train ARCH --data synthetic:B*(K+1),299,1000 --batch B --max-steps K
--threads T --quiet`: the paper's RMSProp, label smoothing 0.1, its loader producing the synthetic
batches. `--max-steps` ends the run before the end of the first epoch, so no evaluation runs; the
run writes its checkpoint and measures the loader alone before it exits (the "tail").

Peak memory is the child's ru_maxrss (wait4). Step times: PyTorch times each step; incc's come
from its metrics.jsonl (`elapsed_s` per step, from the start of the training loop). The start-up
of incc is split with a side measurement made in the same run: `incc compile --train` (compile and
emit the step and evaluation graphs, write them); the rest before the loop is the sessions'
creation and the state's set-up. "Warm-up" is the first step less the steady one; "after
checkpoint" is the loader's throughput probe and the exit.
"""
import argparse
import fcntl
import shutil
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def torch_child(batch, steps, threads):
    """One PyTorch process: prints a JSON line with absolute timestamps."""
    marks = {"start": time.time()}
    import torch
    import torch.nn.functional as F
    import timm

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    marks["imported"] = time.time()
    net = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=1000)
    net.train()
    opt = torch.optim.RMSprop(net.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9)
    x = torch.rand(batch, 3, 299, 299) * 2 - 1
    y = torch.randint(0, 1000, (batch,))
    marks["model"] = time.time()
    ends = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        float(loss)
        ends.append(time.time())
    print(json.dumps({"marks": marks, "step_ends": ends, "torch": torch.__version__, "timm": timm.__version__}), flush=True)


class Lock:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        if self.path:
            self.f = open(self.path, "a")
            fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.path:
            fcntl.flock(self.f, fcntl.LOCK_UN)
            self.f.close()


class TooBig(Exception):
    """The child passed --max-rss and was stopped."""


def run_child(cmd, poll=None, env=None, max_rss=None):
    """Runs cmd; returns (start, end, stdout, maxrss_bytes, cpu_s, rss timeline). `poll(now)` is
    called every 50 ms while it runs. Past `max_rss` bytes resident the child is killed (TooBig):
    the machine is shared."""
    timeline = []
    start = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out_chunks, err_chunks = [], []
    t_out = threading.Thread(target=lambda: out_chunks.append(p.stdout.read()))
    t_err = threading.Thread(target=lambda: err_chunks.append(p.stderr.read()))
    t_out.start(), t_err.start()
    status = None
    while status is None:
        pid, st, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            status = (st, usage)
            break
        now = time.time()
        try:
            for line in open(f"/proc/{p.pid}/status"):
                if line.startswith("VmRSS"):
                    timeline.append((now - start, int(line.split()[1]) * 1024))
        except OSError:
            pass
        if max_rss and timeline and timeline[-1][1] > max_rss:
            p.kill()
            os.wait4(p.pid, 0)
            t_out.join(), t_err.join()
            raise TooBig(timeline[-1][1])
        if poll:
            poll(now)
        time.sleep(0.05)
    end = time.time()
    p.returncode = os.waitstatus_to_exitcode(status[0])
    t_out.join(), t_err.join()
    if poll:
        poll(end)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{''.join(err_chunks)[-3000:]}")
    usage = status[1]
    return start, end, "".join(out_chunks), usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, timeline


def run_torch(a, batch):
    start, end, out, peak, cpu, _ = run_child([sys.executable, __file__, "--torch-child", str(batch), str(a.steps), str(a.threads)], max_rss=a.max_rss)
    r = json.loads(out.strip().splitlines()[-1])
    ends = r["step_ends"]
    steps = [ends[0] - r["marks"]["model"]] + [b - a_ for a_, b in zip(ends, ends[1:])]
    return {
        "steady": statistics.median(steps[1:]) if len(steps) > 1 else steps[0],
        "first": steps[0],
        "startup": ends[0] - start,
        "import": r["marks"]["imported"] - start,
        "model": r["marks"]["model"] - r["marks"]["imported"],
        "peak": peak,
        "cpu": cpu,
        "wall": end - start,
        "version": f"torch {r['torch']}, timm {r['timm']}",
    }


def run_incc(a, batch, incc, extra=()):
    out_dir = Path(tempfile.mkdtemp(prefix="incc-bench-"))
    metrics = out_dir / "metrics.jsonl"
    seen = {}

    def poll(now):
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                r = json.loads(line)
                if r.get("kind") == "step" and r["step"] not in seen:
                    seen[r["step"]] = (now, r["elapsed_s"])

    # One batch more than the run takes: it stops before the epoch's end (no validation).
    cmd = [incc, "train", a.arch, "--data", f"synthetic:{batch * (a.steps + 1)},299,1000", "--batch", str(batch), "--max-steps", str(a.steps),
           "--threads", str(a.threads), "--quiet", "--out", str(out_dir), *extra]
    try:
        start, end, out, peak, cpu, timeline = run_child(cmd, poll, max_rss=a.max_rss)
    except TooBig:
        shutil.rmtree(out_dir)
        raise
    elapsed = [seen[s][1] for s in sorted(seen)]
    steps = [elapsed[0]] + [b - a_ for a_, b in zip(elapsed, elapsed[1:])]
    first_seen = seen[min(seen)][0]
    # The loop starts `elapsed_s` before the first step's line; the line is seen within one poll.
    loop_start = first_seen - elapsed[0] - start
    ckpt = out_dir / "last.safetensors"
    ckpt_written = ckpt.stat().st_mtime - start if ckpt.exists() else float("nan")
    last_step = loop_start + elapsed[-1]
    for f in out_dir.iterdir():
        f.unlink()
    out_dir.rmdir()
    return {
        "steady": statistics.median(steps[1:]) if len(steps) > 1 else steps[0],
        "first": steps[0],
        "startup": loop_start + elapsed[0],
        "before_loop": loop_start,
        "checkpoint": ckpt_written - last_step,
        "after_checkpoint": (end - start) - ckpt_written,
        "peak": peak,
        "peak_at": max(timeline, key=lambda t: t[1])[0] if timeline else float("nan"),
        "cpu": cpu,
        "wall": end - start,
    }


def compile_time(a, batch):
    """Compile and emit the step and evaluation graphs and write them (`incc compile --train`)."""
    with tempfile.TemporaryDirectory(prefix="incc-bench-") as d:
        t = time.time()
        subprocess.run([a.incc, "compile", a.arch, "--train", "--batch", str(batch), "-o", str(Path(d) / "step.onnx")], check=True, capture_output=True)
        return time.time() - t


def gib(b):
    return f"{b / 2**30:.2f} GiB"


def variant_flags(a):
    """The options of each incc variant besides the plain run."""
    return {"lean": ["--lean-memory"], "accumulate": ["--accumulate", str(a.accumulate)], "recompute": ["--recompute", "blocks"],
            "lean_recompute": ["--lean-memory", "--recompute", "blocks"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", default="8,32", help="comma-separated batch sizes")
    ap.add_argument("--steps", type=int, default=4, help="steps per run (the first is the warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per batch size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--incc", default=str(ROOT / "target/release/incc"))
    ap.add_argument("--baseline", default=None, help="an earlier incc binary, run alternately with the others (before/after)")
    ap.add_argument("--lean", action="store_true", help="also run `incc train --lean-memory`, alternately with the others")
    ap.add_argument("--accumulate", type=int, default=None, help="also run `incc train --accumulate K`, alternately with the others")
    ap.add_argument("--recompute", action="store_true", help="also run `incc train --recompute blocks` (and with --lean, both options), alternately with the others")
    ap.add_argument("--arch", default=str(ROOT / "archs/inception_resnet_v2.inc"))
    ap.add_argument("--lock", default=None, help="hold this file locked (flock) during each heavy run")
    ap.add_argument("--no-side", action="store_true", help="skip timing `incc compile --train` for the start-up breakdown")
    ap.add_argument("--json", default=None, help="also write every run's figures here")
    ap.add_argument("--max-rss", type=float, default=None, help="stop a run past this many GiB resident (the machine is shared)")
    a = ap.parse_args()
    a.max_rss = a.max_rss and a.max_rss * 2**30
    batches = [int(b) for b in a.batch.split(",")]
    results = {}
    stopped = {}
    for batch in batches:
        runs = {"torch": [], "incc": []} | ({"baseline": []} if a.baseline else {}) | ({"lean": []} if a.lean else {}) | ({"accumulate": []} if a.accumulate else {}) | ({"recompute": []} if a.recompute else {}) | ({"lean_recompute": []} if a.lean and a.recompute else {})
        for r in range(a.rounds):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for who in order:
                try:
                    with Lock(a.lock):
                        res = (run_torch(a, batch) if who == "torch" else run_incc(a, batch, a.baseline) if who == "baseline"
                               else run_incc(a, batch, a.incc, variant_flags(a).get(who, [])))
                except TooBig as e:
                    print(f"batch {batch} round {r + 1} {who}: stopped past {gib(e.args[0])} resident (--max-rss)", file=sys.stderr, flush=True)
                    stopped.setdefault(batch, set()).add(who)
                    continue
                runs[who].append(res)
                print(f"batch {batch} round {r + 1} {who}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()),
                      file=sys.stderr, flush=True)
        side = None if a.no_side else compile_time(a, batch)
        results[batch] = (runs, side)

    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print(f"\ninception_resnet_v2, 299x299, {a.threads} threads, {a.steps} steps per run, {a.rounds} runs each alternating "
          f"(medians over runs); {next((r['version'] for b in batches for r in results[b][0]['torch']), 'PyTorch stopped')}")
    print("| batch | | steady step | first step | start-up (to 1st step done) | peak RSS | CPU s per run | wall per run |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in batches:
        runs, _ = results[batch]
        t = runs["torch"]
        labels = [("PyTorch", "torch"), ("incc (baseline)", "baseline"), ("incc", "incc"), ("incc --lean-memory", "lean"), (f"incc --accumulate {a.accumulate}", "accumulate"),
                  ("incc --recompute blocks", "recompute"), ("incc --lean-memory --recompute blocks", "lean_recompute")]
        for who, key in [(w, k) for w, k in labels if k in runs]:
            rs = runs[key]
            if not rs:
                print(f"| {batch} | {who} | stopped past --max-rss {gib(a.max_rss)} | | | | | |")
                continue
            print(f"| {batch} | {who} | {med(rs, 'steady'):.2f} s | {med(rs, 'first'):.2f} s | {med(rs, 'startup'):.1f} s | {gib(med(rs, 'peak'))} | "
                  f"{med(rs, 'cpu'):.0f} | {med(rs, 'wall'):.1f} s |")
        for who, key in [(w, k) for w, k in labels[1:] if k in runs and runs[k] and t]:
            i = runs[key]
            print(f"| {batch} | {who} / PyTorch | {med(i, 'steady') / med(t, 'steady'):.2f}x | {med(i, 'first') / med(t, 'first'):.2f}x | "
                  f"{med(i, 'startup') / med(t, 'startup'):.2f}x | {med(i, 'peak') / med(t, 'peak'):.2f}x | {med(i, 'cpu') / med(t, 'cpu'):.2f}x | "
                  f"{med(i, 'wall') / med(t, 'wall'):.2f}x |")
    print("\nincc start-up and tail (medians, seconds):")
    print("| batch | before the loop | of which: compile+emit+write | rest: sessions, state | first step | of which warm-up | checkpoint | after checkpoint | peak RSS at |")
    print("|---|---|---|---|---|---|---|---|---|")
    for batch in batches:
        runs, side = results[batch]
        i = runs["incc"]
        if not i:
            continue
        before = med(i, "before_loop")
        if runs.get("baseline"):
            b = runs["baseline"]
            print(f"| {batch} (baseline) | {med(b, 'before_loop'):.1f} | - | - | {med(b, 'first'):.1f} | {med(b, 'first') - med(b, 'steady'):.1f} | "
                  f"{med(b, 'checkpoint'):.1f} | {med(b, 'after_checkpoint'):.1f} | {med(b, 'peak_at'):.0f} s |")
        pieces = f"{side:.1f} | {before - side:.1f}" if side is not None else "- | -"
        print(f"| {batch} | {before:.1f} | {pieces} | {med(i, 'first'):.1f} | {med(i, 'first') - med(i, 'steady'):.1f} | {med(i, 'checkpoint'):.1f} | "
              f"{med(i, 'after_checkpoint'):.1f} | {med(i, 'peak_at'):.0f} s |")
    print("\nPyTorch start-up (medians): " + "; ".join(
        f"batch {b}: import {med(results[b][0]['torch'], 'import'):.1f} s, model {med(results[b][0]['torch'], 'model'):.1f} s, "
        f"first step {med(results[b][0]['torch'], 'first'):.1f} s" for b in batches if results[b][0]['torch']))
    if a.json:
        Path(a.json).write_text(json.dumps({str(b): {"runs": r, "side": s} for b, (r, s) in results.items()}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--torch-child":
        torch_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
