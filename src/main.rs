//! The `incc` command line.

mod cli;

use clap::{Args, Parser, Subcommand, ValueEnum};
use incc::driver::{compile, Compiled};
use incc::elab::Settings;
use incc::passes::{PassOptions, ResidualizeSpec, PASSES};
use incc::report::cost::{self, Convention};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "incc", version, about = "Compile declarative Inception-family networks to a checked graph, exact costs and ONNX")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, elaborate and infer shapes; report errors with their source location.
    Check(Common),
    /// Parameters, multiply-adds and activations per layer (or per block) with totals.
    Flops(FlopsArgs),
    /// Print the IR as text or Graphviz.
    Graph(GraphArgs),
    /// List every parameter and buffer name with its shape (the state-dict keys).
    Params(Common),
    /// List the compiler's passes, in order.
    Passes,
    /// Run a model (`.inc` compiled in memory, or any `.onnx`) on ONNX Runtime: top classes and timing.
    Run(cli::exec::RunArgs),
    /// Latency and images/s at several batch sizes (median, spread), optionally against a baseline model.
    Bench(cli::exec::BenchArgs),
    /// Train a network on real data with ONNX Runtime (CPU or CUDA).
    Train(Box<cli::train::TrainArgs>),
    /// Top-1 / top-5 of a checkpoint on a validation split.
    Eval(cli::train::EvalArgs),
    /// Training curves of one or more runs (loss and top-1 error vs epoch) to PNG or SVG.
    Plot(cli::train::PlotArgs),
    /// Compile to an ONNX model (inference graph) with seeded or loaded weights.
    Compile(CompileArgs),
}

#[derive(Args)]
struct CompileArgs {
    #[command(flatten)]
    common: Common,
    /// Where to write the model (atomically; `<file>.data` beside it for models over 1 GiB of weights).
    #[arg(short, long, value_name = "FILE.onnx")]
    output: Option<PathBuf>,
    /// Load parameters by name from a safetensors checkpoint (timm's state dict for archs/ networks).
    #[arg(long, value_name = "FILE.safetensors")]
    weights: Option<PathBuf>,
    /// Seed of the initialisation when no --weights are given.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fix the batch size (default: symbolic `N`).
    #[arg(long)]
    batch: Option<usize>,
    /// Also write the weights of the emitted graph as safetensors.
    #[arg(long, value_name = "FILE.safetensors")]
    save_weights: Option<PathBuf>,
    /// Print the model in readable ONNX text form (weights elided).
    #[arg(long)]
    text: bool,
    /// Emit ONE graph that performs a whole training step (and `<output>.eval.onnx`, the
    /// evaluation graph with the same parameter names, as inputs).
    #[arg(long)]
    train: bool,
    #[command(flatten)]
    training: TrainingArgs,
}

/// How a training step learns (`--train`).
#[derive(Args)]
pub struct TrainingArgs {
    /// rmsprop (the paper's: decay 0.9, momentum 0.9, epsilon 1.0), sgd, adam or adamw.
    #[arg(long, default_value = "rmsprop", value_parser = ["rmsprop", "sgd", "adam", "adamw"])]
    optimizer: String,
    /// Momentum of sgd and rmsprop.
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// Nesterov momentum (sgd).
    #[arg(long)]
    nesterov: bool,
    /// Label smoothing of the cross-entropy.
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f32,
    /// Weight decay (L2 on conv and fc weights; decoupled for adamw).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Decay biases and batch-norm parameters too.
    #[arg(long)]
    decay_all: bool,
    /// Clip gradients by their global norm.
    #[arg(long)]
    clip_norm: Option<f32>,
    /// Compile the step for this device's kernels (cpu or gpu); `incc train` sets it from --provider.
    #[arg(long, value_enum, default_value_t = TargetArg::Cpu)]
    target: TargetArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    Cpu,
    Gpu,
}

impl TrainingArgs {
    pub fn config(&self) -> incc::train::TrainConfig {
        use incc::train::Optimizer;
        let optimizer = match self.optimizer.as_str() {
            "sgd" => Optimizer::Sgd { momentum: self.momentum, nesterov: self.nesterov },
            "adam" | "adamw" => Optimizer::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, decoupled: self.optimizer == "adamw" },
            _ => Optimizer::Rmsprop { decay: 0.9, momentum: self.momentum, epsilon: 1.0 },
        };
        incc::train::TrainConfig {
            optimizer,
            label_smoothing: self.label_smoothing,
            weight_decay: self.weight_decay,
            decay_all: self.decay_all,
            clip_norm: self.clip_norm,
            target: match self.target {
                TargetArg::Cpu => incc::onnx::lower::Target::Cpu,
                TargetArg::Gpu => incc::onnx::lower::Target::Gpu,
            },
            // `incc train --ema` sets it; a compiled step stays without.
            ema: false,
            debug_outputs: false,
        }
    }
}

