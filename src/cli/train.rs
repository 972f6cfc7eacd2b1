//! `incc train`, `incc eval` and `incc plot`.

use super::exec::RuntimeArgs;
use incc::runtime::profile::ProfileFiles;
use incc::trainer::schedule::Schedule;
use incc::trainer::{RunConfig, Runner, Start};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The network (`.inc`); omit with --resume.
    pub file: Option<PathBuf>,
    /// `fashion-mnist:DIR`, `mnist:DIR`, `cifar10:DIR`, `cifar100:DIR` or `imagefolder:DIR`.
    #[arg(long)]
    pub data: Option<String>,
    /// Epochs (default 10); on --resume, a larger number extends the run.
    #[arg(long)]
    pub epochs: Option<u64>,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Base learning rate (the paper's RMSProp: 0.045).
    #[arg(long, default_value_t = 0.045)]
    pub lr: f64,
    /// exponential[:FACTOR:EVERY] (the paper's x0.94 every 2 epochs), cosine, step:FACTOR:E1,E2, constant.
    #[arg(long, default_value = "exponential")]
    pub schedule: String,
    /// Epochs of linear warm-up.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Evaluate with an exponential moving average of the parameters of this decay (e.g. 0.999).
    #[arg(long)]
    pub ema: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run folder: checkpoints (last, best), metrics.jsonl.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder exactly where it stopped (its settings come from its checkpoint).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Set a network parameter: `--set classes=10`.
    #[arg(long = "set", value_name = "NAME=VALUE", value_delimiter = ',')]
    pub set: Vec<String>,
    /// Make the residual twin first: `--residualize scale=0.2`.
    #[arg(long, value_name = "SPEC")]
    pub residualize: Option<String>,
    /// Stop after this many steps in all (writes a checkpoint).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Use at most this many training examples (quick runs).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Use at most this many validation examples.
    #[arg(long)]
    pub limit_val: Option<usize>,
    /// Profile the training steps of this process with ONNX Runtime's profiler (meant for short
    /// runs, e.g. with --max-steps: it records every node of every step): print where the time
    /// goes (per op type, the slowest nodes; the first step is left out when more ran), write
    /// that summary as JSON to FILE.json and keep ONNX Runtime's trace as FILE.trace.json.
    #[arg(long, value_name = "FILE.json")]
    pub profile: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Data-loading threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub training: crate::TrainingArgs,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A checkpoint written by `incc train` (`runs/x/best.safetensors`).
    pub checkpoint: PathBuf,
    /// The network, if not the one recorded in the checkpoint.
    #[arg(long)]
    pub arch: Option<PathBuf>,
    #[arg(long)]
    pub data: String,
    /// Evaluate the raw parameters even when the checkpoint has averaged ones.
    #[arg(long)]
    pub no_ema: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Data-loading threads.
    #[arg(long, default_value_t = 2)]
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

pub fn train_command(a: TrainArgs) -> Result<(), String> {
    let out = a.resume.clone().or(a.out.clone()).ok_or("error: give --out RUN_DIR for a new run, or --resume RUN_DIR")?;
    let files = a.profile.as_ref().map(ProfileFiles::new).transpose().map_err(|e| format!("error: {e}"))?;
    let config = a.runtime.init()?;
    let runner =
        Runner { session: config, workers: a.workers.max(1), out: out.clone(), max_steps: a.max_steps, progress: !a.quiet, profile: a.profile.clone() };
    let start = match (&a.file, &a.data) {
        _ if a.resume.is_some() => Start::Resume { epochs: a.epochs },
        (Some(file), Some(data)) => Start::New(RunConfig {
            arch: file.clone(),
            set: a
                .set
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .ok_or_else(|| format!("error: --set {kv}: expected NAME=VALUE"))
                })
                .collect::<Result<_, _>>()?,
            input: None,
            residualize: a.residualize.clone(),
            data: data.clone(),
            epochs: a.epochs.unwrap_or(10),
            batch: a.batch,
            train: a.training.config(),
            lr: a.lr,
            schedule: Schedule::parse(&a.schedule).map_err(|e| format!("error: {e}"))?,
            warmup_epochs: a.warmup,
            ema: a.ema,
            seed: a.seed,
            limit_train: a.limit_train,
            limit_val: a.limit_val,
        }),
        _ => return Err("error: give the network and --data (or --resume RUN_DIR)".into()),
    };
    let s = incc::trainer::train(&start, &runner).map_err(|e| format!("error: {e}"))?;
    println!(
        "done: {} steps, last loss {:.4}{}; training step {:.1} images/s, loader alone {:.1} images/s; checkpoints in {}",
        s.steps,
        s.last_loss,
        match (s.val_top1, s.val_top5) {
            (Some(t1), Some(t5)) => format!(", validation top-1 {:.2}%, top-5 {:.2}%", 100.0 * t1, 100.0 * t5),
            _ => String::new(),
        },
        s.step_images_per_s,
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

pub fn eval_command(a: EvalArgs) -> Result<(), String> {
    let config = a.runtime.init()?;
    let runner = Runner { session: config, workers: a.workers.max(1), out: PathBuf::new(), max_steps: None, progress: false, profile: None };
    let (e, ema) = incc::trainer::eval_checkpoint(&a.checkpoint, a.arch.as_deref(), &a.data, &runner, !a.no_ema).map_err(|e| format!("error: {e}"))?;
    println!(
        "{} ({} parameters): {} examples, top-1 {:.2}%, top-5 {:.2}%, loss {:.4}",
        a.checkpoint.display(),
        if ema { "averaged" } else { "raw" },
        e.examples,
        100.0 * e.top1,
        100.0 * e.top5,
        e.loss
    );
    Ok(())
}

pub fn plot_command(a: PlotArgs) -> Result<(), String> {
    let runs = a.runs.iter().map(|d| incc::plot::read_run(d).map_err(|e| format!("error: {e}"))).collect::<Result<Vec<_>, _>>()?;
    incc::plot::plot(&runs, &a.out).map_err(|e| format!("error: {e}"))?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
