//! `incc train`, `incc eval` and `incc plot`, and the training options `incc compile --train`
//! shares. `train` and `eval` run as one process, or as each process of a data-parallel job
//! started by `mpirun` or `srun` (see `dist`).

use super::exec::RuntimeArgs;
use super::options::{count, write_npy};
use clap::ValueEnum;
use incc::data::{Crops, DataSpec};
use incc::dist::World;
use incc::interrupt::Interrupt;
use incc::runtime::profile::ProfileFiles;
use incc::train::Target;
use incc::train::{Optimizer, Recompute, TrainConfig};
use incc::trainer::schedule::Schedule;
use incc::trainer::{EnsembleReport, Evaluation, Probabilities, RunConfig, Runner, Start};
use incc::Error;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// How a training step learns (`incc train`, `incc compile --train`). Each option left out keeps
/// the value it had: the default for a new step, the run's own on `incc train --resume`.
#[derive(clap::Args)]
pub struct TrainingArgs {
    /// The optimizer (default rmsprop).
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// Momentum of sgd and rmsprop (default 0.9).
    #[arg(long)]
    momentum: Option<f32>,
    /// Nesterov momentum (sgd).
    #[arg(long)]
    nesterov: bool,
    /// Label smoothing of the cross-entropy (default 0.1).
    #[arg(long)]
    label_smoothing: Option<f32>,
    /// Weight decay (L2 on conv and fc weights; decoupled for adamw; default 0).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Decay biases and batch-norm parameters too.
    #[arg(long)]
    decay_all: bool,
    /// Clip gradients by their global norm.
    #[arg(long)]
    clip_norm: Option<f32>,
    /// Compile the step for this device's kernels (cpu or gpu); `incc train` sets it from --provider.
    #[arg(long, value_enum, default_value_t = TargetArg::Cpu)]
    target: TargetArg,
    /// Compute each block's values again in the backward pass instead of keeping them from the
    /// forward pass (blocks): less memory, more time (the blocks' forward pass runs twice).
    #[arg(long, value_enum, default_value_t = RecomputeArg::None)]
    recompute: RecomputeArg,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum OptimizerArg {
    /// The paper's (TensorFlow's RMSProp: decay 0.9, epsilon 1.0) with --momentum.
    Rmsprop,
    /// With --momentum and --nesterov.
    Sgd,
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    Cpu,
    Gpu,
}

#[derive(Clone, Copy, ValueEnum)]
enum RecomputeArg {
    /// Keep every value the backward pass reads.
    None,
    /// Keep each block instance's input; compute its inside again before its gradients.
    Blocks,
}

impl TrainingArgs {
    /// `base` with the options given here.
    pub fn overlay(&self, base: TrainConfig) -> TrainConfig {
        let (kind, momentum, nesterov) = match base.optimizer {
            Optimizer::Rmsprop { momentum, .. } => (OptimizerArg::Rmsprop, momentum, false),
            Optimizer::Sgd { momentum, nesterov } => (OptimizerArg::Sgd, momentum, nesterov),
            Optimizer::Adam { decoupled, .. } => (if decoupled { OptimizerArg::Adamw } else { OptimizerArg::Adam }, 0.9, false),
        };
        let momentum = self.momentum.unwrap_or(momentum);
        let adam = |decoupled| Optimizer::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, decoupled };
        let optimizer = match self.optimizer.unwrap_or(kind) {
            OptimizerArg::Rmsprop => Optimizer::Rmsprop { decay: 0.9, momentum, epsilon: 1.0 },
            OptimizerArg::Sgd => Optimizer::Sgd { momentum, nesterov: self.nesterov || nesterov },
            OptimizerArg::Adam => adam(false),
            OptimizerArg::Adamw => adam(true),
        };
        TrainConfig {
            optimizer,
            label_smoothing: self.label_smoothing.unwrap_or(base.label_smoothing),
            weight_decay: self.weight_decay.unwrap_or(base.weight_decay),
            decay_all: self.decay_all || base.decay_all,
            clip_norm: self.clip_norm.or(base.clip_norm),
            target: match self.target {
                TargetArg::Cpu => Target::Cpu,
                TargetArg::Gpu => Target::Gpu,
            },
            recompute: match self.recompute {
                RecomputeArg::None => Recompute::None,
                RecomputeArg::Blocks => Recompute::Blocks,
            },
            ..base
        }
    }
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The network (`.inc`); omit with --resume.
    pub file: Option<PathBuf>,
    /// `fashion-mnist:DIR`, `mnist:DIR`, `cifar10:DIR`, `cifar100:DIR` or `imagefolder:DIR`.
    #[arg(long)]
    pub data: Option<String>,
    /// Epochs (default 10).
    #[arg(long, value_parser = count::<u64>)]
    pub epochs: Option<u64>,
    /// Examples per step (default 128); with several processes (mpirun, srun), the batch of the
    /// whole job, split evenly across them.
    #[arg(long, value_parser = count::<usize>)]
    pub batch: Option<usize>,
    /// Base learning rate (default 0.045, the paper's RMSProp).
    #[arg(long)]
    pub lr: Option<f64>,
    /// exponential[:FACTOR:EVERY] (the paper's x0.94 every 2 epochs, the default), cosine, step:FACTOR:E1,E2, constant.
    #[arg(long, value_parser = Schedule::parse)]
    pub schedule: Option<Schedule>,
    /// Epochs of linear warm-up (default 0).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Evaluate with an exponential moving average of the parameters of this decay (e.g. 0.999).
    #[arg(long)]
    pub ema: Option<f64>,
    /// The seed of every random choice (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run folder: checkpoints (last, best), metrics.jsonl. It must be empty or new (see --force).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start the new run even where --out holds another, deleting that run's checkpoints and metrics.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Continue the run in this folder exactly where it stopped, with its settings; options given
    /// besides change them from there on (--lr, --clip-norm, --epochs, ...; --batch, --data and
    /// --limit-train at an epoch's end only), as the metrics record.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Set a network parameter: `--set classes=10`.
    #[arg(long = "set", value_name = "NAME=VALUE", value_delimiter = ',', value_parser = super::options::parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Make the residual twin first: `--residualize scale=0.2`.
    #[arg(long, value_name = "SPEC")]
    pub residualize: Option<String>,
    /// Stop after this many steps in all (writes a checkpoint).
    #[arg(long, value_parser = count::<u64>)]
    pub max_steps: Option<u64>,
    /// Also write a checkpoint every this many steps (besides each epoch's end): a crash or a kill
    /// loses at most these steps.
    #[arg(long, value_name = "STEPS", value_parser = count::<u64>)]
    pub checkpoint_every: Option<u64>,
    /// Use at most this many training examples (quick runs).
    #[arg(long, value_parser = count::<usize>)]
    pub limit_train: Option<usize>,
    /// Use at most this many validation examples.
    #[arg(long, value_parser = count::<usize>)]
    pub limit_val: Option<usize>,
    /// Profile the training steps of this process with ONNX Runtime's profiler (meant for short
    /// runs, e.g. with --max-steps: it records every node of every step): print where the time
    /// goes (per op type, the slowest nodes; the first step is left out when more ran), write
    /// that summary as JSON to FILE.json and keep ONNX Runtime's trace as FILE.trace.json.
    #[arg(long, value_name = "FILE.json")]
    pub profile: Option<PathBuf>,
    /// Run each step as two graphs, the gradients and the update, with the gradients averaged
    /// between them, as a data-parallel job of several processes does, even in one process
    /// (to measure the split).
    #[arg(long)]
    pub split_step: bool,
    /// Gradient accumulation: run each process's batch as K micro-batches, one after another,
    /// through the forward and backward pass, and update once with their averaged gradients: a
    /// batch that does not fit in memory trains in the activations of 1/K of it (batch norm's
    /// statistics are per micro-batch). CPU provider.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = super::options::count::<usize>)]
    pub accumulate: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Data-loading threads.
    #[arg(long, default_value_t = 2, value_parser = count::<usize>)]
    pub workers: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub training: TrainingArgs,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Checkpoints written by `incc train` (`runs/x/best.safetensors`); several make an ensemble
    /// that averages their probabilities (networks of other architectures too).
    #[arg(required = true)]
    pub checkpoints: Vec<PathBuf>,
    /// Compile this network file instead of the source stored in the checkpoint (one checkpoint).
    #[arg(long)]
    pub arch: Option<PathBuf>,
    /// Crops of each image whose probabilities are averaged: 1 (centre), 10 (corners, centre and
    /// mirrors), 12 (the 10, the whole image and its mirror), 144 (GoogLeNet's); see docs/experiments.md.
    #[arg(long, default_value_t = 1, value_parser = crops)]
    pub crops: usize,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the averaged probabilities to DIR: `probabilities.npy` (examples x classes, float32;
    /// the ensemble's when there are several checkpoints, each member's as `member<i>.npy`) and
    /// `labels.npy` (int64).
    #[arg(long, value_name = "DIR")]
    pub save_probabilities: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    #[arg(long)]
    pub data: String,
    /// Evaluate at most this many examples of the split (default: all of them).
    #[arg(long, value_parser = count::<usize>)]
    pub limit: Option<usize>,
    /// Evaluate the raw parameters even when the checkpoint has averaged ones.
    #[arg(long)]
    pub no_ema: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Data-loading threads.
    #[arg(long, default_value_t = 2, value_parser = count::<usize>)]
    pub workers: usize,
}

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Run folders (each with metrics.jsonl).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// `curves.png` or `curves.svg`.
    #[arg(long)]
    pub out: PathBuf,
}

