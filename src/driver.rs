//! One compilation, start to end: load and parse, elaborate, run the passes. What every command
//! (and every test) calls, so that they all see the same pipeline.

use crate::diag::{Diagnostic, Diagnostics};
use crate::elab::{elaborate, Settings};
use crate::error::Error;
use crate::front::load;
use crate::ir::Graph;
use crate::passes::{self, PassOptions, ResidualizeSpec};
use crate::source::SourceMap;
use std::path::Path;

/// What a compilation is asked for besides the file, in the command line's words: `--network`,
/// `--set NAME=VALUE`, `--input CxHxW`, `--residualize SPEC`, `--fold-bn`. Every command and the
/// trainer (from a run's saved settings) turn theirs into settings and pass options here, so an
/// option means the same everywhere.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub network: Option<String>,
    pub set: Vec<(String, String)>,
    pub input: Option<Vec<usize>>,
    pub residualize: Option<String>,
    pub fold_bn: bool,
}

impl Options {
    pub fn settings(&self) -> Settings {
        Settings { network: self.network.clone(), set: self.set.clone(), input: self.input.clone() }
    }

    /// The pass options; a `--residualize` spec that does not parse is a usage error.
    pub fn passes(&self) -> Result<PassOptions, Error> {
        let residualize =
            self.residualize.as_deref().map(|spec| ResidualizeSpec::parse(spec).map_err(|e| Error::Usage(format!("--residualize {spec}: {e}")))).transpose()?;
        Ok(PassOptions { residualize, fold_bn: self.fold_bn })
    }

    /// Compiles `path` with these options, stopping after the pass `stop_after` if given.
    pub fn compile(&self, path: &Path, stop_after: Option<&str>) -> Result<Compiled, Error> {
        Ok(compile(path, &self.settings(), &self.passes()?, stop_after)?)
    }
}

pub struct Compiled {
    pub sources: SourceMap,
    pub graph: Graph,
    /// Warnings from the passes (blocks that `--residualize` left as they are).
    pub warnings: Vec<Diagnostic>,
    /// Batch norms folded by `--fold-bn`; weights of the unfolded graph follow with
    /// `passes::fold_bn::fold_weights`.
    pub folds: Vec<crate::passes::fold_bn::Fold>,
}

pub use crate::diag::Failure;

pub fn compile(path: &Path, settings: &Settings, passes: &PassOptions, stop_after: Option<&str>) -> Result<Compiled, Failure> {
    let program = load::load(path).map_err(|(sources, diagnostics)| Failure { sources, diagnostics })?;
    finish(program.sources, &program.files, settings, passes, stop_after)
}

/// One source file's name (as diagnostics show it) and text: what a checkpoint keeps of the
/// network it trained, so that it compiles again without the files.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceText {
    pub name: String,
    pub text: String,
}

impl Compiled {
    /// Every source file of the compilation, the root first, then its imports as they were loaded.
    pub fn texts(&self) -> Vec<SourceText> {
        self.sources.files().map(|(_, f)| SourceText { name: f.name.clone(), text: f.text.clone() }).collect()
    }
}

/// Compiles the files `texts` (as [`Compiled::texts`] gives them) without reading any file: the
/// network exactly as it was compiled then, whatever the files on disk hold now.
pub fn compile_texts(texts: &[SourceText], settings: &Settings, passes: &PassOptions) -> Result<Compiled, Failure> {
    let mut sources = SourceMap::new();
    let (mut files, mut errors) = (vec![], vec![]);
    for t in texts {
        let id = sources.add(t.name.clone(), t.name.clone().into(), t.text.clone());
        match crate::front::parse::parse(id, &t.text) {
            Ok(file) => files.push(file),
            Err(d) => errors.push(d),
        }
    }
    if texts.is_empty() {
        errors.push(Diagnostic::error("no source files to compile"));
    }
    if !errors.is_empty() {
        return Err(Failure { sources, diagnostics: crate::diag::Diagnostics(errors) });
    }
    finish(sources, &files, settings, passes, None)
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
        Err(diagnostics) => return Err(Failure { sources, diagnostics: naming_options(diagnostics, settings) }),
    };
    match passes::run(graph, passes, stop_after) {
        Ok((graph, report)) => Ok(Compiled { sources, graph, warnings: report.warnings, folds: report.folds }),
        Err(diagnostics) => Err(Failure { sources, diagnostics: naming_options(diagnostics, settings) }),
    }
}

