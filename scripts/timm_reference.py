#!/usr/bin/env python3
"""Ground-truth fixtures and reference data from PyTorch `timm` for incc.

For each of timm's inception_v3, inception_v4 and inception_resnet_v2 this script

1. writes ``<fixtures>/<name>.keys.txt``: one ``<key> <shape>`` line per
   ``state_dict()`` entry, in state_dict order, with ``num_batches_tracked``
   entries left out (shape = dims joined by ``x``);
2. writes to ``<out>`` (reference data for numeric checks, not committed):
   - ``<name>.safetensors``   state_dict (no num_batches_tracked) with
                              randomised, non-trivial BatchNorm statistics
   - ``<name>.input.f32``     input, raw little-endian float32, 2x3x299x299
   - ``<name>.logits.f32``    eval-mode logits, raw little-endian float32, 2x1000
   - ``<name>.onnx``          torch.onnx.export of the same model (opset 18),
                              weights in ``<name>.onnx.data``
   - ``<name>.calibrated.*``  the same with BN running stats calibrated on a
                              separate batch, so the signal neither explodes nor
                              dies out (see calibrate_bn)
   - ``README.txt``           what each file is

Needs torch, timm, safetensors, numpy (and onnx + onnxscript for the export;
onnxruntime, if installed, is used to check the exported model). No network
access is needed: models are built with ``pretrained=False``.

Usage:
    python3 scripts/timm_reference.py --out /tmp/timm_ref --fixtures tests/fixtures/timm
"""
import argparse
import os
import sys
import traceback

import numpy as np
import torch
import torch.nn as nn
import timm
from safetensors.torch import load_file, save_file

MODELS = ["inception_v3", "inception_v4", "inception_resnet_v2"]
SKIP_SUFFIX = "num_batches_tracked"


def make_model(name: str) -> nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=1000).eval()


def filtered_state_dict(model: nn.Module):
    """state_dict in its own order, without num_batches_tracked buffers."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith(SKIP_SUFFIX)}


def shape_str(t: torch.Tensor) -> str:
    assert t.dim() > 0, "unexpected 0-d tensor"
    return "x".join(str(d) for d in t.shape)


def write_keys(name: str, model: nn.Module, fixtures_dir: str) -> None:
    """Step 2: the key/shape fixture file."""
    sd = filtered_state_dict(model)
    path = os.path.join(fixtures_dir, f"{name}.keys.txt")
    with open(path, "w") as f:
        f.write(f"# timm {timm.__version__} state_dict keys of {name}, num_batches_tracked omitted\n")
        for k, v in sd.items():
            f.write(f"{k} {shape_str(v)}\n")
    n_params = sum(p.numel() for p in model.parameters())
    n_convs = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    n_bns = sum(1 for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    print(f"{name}: {len(sd)} keys, {n_params} parameters, {n_convs} Conv2d, {n_bns} BatchNorm -> {path}")


@torch.no_grad()
def randomise_bn(model: nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters
    (uses the global torch RNG, so the result follows torch.manual_seed)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c) * 0.1)
            m.running_var.copy_(torch.rand(c) + 0.5)   # uniform(0.5, 1.5), positive
            m.weight.copy_(torch.rand(c) + 0.5)        # uniform(0.5, 1.5)
            m.bias.copy_(torch.randn(c) * 0.1)


def write_f32(path: str, t: torch.Tensor) -> None:
    t.detach().cpu().contiguous().numpy().astype("<f4").tofile(path)


@torch.no_grad()
def calibrate_bn(model: nn.Module, batch: int = 4) -> None:
    """Replace every BatchNorm's running_mean/running_var by the statistics of a
    calibration batch (randn, generator seed 2, NOT the test input): one forward
    pass in train mode with momentum 1.0, so running stats = batch stats
    (running_var unbiased). BN weight/bias keep their random values.

    Why: with the random stats above the signal is not normalised, so it either
    explodes (timm's InceptionV3 init, trunc_normal std=0.1 whatever the fan-in:
    logits ~1e13) or dies out (v4 / inception_resnet_v2 with PyTorch default conv init:
    the logits of two different inputs agree to ~1e-7, i.e. they are almost only
    biases and do not test the early layers). Calibrated stats keep every layer near
    unit scale, so the logits depend on the input."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    g = torch.Generator().manual_seed(2)
    model.train()
    model(torch.randn(batch, 3, 299, 299, generator=g))
    model.eval()
    for m, mom in zip(bns, saved):
        m.momentum = mom


