#!/usr/bin/env bash
# Everything the tests need besides Rust, on a fresh machine: the ONNX Runtime library (into
# .ort/lib, from the PyPI wheel), the Python `onnx` package (the ONNX project's checker, which
# the tests run on every emitted model), and `onnxruntime` and `openvino` (the portability tests).
# Idempotent; run from any directory.
set -euo pipefail
here="$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd -P)"
"$here/fetch-ort.sh" >/dev/null
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import onnx" 2>/dev/null; then
  echo "setup.sh: installing the Python package onnx (for the ONNX checker)" >&2
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "onnx==1.23.2"
fi
# The portability tests (tests/all/portability.rs) run the emitted graphs in the ONNX reference
# implementation and in OpenVINO against ONNX Runtime's Python package (~85 MB of wheels, ~30 s).
if ! "$PYTHON" -c "import onnxruntime, openvino" 2>/dev/null; then
  echo "setup.sh: installing the Python packages onnxruntime and openvino (for the portability tests)" >&2
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "onnxruntime==1.31.1" "openvino==2026.4.1"
fi
echo "setup.sh: ready (ONNX Runtime in .ort/lib, python onnx $("$PYTHON" -c 'import onnx; print(onnx.__version__)'))" >&2
