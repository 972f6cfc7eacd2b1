#!/usr/bin/env python3
"""Validates ONNX models the way the ONNX project does: the full checker and strict shape inference.

Usage: python3 scripts/check_onnx.py MODEL.onnx [...]
Exit status 0 when every model passes; 3 when the `onnx` package is missing; 1 otherwise.
"""
import sys

try:
    import onnx
except ImportError:
    print("the Python package `onnx` is not installed (pip install onnx)", file=sys.stderr)
    sys.exit(3)

failed = 0
for path in sys.argv[1:]:
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        print(f"ok {path}")
    except Exception as e:  # report every model, then fail
        failed += 1
        print(f"FAILED {path}: {e}", file=sys.stderr)
sys.exit(1 if failed else 0)
