#!/usr/bin/env python3
"""Which values of an ONNX graph are alive together, in ONNX Runtime's execution order.

    python3 scripts/step_liveness.py step.onnx [--top 25]

ONNX Runtime's sequential executor runs the nodes in the order of `GraphViewer`'s default
topological sort (a reverse depth-first search from the leaf nodes, inputs visited in
ascending node index), allocates each output when its node runs and frees it after its last
consumer. This script replays that order on the graph as written (before ONNX Runtime's own
fusions, so it is an estimate) and prints the peak of the bytes alive (graph inputs excluded:
the caller holds them), where in the step it falls, and what is alive there, grouped by the
producing node's op type and role (forward, backward, update).
"""
import argparse
import collections
import sys

import numpy as np
import onnx
from onnx import shape_inference


def ort_order(graph):
    nodes = list(graph.node)
    producer = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            producer[o] = i
    consumers = collections.defaultdict(list)
    for i, n in enumerate(nodes):
        for v in n.input:
            if v in producer:
                consumers[producer[v]].append(i)
    leaves = [i for i in range(len(nodes)) if not consumers[i]]
    order, visited = [], [False] * len(nodes)
    stack = [(i, False) for i in leaves]
    while stack:
        i, leave = stack.pop()
        if leave:
            order.append(i)
            continue
        if visited[i]:
            continue
        visited[i] = True
        stack.append((i, True))
        inputs = sorted({producer[v] for v in nodes[i].input if v in producer})
        stack.extend((j, False) for j in inputs)
    return order


def sizes(model):
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if any(d is None for d in dims):
            continue
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize if t.elem_type else 4
        out[vi.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    return out


def role(name):
    if "/d/" in name or name.startswith("grad/") or "/grad" in name or name.endswith("/dx") or "/dx" in name:
        return "backward"
    if name.startswith("update/") or "__new" in name or name.startswith("packed"):
        return "update"
    return "forward"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    model = onnx.load(args.model, load_external_data=False)
    graph = model.graph
    size = sizes(model)
    nodes = list(graph.node)
    order = ort_order(graph)
    position = {i: k for k, i in enumerate(order)}
    graph_inputs = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    last_use = {}
    for i in order:
        for v in nodes[i].input:
            last_use[v] = position[i]
    unknown = 0
    alive, live = {}, 0
    peak, peak_at, peak_set = 0, 0, {}
    curve = []
    for k, i in enumerate(order):
        n = nodes[i]
        for o in n.output:
            if o in size:
                alive[o] = (size[o], i)
                live += size[o]
            else:
                unknown += 1
        if live > peak:
            peak, peak_at, peak_set = live, k, dict(alive)
        curve.append(live)
        for v in set(n.input) | set(n.output):
            if v in alive and v not in graph_outputs and last_use.get(v, -1) <= k:
                live -= alive.pop(v)[0]
    state = sum(size.get(i.name, 0) for i in graph.input)
    outputs = sum(size.get(o, 0) for o in graph_outputs)
    gib = 2**30
    print(f"{args.model}: {len(nodes)} nodes, {unknown} outputs of unknown size")
    print(f"graph inputs {state / gib:.3f} GiB, graph outputs {outputs / gib:.3f} GiB (held by the caller)")
    print(f"peak of intermediate values alive: {peak / gib:.3f} GiB at node {peak_at} of {len(order)} ({nodes[order[peak_at]].name})")
    for frac in (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0):
        k = min(len(curve) - 1, int(frac * len(curve)))
        print(f"  at {frac:4.0%} of the step: {curve[k] / gib:.3f} GiB  ({nodes[order[k]].name})")
    groups = collections.Counter()
    for v, (b, i) in peak_set.items():
        groups[(role(v), nodes[i].op_type)] += b
    print("alive at the peak, by role and producing op type:")
    for (r, op), b in groups.most_common(args.top):
        print(f"  {r:9} {op:20} {b / gib:7.3f} GiB")
    print("largest values alive at the peak:")
    for v, (b, i) in sorted(peak_set.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"  {b / 2**20:9.1f} MiB  {v}  ({nodes[i].op_type})")


if __name__ == "__main__":
    sys.exit(main())
