//! Shape inference: runs every op's shape rule in topological order. Errors point at the layer,
//! at the input that does not fit, and at the block instance the layer belongs to.

use crate::diag::Diagnostic;
use crate::ir::{FrameKind, Graph};

pub fn infer_shapes(graph: &mut Graph) -> Result<(), Diagnostic> {
    for n in graph.order() {
        let inputs = graph.inputs(n);
        let shapes: Vec<_> = inputs.iter().map(|&i| graph.shape(i)).collect();
        match graph.g[n].op.rule().infer(&shapes) {
            Ok(shape) => graph.g[n].shape = Some(shape),
            Err(e) => {
                let node = graph.node(n);
                let mut d = Diagnostic::error(e.message.clone()).at(node.span, format!("in `{}`", node.name));
                if let Some(slot) = e.input {
                    let i = inputs[slot];
                    let src = graph.node(i);
                    if src.span != node.span {
                        d = d.also(src.span, format!("this gives {}", graph.shape(i)));
                    }
                }
                if let Some(block) = enclosing_block(graph, node.frame) {
                    d = d.also(block.0, format!("in this instance of `{}`", block.1));
                }
                return Err(d);
            }
        }
    }
    Ok(())
}

/// The call site and name of the innermost block instance around a frame.
pub fn enclosing_block(graph: &Graph, frame: crate::ir::FrameId) -> Option<(crate::source::Span, String)> {
    graph.frame_chain(frame).into_iter().rev().find_map(|f| match &graph.frame(f).kind {
        FrameKind::Block { block } => Some((graph.frame(f).span, block.clone())),
        _ => None,
    })
}
