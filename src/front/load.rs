//! Reads a root `.inc` file and, transitively, everything it imports. Imports are resolved relative
//! to the importing file; a file imported twice is read once; a cycle is an error at the import.

use super::ast::{File, Item};
use super::parse::parse;
use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{SourceMap, Span};
use std::path::{Path, PathBuf};

/// The root file and every file it imports, parsed, in load order (the root first).
pub struct Program {
    pub sources: SourceMap,
    pub files: Vec<File>,
}

/// Loads `path`. On failure the returned `SourceMap` still holds every file read, so that the
/// diagnostics can be rendered against them.
pub fn load(path: &Path) -> Result<Program, (SourceMap, Diagnostics)> {
    let mut sources = SourceMap::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let d = Diagnostic::error(format!("cannot read `{}`: {e}", path.display()));
            return Err((sources, d.into()));
        }
    };
    load_text(&mut sources, path, text).map(|files| Program { sources: std::mem::take(&mut sources), files }).map_err(|d| (sources, d))
}

/// Loads a root file whose text is already in memory (used by tests and by `--set`-free callers).
pub fn load_text(sources: &mut SourceMap, path: &Path, text: String) -> Result<Vec<File>, Diagnostics> {
    let mut loader = Loader { sources, files: vec![], stack: vec![], errors: vec![] };
    let canonical = canonical(path);
    let id = loader.sources.add(path.display().to_string(), canonical, text);
    loader.visit(id, None);
    if loader.errors.is_empty() {
        Ok(loader.files)
    } else {
        Err(Diagnostics(loader.errors))
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

struct Loader<'a> {
    sources: &'a mut SourceMap,
    files: Vec<File>,
    /// Files being loaded, outermost first, with the span of the import that led into each.
    stack: Vec<(crate::source::FileId, Option<Span>)>,
    errors: Vec<Diagnostic>,
}

impl Loader<'_> {
    fn visit(&mut self, id: crate::source::FileId, via: Option<Span>) {
        self.stack.push((id, via));
        self.visit_imports(id);
        self.stack.pop();
    }

    fn visit_imports(&mut self, id: crate::source::FileId) {
        let parsed = match parse(id, &self.sources.file(id).text) {
            Ok(f) => f,
            Err(d) => {
                self.errors.push(d);
                return;
            }
        };
        let dir = self.sources.file(id).path.parent().map(Path::to_path_buf).unwrap_or_default();
        let display_dir = Path::new(&self.sources.file(id).name).parent().map(Path::to_path_buf).unwrap_or_default();
        let imports: Vec<(String, Span)> = parsed
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Import { path, span } => Some((path.clone(), *span)),
                _ => None,
            })
            .collect();
        self.files.push(parsed);
        for (rel, span) in imports {
            let target = canonical(&dir.join(&rel));
            if let Some(pos) = self.stack.iter().position(|(f, _)| self.sources.file(*f).path == target) {
                let mut d = Diagnostic::error(format!("cyclic import of `{rel}`")).at(span, "this import closes a cycle");
                for (f, via) in &self.stack[pos + 1..] {
                    if let Some(via) = via {
                        d = d.also(*via, format!("`{}` is imported here", self.sources.file(*f).name));
                    }
                }
                let chain: Vec<&str> = self.stack[pos..].iter().map(|(f, _)| self.sources.file(*f).name.as_str()).collect();
                self.errors.push(d.note(format!("import chain: {} -> {}", chain.join(" -> "), chain[0])));
                continue;
            }
            if self.sources.find_path(&target).is_some() {
                continue; // already loaded through another import
            }
            match std::fs::read_to_string(&target) {
                Ok(text) => {
                    let name = display_dir.join(&rel).display().to_string();
                    let child = self.sources.add(name, target, text);
                    self.visit(child, Some(span));
                }
                Err(e) => self
                    .errors
                    .push(Diagnostic::error(format!("cannot import `{rel}`: {e}")).at(span, format!("looked for `{}`", display_dir.join(&rel).display()))),
            }
        }
    }
}
