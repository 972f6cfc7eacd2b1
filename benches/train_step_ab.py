#!/usr/bin/env python3
"""Time two or more training-step graphs of one network in ONNX Runtime (CPU), in one process,
steps alternating, on the same inputs: for a change to the emitted step, old against new.

    incc compile archs/inception_resnet_v2.inc --train --batch 8 -o /tmp/new.onnx   # and /tmp/old.onnx with the old binary
    flock /tmp/incc-heavy.lock python3 benches/train_step_ab.py /tmp/old.onnx /tmp/new.onnx [--threads 1] [--reps 10] [--profile 5]

Prints per model: wall ms/step (median, min), process CPU ms/step (median; the steadier figure on a
shared machine with --threads 1), and each as a ratio to the first model. --profile N: N more steps
of each model under ONNX Runtime's profiler, summed per node, with the share of the nodes whose
name matches --share (default: batch-norm nodes, forward and backward).
"""
import argparse
import json
import os
import re
import statistics
import time

import numpy as np
import onnxruntime as ort


def feeds_for(sess, rng):
    feeds = {}
    for i in sess.get_inputs():
        shape = list(i.shape)
        if i.name == "labels":
            feeds[i.name] = rng.integers(0, 10, shape).astype(np.int64)
        elif i.name == "learning_rate":
            feeds[i.name] = np.array(0.01, np.float32)
        elif i.name.endswith(".mask"):
            feeds[i.name] = np.ones(shape, np.float32)
        elif i.type == "tensor(int64)":
            feeds[i.name] = np.ones(shape, np.int64)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            feeds[i.name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return feeds


def session(path, threads, profile=False):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join("/tmp", "train_step_ab." + os.path.basename(path))
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--profile", type=int, default=0)
    ap.add_argument("--share", default=r"\.bn(/|$)")
    a = ap.parse_args()
    sessions = [session(m, a.threads) for m in a.models]
    feeds = feeds_for(sessions[0], np.random.default_rng(0))
    wall = [[] for _ in sessions]
    cpu = [[] for _ in sessions]
    for rep in range(a.warmup + a.reps):
        for k, s in enumerate(sessions):
            w, c = time.perf_counter(), time.process_time()
            s.run(["loss"], feeds)
            if rep >= a.warmup:
                wall[k].append(time.perf_counter() - w)
                cpu[k].append(time.process_time() - c)
    print(f"ONNX Runtime {ort.__version__} CPU, {a.threads} threads, {a.reps} steps each, alternating, after {a.warmup} warm-up steps")
    print("| model | wall ms/step median | min | CPU ms/step median | wall ratio (median) | CPU ratio (median) |")
    print("|---|---|---|---|---|---|")
    for k, m in enumerate(a.models):
        wm, cm = statistics.median(wall[k]) * 1e3, statistics.median(cpu[k]) * 1e3
        w0, c0 = statistics.median(wall[0]) * 1e3, statistics.median(cpu[0]) * 1e3
        print(f"| {m} | {wm:.1f} | {min(wall[k]) * 1e3:.1f} | {cm:.1f} | {wm / w0:.3f} | {cm / c0:.3f} |")
    del sessions
    if a.profile:
        share = re.compile(a.share)
        for m in a.models:
            s = session(m, a.threads, profile=True)
            for _ in range(a.profile + 1):
                s.run(["loss"], feeds)
            trace = s.end_profiling()
            events = json.load(open(trace))
            os.remove(trace)
            runs = sorted(e["ts"] + e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
            # the first run (allocations, caches) left out
            events = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > runs[0]]
            total = sum(e["dur"] for e in events)
            matched = sum(e["dur"] for e in events if share.search(e["name"][: -len("_kernel_time")]))
            print(f"{m}: nodes {total / 1e3 / a.profile:.1f} ms/step, of which /{a.share}/ {matched / 1e3 / a.profile:.1f} ms ({100 * matched / total:.1f} %)")


if __name__ == "__main__":
    main()
