//! Diagnostics: every user-facing error of the compiler is a `Diagnostic` with labelled spans,
//! rendered with codespan-reporting as `file:line:col`, the source excerpt and the span underlined.

use crate::source::{SourceMap, Span};
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label, Severity};
use codespan_reporting::files::{Error as FilesError, Files};
use codespan_reporting::term;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Note,
}

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub level: Level,
    pub message: String,
    /// (span, text, primary?)
    pub labels: Vec<(Span, String, bool)>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic { level: Level::Error, message: message.into(), labels: vec![], notes: vec![] }
    }

    pub fn warning(message: impl Into<String>) -> Diagnostic {
        Diagnostic { level: Level::Warning, ..Diagnostic::error(message) }
    }

    pub fn note_level(message: impl Into<String>) -> Diagnostic {
        Diagnostic { level: Level::Note, ..Diagnostic::error(message) }
    }

    /// The main location: what is wrong, here.
    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.labels.push((span, label.into(), true));
        self
    }

    /// A secondary location that explains the error (a definition, a call site, the other branch).
    pub fn also(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.labels.push((span, label.into(), false));
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Renders without colour: the same text in a terminal, a test snapshot or a log.
    pub fn render(&self, sources: &SourceMap) -> String {
        let severity = match self.level {
            Level::Error => Severity::Error,
            Level::Warning => Severity::Warning,
            Level::Note => Severity::Note,
        };
        let labels = self
            .labels
            .iter()
            .map(|(span, text, primary)| {
                let label = if *primary { Label::primary(span.file.0, span.start..span.end) } else { Label::secondary(span.file.0, span.start..span.end) };
                label.with_message(text.clone())
            })
            .collect();
        let diagnostic = CsDiagnostic::new(severity).with_message(self.message.clone()).with_labels(labels).with_notes(self.notes.clone());
        let config = term::Config::default();
        term::emit_into_string(&config, &FilesView(sources), &diagnostic)
            .unwrap_or_else(|e| format!("{}: {} (could not render source: {e})\n", "error", self.message))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A compilation failure: one or more diagnostics, rendered against the sources they point into.
#[derive(Debug)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Diagnostics {
        Diagnostics(vec![d])
    }
}

impl Diagnostics {
    pub fn render(&self, sources: &SourceMap) -> String {
        self.0.iter().map(|d| d.render(sources)).collect::<Vec<_>>().join("\n")
    }
}

/// Adapter so codespan-reporting reads files straight from our `SourceMap`.
struct FilesView<'a>(&'a SourceMap);

impl<'a> Files<'a> for FilesView<'a> {
    type FileId = usize;
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, id: usize) -> Result<&'a str, FilesError> {
        Ok(&self.0.file(crate::source::FileId(id)).name)
    }

    fn source(&'a self, id: usize) -> Result<&'a str, FilesError> {
        Ok(&self.0.file(crate::source::FileId(id)).text)
    }

    fn line_index(&'a self, id: usize, byte_index: usize) -> Result<usize, FilesError> {
        Ok(self.0.line_col(crate::source::FileId(id), byte_index).0 - 1)
    }

    fn line_range(&'a self, id: usize, line_index: usize) -> Result<std::ops::Range<usize>, FilesError> {
        let text = &self.0.file(crate::source::FileId(id)).text;
        let mut starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1));
        let start = starts.nth(line_index).ok_or(FilesError::LineTooLarge { given: line_index, max: 0 })?;
        let end = text[start..].find('\n').map(|i| start + i + 1).unwrap_or(text.len());
        Ok(start..end)
    }
}

/// A failed compilation: the diagnostics and the sources they point into.
pub struct Failure {
    pub sources: SourceMap,
    pub diagnostics: Diagnostics,
}

impl Failure {
    /// A diagnostic of a later stage (a lowering) about a compiled network, with its sources.
    pub fn of(sources: SourceMap, diagnostic: Diagnostic) -> Failure {
        Failure { sources, diagnostics: diagnostic.into() }
    }

    pub fn render(&self) -> String {
        self.diagnostics.render(&self.sources)
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// 12,253,974,624
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
