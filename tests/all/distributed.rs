//! Data-parallel training and evaluation: `incc train|eval` in two processes under `mpirun`
//! (a build with the `mpi` feature; `.ci/run` installs Open MPI), against one process. Small
//! fixtures and synthetic data, except the Fashion-MNIST run (the Fig 3 settings, shortened with
//! `--limit-train`). Skipped, saying so, without the feature or without `mpirun`; in CI (`CI`
//! set) a missing `mpirun` fails.

use crate::common::ort_ready;
use incc::trainer::checkpoint::{self, Checkpoint, EpochTotals, Position};
use incc::weights::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const INCC: &str = env!("CARGO_BIN_EXE_incc");
const PLAIN: &str = "tests/fixtures/dp_plain.inc";
const BN: &str = "tests/fixtures/dp_bn.inc";

/// The right to run jobs of several processes, one job at a time (the machine has two cores);
/// `None` where `mpirun` cannot start `incc` in several processes, after saying why.
fn mpi_jobs() -> Option<MutexGuard<'static, ()>> {
    if !cfg!(feature = "mpi") {
        eprintln!("skipped: incc is built without the `mpi` feature (cargo test --features mpi)");
        return None;
    }
    if Command::new("mpirun").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must install Open MPI (apt-get install libopenmpi-dev openmpi-bin libclang-dev)");
        eprintln!("skipped: no mpirun (Debian: apt-get install openmpi-bin)");
        return None;
    }
    static JOBS: Mutex<()> = Mutex::new(());
    ort_ready().then(|| JOBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// `incc ARGS` as `processes` processes: under `mpirun`, or alone for one.
fn incc(processes: usize, args: &[&str]) -> Command {
    let mut c = match processes {
        1 => Command::new(INCC),
        n => {
            let mut c = Command::new("mpirun");
            c.args(["--allow-run-as-root", "--oversubscribe", "-np", &n.to_string(), INCC]);
            c
        }
    };
    c.args(args);
    c
}

fn succeeds(mut c: Command) -> Output {
    let out = c.output().expect("starts");
    assert!(out.status.success(), "{c:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn fresh(name: &str) -> PathBuf {
    let dir = PathBuf::from("target/test-runs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn last(dir: &Path) -> Checkpoint {
    checkpoint::load(&dir.join("last.safetensors")).unwrap_or_else(|e| panic!("{e}"))
}

/// A training run of a fixture on synthetic data (96 examples: 3 steps an epoch at batch 32).
fn train_args<'a>(arch: &'a str, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", arch, "--data", "synthetic:96,12,5", "--batch", "32", "--epochs", "20", "--limit-val", "64", "--seed", "3"];
    args.extend(["--schedule", "constant", "--threads", "1", "--workers", "1", "--quiet", "--out", out.to_str().expect("utf-8")]);
    args.extend(extra);
    args
}

/// Every tensor of `a` within `tol` (relative to the value, absolute below 1) of `b`'s.
fn assert_close(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>, tol: f32, what: &str) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: other tensors");
    for (name, t) in a {
        assert_eq!(t.shape, b[name].shape, "{what}: `{name}`");
        for (i, (x, y)) in t.data.iter().zip(&b[name].data).enumerate() {
            assert!((x - y).abs() <= tol * x.abs().max(1.0), "{what}: `{name}`[{i}] is {x} and {y}");
        }
    }
}

/// Without batch norm, two processes at a global batch of 32 take the steps one process takes at
/// 32: gradients averaged before weight decay, clipping (by the averaged gradient's norm), the
/// optimizer and the moving average.
#[test]
fn two_processes_train_as_one_without_batch_norm() {
    let Some(_jobs) = mpi_jobs() else { return };
    let sgd = ["--optimizer", "sgd", "--lr", "0.1", "--weight-decay", "0.001"];
    let rmsprop = ["--optimizer", "rmsprop", "--ema", "0.9", "--clip-norm", "0.05"];
    for (name, optimizer) in [("sgd", &sgd[..]), ("rmsprop", &rmsprop[..])] {
        let (one, two) = (fresh(&format!("dp-{name}-1")), fresh(&format!("dp-{name}-2")));
        let five = [optimizer, &["--max-steps", "5"]].concat();
        succeeds(incc(1, &train_args(PLAIN, &one, &five)));
        succeeds(incc(2, &train_args(PLAIN, &two, &five)));
        let (a, b) = (last(&one), last(&two));
        assert_eq!(a.position, b.position);
        assert_close(&a.tensors, &b.tensors, 1e-5, name);
    }
}

/// With batch norm, each process normalises with its half of the batch: two processes equal one
/// that runs the gradients graph on each half-batch (each half with its own running statistics),
/// averages the gradients and runs the update graph; the checkpoint holds the running statistics
/// averaged over the two.
#[test]
fn two_processes_with_batch_norm_average_their_half_batch_gradients() {
    let Some(_jobs) = mpi_jobs() else { return };
    let out = fresh("dp-bn-2");
    succeeds(incc(2, &train_args(BN, &out, &["--max-steps", "2"])));
    let c = last(&out);
    let expected = half_batches_averaged(c.settings.as_str(), 2);
    assert_close(&expected, &c.tensors, 1e-5, "two processes against half-batch gradients averaged");
}

/// What two processes compute in `steps` steps of the run `settings` describes, in this process:
/// the split step's two graphs, each half of every global batch through the gradients graph.
fn half_batches_averaged(settings: &str, steps: usize) -> BTreeMap<String, Tensor> {
    use incc::data::{batches, open, DataSpec, LoaderConfig, Split};
    use incc::runtime::session::{Model, SessionConfig};
    use incc::runtime::tensor::{run_named, Feed};
    use incc::train::update::{pack_all, packed_state, unpack_all, RUNNING, RUNNING_NEW};
    use incc::train::{emit_split_training, Target};

    let cfg: incc::trainer::RunConfig = serde_json::from_str(settings).expect("settings");
    let compiled = cfg.options().compile(&cfg.arch, None).unwrap_or_else(|e| panic!("{e}"));
    let graph = &compiled.graph;
    let half = cfg.batch / 2;
    let train = incc::train::TrainConfig { target: Target::Cpu, ema: cfg.ema.is_some(), ..cfg.train.clone() };
    let split = emit_split_training(graph, &compiled.sources, &train, Some(half)).unwrap_or_else(|d| panic!("{}", d.render(&compiled.sources)));
    let session = || SessionConfig { threads: Some(1), ..SessionConfig::default() };
    let mut gradients = Model::from_bytes(prost::Message::encode_to_vec(&split.gradients), session()).expect("loads");
    let mut update = Model::from_bytes(prost::Message::encode_to_vec(&split.update), session()).expect("loads");
    let packed = packed_state(graph, &train);
    let mut state = incc::trainer::initial_tensors(graph, &cfg);
    pack_all(&packed, &mut state).expect("packs");
    let mut running = [state[RUNNING].clone(), state[RUNNING].clone()];

    let spec: DataSpec = cfg.data.parse().expect("data");
    let shape = &graph.shape(graph.input).0;
    let loader = LoaderConfig { batch: cfg.batch, shuffle: true, seed: cfg.seed, drop_last: true, limit: cfg.limit_train, ..LoaderConfig::default() };
    let source = std::sync::Arc::from(open(&spec, Split::Train).expect("opens"));
    let transform = std::sync::Arc::new(spec.default_transform(shape[0], shape[1], shape[2], true));
    let feeds_of = |model: &Model, values: &BTreeMap<String, Tensor>| -> Vec<(String, Feed)> {
        let inputs = &model.info().inputs;
        values.iter().filter(|(n, _)| inputs.iter().any(|i| &i.name == *n)).map(|(n, t)| (n.clone(), Feed::F32(t.shape.clone(), t.data.clone()))).collect()
    };
    for batch in batches(source, transform, &loader).take(steps) {
        let batch = batch.expect("a batch");
        let per_image = batch.images.len() / batch.len;
        let mut sums: BTreeMap<String, Tensor> = BTreeMap::new();
        for (r, replica_running) in running.iter_mut().enumerate() {
            let rows = r * half..(r + 1) * half;
            let mut feeds = feeds_of(&gradients, &state);
            feeds.retain(|(n, _)| n != RUNNING);
            feeds.push((RUNNING.into(), Feed::F32(replica_running.shape.clone(), replica_running.data.clone())));
            feeds.push(("images".into(), Feed::F32([vec![half], shape.clone()].concat(), batch.images[rows.start * per_image..rows.end * per_image].to_vec())));
            feeds.push(("labels".into(), Feed::I64(vec![half], batch.labels[rows].to_vec())));
            for (name, dims, values) in run_named(&mut gradients, feeds).expect("gradients run") {
                if name == RUNNING_NEW {
                    replica_running.data = values;
                } else if split.buckets.iter().any(|b| b.name == name) {
                    let sum = sums.entry(name).or_insert_with(|| Tensor { shape: dims.clone(), data: vec![0.0; values.len()] });
                    sum.data.iter_mut().zip(values).for_each(|(s, v)| *s += v);
                }
            }
        }
        let mut feeds = feeds_of(&update, &state);
        for (name, mut sum) in sums {
            sum.data.iter_mut().for_each(|v| *v /= 2.0);
            feeds.push((name, Feed::F32(sum.shape, sum.data)));
        }
        feeds.push(("learning_rate".into(), Feed::F32(vec![], vec![cfg.lr as f32])));
        for (name, dims, values) in run_named(&mut update, feeds).expect("update runs") {
            let name = name.strip_suffix("__new").expect("the update outputs new state").to_string();
            state.insert(name, Tensor { shape: dims, data: values });
        }
    }
    let averaged = running[0].data.iter().zip(&running[1].data).map(|(a, b)| (a + b) / 2.0).collect();
    state.insert(RUNNING.into(), Tensor { shape: running[0].shape.clone(), data: averaged });
    unpack_all(&packed, state)
}

/// The data order depends on the global position only: a run resumed at another number of
/// processes continues it (within rounding of the one it would have taken), and one resumed at
/// the same number is exact.
#[test]
fn resuming_at_another_number_of_processes_continues_the_data_order() {
    let Some(_jobs) = mpi_jobs() else { return };
    let sgd = ["--optimizer", "sgd", "--lr", "0.1"];
    let run = |name: &str, first: usize, then: usize| {
        let out = fresh(name);
        // 3 steps an epoch: 6 steps cross two epoch ends (evaluation, running statistics, checkpoint).
        succeeds(incc(first, &train_args(PLAIN, &out, &[&sgd[..], &["--max-steps", "4"]].concat())));
        let out_text = out.to_str().expect("utf-8");
        succeeds(incc(then, &["train", "--resume", out_text, "--max-steps", "6", "--threads", "1", "--workers", "1", "--quiet"]));
        last(&out)
    };
    let whole = fresh("dp-resume-whole");
    succeeds(incc(1, &train_args(PLAIN, &whole, &[&sgd[..], &["--max-steps", "6"]].concat())));
    let whole = last(&whole);
    for (name, first, then) in [("dp-resume-1-2", 1, 2), ("dp-resume-2-1", 2, 1)] {
        let resumed = run(name, first, then);
        // The epoch's loss is a sum of per-step losses computed on 1 or 2 processes: within rounding.
        let (loss, whole_loss) = (resumed.position.totals.loss_sum, whole.position.totals.loss_sum);
        assert!((loss - whole_loss).abs() <= 1e-6 * whole_loss.abs(), "{name}: epoch loss {loss} against {whole_loss}");
        let exact = |p: &Position| Position { totals: EpochTotals { loss_sum: 0.0, ..p.totals.clone() }, ..p.clone() };
        assert_eq!(exact(&resumed.position), exact(&whole.position), "{name}");
        assert_close(&whole.tensors, &resumed.tensors, 1e-5, name);
    }
    let two = fresh("dp-resume-two-whole");
    succeeds(incc(2, &train_args(PLAIN, &two, &[&sgd[..], &["--max-steps", "6"]].concat())));
    let (two, resumed) = (last(&two), run("dp-resume-2-2", 2, 2));
    assert_eq!(two.tensors, resumed.tensors, "resumed at the same number of processes: exact");
}

/// The Fig 3 settings (the plain network, batch 128, the paper's RMSProp, EMA 0.999, seed 1) for
/// 200 steps (`--limit-train 25600`, about half an epoch: a whole one takes minutes): two
/// processes end within one point of one process's top-1 on the 10,000 test images; and `incc
/// eval` of the checkpoint in two processes prints what one process prints.
#[test]
fn fashion_mnist_in_two_processes_learns_as_one_and_evaluates_the_same() {
    const FMNIST: &str = "/usr/share/datasets/fashion-mnist";
    let Some(_jobs) = mpi_jobs() else { return };
    if !Path::new(FMNIST).join("train-images-idx3-ubyte.gz").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must install the Debian package dataset-fashion-mnist");
        eprintln!("skipped: no Fashion-MNIST in {FMNIST}");
        return;
    }
    let data = format!("fashion-mnist:{FMNIST}");
    let top1 = |processes: usize| {
        let out = fresh(&format!("dp-fmnist-{processes}"));
        let mut args = vec!["train", "archs/mini/inception_fmnist.inc", "--data", &data, "--epochs", "1", "--batch", "128", "--optimizer", "rmsprop"];
        args.extend(["--lr", "0.045", "--ema", "0.999", "--seed", "1", "--limit-train", "25600", "--threads", "1", "--workers", "1", "--quiet"]);
        args.extend(["--out", out.to_str().expect("utf-8")]);
        let printed = String::from_utf8(succeeds(incc(processes, &args)).stdout).expect("utf-8");
        assert_eq!(printed.lines().filter(|l| l.starts_with("done:")).count(), 1, "process 0 alone prints: {printed}");
        (last(&out).position.best_top1.expect("validated"), out)
    };
    let (one, _) = top1(1);
    let (two, out) = top1(2);
    assert!((one - two).abs() <= 0.01, "top-1 {two} in two processes, {one} in one");
    let checkpoint = out.join("last.safetensors");
    let eval = |processes: usize| {
        let args = ["eval", checkpoint.to_str().expect("utf-8"), "--data", &data, "--threads", "1", "--workers", "1"];
        String::from_utf8(succeeds(incc(processes, &args)).stdout).expect("utf-8")
    };
    assert_eq!(eval(2), eval(1));
}

