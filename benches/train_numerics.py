#!/usr/bin/env python3
"""Training-step numerics: incc's step in ONNX Runtime and PyTorch float32, each against a PyTorch
float64 evaluation of the same step (same weights, same batch).

    cargo build --release
    flock /tmp/incc-heavy.lock python3 benches/train_numerics.py [--arch inception_resnet_v2] [--batch 8]

Setup (issue 17): SGD, lr 1, no momentum, no label smoothing, dropout off (incc's mask all ones,
timm's drop rate 0), batch norm in training mode, random 299x299 images and labels from --seed.
The step is `incc compile archs/ARCH.inc --train --batch N --optimizer sgd --momentum 0
--label-smoothing 0 --weights W.safetensors` (or --model STEP.onnx, compiled the same way); its
gradients and activations are read by adding the values to the graph's outputs.

PyTorch: for inception_v3, inception_v4 and inception_resnet_v2, timm's model (`pretrained=False`,
timm's initial weights, whose state dict incc loads by name); for the other archs (or --torch
graph), incc's evaluation graph (`step.eval.onnx`) run op by op in PyTorch, with
`F.batch_norm(training=True)` for each batch norm, on incc's seeded weights (`--save-weights`).
PyTorch runs on the CPU; incc's step on the CPU or, with --provider cuda (onnxruntime-gpu), on
CUDA with TF32 off.

Relative error of a tensor: max|x - ref| / max|ref| (for the loss: |x - ref| / |ref|), the same
for both contenders. Activations: the output of each named layer (--layers, default: the first
layer and a few stages). Gradients: per parameter tensor, then the median and max over tensors.

Needs numpy, onnx, onnxruntime, torch, timm, safetensors. The three runs take turns; --cache keeps
PyTorch's two for comparing incc steps. Memory: inception_resnet_v2 at batch 8 peaks at about 5 GB
(incc's step), at batch 32 about 4x that.
"""
import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from safetensors.numpy import load_file, save_file

TIMM = {"inception_v3", "inception_v4", "inception_resnet_v2"}
# The layers for inception_resnet_v2; other archs get the first layer and evenly spaced stages.
DEFAULT_LAYERS = {"inception_resnet_v2": ["conv2d_1a", "conv2d_4a", "mixed_6a", "repeat_1.10", "conv2d_7b"]}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rel(x, ref):
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    scale = np.abs(ref).max()
    return float(np.abs(x - ref).max() / scale) if scale > 0 else float(np.abs(x).max())


