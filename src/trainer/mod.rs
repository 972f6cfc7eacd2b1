//! `incc train` and `incc eval`: training a compiled network on real data with ONNX Runtime.
//!
//! One training-step graph (see `train`) runs in a `StepEngine` that keeps the state on the
//! device; the evaluation graph measures top-1 / top-5 on the validation split after every epoch.
//! Every random choice (data order, crops, flips, dropout masks) derives from (seed, position), so
//! a checkpoint's tensors plus its position resume a run exactly.
//!
//! `train` reads as the loop it runs: start or resume (`begin`), build the engine (`Run::build`),
//! then epochs (`Run::epoch`, a `Run::step` per batch), each closed by a validation and a
//! checkpoint (`Run::validate_and_checkpoint`).

pub mod checkpoint;
pub mod engine;
mod evaluate;
mod parallel;
mod run;
pub mod schedule;

pub use evaluate::{top_k_hits, Evaluation, Evaluator, Examples};
pub use run::initial_tensors;

use crate::data::{DataSpec, Split};
use crate::dist::World;
use crate::driver::Options;
use crate::error::Error;
use crate::ir::Graph;
use crate::runtime::session::SessionConfig;
use crate::train::{logits_node, TrainConfig};
use crate::weights::Tensor;
use checkpoint::Position;
use run::Run;
use schedule::Schedule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Everything a run is started with; saved in every checkpoint, so `--resume` needs nothing else.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub arch: PathBuf,
    pub set: Vec<(String, String)>,
    pub input: Option<Vec<usize>>,
    pub residualize: Option<String>,
    pub data: String,
    pub epochs: u64,
    pub batch: usize,
    pub train: TrainConfig,
    pub lr: f64,
    pub schedule: Schedule,
    pub warmup_epochs: f64,
    /// Decay of the exponential moving average of the parameters used for evaluation.
    pub ema: Option<f64>,
    pub seed: u64,
    /// At most this many training / validation examples (quick runs, tests).
    pub limit_train: Option<usize>,
    pub limit_val: Option<usize>,
}

/// How this process runs it (not part of the run: a resumed run may use other values).
#[derive(Clone, Debug)]
pub struct Runner {
    /// Sessions (the step's and the evaluation's): provider, threads, CUDA options.
    pub session: SessionConfig,
    pub workers: usize,
    pub out: PathBuf,
    /// Stop after this many steps in all (a checkpoint is written): for tests and smoke runs.
    pub max_steps: Option<u64>,
    pub progress: bool,
    /// Profile the training steps run in this process into this summary (and its trace beside it).
    pub profile: Option<PathBuf>,
    /// The processes that train together (data parallelism): `--batch` is split across them.
    pub world: Rc<dyn World>,
    /// Run the step as two graphs with the gradients averaged between them even in a world of
    /// one process (as a world of several does): for benchmarks and tests of the split.
    pub split: bool,
}

pub struct Summary {
    pub steps: u64,
    pub last_loss: f32,
    pub val_top1: Option<f64>,
    pub val_top5: Option<f64>,
    /// Images per second of the whole job's training steps.
    pub step_images_per_s: f64,
    pub loader_images_per_s: f64,
    /// The processes that trained, and (when the step was split) the seconds per step spent
    /// averaging gradients and their share of the steps' time.
    pub processes: usize,
    pub allreduce: Option<(f64, f64)>,
    /// Where the steps' time went, with `Runner::profile`.
    pub profile: Option<crate::runtime::profile::Profile>,
}

impl RunConfig {
    /// What to compile, as the command line said it when the run started.
    pub fn options(&self) -> Options {
        Options { network: None, set: self.set.clone(), input: self.input.clone(), residualize: self.residualize.clone(), fold_bn: false }
    }
}

/// How a run starts.
#[allow(clippy::large_enum_variant)] // made once per run
pub enum Start {
    New(RunConfig),
    /// From `<out>/last.safetensors`, with the settings it records; `epochs` extends the run.
    Resume {
        epochs: Option<u64>,
    },
}

