#!/usr/bin/env python3
"""Training-step time on the CPU: incc's ONE-graph step in ONNX Runtime against the same network's
step in PyTorch (autograd + RMSProp), measured in one run, alternating, same threads.

    cargo build --release
    target/release/incc compile benches/small_inception_resnet.inc --train -o /tmp/sir_train.onnx
    python3 benches/train_step_vs_torch.py /tmp/sir_train.onnx [--batch 32] [--threads 2] [--reps 10]

Needs: numpy, onnxruntime (>= 1.31), torch. Prints ms/step (median and min) and the ratio
incc / PyTorch. The PyTorch network below is benches/small_inception_resnet.inc, layer for layer.
"""
import argparse, time
import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F


def cbr(cin, cout, k, stride=1, pad=None):
    if pad is None:
        pad = (k[0] // 2, k[1] // 2) if isinstance(k, tuple) else k // 2
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU())


class BlockA(nn.Module):
    def __init__(self, c, scale):
        super().__init__()
        self.b0 = cbr(c, 16, 1)
        self.b1 = nn.Sequential(cbr(c, 16, 1), cbr(16, 24, 3))
        self.b2 = nn.Sequential(cbr(c, 16, 1), cbr(16, 24, (1, 3)), cbr(24, 24, (3, 1)))
        self.b3 = nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), cbr(c, 16, 1))
        self.proj = nn.Conv2d(80, c, 1)
        self.scale = scale

    def forward(self, x):
        y = torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x)], 1)
        return F.relu(x + self.scale * self.proj(y))


class Net(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = cbr(3, 32, 3, 2, 0)
        self.stem2 = cbr(32, 48, 3)
        self.blocks = nn.Sequential(BlockA(48, 0.17), BlockA(48, 0.17))
        self.pool = nn.MaxPool2d(3, 2)
        self.red = cbr(48, 64, 3, 2, 0)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(112, classes)

    def forward(self, x):
        x = self.blocks(self.stem2(self.stem(x)))
        x = torch.cat([self.pool(x), self.red(x)], 1)
        return self.fc(self.drop(x.mean((2, 3))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    n = a.batch
    x = torch.randn(n, 3, 64, 64)
    y = torch.randint(0, 10, (n,))

    net = Net()
    opt = torch.optim.RMSprop(net.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9)
    net.train()

    def torch_step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        return float(loss)

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    feeds = {}
    rng = np.random.default_rng(0)
    for i in sess.get_inputs():
        shape = [n if isinstance(d, str) else d for d in i.shape]
        if i.name == "images":
            feeds[i.name] = x.numpy()
        elif i.name == "labels":
            feeds[i.name] = y.numpy().astype(np.int64)
        elif i.name == "learning_rate":
            feeds[i.name] = np.array(0.045, np.float32)
        elif i.name.endswith(".mask"):
            feeds[i.name] = (rng.random(shape) > 0.2).astype(np.float32) / 0.8
        elif i.name.endswith(".ms") or i.name.endswith("running_var") or i.name.endswith("bn.weight"):
            feeds[i.name] = np.ones(shape, np.float32)
        elif i.name.endswith("weight"):
            feeds[i.name] = (rng.standard_normal(shape) * np.sqrt(2.0 / max(1, int(np.prod(shape[1:]))))).astype(np.float32)
        else:
            feeds[i.name] = np.zeros(shape, np.float32)
    outputs = [o.name for o in sess.get_outputs()]
    new_of = {o: o[: -len("__new")] for o in outputs if o.endswith("__new")}

    def ort_step():
        res = dict(zip(outputs, sess.run(None, feeds)))
        for o, name in new_of.items():
            feeds[name] = res[o]  # feed the step's outputs back: parameters stay in the loop
        return float(res["loss"])

    for _ in range(3):
        torch_step(), ort_step()
    t_times, o_times = [], []
    for _ in range(a.reps):
        t = time.perf_counter(); torch_step(); t_times.append(time.perf_counter() - t)
        t = time.perf_counter(); ort_step(); o_times.append(time.perf_counter() - t)
    med = lambda v: sorted(v)[len(v) // 2] * 1e3
    print(f"batch {n}, {a.threads} threads, {a.reps} alternating steps each (after 3 warm-up steps)")
    print(f"PyTorch {torch.__version__} (autograd + RMSprop): median {med(t_times):.1f} ms/step, min {min(t_times)*1e3:.1f}")
    print(f"incc training graph in ONNX Runtime {ort.__version__}: median {med(o_times):.1f} ms/step, min {min(o_times)*1e3:.1f}")
    print(f"ratio incc / PyTorch: {med(o_times) / med(t_times):.2f} (median), {min(o_times) / min(t_times):.2f} (min)")


if __name__ == "__main__":
    main()