impl TrainArgs {
    /// `base` with the options given here (the network's own aside: file, --set, --residualize).
    fn overlay(&self, base: RunConfig) -> RunConfig {
        RunConfig {
            data: self.data.clone().unwrap_or(base.data),
            epochs: self.epochs.unwrap_or(base.epochs),
            batch: self.batch.unwrap_or(base.batch),
            train: self.training.overlay(base.train),
            lr: self.lr.unwrap_or(base.lr),
            schedule: self.schedule.clone().unwrap_or(base.schedule),
            warmup_epochs: self.warmup.unwrap_or(base.warmup_epochs),
            ema: self.ema.or(base.ema),
            seed: self.seed.unwrap_or(base.seed),
            limit_train: self.limit_train.or(base.limit_train),
            limit_val: self.limit_val.or(base.limit_val),
            ..base
        }
    }

    /// A new run's settings, or a resumption with the options given; the settings are checked
    /// here, before anything starts.
    fn start(&self) -> Result<Start, Error> {
        if let Some(data) = &self.data {
            data.parse::<DataSpec>()?;
        }
        if let Some(dir) = &self.resume {
            if self.file.is_some() || !self.set.is_empty() || self.residualize.is_some() {
                return Err(Error::Usage("--resume trains the network its checkpoint stores: give no network file, --set or --residualize".into()));
            }
            return Ok(Start::Resume { with: Some(self.overlay(incc::trainer::saved_settings(dir)?)) });
        }
        let (Some(file), Some(data)) = (&self.file, &self.data) else {
            return Err(Error::Usage("give the network and --data (or --resume RUN_DIR)".into()));
        };
        let run = self.overlay(RunConfig { set: self.set.clone(), residualize: self.residualize.clone(), ..RunConfig::new(file, data) });
        run.check()?;
        run.options().passes()?;
        Ok(if self.force { Start::Over(run) } else { Start::New(run) })
    }
}

