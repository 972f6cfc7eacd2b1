//! Reverse-mode autodiff over the IR: each lowered node's gradient rule (`OpRule::gradient`), in
//! reverse order, from the gradient of the logits; the pieces of one value's gradient are summed.
//! A node of a recomputed block reads its block's second forward pass (`recompute.rs`).

use super::recompute::{Recompute, Replay, Segments};
use crate::diag::Diagnostic;
use crate::ir::lower::{GradAt, GradientForms, Lowering};
use crate::ir::{param_name, Graph};
use crate::onnx::forward::Forward;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

/// Writes the backward pass of `forward`; returns every trainable parameter's gradient, by name.
pub(super) fn backward(
    graph: &Graph,
    forward: &Forward,
    cx: &mut Lowering,
    dlogits: String,
    forms: GradientForms,
    recompute: Recompute,
) -> Result<HashMap<String, String>, Diagnostic> {
    let mut pieces: HashMap<NodeIndex, Vec<String>> = HashMap::from([(forward.outputs.logits, vec![dlogits])]);
    let mut grads = HashMap::new();
    let segments = Segments::of(graph, forward, recompute);
    if recompute == Recompute::Blocks && segments.is_empty() {
        return Err(Diagnostic::error(format!("--recompute blocks: network `{}` has no block instance, so nothing would be recomputed", graph.name))
            .at(graph.node(graph.input).span, "the network's input")
            .note("write its repeated parts as `block`s (as archs/inception_resnet_v2.inc does), or train without --recompute"));
    }
    let mut replays: HashMap<usize, Replay> = HashMap::new();
    for &n in forward.order.iter().rev() {
        let Some(dy) = pieces.remove(&n) else { continue };
        let node = graph.node(n);
        let rule = node.op.rule();
        let dy = sum_pieces(cx, &node.name, dy);
        let replay = segments.segment(n).map(|s| &*replays.entry(s).or_insert_with(|| Replay::write(graph, forward, &segments, s, n, &dy, cx)));
        let (at, saved) = match replay {
            Some(replay) => (replay.at(graph, n), replay.saved(n)),
            None => (forward.at(graph, n), &forward.trained[&n].saved),
        };
        let ins = graph.inputs(n);
        let wants = ins.iter().map(|&i| i != graph.input).collect();
        let g = GradAt { dy, wants, forms, saved };
        let grad = cx.located(node.span, |cx| rule.gradient(cx, &at, &g)).ok_or_else(|| {
            Diagnostic::error(format!("`{}` has no gradient rule, so `{}` cannot be trained", rule.kind(), node.name))
                .at(node.span, format!("a {} here", rule.kind()))
                .note("replace it with an op that has one (e.g. `global avgpool` for `global maxpool`), or compile without --train")
        })?;
        for (i, gi) in ins.iter().zip(grad.inputs) {
            if let Some(gi) = gi {
                pieces.entry(*i).or_default().push(gi);
            }
        }
        for (suffix, gp) in grad.params {
            grads.insert(param_name(&node.name, suffix), gp);
        }
    }
    Ok(grads)
}

/// The gradient of `node`'s output from its pieces (one per reader), added in order: a chain of
/// Adds, not one Sum, which ONNX Runtime's CPU runs on one thread (12.8 against 3.8 ms for three
/// 8x64x147x147 pieces, 2 threads).
fn sum_pieces(cx: &mut Lowering, node: &str, pieces: Vec<String>) -> String {
    let last = pieces.len() - 1;
    let mut pieces = pieces.into_iter();
    let first = pieces.next().expect("a value with a gradient has a piece");
    pieces.enumerate().fold(first, |total, (i, piece)| {
        let name = if i + 1 == last { format!("{node}/grad") } else { format!("{node}/grad{}", i + 1) };
        cx.op("Add", name, &[&total, &piece], vec![])
    })
}
