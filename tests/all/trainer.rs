//! `incc train` / `incc eval` on real data (Fashion-MNIST, from the Debian package
//! dataset-fashion-mnist that .ci/run installs): learning, exact resume, failures that keep work.

use crate::common::ort_ready;
use incc::runtime::session::{Provider, SessionConfig};
use incc::trainer::schedule::Schedule;
use incc::trainer::{eval_checkpoint, top_k_hits, train, RunConfig, Runner, Start};
use incc::Error;
use std::path::{Path, PathBuf};

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST and ONNX Runtime, or a reason to skip (a failure in CI, which installs both).
fn ready() -> bool {
    if !Path::new(FMNIST).join("train-images-idx3-ubyte.gz").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must install the Debian package dataset-fashion-mnist");
        eprintln!("skipped: no Fashion-MNIST in {FMNIST} (apt-get install dataset-fashion-mnist)");
        return false;
    }
    ort_ready()
}

fn config(limit_train: usize, batch: usize, epochs: u64) -> RunConfig {
    RunConfig {
        arch: PathBuf::from("archs/mini/inception_resnet_fmnist.inc"),
        set: vec![],
        input: None,
        residualize: None,
        data: format!("fashion-mnist:{FMNIST}"),
        epochs,
        batch,
        train: incc::train::TrainConfig::default(),
        lr: 0.045,
        schedule: Schedule::paper(),
        warmup_epochs: 0.0,
        ema: Some(0.99),
        seed: 4,
        limit_train: Some(limit_train),
        limit_val: Some(1000),
    }
}

fn runner(out: &Path, max_steps: Option<u64>) -> Runner {
    Runner { session: SessionConfig { threads: Some(1), ..SessionConfig::default() }, max_steps, ..Runner::new(out) }
}

fn fresh(name: &str) -> PathBuf {
    let dir = PathBuf::from("target/test-runs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_short_real_training_learns_far_above_chance() {
    if !ready() {
        return;
    }
    let out = fresh("learns");
    // 2 epochs of 6,400 examples at batch 64: 200 steps.
    let s = train(&Start::New(config(6400, 64, 2)), &runner(&out, None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.steps, 200);
    let top1 = s.val_top1.expect("validated");
    assert!(top1 > 0.6, "validation top-1 {top1} after 200 steps (chance is 0.1)");
    // The metrics, the checkpoints, and `incc eval` agreeing with the run's own validation.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    assert_eq!(metrics.lines().filter(|l| l.contains("\"kind\":\"epoch\"")).count(), 2);
    assert_eq!(metrics.lines().filter(|l| l.contains("\"kind\":\"step\"")).count(), 200);
    let r = Runner { out: PathBuf::new(), ..runner(&out, None) };
    let report = eval_checkpoint(&out.join("last.safetensors"), None, &format!("fashion-mnist:{FMNIST}"), &r, true, Some(1000)).expect("evaluates");
    let e = report.evaluation;
    assert!(report.averaged);
    assert_eq!(e.examples, 1000);
    assert!((e.top1 - top1).abs() < 1e-9, "eval {} vs the run's {top1}", e.top1);
    assert!(out.join("best.safetensors").exists());
    // The curves of this run plot.
    let run = incc::plot::read_run(&out).expect("reads");
    incc::plot::plot(&[run], &out.join("curves.svg")).expect("plots");
}

/// Training N steps equals training N/2, stopping, resuming and training N/2 more: the same
/// parameters, optimizer state, running statistics and averages, bit for bit (the data order,
/// crops and dropout masks depend on the seed and the position only).
#[test]
fn resuming_continues_exactly() {
    if !ready() {
        return;
    }
    // 20 steps an epoch: the run crosses an epoch end (validation, checkpoint) after step 20.
    let cfg = config(640, 32, 3);
    let whole = fresh("resume-whole");
    train(&Start::New(cfg.clone()), &runner(&whole, Some(30))).unwrap_or_else(|e| panic!("{e}"));
    let halves = fresh("resume-halves");
    train(&Start::New(cfg.clone()), &runner(&halves, Some(15))).unwrap_or_else(|e| panic!("{e}"));
    train(&Start::Resume { with: None }, &runner(&halves, Some(30))).unwrap_or_else(|e| panic!("{e}"));
    let a = incc::trainer::checkpoint::load(&whole.join("last.safetensors")).expect("loads");
    let b = incc::trainer::checkpoint::load(&halves.join("last.safetensors")).expect("loads");
    assert_eq!(a.position, b.position);
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        assert!(t == &b.tensors[name], "`{name}` differs after resuming");
    }
}

/// The step as two graphs (gradients, then update: data-parallel training's) in one process takes
/// the single graph's steps: every parameter, optimizer slot, running statistic and average
/// within rounding after 5 steps of the residual network (batch norm, dropout, moving average).
#[test]
fn the_step_split_in_two_graphs_trains_as_the_single_graph() {
    if !ready() {
        return;
    }
    let cfg = config(640, 32, 1);
    let (single, split) = (fresh("split-single"), fresh("split-two-graphs"));
    let s = train(&Start::New(cfg.clone()), &runner(&single, Some(5))).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.allreduce.is_none());
    let s = train(&Start::New(cfg), &Runner { split: true, ..runner(&split, Some(5)) }).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.allreduce.is_some_and(|(per_step, _)| per_step >= 0.0));
    let load = |dir: &Path| incc::trainer::checkpoint::load(&dir.join("last.safetensors")).expect("checkpoint");
    let (a, b) = (load(&single), load(&split));
    assert_eq!(a.position, b.position);
    assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
    for (name, t) in &a.tensors {
        for (x, y) in t.data.iter().zip(&b.tensors[name].data) {
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "`{name}`: {x} in one graph, {y} in two");
        }
    }
}

