#!/usr/bin/env python3
"""Validates ONNX models the way the ONNX project does: the full checker and strict shape inference.

Usage: python3 scripts/check_onnx.py [--longest-join N] MODEL.onnx [...]
--longest-join N: also fail when a Concat or Split joins or cuts an axis longer than N elements
(ONNX Runtime's CUDA kernels index such an axis on the host at every run: see `packing_row` in
src/train/mod.rs).
Exit status 0 when every model passes; 3 when the `onnx` package is missing; 1 otherwise.
"""
import sys

try:
    import onnx
except ImportError:
    print("the Python package `onnx` is not installed (pip install onnx)", file=sys.stderr)
    sys.exit(3)



def longest_join(model):
    """The longest axis a Concat joins or a Split cuts, with the node's name."""
    g = model.graph
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim] for v in [*g.input, *g.value_info, *g.output]}
    dims.update({t.name: list(t.dims) for t in g.initializer})
    longest = (0, None)
    for node in g.node:
        if node.op_type in ("Concat", "Split"):
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            shape = dims.get(node.output[0] if node.op_type == "Concat" else node.input[0])
            length = shape[axis] if shape and -len(shape) <= axis < len(shape) else None
            if length is not None and length > longest[0]:
                longest = (length, node.name)
    return longest


args = sys.argv[1:]
limit = None
if args[:1] == ["--longest-join"]:
    limit, args = int(args[1]), args[2:]
failed = 0
for path in args:
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        if limit is not None:
            length, node = longest_join(inferred)
            if length > limit:
                raise ValueError(f"`{node}` joins or cuts an axis of {length} elements, more than {limit}")
        print(f"ok {path}")
    except Exception as e:  # report every model, then fail
        failed += 1
        print(f"FAILED {path}: {e}", file=sys.stderr)
sys.exit(1 if failed else 0)
