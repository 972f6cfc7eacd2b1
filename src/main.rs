//! The `incc` command line: the table of commands. Each command's code is in `cli/`; every
//! failure comes back as one `incc::Error`, printed here once.

mod cli;

use clap::{Parser, Subcommand};
use cli::{compile, exec, inspect, options::Common, train};
use incc::Error;
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
    Flops(inspect::FlopsArgs),
    /// Print the IR as text or Graphviz.
    Graph(inspect::GraphArgs),
    /// List every parameter and buffer name with its shape (the state-dict keys).
    Params(Common),
    /// List the compiler's passes, in order.
    Passes,
    /// Run a model (`.inc` compiled in memory, or any `.onnx`) on ONNX Runtime: top classes and timing.
    Run(exec::RunArgs),
    /// Latency and images/s at several batch sizes (median, spread), optionally against a baseline model.
    Bench(exec::BenchArgs),
    /// Train a network on real data with ONNX Runtime (CPU or CUDA).
    Train(Box<train::TrainArgs>),
    /// Top-1 / top-5 of a checkpoint on a validation split.
    Eval(train::EvalArgs),
    /// Training curves of one or more runs (loss and top-1 error vs epoch) to PNG or SVG.
    Plot(train::PlotArgs),
    /// Compile to an ONNX model (inference graph) with seeded or loaded weights.
    Compile(compile::CompileArgs),
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Check(c) => inspect::check_command(&c),
        Command::Flops(a) => inspect::flops_command(&a),
        Command::Graph(a) => inspect::graph_command(&a),
        Command::Params(c) => inspect::params_command(&c),
        Command::Passes => {
            inspect::passes_command();
            Ok(())
        }
        Command::Run(a) => exec::run_command(a),
        Command::Bench(a) => exec::bench_command(&a),
        Command::Train(a) => train::train_command(&a),
        Command::Eval(a) => train::eval_command(&a),
        Command::Plot(a) => train::plot_command(&a),
        Command::Compile(a) => compile::compile_command(&a),
    }
}

fn main() -> ExitCode {
    let Err(e) = run(Cli::parse().command) else { return ExitCode::SUCCESS };
    cli::print_error(&e);
    ExitCode::from(e.exit_code())
}