#[test]
fn a_corrupt_or_truncated_checkpoint_is_a_clear_error() {
    if !ready() {
        return;
    }
    let out = fresh("corrupt");
    train(&Start::New(config(640, 32, 1)), &runner(&out, Some(2))).unwrap_or_else(|e| panic!("{e}"));
    let path = out.join("last.safetensors");
    let bytes = std::fs::read(&path).expect("checkpoint");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    let err = train(&Start::Resume { with: None }, &runner(&out, Some(4))).err().expect("refused");
    assert!(matches!(&err, Error::Checkpoint { path: p, .. } if *p == path), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("last.safetensors") && message.contains("truncated or corrupt"), "{message}");
    std::fs::write(&path, b"garbage").expect("corrupt");
    let err = incc::trainer::checkpoint::load(&path).err().expect("refused").to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");
}

#[test]
fn a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    if !ready() {
        return;
    }
    let out = fresh("diverge");
    let good = config(640, 32, 2);
    train(&Start::New(good.clone()), &runner(&out, Some(20))).unwrap_or_else(|e| panic!("{e}"));
    // The same run, resumed with a learning rate no network survives.
    let path = out.join("last.safetensors");
    let good_params = incc::trainer::checkpoint::load(&path).expect("loads").tensors;
    let wild = RunConfig { lr: 1e30, schedule: Schedule::Constant, ..good.clone() };
    let err = train(&Start::Resume { with: Some(wild) }, &runner(&out, Some(40))).err().expect("the loss diverges");
    assert!(matches!(err, Error::Diverged { checkpoint_step: Some(20), .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("the loss became") && message.contains("last good checkpoint") && message.contains("(step 20)"), "{message}");
    // The checkpoint on disk is the last one before the divergence: step 20's parameters.
    let kept = incc::trainer::checkpoint::load(&path).expect("the last good checkpoint is still readable");
    assert_eq!(kept.position.step, 20);
    for (name, t) in &good_params {
        assert!(kept.tensors[name] == *t, "`{name}` changed");
    }
    // What the message advises works: resumed with a lower rate and clipping, the run goes on.
    let mut tame = RunConfig { lr: 0.01, schedule: Schedule::Constant, ..good };
    tame.train.clip_norm = Some(1.0);
    let s = train(&Start::Resume { with: Some(tame) }, &runner(&out, Some(40))).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.steps == 40 && s.last_loss.is_finite());
    let settings: RunConfig = serde_json::from_str(&incc::trainer::checkpoint::load(&path).expect("loads").settings).expect("settings");
    assert_eq!((settings.lr, settings.train.clip_norm), (0.01, Some(1.0)));
}

