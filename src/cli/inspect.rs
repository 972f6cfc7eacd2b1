//! `incc check`, `flops`, `graph`, `params` and `passes`: what the compiler knows about a network.

use super::options::Common;
use clap::ValueEnum;
use incc::passes::PASSES;
use incc::report::cost::{self, Convention};
use incc::Error;

pub fn check_command(c: &Common) -> Result<(), Error> {
    let compiled = c.compile(None)?;
    let g = &compiled.graph;
    let params = incc::report::params::trainable(g);
    println!(
        "ok: network {} ({} nodes, {} parameters), input N x {} -> output N x {}",
        g.name,
        g.g.node_count(),
        incc::diag::thousands(params),
        g.shape(g.input),
        g.shape(g.output)
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct FlopsArgs {
    #[command(flatten)]
    common: Common,
    /// One row per frame this many levels down (1 = the network's top-level layers and blocks).
    #[arg(long)]
    depth: Option<usize>,
    #[arg(long, value_enum, default_value_t = Convention::Incc)]
    convention: Convention,
    /// Count for a batch of this many examples.
    #[arg(long, default_value_t = 1, value_parser = super::options::count::<u64>)]
    batch: u64,
    /// Every row and the totals as JSON.
    #[arg(long)]
    json: bool,
    /// Count a training step: forward and backward.
    #[arg(long)]
    train: bool,
}

pub fn flops_command(a: &FlopsArgs) -> Result<(), Error> {
    let compiled = a.common.compile(None)?;
    let report = match cost::report_with(&compiled.graph, a.convention, a.depth, a.batch, a.train) {
        Ok(report) => report,
        Err(d) => return Err(incc::diag::Failure::of(compiled.sources, d).into()),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("a report serialises"));
    } else {
        print!("{}", cost::render_table(&report, &a.common.file.display().to_string()));
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
}

#[derive(clap::Args)]
pub struct GraphArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    format: GraphFormat,
    /// Show the IR after this pass (`incc passes` lists them).
    #[arg(long, value_name = "PASS")]
    after: Option<String>,
}

pub fn graph_command(a: &GraphArgs) -> Result<(), Error> {
    if let Some(pass) = &a.after {
        incc::passes::check_pass_name(pass).map_err(Error::Usage)?;
    }
    let compiled = a.common.compile(a.after.as_deref())?;
    match a.format {
        GraphFormat::Text => print!("{}", incc::ir::text::dump(&compiled.graph, Some(&compiled.sources))),
        GraphFormat::Dot => print!("{}", incc::ir::dot::dot(&compiled.graph)),
    }
    Ok(())
}

pub fn params_command(c: &Common) -> Result<(), Error> {
    let compiled = c.compile(None)?;
    print!("{}", incc::report::params::render(&compiled.graph));
    Ok(())
}

pub fn passes_command() {
    for pass in PASSES {
        println!("{:<18} {}", pass.name, pass.what);
    }
}