def compile_step(a, work):
    """incc's training step (and its evaluation graph) and the weights both contenders start from."""
    weights = os.path.join(work, "weights.safetensors")
    if a.arch in TIMM and a.torch == "timm":
        import timm

        torch.manual_seed(a.seed)
        model = timm.create_model(a.arch, pretrained=False, num_classes=1000)
        save_file({k: v.detach().numpy().copy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, weights)
        weight_flag = ["--weights", weights]
    else:
        # incc's seeded weights (`compile --train` does not write them: a separate call)
        subprocess.run([a.incc, "compile", os.path.join(REPO, "archs", a.arch + ".inc"), "--seed", str(a.seed), "--save-weights", weights], check=True)
        weight_flag = ["--seed", str(a.seed)]
    if a.model:
        if not a.model.endswith(".onnx") or weight_flag[0] != "--weights":
            sys.exit("--model needs a timm arch (its weights come from timm); compile other archs through this script")
        return a.model, a.model[: -len(".onnx")] + ".eval.onnx", weights
    step = os.path.join(work, "step.onnx")
    cmd = [a.incc, "compile", os.path.join(REPO, "archs", a.arch + ".inc"), "--train", "--batch", str(a.batch), "--optimizer", "sgd", "--momentum", "0",
           "--label-smoothing", "0", *weight_flag, "-o", step]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return step, step[: -len(".onnx")] + ".eval.onnx", weights


def layer_values(eval_graph, names):
    """ONNX value of each layer: the output of the last node whose name is the layer's or under it."""
    out = {}
    for name in names:
        hits = [n.output[0] for n in eval_graph.node if n.name == name or n.name.startswith(name + ".")]
        if not hits:
            sys.exit(f"no layer `{name}` in the graph")
        out[name] = hits[-1]
    return out


def default_layers(arch, eval_graph):
    if arch in DEFAULT_LAYERS:
        return DEFAULT_LAYERS[arch]
    # the shallowest naming depth with at least 8 distinct prefixes (blocks), then 5 of them
    for depth in range(1, 4):
        prefixes = []
        for n in eval_graph.node:
            p = ".".join(n.name.split(".")[:depth])
            if n.op_type in ("Conv", "Concat", "Add", "Relu", "MaxPool") and p not in prefixes and p != n.name:
                prefixes.append(p)
        if len(prefixes) >= 8:
            break
    body = prefixes[:-1]  # the last one is the classifier's neighbourhood
    picks = [body[round(i * (len(body) - 1) / 4)] for i in range(5)]
    return list(dict.fromkeys(picks))


def gradient_values(step):
    """(parameter, gradient value) pairs, read off the packed update: `opt/<group>/param` and
    `opt/<group>/grad` concatenate the flattened parameters and their gradients in one order."""
    producer = {o: n for n in step.graph.node for o in n.output}
    pairs = []
    for n in step.graph.node:
        if n.op_type == "Concat" and n.output[0].endswith("/param"):
            grad = producer[n.output[0][: -len("/param")] + "/grad"]
            for p, g in zip(n.input, grad.input):
                pairs.append((producer[p].input[0], producer[g].input[0]))
    return pairs


def run_incc(a, step_path, weights, layers, images, labels):
    step = onnx.load(step_path)
    grads = gradient_values(step)
    wanted = list(layers.values()) + [g for _, g in grads]
    known = {o.name for o in step.graph.output}
    step.graph.output.extend(helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, None) for v in dict.fromkeys(wanted) if v not in known)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.log_severity_level = 3
    # CUDA: TF32 off, so that the step is float32 as on the CPU (ONNX Runtime's default is on)
    providers = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"] if a.provider == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(step.SerializeToString(), so, providers=providers)
    if a.provider == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        sys.exit("no CUDA in this onnxruntime (pip install onnxruntime-gpu)")
    del step
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "images":
            feeds[i.name] = images
        elif i.name == "labels":
            feeds[i.name] = labels
        elif i.name == "learning_rate":
            feeds[i.name] = np.array(1.0, np.float32)
        elif i.name.endswith(".mask"):
            feeds[i.name] = np.ones(i.shape, np.float32)  # dropout off
        elif i.name in weights:
            feeds[i.name] = weights[i.name]
        else:  # the running statistics: not read by a training-mode step's loss or gradients
            feeds[i.name] = np.zeros(i.shape, np.float32)
    names = ["loss"] + list(dict.fromkeys(wanted))
    res = dict(zip(names, sess.run(names, feeds)))
    return {"loss": float(res["loss"]), "act": {k: res[v] for k, v in layers.items()}, "grad": {p: res[g] for p, g in grads}}