#[derive(Args)]
pub struct Common {
    /// The `.inc` file to compile.
    pub file: PathBuf,
    /// Which network, when the file defines several.
    #[arg(long)]
    pub network: Option<String>,
    /// Set a network parameter: `--set classes=10` (repeatable, or comma-separated).
    #[arg(long = "set", value_name = "NAME=VALUE", value_delimiter = ',')]
    pub set: Vec<String>,
    /// Replace the input size: `--input 3x149x149` (CxHxW). For `incc run`, an image file instead.
    #[arg(long, value_name = "CxHxW", value_parser = parse_input)]
    pub input: Option<InputArg>,
    /// Turn every eligible Inception block into its residual twin: `scale=0.1` and/or `BLOCK=SCALE`.
    #[arg(long, value_name = "SPEC", value_parser = ResidualizeSpec::parse)]
    pub residualize: Option<ResidualizeSpec>,
    /// Fold batch norm into the preceding convs (inference).
    #[arg(long)]
    pub fold_bn: bool,
}

#[derive(Args)]
struct FlopsArgs {
    #[command(flatten)]
    common: Common,
    /// One row per frame this many levels down (1 = the network's top-level layers and blocks).
    #[arg(long)]
    depth: Option<usize>,
    #[arg(long, value_enum, default_value_t = Convention::Incc)]
    convention: Convention,
    /// Count for a batch of this many examples.
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Every row and the totals as JSON.
    #[arg(long)]
    json: bool,
    /// Count a training step: forward and backward.
    #[arg(long)]
    train: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
}

#[derive(Args)]
struct GraphArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    format: GraphFormat,
    /// Show the IR after this pass (`incc passes` lists them).
    #[arg(long, value_name = "PASS")]
    after: Option<String>,
}

/// `--input`: a size (`3x149x149`) or, for `incc run`, an image to classify.
#[derive(Clone, Debug)]
pub enum InputArg {
    Dims(Vec<usize>),
    Image(PathBuf),
}

fn parse_input(s: &str) -> Result<InputArg, String> {
    let looks_like_dims = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == 'x');
    if !looks_like_dims {
        return Ok(InputArg::Image(PathBuf::from(s)));
    }
    let dims: Result<Vec<usize>, _> = s.split('x').map(|d| d.parse::<usize>()).collect();
    match dims {
        Ok(d) if d.len() == 3 && d.iter().all(|&v| v > 0) => Ok(InputArg::Dims(d)),
        _ => Err(format!("expected CxHxW with positive sizes, as in 3x299x299; found `{s}`")),
    }
}

pub fn settings(c: &Common) -> Result<Settings, String> {
    let set = c
        .set
        .iter()
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).ok_or_else(|| format!("--set {kv}: expected NAME=VALUE")))
        .collect::<Result<_, _>>()?;
    let input = match &c.input {
        None => None,
        Some(InputArg::Dims(d)) => Some(d.clone()),
        Some(InputArg::Image(p)) => {
            return Err(format!("--input {}: expected CxHxW, as in 3x299x299 (images are for `incc run`)", p.display()));
        }
    };
    Ok(Settings { network: c.network.clone(), set, input })
}

/// Compiles, printing warnings; on failure prints the diagnostics and gives the exit code.
fn build(c: &Common, stop_after: Option<&str>) -> Result<Compiled, ExitCode> {
    let settings = settings(c).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    let passes = PassOptions { residualize: c.residualize.clone(), fold_bn: c.fold_bn };
    match compile(&c.file, &settings, &passes, stop_after) {
        Ok(compiled) => {
            for w in &compiled.warnings {
                eprint!("{}", w.render(&compiled.sources));
            }
            Ok(compiled)
        }
        Err(failure) => {
            eprint!("{}", failure.render());
            Err(ExitCode::from(1))
        }
    }
}