def make_reference(name: str, out_dir: str, calibrated: bool = False) -> dict:
    """Step 4: weights, input, logits and ONNX export.
    calibrated=True writes the extra well-conditioned variant <name>.calibrated.*"""
    info = {}
    stem = f"{name}.calibrated" if calibrated else name
    torch.manual_seed(0)
    model = make_model(name)
    randomise_bn(model)
    if calibrated:
        calibrate_bn(model)
    model.eval()

    sd = {k: v.contiguous() for k, v in filtered_state_dict(model).items()}
    save_file(sd, os.path.join(out_dir, f"{stem}.safetensors"))

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 299, 299, generator=g)
    write_f32(os.path.join(out_dir, f"{stem}.input.f32"), x)

    with torch.no_grad():
        logits = model(x)
    assert tuple(logits.shape) == (2, 1000), logits.shape
    write_f32(os.path.join(out_dir, f"{stem}.logits.f32"), logits)
    info["logits_absmax"] = f"{float(logits.abs().max()):.4g}"
    info["logits_std"] = f"{float(logits.std()):.4g}"
    # how much the logits depend on the input: max|l0 - l1| / max|l|
    info["input_sensitivity"] = f"{float((logits[0] - logits[1]).abs().max() / logits.abs().max()):.3g}"
    print(f"{stem}: logits |max| {info['logits_absmax']}, std {info['logits_std']}, "
          f"input sensitivity {info['input_sensitivity']}")

    # self-check: the saved weights alone reproduce the logits in a fresh model
    fresh = make_model(name)
    missing, unexpected = fresh.load_state_dict(
        load_file(os.path.join(out_dir, f"{stem}.safetensors")), strict=False)
    assert not unexpected and all(k.endswith(SKIP_SUFFIX) for k in missing), (missing, unexpected)
    with torch.no_grad():
        info["reload_maxdiff"] = f"{float((fresh(x) - logits).abs().max()):.3g}"

    onnx_path = os.path.join(out_dir, f"{stem}.onnx")
    try:
        torch.onnx.export(
            model, x, onnx_path,
            opset_version=18,
            input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "N"}, "logits": {0: "N"}},
        )
        info["onnx"] = "ok"
        info["onnx_check"] = check_onnx(onnx_path, x, logits)
    except Exception as e:  # report and go on
        info["onnx"] = f"FAILED: {type(e).__name__}: {e}"
        traceback.print_exc()
    print(f"{stem}: onnx {info['onnx']} {info.get('onnx_check', '')}")
    return info


def check_onnx(path: str, x: torch.Tensor, logits: torch.Tensor) -> str:
    """Run the exported model with onnxruntime, if it is installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "(onnxruntime not installed, not checked)"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    # external data: some exporters write weights next to the .onnx file
    got = sess.run(["logits"], {"images": x.numpy()})[0]
    got1 = sess.run(["logits"], {"images": x[:1].numpy()})[0]  # dynamic batch
    d = float(np.abs(got - logits.numpy()).max())
    d1 = float(np.abs(got1 - logits[:1].numpy()).max())
    return f"(onnxruntime max abs diff vs torch: N=2 {d:.3g}, N=1 {d1:.3g})"


README = """\
Reference data written by scripts/timm_reference.py (incc repo), timm {timm}, torch {torch}.
Not committed; regenerate with
    python3 scripts/timm_reference.py --out {out} --fixtures tests/fixtures/timm

For NAME in inception_v3, inception_v4, inception_resnet_v2:
  NAME.safetensors  model.state_dict() of timm.create_model(NAME, pretrained=False,
                    num_classes=1000) built after torch.manual_seed(0), minus the
                    num_batches_tracked buffers; every BatchNorm then re-initialised
                    from the same global RNG, module order: running_mean = N(0,1)*0.1,
                    running_var = U(0.5,1.5), weight = U(0.5,1.5), bias = N(0,1)*0.1.
                    BN eps in all three nets is 1e-3. All tensors float32.
  NAME.input.f32    input x = torch.randn(2,3,299,299, generator=Generator().manual_seed(1)),
                    raw little-endian float32, NCHW, no header (2*3*299*299 values).
                    Identical for the three nets.
  NAME.logits.f32   model(x) in eval mode, raw little-endian float32, shape 2x1000.
  NAME.onnx         torch.onnx.export(model, x, opset_version=18, input_names=["images"],
                    output_names=["logits"], dynamic_axes={{"images":{{0:"N"}},"logits":{{0:"N"}}}}).
                    Weights are in the external-data file NAME.onnx.data beside it
                    (keep the two together).

Extra: NAME.calibrated.{{safetensors,input.f32,logits.f32,onnx,onnx.data}}  (USE THESE)
  Same recipe, then BN running_mean/running_var replaced by the batch statistics of a
  calibration batch torch.randn(4,3,299,299, generator seed 2) (train-mode forward,
  momentum 1.0, unbiased var); BN weight/bias keep the random values. Input identical.
  Why: with the purely random BN stats the signal is not normalised. inception_v3
  (timm init trunc_normal std=0.1 for every conv) explodes: logits ~1e13 (compare
  with a RELATIVE tolerance max|diff|/max|ref|). inception_v4 / inception_resnet_v2
  die out: their two samples' logits agree to ~1e-7 / ~3e-4 relative, so they barely
  test anything before the last layers. input_sensitivity below = max|l0-l1|/max|l|.

Checks: reload_maxdiff = max|logits(fresh model + NAME.safetensors) - NAME.logits|;
onnx_check = onnxruntime (CPU) vs torch logits, for N=2 and N=1 (dynamic batch).

Per-model notes:
{notes}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/timm_ref", help="directory for reference data")
    ap.add_argument("--fixtures", default="tests/fixtures/timm", help="directory for *.keys.txt")
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--no-reference", action="store_true", help="only write the key fixtures")
    ap.add_argument("--no-calibrated", action="store_true",
                    help="skip the extra well-conditioned <name>.calibrated.* variants")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    os.makedirs(args.fixtures, exist_ok=True)
    print(f"torch {torch.__version__}, timm {timm.__version__}")

    for name in args.models:
        write_keys(name, make_model(name), args.fixtures)

    if args.no_reference:
        return 0
    os.makedirs(args.out, exist_ok=True)
    notes = []
    variants = [(n, False) for n in args.models]
    if not args.no_calibrated:
        variants += [(n, True) for n in args.models]
    for name, calibrated in variants:
        info = make_reference(name, args.out, calibrated)
        stem = f"{name}.calibrated" if calibrated else name
        notes.append(f"  {stem}: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    with open(os.path.join(args.out, "README.txt"), "w") as f:
        f.write(README.format(timm=timm.__version__, torch=torch.__version__, out=args.out,
                              notes="\n".join(notes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