class GraphModel(torch.nn.Module):
    """incc's evaluation graph run op by op in PyTorch, batch norm in training mode."""

    def __init__(self, graph, weights, dtype):
        super().__init__()
        self.graph = graph
        self.params = torch.nn.ParameterDict()
        self.names = {}
        # conv, fc and batch-norm weights and biases (inputs 1 and 2); not the running statistics
        trainable = {i for n in graph.node if n.op_type in ("Conv", "Gemm", "BatchNormalization") for i in n.input[1:3]}
        for k, v in weights.items():
            key = k.replace(".", "__")
            self.names[k] = key
            self.params[key] = torch.nn.Parameter(torch.tensor(v, dtype=dtype), requires_grad=k in trainable)
        self.consts = {i.name: torch.tensor(numpy_helper.to_array(i), dtype=dtype) for i in graph.initializer}

    def named_grads(self):
        return {k: self.params[key].grad for k, key in self.names.items() if self.params[key].requires_grad}

    def forward(self, images, keep):
        env = {"images": images}
        get = lambda name: env[name] if name in env else self.params[self.names[name]] if name in self.names else self.consts[name]
        for n in self.graph.node:
            at = {x.name: helper.get_attribute_value(x) for x in n.attribute}
            xs = [get(i) for i in n.input]
            op = n.op_type
            if op == "Conv":
                t, l, b, r = at.get("pads", [0, 0, 0, 0])
                x = xs[0] if (t, l) == (b, r) else F.pad(xs[0], (l, r, t, b))
                y = F.conv2d(x, xs[1], xs[2] if len(xs) > 2 else None, at.get("strides", [1, 1]), (t, l) if (t, l) == (b, r) else 0, at.get("dilations", [1, 1]), at.get("group", 1))
            elif op == "BatchNormalization":
                y = F.batch_norm(xs[0], None, None, xs[1], xs[2], training=True, eps=at.get("epsilon", 1e-5))
            elif op in ("MaxPool", "AveragePool"):
                t, l, b, r = at.get("pads", [0, 0, 0, 0])
                assert (t, l) == (b, r), "asymmetric pool padding"
                if op == "MaxPool":
                    y = F.max_pool2d(xs[0], at["kernel_shape"], at.get("strides", 1), (t, l))
                else:
                    y = F.avg_pool2d(xs[0], at["kernel_shape"], at.get("strides", 1), (t, l), count_include_pad=bool(at.get("count_include_pad", 0)))
            elif op == "GlobalAveragePool":
                y = xs[0].mean((2, 3), keepdim=True)
            elif op == "Relu":
                y = F.relu(xs[0])
            elif op == "Concat":
                y = torch.cat(xs, at["axis"])
            elif op == "Add":
                y = xs[0] + xs[1]
            elif op == "Mul":
                y = xs[0] * xs[1]
            elif op == "Flatten":
                y = torch.flatten(xs[0], at.get("axis", 1))
            elif op == "Identity":
                y = xs[0]
            elif op == "Gemm":
                assert at.get("transB") == 1 and not at.get("transA")
                y = F.linear(xs[0], xs[1], xs[2])
            else:
                raise NotImplementedError(op)
            env[n.output[0]] = y
            if n.output[0] in keep:
                keep[n.output[0]] = y.detach().numpy().copy()
        return env[self.graph.output[0].name]


def run_torch(a, dtype, eval_path, weights, layers, images, labels):
    torch.manual_seed(a.seed)
    x = torch.tensor(images, dtype=dtype)
    y = torch.tensor(labels)
    acts = {}
    if a.arch in TIMM and a.torch == "timm":
        import timm

        model = timm.create_model(a.arch, pretrained=False, num_classes=1000).to(dtype).train()
        model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()}, strict=False)
        for name in layers:
            model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: acts.__setitem__(name, o.detach().numpy().copy()))
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        grads = {k: p.grad for k, p in model.named_parameters()}
    else:
        model = GraphModel(onnx.load(eval_path).graph, weights, dtype)
        keep = {v: None for v in layers.values()}
        loss = F.cross_entropy(model(x, keep).flatten(1), y)
        loss.backward()
        acts = {k: keep[v] for k, v in layers.items()}
        grads = model.named_grads()
    return {"loss": loss.item(), "act": acts, "grad": {k: g.numpy().copy() for k, g in grads.items()}}


def load_cache(path, a, names):
    z = np.load(path)
    if str(z["key"]) != cache_key(a, names):
        sys.exit(f"{path} holds another run ({z['key']}); delete it or pass another --cache")
    out = {}
    for who in ("f32", "f64"):
        out[who] = {"loss": float(z[f"{who}/loss"]), "act": {k: z[f"{who}/act/{k}"] for k in names},
                    "grad": {k[len(f"{who}/grad/"):]: z[k] for k in z.files if k.startswith(f"{who}/grad/")}}
    return out


def save_cache(path, a, names, results):
    flat = {"key": np.array(cache_key(a, names))}
    for who in ("f32", "f64"):
        flat[f"{who}/loss"] = np.array(results[who]["loss"])
        flat.update({f"{who}/act/{k}": v for k, v in results[who]["act"].items()})
        flat.update({f"{who}/grad/{k}": v for k, v in results[who]["grad"].items()})
    np.savez(path, **flat)


