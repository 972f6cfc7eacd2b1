#!/usr/bin/env python3
"""Minimal reproduction of an OpenVINO bug (docs/openvino-repro.md): a Reshape that follows a
ReduceSum with keepdims=0 and keeps its rank is removed, so the model's output has the wrong shape.

    x[8,16,144] -> ReduceSum(axes=[0], keepdims=0) -> [16,144] -> Reshape([1,2304]) -> y[1,2304]

OpenVINO 2026.4 (CPU) returns y with shape [16,144]; fed to a Concat with a [1,16] tensor the
model does not compile at all. Exit status 1 while the bug is present, 0 once it is fixed.
"""
import numpy as np
import onnx
import openvino as ov
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator


def model(with_concat):
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["sum"], keepdims=0),
        helper.make_node("Reshape", ["sum", "row"], ["flat" if with_concat else "y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16, 144])]
    if with_concat:
        nodes.append(helper.make_node("Concat", ["flat", "z"], ["y"], axis=1))
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16]))
    width = 2304 + (16 if with_concat else 0)
    graph = helper.make_graph(
        nodes,
        "reduce_reshape",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        [numpy_helper.from_array(np.array([0], np.int64), "axes"), numpy_helper.from_array(np.array([1, 2304], np.int64), "row")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def main():
    print("openvino", ov.get_version())
    rng = np.random.default_rng(0)
    feeds = {"x": rng.random((8, 16, 144), dtype=np.float32), "z": rng.random((1, 16), dtype=np.float32)}
    broken = False
    for with_concat in (False, True):
        m = model(with_concat)
        inputs = {k: v for k, v in feeds.items() if k in {i.name for i in m.graph.input}}
        (expected,) = ReferenceEvaluator(m).run(None, inputs)
        core = ov.Core()
        label = "ReduceSum -> Reshape -> Concat" if with_concat else "ReduceSum -> Reshape"
        try:
            compiled = core.compile_model(core.read_model(m.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            got = compiled(inputs)[0]
        except RuntimeError as e:
            broken = True
            print(f"{label}: compile_model failed: {[l for l in str(e).splitlines() if l.strip()][-1][:200]}")
            continue
        ok = got.shape == expected.shape and np.allclose(got, expected, rtol=1e-5)
        broken |= not ok
        print(f"{label}: output shape {list(got.shape)}, expected {list(expected.shape)}: {'ok' if ok else 'WRONG'}")
    raise SystemExit(1 if broken else 0)


if __name__ == "__main__":
    main()