/// How long a process other than 0, stopped by an interrupt, leaves process 0 to say where the
/// run is kept and end the job before it ends the job itself (process 0 may be waiting for it in
/// a collective, if they did not stop at the same point).
const INTERRUPTED_GRACE: Duration = Duration::from_secs(10);

/// Runs `command` as this process's part of its job (a world of one without a launcher). In a
/// world of several, a process that fails ends the whole job: the others may be waiting for it
/// in a collective, which only the launcher can end. An interrupt stops every process at the same
/// step, and the first to end the job would end the others before they say so: process 0, which
/// says where the run is kept, ends it (it went unsaid in one of three runs of a loaded machine).
fn in_world(command: impl FnOnce(&Rc<dyn World>) -> Result<(), Error>) -> Result<(), Error> {
    let world = incc::dist::init()?;
    match command(&world) {
        Err(e) if world.size() > 1 => {
            eprint!("process {} of {}: ", world.rank(), world.size());
            super::print_error(&e);
            if matches!(e, Error::Interrupted(_)) && world.rank() != 0 {
                std::thread::sleep(INTERRUPTED_GRACE);
            }
            world.abort(i32::from(e.exit_code()))
        }
        done => done,
    }
}

pub fn train_command(a: &TrainArgs) -> Result<(), Error> {
    in_world(|world| train_in(a, world))
}