/// A process killed mid-epoch ends the job within seconds (the launcher ends the others), with
/// an error naming it; the last checkpoint stays whole, and the run resumes from it.
#[test]
fn a_killed_process_ends_the_job_and_the_run_resumes() {
    let Some(_jobs) = mpi_jobs() else { return };
    let out = fresh("dp-killed");
    let job = started_past_an_epoch(&out);
    let victim = process_of_rank(job.id(), 1).expect("process 1 of the job");
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().expect("kill runs").success());
    let (status, stderr) = ended_within_60_s(job, "one of its processes was killed");
    assert!(!status.success());
    assert!(stderr.contains("rank 1") && stderr.contains("signal 9"), "the launcher names the killed process: {stderr}");
    let kept = last(&out);
    assert_eq!(kept.position.step % 3, 0, "the checkpoint of an epoch's end");
    resumes_for_4_steps(&out, kept.position.step);
}

/// Ctrl-C (SIGINT to `mpirun`, which passes it on to every process) stops every process at the
/// same step: the checkpoint holds that step, as the metrics do, and the run resumes from it.
#[test]
fn an_interrupt_stops_every_process_at_the_same_step_and_the_run_resumes() {
    let Some(_jobs) = mpi_jobs() else { return };
    let out = fresh("dp-interrupted");
    let job = started_past_an_epoch(&out);
    assert!(Command::new("kill").args(["-INT", &job.id().to_string()]).status().expect("kill runs").success());
    let (status, stderr) = ended_within_60_s(job, "it was interrupted");
    assert!(!status.success());
    let kept = last(&out);
    let said = format!("holds the run at step {}", kept.position.step);
    assert_eq!(stderr.matches(&said).count(), 2, "each process stops at the checkpoint's step: {stderr}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    let last_line: serde_json::Value = serde_json::from_str(metrics.lines().last().expect("a line")).expect("json");
    assert_eq!(last_line["step"], kept.position.step, "the metrics end at the checkpoint");
    resumes_for_4_steps(&out, kept.position.step);
}

/// A job of two processes training the batch-norm fixture for many epochs, once it has written
/// an epoch's checkpoint and gone two steps beyond it (mid-epoch); its stderr is piped.
fn started_past_an_epoch(out: &Path) -> std::process::Child {
    let mut args = train_args(BN, out, &[]);
    let at = args.iter().position(|a| *a == "--epochs").expect("--epochs") + 1;
    args[at] = "1000";
    let mut job = incc(2, &args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("starts");
    let metrics = out.join("metrics.jsonl");
    let started = Instant::now();
    while !std::fs::read_to_string(&metrics).is_ok_and(|m| m.contains("\"kind\":\"epoch\"") && m.lines().last().is_some_and(|l| l.contains("\"step\":5"))) {
        assert!(started.elapsed() < Duration::from_secs(120) && job.try_wait().expect("waits").is_none(), "the job did not reach step 5");
        std::thread::sleep(Duration::from_millis(20));
    }
    job
}

/// How `job` ended, and what it said on stderr; a failure if it still runs 60 s on.
fn ended_within_60_s(mut job: std::process::Child, after: &str) -> (std::process::ExitStatus, String) {
    let since = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().expect("waits") {
            break status;
        }
        if since.elapsed() > Duration::from_secs(60) {
            let _ = job.kill();
            panic!("the job still runs 60 s after {after}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(job.stderr.as_mut().expect("piped"), &mut stderr).expect("reads");
    (status, stderr)
}

/// The run in `out`, kept at `step`, resumes in two processes for 4 more steps.
fn resumes_for_4_steps(out: &Path, step: u64) {
    let until = (step + 4).to_string();
    succeeds(incc(2, &["train", "--resume", out.to_str().expect("utf-8"), "--max-steps", &until, "--threads", "1", "--workers", "1", "--quiet"]));
    assert_eq!(last(out).position.step, step + 4);
}

/// The pid of process `rank` of the job `mpirun` (pid `launcher`) started on this machine.
fn process_of_rank(launcher: u32, rank: usize) -> Option<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(|&pid| {
        let descends = std::iter::successors(Some(pid), |&p| parent(p).filter(|&q| q > 1)).take(4).any(|p| p == launcher);
        descends && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == wanted.as_bytes()))
    })
}

/// A global batch that does not divide among the processes is refused, clearly, and the job ends.
#[test]
fn a_batch_that_does_not_divide_among_the_processes_is_refused() {
    let Some(_jobs) = mpi_jobs() else { return };
    let out = fresh("dp-odd-batch");
    let mut args = train_args(PLAIN, &out, &[]);
    let at = args.iter().position(|a| *a == "--batch").expect("--batch") + 1;
    args[at] = "33";
    let done = incc(2, &args).output().expect("starts");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(!done.status.success());
    assert!(stderr.contains("--batch 33 is the batch of the whole job, split evenly across its 2 processes: give a multiple of 2"), "{stderr}");
}

/// A build without the `mpi` feature started as one of several processes would train alone in
/// each: it stops and says how to build with MPI.
#[cfg(not(feature = "mpi"))]
#[test]
fn launched_as_one_of_several_processes_without_mpi_is_a_clear_error() {
    let done = Command::new(INCC)
        .args(["train", PLAIN, "--data", "synthetic:96,12,5", "--out", "target/test-runs/dp-no-mpi"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .env("OMPI_COMM_WORLD_RANK", "1")
        .output()
        .expect("starts");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: this is process 1 of 2 started by Open MPI (OMPI_COMM_WORLD_SIZE=2, OMPI_COMM_WORLD_RANK=1)"), "{stderr}");
    assert!(stderr.contains("cargo build --release --features mpi"), "{stderr}");
}

/// Process 0 alone prepares the run folder: a second job into the folder of a first is refused,
/// clearly, leaving the first run as it was; with `--force` it starts over there.
#[test]
fn a_job_refuses_a_folder_that_holds_a_run_unless_forced() {
    let Some(_jobs) = mpi_jobs() else { return };
    let out = fresh("dp-refuse");
    let two_steps = train_args(PLAIN, &out, &["--max-steps", "2"]);
    succeeds(incc(2, &two_steps));
    let first = std::fs::read(out.join("last.safetensors")).expect("a checkpoint");
    let refused = incc(2, &two_steps).output().expect("starts");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("is not empty (it holds `last.safetensors`, `metrics.jsonl`): a new run would overwrite what is there"), "{stderr}");
    assert_eq!(std::fs::read(out.join("last.safetensors")).expect("the checkpoint"), first, "the refused job wrote nothing");
    succeeds(incc(2, &[&two_steps[..], &["--force"]].concat()));
    assert_eq!(last(&out).position.step, 2);
}
