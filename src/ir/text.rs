//! The IR as text: one line per node in canonical order (what snapshots and `incc graph` show).
//!
//!   name = kind attributes (inputs) : shape  {param: shape, ...}  @ file:line:col

use super::Graph;
use crate::source::SourceMap;
use std::fmt::Write;

/// With `sources`, each line ends with the node's source location; without, two graphs built from
/// different sources print alike when their structure, names and shapes are equal.
pub fn dump(graph: &Graph, sources: Option<&SourceMap>) -> String {
    let mut out = format!("network {}\n", graph.name);
    for n in graph.order() {
        let node = graph.node(n);
        let rule = node.op.rule();
        let inputs: Vec<&str> = graph.inputs(n).into_iter().map(|i| graph.node(i).name.as_str()).collect();
        let describe = rule.describe();
        let mut line = format!("{} = {}", node.name, rule.kind());
        if !describe.is_empty() {
            write!(line, " {describe}").expect("write to string");
        }
        if !inputs.is_empty() {
            write!(line, " ({})", inputs.join(", ")).expect("write to string");
        }
        if let Some(mark) = &node.residual {
            write!(
                line,
                " [residual x{} via {} + {}{}]",
                super::ops::fmt_float(mark.scale),
                mark.projection,
                graph.node(mark.input).name,
                if mark.activation { ", relu" } else { "" }
            )
            .expect("write to string");
        }
        if let Some(shape) = &node.shape {
            write!(line, " : {shape}").expect("write to string");
            let params = graph.params(n);
            if !params.is_empty() {
                let list: Vec<String> = params.iter().map(|(_, p)| format!("{}: {}", p.suffix, super::Shape(p.shape.clone()))).collect();
                write!(line, "  {{{}}}", list.join(", ")).expect("write to string");
            }
        }
        if let Some(sources) = sources {
            write!(line, "  @ {}", sources.location(node.span)).expect("write to string");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}