fn train_in(a: &TrainArgs, world: &Rc<dyn World>) -> Result<(), Error> {
    let out = a.resume.clone().or(a.out.clone()).ok_or_else(|| Error::Usage("give --out RUN_DIR for a new run, or --resume RUN_DIR".into()))?;
    let start = a.start()?;
    let files = a.profile.as_ref().map(ProfileFiles::new).transpose()?;
    let config = a.runtime.init_in(&**world)?;
    let interrupt = Interrupt::install().map_err(|e| Error::Invalid(format!("cannot handle Ctrl-C: {e}")))?;
    let runner = Runner {
        session: config,
        workers: a.workers,
        max_steps: a.max_steps,
        progress: !a.quiet,
        profile: a.profile.clone(),
        checkpoint_every: a.checkpoint_every,
        interrupt,
        world: world.clone(),
        split: a.split_step,
        accumulate: a.accumulate,
        ..Runner::new(&out)
    };
    let s = incc::trainer::train(&start, &runner)?;
    if world.rank() != 0 {
        return Ok(());
    }
    println!(
        "done: {} steps, last loss {:.4}{}; training step {:.1} images/s{}, loader alone {:.1} images/s; checkpoints in {}",
        s.steps,
        s.last_loss,
        match (s.val_top1, s.val_top5) {
            (Some(t1), Some(t5)) => format!(", validation top-1 {:.2}%, top-5 {:.2}%", 100.0 * t1, 100.0 * t5),
            _ => String::new(),
        },
        s.step_images_per_s,
        match s.allreduce {
            Some((per_step, share)) => {
                let processes = if s.processes == 1 { "1 process".to_string() } else { format!("{} processes", s.processes) };
                format!(" ({processes}; all-reduce {:.2} ms per step, {:.1}% of it)", 1e3 * per_step, 100.0 * share)
            }
            None => String::new(),
        },
        s.loader_images_per_s,
        out.display()
    );
    if let (Some(p), Some(files)) = (&s.profile, &files) {
        println!("\nwhere the time of a training step goes (profiled):");
        print!("{}", p.render());
        eprintln!("wrote {} and {}", files.summary().display(), files.trace().display());
    }
    Ok(())
}

fn crops(s: &str) -> Result<usize, String> {
    s.parse().ok().filter(|&n| Crops::from_count(n).is_some()).ok_or_else(|| format!("`{s}` crops: 1, 10, 12 or 144"))
}

pub fn eval_command(a: &EvalArgs) -> Result<(), Error> {
    in_world(|world| eval_in(a, world))
}