fn run(cli: Cli) -> Result<(), ExitCode> {
    match cli.command {
        Command::Check(c) => {
            let compiled = build(&c, None)?;
            let g = &compiled.graph;
            let params: u64 = cost::report(g, Convention::Incc, Some(0), 1).totals.params;
            println!(
                "ok: network {} ({} nodes, {} parameters), input N x {} -> output N x {}",
                g.name,
                g.g.node_count(),
                cost::thousands(params),
                g.shape(g.input),
                g.shape(g.output)
            );
        }
        Command::Flops(a) => {
            let compiled = build(&a.common, None)?;
            let report = cost::report_with(&compiled.graph, a.convention, a.depth, a.batch, a.train);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("a report serialises"));
            } else {
                print!("{}", cost::render_table(&report, &a.common.file.display().to_string()));
            }
        }
        Command::Graph(a) => {
            if let Some(p) = &a.after {
                incc::passes::check_pass_name(p).map_err(|e| {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                })?;
            }
            let compiled = build(&a.common, a.after.as_deref())?;
            match a.format {
                GraphFormat::Text => print!("{}", incc::ir::text::dump(&compiled.graph, Some(&compiled.sources))),
                GraphFormat::Dot => print!("{}", incc::ir::dot::dot(&compiled.graph)),
            }
        }
        Command::Compile(a) => compile_command(a)?,
        Command::Run(a) => cli::exec::run_command(a).map_err(report)?,
        Command::Bench(a) => cli::exec::bench_command(a).map_err(report)?,
        Command::Train(a) => cli::train::train_command(*a).map_err(report)?,
        Command::Eval(a) => cli::train::eval_command(a).map_err(report)?,
        Command::Plot(a) => cli::train::plot_command(a).map_err(report)?,
        Command::Passes => {
            for pass in PASSES {
                println!("{:<18} {}", pass.name, pass.what);
            }
        }
        Command::Params(c) => {
            let compiled = build(&c, None)?;
            print!("{}", incc::report::params::render(&compiled.graph));
        }
    }
    Ok(())
}

fn report(message: String) -> ExitCode {
    eprintln!("{}", message.trim_end());
    ExitCode::from(1)
}

fn compile_command(a: CompileArgs) -> Result<(), ExitCode> {
    let fail = |code: u8| {
        move |e: String| {
            eprintln!("{}", e.trim_end());
            ExitCode::from(code)
        }
    };
    if a.output.is_none() && !a.text && a.save_weights.is_none() {
        return Err(fail(2)("error: nothing to do: give -o FILE.onnx, --text or --save-weights".into()));
    }
    let settings = settings(&a.common).map_err(|e| fail(2)(format!("error: {e}")))?;
    let passes = PassOptions { residualize: a.common.residualize.clone(), fold_bn: a.common.fold_bn };
    let source = match &a.weights {
        Some(path) => incc::driver::WeightsSource::File(path),
        None => incc::driver::WeightsSource::Seed(a.seed),
    };
    if a.train {
        return train_command(&a, &settings, &passes);
    }
    let start = std::time::Instant::now();
    let artifact = incc::driver::build_onnx(&a.common.file, &settings, &passes, source, a.batch).map_err(fail(1))?;
    for w in &artifact.compiled.warnings {
        eprint!("{}", w.render(&artifact.compiled.sources));
    }
    if let Some(path) = &a.save_weights {
        incc::weights::save(path, &artifact.weights).map_err(|e| fail(1)(format!("error: cannot write `{}`: {e}", path.display())))?;
    }
    if let Some(path) = &a.output {
        incc::onnx::emit::write(&artifact.model, Some(&artifact.weights), path, incc::onnx::emit::EXTERNAL_DATA_THRESHOLD)
            .map_err(|e| fail(1)(format!("error: cannot write `{}`: {e}", path.display())))?;
        eprintln!(
            "wrote {} ({} nodes, {} initializers) in {:.2} s",
            path.display(),
            artifact.model.graph.as_ref().map_or(0, |g| g.node.len()),
            artifact.model.graph.as_ref().map_or(0, |g| g.initializer.len()),
            start.elapsed().as_secs_f64()
        );
    }
    if a.text {
        print!("{}", incc::onnx::text::render(&artifact.model));
    }
    Ok(())
}

/// `incc compile --train`: the training-step graph and its evaluation graph.
fn train_command(a: &CompileArgs, settings: &Settings, passes: &PassOptions) -> Result<(), ExitCode> {
    if a.common.fold_bn {
        return Err(report("error: --fold-bn is for inference; a training step needs its batch norms".into()));
    }
    let compiled = incc::driver::compile(&a.common.file, settings, passes, None).map_err(|f| report(f.render()))?;
    let start = std::time::Instant::now();
    let model =
        incc::train::emit_training(&compiled.graph, &compiled.sources, &a.training.config(), a.batch).map_err(|d| report(d.render(&compiled.sources)))?;
    let eval = incc::onnx::emit::emit_eval(&compiled.graph, &compiled.sources, a.batch).map_err(report)?;
    if let Some(path) = &a.output {
        let eval_path = path.with_extension("eval.onnx");
        for (p, m) in [(path, &model), (&eval_path, &eval)] {
            incc::onnx::emit::write(m, None, p, incc::onnx::emit::EXTERNAL_DATA_THRESHOLD)
                .map_err(|e| report(format!("error: cannot write `{}`: {e}", p.display())))?;
        }
        eprintln!(
            "wrote {} (training step, {} nodes) and {} (evaluation) in {:.2} s",
            path.display(),
            model.graph.as_ref().map_or(0, |g| g.node.len()),
            eval_path.display(),
            start.elapsed().as_secs_f64()
        );
    }
    if a.text {
        print!("{}", incc::onnx::text::render(&model));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
