//! One compilation, start to end: load and parse, elaborate, run the passes. What every command
//! (and every test) calls, so that they all see the same pipeline.

use crate::diag::{Diagnostic, Diagnostics};
use crate::elab::{elaborate, Settings};
use crate::front::load;
use crate::ir::Graph;
use crate::passes::{self, PassOptions};
use crate::source::SourceMap;
use std::path::Path;

pub struct Compiled {
    pub sources: SourceMap,
    pub graph: Graph,
    /// Warnings from the passes (blocks that `--residualize` left as they are).
    pub warnings: Vec<Diagnostic>,
    /// Batch norms folded by `--fold-bn`; weights of the unfolded graph follow with
    /// `passes::fold_bn::fold_weights`.
    pub folds: Vec<crate::passes::fold_bn::Fold>,
}

/// A failed compilation: the diagnostics and the sources they point into.
pub struct Failure {
    pub sources: SourceMap,
    pub diagnostics: Diagnostics,
}

impl Failure {
    pub fn render(&self) -> String {
        self.diagnostics.render(&self.sources)
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

pub fn compile(path: &Path, settings: &Settings, passes: &PassOptions, stop_after: Option<&str>) -> Result<Compiled, Failure> {
    let program = load::load(path).map_err(|(sources, diagnostics)| Failure { sources, diagnostics })?;
    finish(program.sources, &program.files, settings, passes, stop_after)
}

/// Compiles source text as if it were the file `path` (imports resolve relative to `path`).
pub fn compile_text(path: &Path, text: &str, settings: &Settings, passes: &PassOptions, stop_after: Option<&str>) -> Result<Compiled, Failure> {
    let mut sources = SourceMap::new();
    match load::load_text(&mut sources, path, text.to_string()) {
        Ok(files) => finish(sources, &files, settings, passes, stop_after),
        Err(diagnostics) => Err(Failure { sources, diagnostics }),
    }
}

fn finish(
    sources: SourceMap,
    files: &[crate::front::ast::File],
    settings: &Settings,
    passes: &PassOptions,
    stop_after: Option<&str>,
) -> Result<Compiled, Failure> {
    let graph = match elaborate(files, settings) {
        Ok(g) => g,
        Err(diagnostics) => return Err(Failure { sources, diagnostics }),
    };
    match passes::run(graph, passes, stop_after) {
        Ok((graph, report)) => Ok(Compiled { sources, graph, warnings: report.warnings, folds: report.folds }),
        Err(diagnostics) => Err(Failure { sources, diagnostics }),
    }
}

/// Where parameter values come from.
pub enum WeightsSource<'a> {
    /// Seeded initialisation.
    Seed(u64),
    /// A safetensors checkpoint, by name (timm's layout for the networks in archs/).
    File(&'a Path),
}

/// A compiled network with its values and its ONNX inference model.
pub struct Artifact {
    pub compiled: Compiled,
    /// The values of the emitted graph (batch norm folded when asked).
    pub weights: crate::weights::Weights,
    /// The graph; its parameters' initializers hold no values (`onnx::emit::encode` and `write`
    /// take them from `weights`, so that the weights are never held twice).
    pub model: crate::onnx::proto::ModelProto,
}

/// The whole path from a `.inc` file to an ONNX model: compile, take or make the weights, fold
/// batch norm if asked (IR and values alike), emit.
pub fn build_onnx(path: &Path, settings: &Settings, passes: &PassOptions, weights: WeightsSource<'_>, batch: Option<usize>) -> Result<Artifact, String> {
    let unfolded = PassOptions { fold_bn: false, ..passes.clone() };
    let compiled = compile(path, settings, &unfolded, None).map_err(|f| f.render())?;
    let mut values = match weights {
        WeightsSource::Seed(seed) => crate::weights::init(&compiled.graph, seed),
        WeightsSource::File(file) => crate::weights::load(file, &compiled.graph).map_err(|e| e.to_string())?,
    };
    let mut compiled = compiled;
    if passes.fold_bn {
        compiled.folds = crate::passes::fold_bn::fold_graph(&mut compiled.graph);
        crate::passes::fold_bn::fold_weights(&mut values, &compiled.folds)?;
    }
    let options = crate::onnx::emit::EmitOptions { batch, metadata: metadata(path, &compiled) };
    let model = crate::onnx::emit::emit(&compiled.graph, &values, &compiled.sources, &options)?;
    Ok(Artifact { compiled, weights: values, model })
}

/// What a model says about itself: who made it from what, its cost, and how to feed it.
fn metadata(path: &Path, compiled: &Compiled) -> Vec<(String, String)> {
    use crate::report::cost::{report, Convention};
    use sha2::Digest;
    let root = compiled.sources.files().next().map(|(_, f)| f.text.as_bytes().to_vec()).unwrap_or_default();
    let hash: String = sha2::Sha256::digest(&root).iter().map(|b| format!("{b:02x}")).collect();
    let totals = report(&compiled.graph, Convention::Incc, Some(1), 1).totals;
    let input = compiled.graph.shape(compiled.graph.input);
    vec![
        ("incc.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("incc.source".into(), path.display().to_string()),
        ("incc.source_sha256".into(), hash),
        ("incc.network".into(), compiled.graph.name.clone()),
        ("incc.parameters".into(), totals.params.to_string()),
        ("incc.macs".into(), totals.macs.to_string()),
        ("incc.macs_convention".into(), Convention::Incc.describe().into()),
        ("incc.input".into(), input.to_string()),
        // Inception preprocessing (TF-slim, timm): pixels in [0, 1] mapped to [-1, 1].
        ("incc.mean".into(), "0.5,0.5,0.5".into()),
        ("incc.std".into(), "0.5,0.5,0.5".into()),
        ("incc.crop_pct".into(), "0.875".into()),
    ]
}
