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
        Ok((graph, warnings)) => Ok(Compiled { sources, graph, warnings }),
        Err(diagnostics) => Err(Failure { sources, diagnostics }),
    }
}
