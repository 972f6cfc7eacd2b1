#!/usr/bin/env bash
# Everything the tests need besides Rust, on a fresh machine: the ONNX Runtime library (into
# .ort/lib, from the PyPI wheel) and the Python `onnx` package (the ONNX project's checker, which
# the tests run on every emitted model). Idempotent; run from any directory.
set -euo pipefail
here="$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd -P)"
"$here/fetch-ort.sh" >/dev/null
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import onnx" 2>/dev/null; then
  echo "setup.sh: installing the Python package onnx (for the ONNX checker)" >&2
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "onnx==1.23.2"
fi
echo "setup.sh: ready (ONNX Runtime in .ort/lib, python onnx $("$PYTHON" -c 'import onnx; print(onnx.__version__)'))" >&2
