#!/usr/bin/env bash
# Fetch the CPU ONNX Runtime shared library used by incc (ort 2.0.0-rc.15,
# load-dynamic, api-31: needs ONNX Runtime >= 1.31) into <repo>/.ort/lib/.
#
# It comes from the official PyPI wheel onnxruntime==1.31.1, which contains a
# standalone C-API library (onnxruntime/capi/libonnxruntime.so.1.31.1, needs only
# glibc (manylinux_2_28) and libstdc++). Nothing is installed: the wheel is downloaded to a
# temporary directory and only that one file is extracted.
#
# Usage: scripts/fetch-ort.sh          (from any directory)
#   Prints the absolute path of the library on stdout; progress goes to stderr.
#   Idempotent: does nothing if the library is already there and intact.
# Environment:
#   PYTHON   python interpreter whose pip to use (default: python3, then python)
#   PIP_INDEX_URL etc. are honoured by pip as usual.
set -euo pipefail

ORT_VERSION=1.31.1
LIB_NAME="libonnxruntime.so.${ORT_VERSION}"
MEMBER="onnxruntime/capi/${LIB_NAME}"
# sha256 of ${MEMBER} inside onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
LIB_SHA256="fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"

die() { printf 'fetch-ort.sh: error: %s\n' "$*" >&2; exit 1; }
note() { printf 'fetch-ort.sh: %s\n' "$*" >&2; }

script_path="$(readlink -f -- "${BASH_SOURCE[0]}")"   # follows symlinks to the script
script_dir="$(cd -- "$(dirname -- "${script_path}")" && pwd -P)"
repo_root="$(cd -- "${script_dir}/.." && pwd -P)"
lib_dir="${repo_root}/.ort/lib"
dest="${lib_dir}/${LIB_NAME}"

[ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ] \
    || die "only Linux x86_64 is supported (this is $(uname -s) $(uname -m)); get ONNX Runtime >= ${ORT_VERSION} yourself and pass --ort-lib or set ORT_DYLIB_PATH"

sha_ok() {
    # Succeeds if $1 exists and has the pinned checksum (or is a non-empty ELF
    # file when sha256sum is unavailable).
    [ -s "$1" ] || return 1
    if command -v sha256sum >/dev/null 2>&1; then
        [ "$(sha256sum -- "$1" | cut -d' ' -f1)" = "${LIB_SHA256}" ]
    else
        [ "$(head -c 4 -- "$1" | od -An -c | tr -d ' ')" = '177ELF' ]
    fi
}

if sha_ok "${dest}"; then
    note "already present"
    printf '%s\n' "${dest}"
    exit 0
fi
[ -e "${dest}" ] && note "existing ${dest} is damaged or not ${ORT_VERSION}; fetching it again"

# Find a Python with pip.
python=""
for cand in ${PYTHON:+"$PYTHON"} python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -m pip --version >/dev/null 2>&1; then
        python="$cand"; break
    fi
done
[ -n "${python}" ] || die "pip is not available (tried: ${PYTHON:+$PYTHON }python3 python, as '<python> -m pip').
  Install pip (e.g. 'apt-get install python3-pip') and rerun this script, or
  obtain libonnxruntime.so (ONNX Runtime >= ${ORT_VERSION}) another way and pass
  --ort-lib PATH or set ORT_DYLIB_PATH=PATH."

mkdir -p -- "${lib_dir}"
# Temporary directory on the same file system as the destination, so the final
# mv is an atomic rename.
tmp="$(mktemp -d -- "${repo_root}/.ort/.fetch.XXXXXX")"
trap 'rm -rf -- "${tmp}"' EXIT

note "downloading onnxruntime==${ORT_VERSION} wheel from PyPI (about 24 MB) with ${python} -m pip"
"${python}" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    -d "${tmp}/wheel" "onnxruntime==${ORT_VERSION}" >&2 \
    || die "pip could not download onnxruntime==${ORT_VERSION} from PyPI (see pip's message above).
  Check network access to PyPI (or PIP_INDEX_URL), or install it with
  'pip install onnxruntime==${ORT_VERSION}' (incc finds it there), or pass --ort-lib / ORT_DYLIB_PATH."

shopt -s nullglob
wheels=("${tmp}"/wheel/onnxruntime-"${ORT_VERSION}"-*.whl)
shopt -u nullglob
[ "${#wheels[@]}" -eq 1 ] || die "expected one onnxruntime-${ORT_VERSION} wheel in the download, found ${#wheels[@]}"

note "extracting ${MEMBER}"
if command -v unzip >/dev/null 2>&1; then
    unzip -q -j -o "${wheels[0]}" "${MEMBER}" -d "${tmp}/x" >&2 \
        || die "could not extract ${MEMBER} from ${wheels[0]##*/}"
else
    "${python}" - "${wheels[0]}" "${MEMBER}" "${tmp}/x/${LIB_NAME}" <<'PY' \
        || die "could not extract ${MEMBER} from ${wheels[0]##*/}"
import shutil, sys, zipfile, os
whl, member, out = sys.argv[1:]
os.makedirs(os.path.dirname(out), exist_ok=True)
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi
staged="${tmp}/x/${LIB_NAME}"
sha_ok "${staged}" || die "checksum mismatch for ${MEMBER} (expected sha256 ${LIB_SHA256}); refusing to install it"
chmod 0755 -- "${staged}"
mv -f -- "${staged}" "${dest}"
note "installed"
printf '%s\n' "${dest}"
