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
mod ensemble;
mod evaluate;
mod metrics;
mod parallel;
mod resume;
mod run;
pub mod schedule;

pub use ensemble::{checkpoint_weights, eval_ensemble, EnsembleReport, MemberReport};
pub use evaluate::{top_k_hits, Evaluation, Evaluator, Examples, Probabilities};
pub use resume::Change;
pub use run::initial_tensors;

use crate::data::{DataSpec, Split};
use crate::dist::{Single, World};
use crate::driver::Options;
use crate::error::{Error, Saved};
use crate::interrupt::Interrupt;
use crate::ir::Graph;
use crate::runtime::session::SessionConfig;
use crate::train::{logits_node, TrainConfig};
use crate::weights::Tensor;
use checkpoint::Position;
use run::{Reached, Run};
use schedule::Schedule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Everything a run is started with; saved in every checkpoint, so `--resume` needs nothing else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Also write a checkpoint after every this many steps (besides the one at each epoch's end).
    pub checkpoint_every: Option<u64>,
    /// Asked to stop (the first Ctrl-C): the run finishes its step, writes a checkpoint there and
    /// stops with `Error::Interrupted`.
    pub interrupt: Interrupt,
    /// The processes that train together (data parallelism): `--batch` is split across them.
    pub world: Rc<dyn World>,
    /// Run the step as two graphs with the gradients averaged between them even in a world of
    /// one process (as a world of several does): for benchmarks and tests of the split.
    pub split: bool,
    /// Run each process's batch as this many micro-batches through the gradients graph, their
    /// gradients averaged before one update (gradient accumulation: the activations of one
    /// micro-batch at a time). Batch norm's statistics are per micro-batch, as per process.
    pub accumulate: usize,
}

impl Runner {
    /// Runs in `out` on the CPU with ONNX Runtime's threads, 2 loader threads, no progress bars, as
    /// one process.
    pub fn new(out: &Path) -> Runner {
        Runner {
            session: SessionConfig::default(),
            workers: 2,
            out: out.to_path_buf(),
            max_steps: None,
            progress: false,
            profile: None,
            checkpoint_every: None,
            interrupt: Interrupt::default(),
            world: Rc::new(Single),
            split: false,
            accumulate: 1,
        }
    }
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
    /// A run of `arch` on `data` with the defaults of `incc train`: 10 epochs of batches of 128,
    /// the paper's RMSProp at 0.045 on its schedule, seed 0.
    pub fn new(arch: &Path, data: &str) -> RunConfig {
        RunConfig {
            arch: arch.to_path_buf(),
            set: vec![],
            input: None,
            residualize: None,
            data: data.to_string(),
            epochs: 10,
            batch: 128,
            train: TrainConfig::default(),
            lr: 0.045,
            schedule: Schedule::paper(),
            warmup_epochs: 0.0,
            ema: None,
            seed: 0,
            limit_train: None,
            limit_val: None,
        }
    }

    /// What to compile, as the command line said it when the run started.
    pub fn options(&self) -> Options {
        Options { network: None, set: self.set.clone(), input: self.input.clone(), residualize: self.residualize.clone(), fold_bn: false }
    }

    /// Every number within its range; the error names the option that sets it.
    pub fn check(&self) -> Result<(), Error> {
        let at_least_one =
            [("--epochs", Some(self.epochs as usize)), ("--batch", Some(self.batch)), ("--limit-train", self.limit_train), ("--limit-val", self.limit_val)];
        if let Some((option, _)) = at_least_one.iter().find(|(_, v)| *v == Some(0)) {
            return Err(Error::Usage(format!("{option} must be at least 1")));
        }
        let finite = |option: &str, v: f64, low: f64, open_low: bool| -> Result<(), Error> {
            let inside = v.is_finite() && if open_low { v > low } else { v >= low };
            let bound = if open_low { "above" } else { "at least" };
            if inside {
                Ok(())
            } else {
                Err(Error::Usage(format!("{option} must be a finite number {bound} {low}, not {v}")))
            }
        };
        finite("--lr", self.lr, 0.0, true)?;
        finite("--warmup", self.warmup_epochs, 0.0, false)?;
        if let Some(decay) = self.ema.filter(|d| !(*d > 0.0 && *d < 1.0)) {
            return Err(Error::Usage(format!("--ema must be a decay between 0 and 1 (such as 0.999), not {decay}")));
        }
        self.schedule.check().map_err(|e| Error::Usage(format!("--schedule: {e}")))?;
        self.train.check().map_err(Error::Usage)
    }
}

/// How a run starts.
#[allow(clippy::large_enum_variant)] // made once per run
pub enum Start {
    /// A new run, in a folder that is empty or not there yet.
    New(RunConfig),
    /// A new run in a folder that may hold another (`--force`): the other's checkpoints and
    /// metrics are removed first.
    Over(RunConfig),
    /// From `<out>/last.safetensors`, with the settings it records, or with `with` (its settings
    /// changed as the command line says, within what `resume::changes` allows).
    Resume { with: Option<RunConfig> },
}

