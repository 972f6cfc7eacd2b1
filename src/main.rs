//! The `incc` command line.

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
}

#[derive(Args)]
struct Common {
    /// The `.inc` file to compile.
    file: PathBuf,
    /// Which network, when the file defines several.
    #[arg(long)]
    network: Option<String>,
    /// Set a network parameter: `--set classes=10` (repeatable, or comma-separated).
    #[arg(long = "set", value_name = "NAME=VALUE", value_delimiter = ',')]
    set: Vec<String>,
    /// Replace the input size: `--input 3x149x149` (CxHxW).
    #[arg(long, value_name = "CxHxW", value_parser = parse_dims)]
    input: Option<Vec<usize>>,
    /// Turn every eligible Inception block into its residual twin: `scale=0.1` and/or `BLOCK=SCALE`.
    #[arg(long, value_name = "SPEC", value_parser = ResidualizeSpec::parse)]
    residualize: Option<ResidualizeSpec>,
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
    /// Show the IR after this pass (see --list-passes).
    #[arg(long, value_name = "PASS")]
    after: Option<String>,
    /// List the passes and exit.
    #[arg(long)]
    list_passes: bool,
}

fn parse_dims(s: &str) -> Result<Vec<usize>, String> {
    let dims: Result<Vec<usize>, _> = s.split('x').map(|d| d.trim().parse::<usize>()).collect();
    match dims {
        Ok(d) if d.len() == 3 && d.iter().all(|&v| v > 0) => Ok(d),
        _ => Err(format!("expected CxHxW with positive sizes, as in 3x299x299; found `{s}`")),
    }
}

fn settings(c: &Common) -> Result<Settings, String> {
    let set = c
        .set
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("--set {kv}: expected NAME=VALUE"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Settings { network: c.network.clone(), set, input: c.input.clone() })
}

/// Compiles, printing diagnostics; `None` when compilation failed (already reported).
fn build(c: &Common, stop_after: Option<&str>) -> Result<Compiled, ExitCode> {
    let settings = settings(c).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    let passes = PassOptions { residualize: c.residualize.clone() };
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
            let report = cost::report(&compiled.graph, a.convention, a.depth, a.batch);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("a report serialises"));
            } else {
                print!("{}", cost::render_table(&report, &a.common.file.display().to_string()));
            }
        }
        Command::Graph(a) => {
            if a.list_passes {
                for (name, what) in PASSES {
                    println!("{name:<18} {what}");
                }
                return Ok(());
            }
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
        Command::Params(c) => {
            let compiled = build(&c, None)?;
            print!("{}", incc::report::params::render(&compiled.graph));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