/// Trains a new run, or resumes one: epochs of steps, each epoch closed by a validation and a
/// checkpoint, until the run's last epoch or `Runner::max_steps`.
pub fn train(start: &Start, runner: &Runner) -> Result<Summary, Error> {
    let mut run = Run::build(begin(start, &runner.out)?, runner)?;
    while !run.finished() {
        let epoch = run.epoch()?;
        if run.at_max_steps() {
            // Stopped mid-run (tests, smoke runs): the checkpoint resumes it exactly here.
            run.checkpoint()?;
            break;
        }
        run.validate_and_checkpoint(epoch)?;
    }
    run.finish()
}

/// Where a run begins: its settings, its state (`None` for a new run: seeded once the network is
/// compiled) and its position.
struct Begin {
    cfg: RunConfig,
    state: Option<BTreeMap<String, Tensor>>,
    position: Position,
}

/// Starts a run in `out`, or resumes the one there from its last checkpoint.
fn begin(start: &Start, out: &Path) -> Result<Begin, Error> {
    std::fs::create_dir_all(out).map_err(Error::file("create", out))?;
    match start {
        Start::New(cfg) => {
            Ok(Begin { cfg: cfg.clone(), state: None, position: Position { step: 0, epoch: 0, batch_in_epoch: 0, seed: cfg.seed, best_top1: None } })
        }
        Start::Resume { epochs } => {
            let path = out.join("last.safetensors");
            let c = checkpoint::load(&path)?;
            let saved = settings(&c, &path)?;
            let source = std::fs::read_to_string(&saved.arch).map_err(Error::file("read", &saved.arch))?;
            if source != c.source {
                let changed = format!("`{}` changed since it was written; resuming would train another network", saved.arch.display());
                return Err(Error::checkpoint(&path, changed));
            }
            let saved = RunConfig { epochs: epochs.unwrap_or(saved.epochs).max(saved.epochs), ..saved };
            Ok(Begin { cfg: saved, state: Some(c.tensors), position: c.position })
        }
    }
}

/// The settings a checkpoint records.
fn settings(c: &checkpoint::Checkpoint, path: &Path) -> Result<RunConfig, Error> {
    serde_json::from_str(&c.settings).map_err(|e| Error::checkpoint(path, format!("unreadable settings: {e}")))
}

/// The number of classes the network outputs.
fn classes(graph: &Graph) -> usize {
    graph.shape(logits_node(graph)).0[0]
}

/// Replaces each parameter by its moving average `ema/<param>`, where there is one.
fn use_average(tensors: &mut BTreeMap<String, Tensor>) {
    let averages: Vec<(String, Tensor)> = tensors.iter().filter_map(|(k, t)| k.strip_prefix("ema/").map(|n| (n.to_string(), t.clone()))).collect();
    tensors.extend(averages);
}

/// `incc eval`: a checkpoint's evaluation on a split (the EMA parameters when it has them); in a
/// world of several processes, each evaluates its part of every batch.
pub fn eval_checkpoint(path: &Path, arch: Option<&Path>, data: &str, runner: &Runner, use_ema: bool) -> Result<(Evaluation, bool), Error> {
    let c = checkpoint::load(path)?;
    let mut cfg = settings(&c, path)?;
    if let Some(a) = arch {
        cfg.arch = a.to_path_buf();
    }
    let compiled = cfg.options().compile(&cfg.arch, None)?;
    let mut tensors = c.tensors;
    let with_ema = use_ema && tensors.keys().any(|k| k.starts_with("ema/"));
    if with_ema {
        use_average(&mut tensors);
    }
    let spec: DataSpec = data.parse()?;
    let val = Examples::open(&spec, Split::Validation, &compiled.graph, cfg.limit_val)?;
    let e = Evaluator::new(&compiled, runner.session.clone())?.evaluate(&tensors, &val, cfg.batch, runner.workers, &*runner.world)?;
    Ok((e, with_ema))
}