/// Trains a new run, or resumes one: epochs of steps, each epoch closed by a checkpoint, a
/// validation and a checkpoint, until the run's last epoch, `Runner::max_steps` or an interrupt.
/// Whatever stops the run after it started keeps its work: a checkpoint at the last good step.
pub fn train(start: &Start, runner: &Runner) -> Result<Summary, Error> {
    let mut run = Run::build(begin(start, runner)?, runner)?;
    while !run.finished() {
        match run.epoch()? {
            Reached::EpochEnd => run.validate_and_checkpoint()?,
            Reached::MaxSteps => {
                // Stopped mid-run (tests, smoke runs): the checkpoint resumes it exactly here.
                run.checkpoint()?;
                break;
            }
            Reached::Interrupt => {
                run.checkpoint()?;
                return Err(Error::Interrupted(Some(run.saved())));
            }
        }
    }
    run.finish()
}

/// Where a run begins: its settings, the network, its state (`None` for a new run: seeded once
/// the network is compiled), its position, and what a resumption changed.
struct Begin {
    cfg: RunConfig,
    compiled: crate::driver::Compiled,
    state: Option<BTreeMap<String, Tensor>>,
    position: Position,
    /// `None` for a new run.
    resumed: Option<Vec<Change>>,
}

/// The checkpoint a run resumes from, in its folder.
const LAST: &str = "last.safetensors";

/// Starts a run in the runner's folder, or resumes the one there from its last checkpoint. Of the
/// processes of a data-parallel job, process 0 alone prepares (or refuses) the folder.
fn begin(start: &Start, runner: &Runner) -> Result<Begin, Error> {
    let out = &runner.out;
    match start {
        Start::New(cfg) | Start::Over(cfg) => {
            cfg.check()?;
            let compiled = cfg.options().compile(&cfg.arch, None)?;
            if runner.world.rank() == 0 {
                resume::new_run_folder(out, matches!(start, Start::Over(_)))?;
            }
            let position = Position { step: 0, epoch: 0, batch_in_epoch: 0, seed: cfg.seed, best_top1: None, totals: Default::default() };
            Ok(Begin { cfg: cfg.clone(), compiled, state: None, position, resumed: None })
        }
        Start::Resume { with } => {
            let path = out.join(LAST);
            let c = checkpoint::load(&path)?;
            let saved = settings(&c.settings, &path)?;
            let compiled = resume::stored_network(&c, &saved, &path)?;
            let (cfg, changes) = match with {
                Some(wanted) => (wanted.clone(), resume::changes(&saved, wanted, &c.position)?),
                None => (saved, vec![]),
            };
            cfg.check()?;
            Ok(Begin { cfg, compiled, state: Some(c.tensors), position: c.position, resumed: Some(changes) })
        }
    }
}

/// The settings of the run in `run_dir`, from its last checkpoint's header (not its tensors): what
/// the command line's options change on `--resume`.
pub fn saved_settings(run_dir: &Path) -> Result<RunConfig, Error> {
    let path = run_dir.join(LAST);
    settings(&checkpoint::settings(&path)?, &path)
}

/// The settings a checkpoint records.
fn settings(json: &str, path: &Path) -> Result<RunConfig, Error> {
    serde_json::from_str(json).map_err(|e| Error::checkpoint(path, format!("unreadable settings: {e}")))
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

/// What `incc eval` measured, on which parameters.
pub struct EvalReport {
    /// The network's name.
    pub network: String,
    pub evaluation: Evaluation,
    /// The checkpoint's averaged parameters were evaluated (else the raw ones).
    pub averaged: bool,
}

/// `incc eval`: a checkpoint's evaluation on a split (the EMA parameters when it has them and
/// `use_ema`), of the network stored in the checkpoint (or the file `arch`), on at most `limit`
/// examples; in a world of several processes, each evaluates its part of every batch.
pub fn eval_checkpoint(path: &Path, arch: Option<&Path>, data: &str, runner: &Runner, use_ema: bool, limit: Option<usize>) -> Result<EvalReport, Error> {
    let m = ensemble::Member::load(path, arch, use_ema)?;
    let spec: DataSpec = data.parse()?;
    let val = Examples::open(&spec, Split::Validation, &m.compiled.graph, limit)?;
    check_classes(&val, &m.compiled.graph)?;
    let evaluation = Evaluator::new(&m.compiled, runner.session.clone())?.evaluate(&m.tensors, &val, m.batch, runner.workers, &*runner.world)?;
    Ok(EvalReport { network: m.compiled.graph.name.clone(), evaluation, averaged: m.averaged })
}

/// Refuses data with more classes than the network outputs: its labels would index past the logits.
fn check_classes(examples: &Examples, graph: &Graph) -> Result<(), Error> {
    let (data, network) = (examples.source.classes(), classes(graph));
    if data > network {
        return Err(Error::Invalid(format!("the data has {data} classes but the network outputs {network}: set its class count (e.g. --set classes={data})")));
    }
    Ok(())
}

/// Where a stopped run is kept, for its messages.
fn saved_at(position: &Position, out: &Path) -> Saved {
    Saved { step: position.step, epoch: position.epoch, batch: position.batch_in_epoch, checkpoint: out.join(LAST), run: out.to_path_buf() }
}