fn eval_in(a: &EvalArgs, world: &Rc<dyn World>) -> Result<(), Error> {
    let config = a.runtime.init_in(&**world)?;
    let crops = Crops::from_count(a.crops).ok_or_else(|| Error::Usage(format!("{} crops: 1, 10, 12 or 144", a.crops)))?;
    let interrupt = Interrupt::install().map_err(|e| Error::Invalid(format!("cannot handle Ctrl-C: {e}")))?;
    let progress = !a.quiet && !a.json && world.rank() == 0;
    let runner = Runner { session: config, workers: a.workers, progress, interrupt, world: world.clone(), ..Runner::new(Path::new("")) };
    let member = |checkpoint: &Path, network: &str, averaged: bool, e: &Evaluation| {
        serde_json::json!({
            "checkpoint": checkpoint.display().to_string(),
            "network": network,
            "parameters": if averaged { "averaged" } else { "raw" },
            "scores": scores(e),
        })
    };
    let line = |e: &Evaluation| format!("{} examples, top-1 {:.2}%, top-5 {:.2}%, loss {:.4}", e.examples, 100.0 * e.top1, 100.0 * e.top5, e.loss);
    let single = a.checkpoints.len() == 1 && crops == Crops::One && a.save_probabilities.is_none();
    if world.size() > 1 && !single {
        return Err(Error::Usage(
            "a data-parallel `incc eval` evaluates one checkpoint on one crop: run ensembles, --crops and --save-probabilities in one process".into(),
        ));
    }
    if let (true, [checkpoint]) = (single, a.checkpoints.as_slice()) {
        // One checkpoint, one crop: scored from the logits, each process (if several) a part of every batch.
        let report = incc::trainer::eval_checkpoint(checkpoint, a.arch.as_deref(), &a.data, &runner, !a.no_ema, a.limit)?;
        if world.rank() != 0 {
            return Ok(());
        }
        if a.json {
            let json = serde_json::json!({
                "crops": 1,
                "members": [member(checkpoint, &report.network, report.averaged, &report.evaluation)],
                "ensemble": serde_json::Value::Null,
            });
            println!("{}", serde_json::to_string_pretty(&json).expect("a report serialises"));
        } else {
            println!("{} ({} parameters): {}", checkpoint.display(), if report.averaged { "averaged" } else { "raw" }, line(&report.evaluation));
        }
        return Ok(());
    }
    let report = incc::trainer::eval_ensemble(&a.checkpoints, a.arch.as_deref(), &a.data, &runner, !a.no_ema, a.limit, crops)?;
    if let Some(dir) = &a.save_probabilities {
        save_probabilities(dir, &report)?;
    }
    if a.json {
        let json = serde_json::json!({
            "crops": report.crops.count(),
            "members": report.members.iter().map(|m| member(&m.checkpoint, &m.network, m.averaged, &m.evaluation)).collect::<Vec<_>>(),
            "ensemble": report.ensemble.as_ref().map(|(e, _)| scores(e)),
        });
        println!("{}", serde_json::to_string_pretty(&json).expect("a report serialises"));
        return Ok(());
    }
    if report.crops != Crops::One {
        println!("{} crops per image, probabilities averaged", report.crops.count());
    }
    for m in &report.members {
        println!("{} ({} parameters): {}", m.checkpoint.display(), if m.averaged { "averaged" } else { "raw" }, line(&m.evaluation));
    }
    if let Some((e, _)) = &report.ensemble {
        println!("ensemble of {}: {}", report.members.len(), line(e));
    }
    Ok(())
}

fn scores(e: &Evaluation) -> serde_json::Value {
    serde_json::json!({ "examples": e.examples, "top1": e.top1, "top5": e.top5, "loss": e.loss })
}

/// `--save-probabilities DIR`: the probabilities `incc eval` scored, and the labels.
fn save_probabilities(dir: &Path, report: &EnsembleReport) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::file("create", dir))?;
    let save = |name: &str, p: &Probabilities| {
        let path = dir.join(name);
        let shape = [p.labels.len(), p.classes];
        write_npy(&path, "<f4", &shape, incc::weights::bytemuck_f32(&p.values)).map_err(Error::file("write", &path))
    };
    for (i, m) in report.members.iter().enumerate() {
        save(&format!("member{i}.npy"), &m.probabilities)?;
    }
    let scored = report.ensemble.as_ref().map_or(&report.members[0].probabilities, |(_, p)| p);
    save("probabilities.npy", scored)?;
    let labels: Vec<u8> = scored.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let path = dir.join("labels.npy");
    write_npy(&path, "<i8", &[scored.labels.len()], &labels).map_err(Error::file("write", &path))
}

pub fn plot_command(a: &PlotArgs) -> Result<(), Error> {
    let runs = a.runs.iter().map(|d| incc::plot::read_run(d)).collect::<Result<Vec<_>, _>>()?;
    incc::plot::plot(&runs, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
