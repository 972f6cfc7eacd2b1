//! The emitted graphs are standard ONNX: other implementations run them and agree with ONNX Runtime
//! (`scripts/check_portability.py`, every output compared). Needs Python's `onnx`, `onnxruntime` and
//! `openvino`: CI installs them (`scripts/setup.sh`); elsewhere a missing one skips the test, saying so.

use crate::common::{arch, python_check};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const NETWORKS: [&str; 5] = ["inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2", "inception_resnet_v2_paper"];
const SMALL_NETWORK: &str = "archs/mini/inception_fmnist.inc";

/// A folder of its own under the system's temporary folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("incc-portability-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `incc compile FILE ARGS -o OUT`.
fn compile(file: &Path, args: &[&str], out: &Path) {
    let run = Command::new(env!("CARGO_BIN_EXE_incc")).arg("compile").arg(file).args(args).arg("-o").arg(out).output().expect("incc runs");
    assert!(run.status.success(), "incc compile {} {args:?}: {}", file.display(), String::from_utf8_lossy(&run.stderr));
}

/// Two training steps of the small network (RMSProp; AdamW with weight decay and clipping, which
/// has two parameter groups), with their evaluation graph.
fn training_steps(dir: &Path) -> Vec<PathBuf> {
    let rmsprop = dir.join("rmsprop.onnx");
    let adamw = dir.join("adamw.onnx");
    compile(Path::new(SMALL_NETWORK), &["--train", "--batch", "8"], &rmsprop);
    compile(Path::new(SMALL_NETWORK), &["--train", "--batch", "8", "--optimizer", "adamw", "--weight-decay", "0.05", "--clip-norm", "1"], &adamw);
    vec![rmsprop, dir.join("rmsprop.eval.onnx"), adamw]
}

/// Runs the models in `runtime` against ONNX Runtime.
fn agree(runtime: &str, models: &[PathBuf]) {
    let mut args: Vec<OsString> = vec!["--runtime".into(), runtime.into()];
    args.extend(models.iter().map(|m| m.clone().into_os_string()));
    python_check(
        "check_portability.py",
        &args,
        "`onnx`, `onnxruntime` and `openvino`",
        &format!("{runtime} disagrees with ONNX Runtime or cannot run the models (see above)"),
    );
}

/// The ONNX project's reference implementation runs whole training steps and the evaluation graph
/// (it is too slow for the full networks).
#[test]
fn training_steps_run_in_the_onnx_reference_implementation() {
    let dir = Scratch::new("reference");
    agree("reference", &training_steps(&dir.0));
}

/// OpenVINO's CPU plugin runs the training steps, and every network's inference graph at 75x75
/// (the weights are those of 299x299; the smaller input only saves time).
#[test]
fn training_steps_and_every_network_run_in_openvino() {
    let dir = Scratch::new("openvino");
    let mut models = training_steps(&dir.0);
    for name in NETWORKS {
        let out = dir.0.join(format!("{name}.onnx"));
        compile(&arch(name), &["--input", "3x75x75"], &out);
        models.push(out);
    }
    agree("openvino", &models);
}
