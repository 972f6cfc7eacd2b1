//! The `incc` command line, run as a user would: exit codes, output, files written.

use crate::common::{fresh_folder, incc, ort_ready};

#[test]
fn flops_json_reports_the_totals_and_the_convention() {
    let (code, out, err) = incc(&["flops", "archs/inception_v4.inc", "--convention", "fvcore", "--json", "--depth", "1"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["totals"]["macs"], 12_284_251_296u64);
    assert_eq!(v["totals"]["conv_fc_macs"], 12_253_974_624u64);
    assert_eq!(v["convention"], "fvcore");
    assert_eq!(v["rows"].as_array().expect("rows").len(), 10);
}

#[test]
fn a_bad_source_exits_1_with_the_located_message_and_bad_usage_exits_2() {
    std::fs::create_dir_all("target/cli-test").expect("dir");
    std::fs::write("target/cli-test/bad.inc", "network n {\n  input 3x8x8\n  conv 3x3 -> relu\n}\n").expect("write");
    let (code, _, err) = incc(&["check", "target/cli-test/bad.inc"]);
    assert_eq!(code, 1);
    assert!(err.contains("target/cli-test/bad.inc:3:3"), "{err}");
    assert!(err.contains("conv needs a number of filters"), "{err}");
    let (code, _, err) = incc(&["flops", "archs/inception_v4.inc", "--set", "classes"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = incc(&["graph", "archs/inception_v4.inc", "--after", "no-such-pass"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown pass `no-such-pass`"), "{err}");
}

#[test]
fn compile_writes_the_model_and_the_weights() {
    std::fs::create_dir_all("target/cli-test").expect("dir");
    let (code, _, err) = incc(&[
        "compile",
        "tests/fixtures/tiny_residual.inc",
        "-o",
        "target/cli-test/tiny.onnx",
        "--save-weights",
        "target/cli-test/tiny.safetensors",
        "--fold-bn",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("wrote target/cli-test/tiny.onnx"), "{err}");
    assert!(std::fs::metadata("target/cli-test/tiny.onnx").expect("model").len() > 1000);
    // The saved weights are those of the folded graph: no batch norm left.
    let st = std::fs::read("target/cli-test/tiny.safetensors").expect("weights");
    let names = safetensors::SafeTensors::deserialize(&st).expect("safetensors").names().into_iter().map(String::from).collect::<Vec<_>>();
    assert!(names.contains(&"stem.conv.bias".to_string()) && !names.iter().any(|n| n.contains(".bn.")), "{names:?}");
    let (code, _, err) =
        incc(&["compile", "tests/fixtures/tiny_residual.inc", "--weights", "target/cli-test/missing.safetensors", "-o", "target/cli-test/x.onnx"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the file"), "{err}");
    assert!(!std::path::Path::new("target/cli-test/x.onnx").exists(), "nothing is written on failure");
}

#[test]
fn run_and_bench_on_the_cpu() {
    if !ort_ready() {
        return;
    }
    let (code, out, err) = incc(&["run", "tests/fixtures/tiny_residual.inc", "--batch", "2", "--top", "3", "--provider", "cpu"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("provider: CPUExecutionProvider"), "{out}");
    assert_eq!(out.matches("synthetic #").count(), 2, "{out}");
    let (code, out, err) = incc(&["bench", "tests/fixtures/tiny_residual.inc", "--batch", "1,4", "--min-time", "0", "--iterations", "3", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["results"].as_array().expect("results").len(), 2);
    assert!(v["results"][1]["images_per_s"].as_f64().expect("number") > 0.0);
    let (code, _, err) = incc(&["run", "tests/fixtures/tiny_residual.inc", "--provider", "cuda"]);
    assert_eq!(code, 1, "no silent fallback: {err}");
    assert!(err.contains("CUDA"), "{err}");
}

#[test]
fn bench_profile_from_the_command_line() {
    if !ort_ready() {
        return;
    }
    let dir = fresh_folder("bench-profile");
    let (code, out, err) = incc(&[
        "bench",
        "tests/fixtures/tiny_residual.inc",
        "--min-time",
        "0",
        "--iterations",
        "2",
        "--profile",
        "target/cli-test/bench-profile/p.json",
        "--profile-runs",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("where the time goes at batch 1 (profiled; unprofiled median") && out.contains("| op ") && out.contains("slowest "), "{out}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("p.json")).expect("summary")).expect("json");
    assert_eq!(summary["runs"], 2);
    assert!(dir.join("p.trace.json").exists());
    let (code, _, err) = incc(&["bench", "tests/fixtures/tiny_residual.inc", "--profile", "target/cli-test/no-such-folder/p.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("`target/cli-test/no-such-folder` is not a folder"), "{err}");
}

#[test]
fn train_profile_from_the_command_line() {
    if !ort_ready() {
        return;
    }
    let dir = fresh_folder("train-profile");
    let (code, out, err) = incc(&[
        "train",
        "tests/fixtures/tiny_residual.inc",
        "--data",
        "synthetic:64,15,5",
        "--batch",
        "8",
        "--max-steps",
        "3",
        "--out",
        "target/cli-test/train-profile/run",
        "--quiet",
        "--profile",
        "target/cli-test/train-profile/t.json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("where the time of a training step goes (profiled):\n2 runs, ") && out.contains("| ConvTranspose "), "{out}");
    assert!(err.contains("wrote target/cli-test/train-profile/t.json and target/cli-test/train-profile/t.trace.json"), "{err}");
    assert!(dir.join("t.json").exists() && dir.join("t.trace.json").exists());
}

#[test]
fn train_resume_eval_and_plot_from_the_command_line() {
    if !ort_ready() {
        return;
    }
    let out = "target/cli-test/run";
    let _ = std::fs::remove_dir_all(out);
    let data = "synthetic:160,15,5";
    let (code, stdout, err) =
        incc(&["train", "tests/fixtures/tiny_residual.inc", "--data", data, "--batch", "8", "--epochs", "2", "--max-steps", "25", "--out", out, "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.starts_with("done: 25 steps"), "{stdout}");
    let (code, stdout, err) = incc(&["train", "--resume", out, "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.starts_with("done: 40 steps"), "{stdout}");
    let (code, stdout, err) = incc(&["eval", &format!("{out}/best.safetensors"), "--data", data]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("160 examples, top-1"), "{stdout}");
    let (code, _, err) = incc(&["plot", out, "--out", "target/cli-test/run.svg"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = incc(&["train", "tests/fixtures/tiny_residual.inc", "--data", "nope:/x", "--out", out]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown data kind `nope`"), "{err}");
}

#[test]
fn cuda_options_are_key_value_pairs_for_the_cuda_provider() {
    let (code, _, err) = incc(&["run", "tests/fixtures/tiny_residual.inc", "--cuda-option", "prefer_nhwc"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`prefer_nhwc` is not KEY=VALUE"), "{err}");
    let (code, _, err) = incc(&["run", "tests/fixtures/tiny_residual.inc", "--cuda-option", "prefer_nhwc=1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--cuda-option configures the CUDA provider; add --provider cuda"), "{err}");
}

/// Every failure is printed once, with one `error:` prefix: located diagnostics with their own
/// header, every other error after `error: ` (never `error: error:`, never none). A command that
/// runs a model may say which ONNX Runtime it loaded first.
#[test]
fn a_failure_is_printed_once_with_one_error_prefix() {
    std::fs::create_dir_all("target/cli-test").expect("dir");
    let failing: [&[&str]; 8] = [
        &["check", "target/cli-test/no-such-file.inc"],
        &["flops", "archs/inception_v4.inc", "--residualize", "scale"],
        &["graph", "archs/inception_v4.inc", "--after", "no-such-pass"],
        &["compile", "tests/fixtures/tiny_residual.inc", "--weights", "target/cli-test/missing.safetensors", "-o", "target/cli-test/x.onnx"],
        &["compile", "tests/fixtures/tiny_residual.inc", "--train", "--fold-bn", "-o", "target/cli-test/x.onnx"],
        &["train", "tests/fixtures/tiny_residual.inc", "--data", "nope:/x", "--out", "target/cli-test/never"],
        &["train", "tests/fixtures/tiny_residual.inc", "--data", "synthetic:8,15,5", "--set", "classes=abc", "--out", "target/cli-test/never"],
        &["plot", "target/cli-test/no-such-run", "--out", "target/cli-test/never.svg"],
    ];
    for args in failing {
        let (code, _, err) = incc(args);
        assert!(code == 1 || code == 2, "{args:?} exits {code}: {err}");
        let message = match err.split_once('\n') {
            Some((first, rest)) if first.starts_with("ONNX Runtime: ") => rest,
            _ => err.as_str(),
        };
        assert!(message.starts_with("error: ") && !message.starts_with("error: error"), "{args:?}:\n{err}");
        assert_eq!(err.matches("error:").count(), 1, "{args:?}:\n{err}");
    }
}

/// `--lean-memory` changes where ONNX Runtime takes memory from, not what a step computes: the
/// same checkpoint, bit for bit. It concerns the CPU only.
#[test]
fn lean_memory_trains_the_same_values() {
    if !ort_ready() {
        return;
    }
    let dir = fresh_folder("lean-memory");
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let out = out.to_str().expect("a path");
        let args = [
            &[
                "train",
                "tests/fixtures/tiny_residual.inc",
                "--data",
                "synthetic:32,15,5",
                "--batch",
                "8",
                "--max-steps",
                "3",
                "--threads",
                "1",
                "--quiet",
                "--out",
                out,
            ][..],
            extra,
        ]
        .concat();
        let (code, _, err) = incc(&args);
        assert_eq!(code, 0, "{err}");
        incc::trainer::checkpoint::load(&dir.join(name).join("last.safetensors")).expect("a checkpoint").tensors
    };
    assert_eq!(run("arena", &[]), run("lean", &["--lean-memory"]));
    let (code, _, err) = incc(&["run", "tests/fixtures/tiny_residual.inc", "--provider", "cuda", "--lean-memory"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--lean-memory concerns the CPU's memory"), "{err}");
}
