#!/usr/bin/env python3
"""Runs ONNX models in another ONNX implementation and compares every output with ONNX Runtime.

Usage: python3 scripts/check_portability.py --runtime reference|openvino MODEL.onnx [...]

  reference  the ONNX project's reference implementation (onnx.reference.ReferenceEvaluator)
  openvino   OpenVINO's CPU plugin, in f32 (its default on CPUs with bf16 units is bf16)

Every graph input is fed seeded values that fit its role in incc's graphs (labels in range,
positive variances and second-moment slots, a step count, dropout masks of 0 and 1/keep), symbolic dimensions 1.
An output agrees when max |other - ort| <= tolerance * max |ort|; a training step's new state
`<x>__new` is compared by its change from the input `<x>` (the update, with --update-tolerance),
which a parameter's own size would hide. Its tolerance is looser: where a ReLU's input is within
rounding of 0 the two runtimes may disagree on its gradient mask, which moves the updates of its
layer by up to a few percent of the largest one late in training (about 1e-3 early on); wrong op
semantics move them by far more. With --steps N, N steps run in lockstep: each takes the state
ONNX Runtime computed in the step before.
Prints one line per model; exit status 0 when every model agrees, 3 when a needed Python package
is missing (named on stderr), 1 otherwise.
"""
import argparse
import sys
import time

MISSING = 3


def need(module):
    try:
        return __import__(module)
    except ImportError:
        print(f"the Python package `{module}` is not installed (pip install {module})", file=sys.stderr)
        sys.exit(MISSING)


np = need("numpy")
onnx = need("onnx")


def dims(value_info):
    return [d.dim_value if d.HasField("dim_value") else 1 for d in value_info.type.tensor_type.shape.dim]


def feeds(model, seed=0):
    """Seeded inputs for every graph input that is not an initializer."""
    rng = np.random.default_rng(seed)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    outputs = {o.name: dims(o) for o in graph.output}
    classes = outputs.get("logits", [1, 10])[-1]
    values = {}
    for vi in graph.input:
        if vi.name in initializers:
            continue
        name, shape = vi.name, dims(vi)
        if vi.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            values[name] = rng.integers(0, classes, size=shape, dtype=np.int64)
        elif name == "learning_rate":
            values[name] = np.array(0.01, np.float32)
        elif name == "ema_decay":
            values[name] = np.array(0.99, np.float32)
        elif name == "step":
            values[name] = np.array(3.0, np.float32)
        elif name.endswith("mask"):
            values[name] = ((rng.random(shape) < 0.8) / 0.8).astype(np.float32)
        elif name.endswith(("running_var", ".ms", ".v", "bn.weight")):
            values[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name == "images":
            values[name] = rng.standard_normal(shape).astype(np.float32)
        else:
            values[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return {name: np.asarray(value) for name, value in values.items()}


def onnxruntime(path, names):
    ort = need("onnxruntime")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda inputs: session.run(names, inputs)


def reference(path, names):
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(onnx.load(path))
    return lambda inputs: evaluator.run(names, inputs)


def openvino(path, names):
    ov = need("openvino")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(inputs):
        results = compiled(inputs)
        return [results[compiled.output(n)] for n in names]

    return run


RUNTIMES = {"reference": reference, "openvino": openvino}


def compare(names, inputs, expected, got, args):
    """(worst relative difference per kind, the outputs that differ too much, in words)."""
    worst = {"output": (0.0, ""), "update": (0.0, "")}
    bad = []
    for name, want, have in zip(names, expected, got):
        want, have = np.asarray(want), np.asarray(have)
        if have.shape != want.shape:
            bad.append(f"{name}: shape {list(have.shape)}, ONNX Runtime {list(want.shape)}")
            continue
        old = inputs.get(name[: -len("__new")]) if name.endswith("__new") else None
        kind, tolerance = ("update", args.update_tolerance) if old is not None else ("output", args.tolerance)
        if old is not None:
            want, have = want - old, have - old
        scale = float(np.abs(want).max()) if want.size else 0.0
        diff = float(np.abs(have.astype(np.float64) - want).max()) if want.size else 0.0
        relative = diff / scale if scale > 0 else diff
        if not relative <= tolerance:
            bad.append(f"{name}: max |diff| of the {kind} {diff:.3g} = {relative:.3g} of its max |value| {scale:.3g}")
        if relative > worst[kind][0] or relative != relative:
            worst[kind] = (relative, name)
    return worst, bad


def check(path, args):
    """Runs one model; returns a line that says how it went, and whether it agreed."""
    model = onnx.load(path, load_external_data=False)
    names = [o.name for o in model.graph.output]
    state = feeds(model)
    del model
    expected_run, got_run = onnxruntime(path, names), RUNTIMES[args.runtime](path, names)
    worst = {"output": (0.0, ""), "update": (0.0, "")}
    for step in range(args.steps):
        expected, got = expected_run(state), got_run(state)
        step_worst, bad = compare(names, state, expected, got, args)
        if bad:
            at = f" at step {step + 1}" if args.steps > 1 else ""
            return False, f"{len(bad)} of {len(names)} outputs differ from ONNX Runtime{at}:\n  " + "\n  ".join(bad[:20])
        worst = {kind: max(worst[kind], step_worst[kind]) for kind in worst}
        # Both runtimes take the next step from ONNX Runtime's state: running free, the two
        # trajectories part at the first ReLU whose input is within rounding of 0.
        state = dict(state)
        state.update({n[: -len("__new")]: v for n, v in zip(names, expected) if n.endswith("__new") and n[: -len("__new")] in state})
    summary = ", ".join(f"{kind}s {r:.2g} ({name})" for kind, (r, name) in worst.items() if name)
    steps = f" over {args.steps} steps" if args.steps > 1 else ""
    return True, f"{len(names)} outputs agree{steps}, max |diff| / max |value|: {summary}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), required=True)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="of max |output| (default 1e-4)")
    parser.add_argument("--update-tolerance", type=float, default=1e-2, help="of max |x__new - x| (default 1e-2)")
    parser.add_argument("--steps", type=int, default=1, help="training steps, each from ONNX Runtime's new state of the one before (default 1)")
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    need("onnxruntime")
    if args.runtime == "openvino":
        need("openvino")
    failed = 0
    for path in args.models:
        start = time.perf_counter()
        try:
            ok, said = check(path, args)
        except Exception as e:  # report every model, then fail
            ok, said = False, f"{type(e).__name__}: {str(e)[:2000]}"
        failed += not ok
        print(f"{'ok' if ok else 'FAILED'} {path} [{args.runtime}]: {said}; {time.perf_counter() - start:.1f} s", file=sys.stdout if ok else sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