/// An error in the source may come from a value the command line gave (`--set classes=3000000000`
/// makes a weight too large at the `fc` that reads it): such errors name the options given.
fn naming_options(mut diagnostics: Diagnostics, settings: &Settings) -> Diagnostics {
    let mut given: Vec<String> = settings.set.iter().map(|(k, v)| format!("--set {k}={v}")).collect();
    if let Some(dims) = &settings.input {
        given.push(format!("--input {}", dims.iter().map(usize::to_string).collect::<Vec<_>>().join("x")));
    }
    if !given.is_empty() {
        // Messages about an option (`--set k: ...`, `--input ...: ...`) name it already.
        for d in diagnostics.0.iter_mut().filter(|d| d.labels.iter().any(|l| l.2) && !d.message.starts_with("--")) {
            d.notes.push(format!("compiled with {}", given.join(" ")));
        }
    }
    diagnostics
}

/// Where parameter values come from.
pub enum WeightsSource<'a> {
    /// Seeded initialisation.
    Seed(u64),
    /// A safetensors checkpoint, by name (timm's layout for the networks in archs/).
    File(&'a Path),
    /// Values already read, by name (a training checkpoint's, `incc compile --ensemble`).
    Values(crate::weights::Weights),
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

impl Artifact {
    /// The model with its parameters' values in its initializers: a model that stands alone, as
    /// `onnx::ensemble` composes them (it holds the weights twice while it is made).
    pub fn standalone(&self) -> Result<crate::onnx::proto::ModelProto, Error> {
        let bytes = crate::onnx::emit::encode(&self.model, Some(&self.weights)).map_err(|e| Error::Lowering(e.to_string()))?;
        prost::Message::decode(bytes.as_slice()).map_err(|e| Error::Lowering(e.to_string()))
    }
}

/// The whole path from a `.inc` file to an ONNX model: compile, take or make the weights, fold
/// batch norm if asked (IR and values alike), emit.
pub fn build_onnx(path: &Path, settings: &Settings, passes: &PassOptions, weights: WeightsSource<'_>, batch: Option<usize>) -> Result<Artifact, Error> {
    let unfolded = PassOptions { fold_bn: false, ..passes.clone() };
    let compiled = compile(path, settings, &unfolded, None)?;
    let mut values = match weights {
        WeightsSource::Seed(seed) => crate::weights::init(&compiled.graph, seed),
        WeightsSource::File(file) => crate::weights::load(file, &compiled.graph)?,
        WeightsSource::Values(values) => values,
    };
    let mut compiled = compiled;
    if passes.fold_bn {
        compiled.folds = crate::passes::fold_bn::fold_graph(&mut compiled.graph);
        crate::passes::fold_bn::fold_weights(&mut values, &compiled.folds).map_err(Error::Lowering)?;
    }
    let options = crate::onnx::emit::EmitOptions { batch, metadata: metadata(path, &compiled).map_err(Error::Lowering)? };
    let model = crate::onnx::emit::emit(&compiled.graph, &values, &compiled.sources, &options).map_err(Error::Lowering)?;
    Ok(Artifact { compiled, weights: values, model })
}

/// What a model says about itself: who made it from what, its cost, and how to feed it.
fn metadata(path: &Path, compiled: &Compiled) -> Result<Vec<(String, String)>, String> {
    use crate::ir::preprocessing::{DEFAULT_CROP, DEFAULT_INTERPOLATION};
    use crate::report::cost::{report, Convention};
    use sha2::Digest;
    let root = compiled.sources.files().next().map(|(_, f)| f.text.as_bytes().to_vec()).unwrap_or_default();
    let hash: String = sha2::Sha256::digest(&root).iter().map(|b| format!("{b:02x}")).collect();
    let totals = report(&compiled.graph, Convention::Incc, Some(1), 1).map_err(|d| d.render(&compiled.sources))?.totals;
    let input = compiled.graph.shape(compiled.graph.input);
    // The input line's preprocessing (one mean and std, or one per channel), else Inception's
    // (TF-slim, timm): pixels in [0, 1] mapped to [-1, 1].
    const DEFAULT_MEAN_STD: &str = "0.5,0.5,0.5";
    let pre = &compiled.graph.preprocessing;
    let joined = |values: &[f64]| values.iter().map(f64::to_string).collect::<Vec<_>>().join(",");
    Ok(vec![
        ("incc.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("incc.source".into(), path.display().to_string()),
        ("incc.source_sha256".into(), hash),
        ("incc.network".into(), compiled.graph.name.clone()),
        ("incc.parameters".into(), totals.params.to_string()),
        ("incc.macs".into(), totals.macs.to_string()),
        ("incc.macs_convention".into(), Convention::Incc.describe().into()),
        ("incc.input".into(), input.to_string()),
        ("incc.mean".into(), pre.mean.as_deref().map_or(DEFAULT_MEAN_STD.into(), joined)),
        ("incc.std".into(), pre.std.as_deref().map_or(DEFAULT_MEAN_STD.into(), joined)),
        ("incc.crop_pct".into(), pre.crop.unwrap_or(DEFAULT_CROP).to_string()),
        ("incc.interpolation".into(), pre.interpolation.unwrap_or(DEFAULT_INTERPOLATION).to_string()),
    ])
}