def cache_key(a, names):
    return f"{a.arch} batch {a.batch} seed {a.seed} torch {a.torch} layers {','.join(names)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="inception_resnet_v2", help="a network of archs/ (default: inception_resnet_v2)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", help="comma-separated layer names (default: the first layer and a few stages)")
    ap.add_argument("--incc", default=os.path.join(REPO, "target", "release", "incc"))
    ap.add_argument("--model", help="a step already compiled as above (timm archs), instead of compiling one")
    ap.add_argument("--provider", choices=["cpu", "cuda"], default="cpu", help="where ONNX Runtime runs incc's step (PyTorch runs on the CPU)")
    ap.add_argument("--cache", help="keep PyTorch's results in this .npz and reuse them (same arch, batch, seed, layers): for comparing incc steps")
    ap.add_argument("--torch", choices=["timm", "graph"], default="timm", help="PyTorch model: timm's (where it has the arch) or incc's graph run op by op")
    a = ap.parse_args()
    if a.arch not in TIMM:
        a.torch = "graph"
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as work:
        step_path, eval_path, weights_path = compile_step(a, work)
        weights = load_file(weights_path)
        eval_graph = onnx.load(eval_path).graph
        names = a.layers.split(",") if a.layers else default_layers(a.arch, eval_graph)
        layers = layer_values(eval_graph, names)
        rng = np.random.default_rng(a.seed)
        images = rng.standard_normal((a.batch, 3, 299, 299), dtype=np.float32)
        labels = rng.integers(0, 1000, a.batch).astype(np.int64)
        results = load_cache(a.cache, a, names) if a.cache and os.path.exists(a.cache) else {}
        for who, run in [("incc", lambda: run_incc(a, step_path, weights, layers, images, labels)),
                         ("f32", lambda: run_torch(a, torch.float32, eval_path, weights, layers, images, labels)),
                         ("f64", lambda: run_torch(a, torch.float64, eval_path, weights, layers, images, labels))]:
            if who not in results:
                t = time.perf_counter()
                results[who] = run()
                print(f"{who}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
                gc.collect()
        if a.cache and not os.path.exists(a.cache):
            save_cache(a.cache, a, names, results)
    ref = results["f64"]
    missing = set(ref["grad"]) ^ set(results["incc"]["grad"])
    if missing:
        sys.exit(f"parameters not in both: {sorted(missing)[:5]}")
    print(f"{a.arch}, batch {a.batch}, seed {a.seed}; PyTorch {torch.__version__} ({'timm' if a.torch == 'timm' else 'incc graph'}, CPU), ONNX Runtime {ort.__version__} {a.provider.upper()}, {a.threads} threads")
    print("relative error: max|x - ref| / max|ref| per tensor, ref = PyTorch float64\n")
    print(f"| relative error against float64 | incc (ONNX Runtime, {a.provider.upper()}) | PyTorch float32 | incc / PyTorch |")
    print("|---|---|---|---|")
    row = lambda label, e_incc, e_f32, fmt="{:.2e}": print(f"| {label} | {fmt.format(e_incc)} | {fmt.format(e_f32)} | {e_incc / e_f32 if e_f32 else float('inf'):.2f} |")
    loss_err = lambda who: abs(float(results[who]["loss"]) - ref["loss"]) / abs(ref["loss"])
    row("loss", loss_err("incc"), loss_err("f32"))
    for k in layers:
        row(f"activations after {k}", rel(results["incc"]["act"][k], ref["act"][k]), rel(results["f32"]["act"][k], ref["act"][k]))
    # A bias that a training-mode batch norm cancels has a gradient of 0 (float64: rounding noise): left out.
    scale = {p: np.abs(g).max() for p, g in ref["grad"].items()}
    typical = np.median(list(scale.values()))
    params = sorted(p for p in ref["grad"] if scale[p] > 1e-9 * typical)
    zero = sorted(set(ref["grad"]) - set(params))
    per = {who: np.array([rel(results[who]["grad"][p], ref["grad"][p]) for p in params]) for who in ("incc", "f32")}
    row(f"gradients, median over {len(params)} tensors", float(np.median(per["incc"])), float(np.median(per["f32"])))
    row("gradients, max over tensors", float(per["incc"].max()), float(per["f32"].max()))
    worst = params[int(per["incc"].argmax())]
    print(f"\nworst incc gradient: {worst} ({per['incc'].max():.2e}; PyTorch float32 {per['f32'][int(per['incc'].argmax())]:.2e})")
    if zero:
        print(f"left out, gradient 0 in float64 (a bias before a batch norm): {', '.join(zero)}")


if __name__ == "__main__":
    main()