#[test]
fn top_k_on_a_hand_made_case() {
    // Three examples, four classes.
    let logits = [
        0.1, 0.9, 0.3, 0.2, // label 1: top-1
        0.5, 0.4, 0.3, 0.6, // label 0: second
        0.1, 0.2, 0.3, 0.4, // label 0: last
    ];
    let labels = [1, 0, 0];
    assert_eq!(top_k_hits(&logits, &labels, 4, 1).unwrap(), 1);
    assert_eq!(top_k_hits(&logits, &labels, 4, 2).unwrap(), 2);
    assert_eq!(top_k_hits(&logits, &labels, 4, 4).unwrap(), 3);
    // A tie with the label counts against the example.
    assert_eq!(top_k_hits(&[1.0, 1.0], &[1], 2, 1).unwrap(), 0);
    // A label past the classes (data with more classes than the network) or rows that do not
    // match the labels are errors, not a panic or a silent miss.
    let err = top_k_hits(&logits, &[1, 0, 4], 4, 1).unwrap_err().to_string();
    assert!(err.contains("label 4 is not a class of a network with 4 classes"), "{err}");
    assert!(top_k_hits(&logits, &[1, 0, -1], 4, 1).is_err());
    assert!(top_k_hits(&logits[..11], &labels, 4, 1).is_err());
}

/// Without a GPU, training on CUDA is a clear error. With one, two steps on CUDA leave every
/// parameter, optimizer slot and running statistic where two steps on the CPU leave them (within
/// 1e-3 of each tensor's largest value); `INCC_EXPECT_CUDA=1` makes a CUDA failure fatal.
#[test]
fn training_on_cuda_matches_the_cpu_or_fails_clearly() {
    if !ready() {
        return;
    }
    let out = fresh("cuda");
    let r = Runner { session: SessionConfig { provider: Provider::Cuda { device: 0 }, ..SessionConfig::default() }, ..runner(&out, Some(2)) };
    if let Err(e) = train(&Start::New(config(640, 32, 1)), &r) {
        assert!(std::env::var_os("INCC_EXPECT_CUDA").is_none(), "INCC_EXPECT_CUDA is set, but: {e}");
        assert!(e.to_string().contains("CUDA"), "{e}");
        return;
    }
    let on_cpu = fresh("cuda-twin-on-cpu");
    train(&Start::New(config(640, 32, 1)), &runner(&on_cpu, Some(2))).expect("trains on the CPU");
    let load = |dir: &Path| incc::trainer::checkpoint::load(&dir.join("last.safetensors")).expect("checkpoint");
    let (gpu, cpu) = (load(&out), load(&on_cpu));
    assert_eq!(gpu.tensors.keys().collect::<Vec<_>>(), cpu.tensors.keys().collect::<Vec<_>>());
    for (name, c) in &cpu.tensors {
        let scale = c.data.iter().map(|v| v.abs()).fold(1e-12, f32::max);
        let diff = gpu.tensors[name].data.iter().zip(&c.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff <= 1e-3 * scale, "{name}: CUDA and CPU differ by {diff:e} after two steps (largest value {scale:e})");
    }
    eprintln!("CUDA is available here: two steps agree with the CPU's");
}

/// A profiled run of a few steps on synthetic data: the summary names the training step's ops
/// (conv input gradients, batch statistics) and leaves out the first step; both files are written.
#[test]
fn profiled_training_steps() {
    if !ort_ready() {
        return;
    }
    let out = fresh("profile");
    std::fs::create_dir_all(&out).unwrap();
    let cfg = RunConfig {
        arch: PathBuf::from("tests/fixtures/tiny_residual.inc"),
        data: "synthetic:64,15,5".into(),
        limit_val: Some(16),
        ema: None,
        ..config(64, 8, 1)
    };
    let summary = out.join("steps.json");
    let r = Runner { profile: Some(summary.clone()), ..runner(&out, Some(4)) };
    let s = train(&Start::New(cfg), &r).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.steps, 4);
    let p = s.profile.expect("profiled");
    assert_eq!(p.runs, 3, "the first of 4 steps is left out");
    let ops: Vec<&str> = p.ops.iter().map(|o| o.op.as_str()).collect();
    for op in ["ConvTranspose", "ReduceMean", "Conv"] {
        assert!(ops.contains(&op), "{op} not in {ops:?}");
    }
    assert!(p.kernel_ms > 0.0 && p.run_ms >= p.kernel_ms, "{p:?}");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(written["runs"], 3);
    assert!(out.join("steps.trace.json").exists());
}
