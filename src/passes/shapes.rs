//! Shape inference: runs every op's shape rule in topological order. Errors point at the layer,
//! at the input that does not fit, and at the block instance the layer belongs to. Every tensor
//! (output and parameters) and the network's parameters together are held to the bounds of
//! `ir::MAX_TENSOR_ELEMENTS` and `ir::MAX_PARAMETERS`, at the layer that crosses them.

use crate::diag::{thousands, Diagnostic};
use crate::ir::{checked_elements, FrameKind, Graph, Shape, MAX_PARAMETERS, MAX_TENSOR_ELEMENTS};
use petgraph::stable_graph::NodeIndex;

pub fn infer_shapes(graph: &mut Graph) -> Result<(), Diagnostic> {
    let mut parameters = Parameters::default();
    for n in graph.order() {
        infer_node(graph, n, &mut parameters)?;
    }
    Ok(())
}

/// Parameters and buffers of the nodes inferred so far, for the bound on the whole network.
#[derive(Default)]
pub struct Parameters(u64);

/// Infers the shape of `n`, whose inputs have theirs, and checks its sizes.
pub fn infer_node(graph: &mut Graph, n: NodeIndex, parameters: &mut Parameters) -> Result<(), Diagnostic> {
    let inputs = graph.inputs(n);
    let shapes: Vec<_> = inputs.iter().map(|&i| graph.shape(i)).collect();
    let rule = graph.g[n].op.rule();
    let shape = rule.infer(&shapes).map_err(|e| {
        let node = graph.node(n);
        let mut d = Diagnostic::error(e.message).at(node.span, format!("in `{}`", node.name));
        if let Some(slot) = e.input {
            let i = inputs[slot];
            let src = graph.node(i);
            if src.span != node.span {
                d = d.also(src.span, format!("this gives {}", graph.shape(i)));
            }
        }
        in_instance(graph, n, d)
    })?;
    tensor_fits(graph, n, || format!("the output of `{}`", graph.node(n).name), &shape.0)?;
    let params = rule.params(&shapes, &shape);
    graph.g[n].shape = Some(shape);
    for p in params {
        let name = || format!("{}.{}", graph.node(n).name, p.suffix);
        let elements = tensor_fits(graph, n, || format!("`{}`", name()), &p.shape)?;
        parameters.0 += elements;
        if parameters.0 > MAX_PARAMETERS {
            let name = name();
            let d = Diagnostic::error(format!(
                "too many parameters: {} up to `{name}`, more than the {} ({} GiB as float32) incc accepts",
                thousands(parameters.0),
                thousands(MAX_PARAMETERS),
                (MAX_PARAMETERS * 4) >> 30
            ))
            .at(graph.node(n).span, format!("`{name}` crosses the limit with {}", thousands(elements)));
            return Err(in_instance(graph, n, d));
        }
    }
    Ok(())
}

/// The number of elements of `dims`, or an error at `n` when one tensor would hold too many.
fn tensor_fits(graph: &Graph, n: NodeIndex, what: impl FnOnce() -> String, dims: &[usize]) -> Result<u64, Diagnostic> {
    match checked_elements(dims).filter(|&e| e <= MAX_TENSOR_ELEMENTS) {
        Some(elements) => Ok(elements),
        None => {
            let size = checked_elements(dims).map_or_else(|| "more than 2^64".to_string(), thousands);
            let node = graph.node(n);
            let d = Diagnostic::error(format!(
                "tensor too large: {} would have {size} elements ({}), more than the {} incc accepts in one tensor",
                what(),
                Shape(dims.to_vec()),
                thousands(MAX_TENSOR_ELEMENTS)
            ))
            .at(node.span, format!("in `{}`", node.name));
            Err(in_instance(graph, n, d))
        }
    }
}

/// Adds the block instance `n` belongs to, if any.
pub fn in_instance(graph: &Graph, n: NodeIndex, d: Diagnostic) -> Diagnostic {
    match enclosing_block(graph, graph.node(n).frame) {
        Some((span, block)) => d.also(span, format!("in this instance of `{block}`")),
        None => d,
    }
}

/// The call site and name of the innermost block instance around a frame.
fn enclosing_block(graph: &Graph, frame: crate::ir::FrameId) -> Option<(crate::source::Span, String)> {
    graph.frame_chain(frame).into_iter().rev().find_map(|f| match &graph.frame(f).kind {
        FrameKind::Block { block } => Some((graph.frame(f).span, block.clone())),
        _ => None,
    })
}
