//! Activation recomputation (`--recompute blocks`): the backward pass of each block instance reads
//! the block's values from a second forward pass of the block, written right before the block's
//! gradients, instead of from the first. The first pass's values inside a block then die once the
//! next layers have read them; of each block, the step keeps only the input until its backward
//! pass, at the cost of running the blocks' forward pass twice.
//!
//! The rewrite, for each outermost block instance B (nodes b, reading x from outside B):
//!
//! ```text
//!   x'  = x + 0 * dY[0, ..., 0]     dY: the gradient of the first node of B it reaches
//!   b'  = b's training lowering over x' and the other b', named recompute/<b>
//!   b's gradient rule reads b' (its inputs, output and saved values), never b
//! ```
//!
//! The zero term is what keeps the second pass second. Without a value of the backward pass among
//! its inputs, ONNX Runtime's common-subexpression elimination would merge each b' with its b
//! (same op, same inputs), and nothing would make the replay wait for the backward pass. With it,
//! the replay runs when the block's gradients need it (`memory.rs`: a node is placed when the
//! depth-first search from its readers reaches it). `x + 0 * g` is `x` for every finite `g` (a
//! step whose gradient is not finite has diverged anyway), so the step computes the same values.

use crate::ir::lower::{int, LowerAt, Lowering, Saved, Trained};
use crate::ir::{FrameKind, Graph};
use crate::onnx::forward::Forward;
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};

/// What the backward pass computes again instead of keeping it from the forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    /// Nothing: every value a gradient rule reads is kept from the forward pass.
    #[default]
    None,
    /// The values inside each block instance (the outermost ones: `block35`, not its layers).
    Blocks,
}

/// The node sets that are replayed, each in forward order.
pub(super) struct Segments {
    of: HashMap<NodeIndex, usize>,
    members: Vec<(String, Vec<NodeIndex>)>,
}

impl Segments {
    /// The outermost block instances of `forward`'s nodes (none for `Recompute::None`).
    pub(super) fn of(graph: &Graph, forward: &Forward, recompute: Recompute) -> Segments {
        let mut segments = Segments { of: HashMap::new(), members: vec![] };
        if recompute == Recompute::None {
            return segments;
        }
        let mut by_frame = HashMap::new();
        for &n in &forward.order {
            let chain = graph.frame_chain(graph.node(n).frame);
            let Some(&block) = chain.iter().find(|&&f| matches!(graph.frame(f).kind, FrameKind::Block { .. })) else { continue };
            let index = *by_frame.entry(block).or_insert_with(|| {
                segments.members.push((graph.frame(block).path.clone(), vec![]));
                segments.members.len() - 1
            });
            segments.members[index].1.push(n);
            segments.of.insert(n, index);
        }
        segments
    }

    /// Whether there is no block instance to replay.
    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The segment node `n` belongs to.
    pub(super) fn segment(&self, n: NodeIndex) -> Option<usize> {
        self.of.get(&n).copied()
    }
}

/// A block's second forward pass: its nodes' values and what their training lowerings saved.
pub(super) struct Replay {
    names: HashMap<NodeIndex, String>,
    scopes: HashMap<NodeIndex, String>,
    trained: HashMap<NodeIndex, Trained>,
}

impl Replay {
    /// Writes segment `segment`'s second pass, made to wait for `dy` (the gradient of node `at`).
    pub(super) fn write(graph: &Graph, forward: &Forward, segments: &Segments, segment: usize, at: NodeIndex, dy: &str, cx: &mut Lowering) -> Replay {
        let (path, members) = &segments.members[segment];
        let inside: HashSet<NodeIndex> = members.iter().copied().collect();
        let mut names: HashMap<NodeIndex, String> = members.iter().map(|&m| (m, format!("recompute/{}", forward.name(m)))).collect();
        cx.located(graph.node(at).span, |cx| {
            let rank = graph.shape(at).0.len() + 1;
            let (origin, one) = (cx.ints(&vec![0; rank]), cx.ints(&vec![1; rank]));
            let first = cx.op("Slice", format!("recompute/{path}/dy_first"), &[dy, &origin, &one], vec![]);
            let scalar = cx.op("ReduceMax", format!("recompute/{path}/dy_scalar"), &[&first], vec![int("keepdims", 0)]);
            let zero_factor = cx.scalar("const/zero".into(), 0.0);
            let zero = cx.op("Mul", format!("recompute/{path}/zero"), &[&scalar, &zero_factor], vec![]);
            for &m in members {
                for input in graph.inputs(m) {
                    if !inside.contains(&input) && !names.contains_key(&input) {
                        let after = cx.op("Add", format!("recompute/{path}/{}", forward.name(input)), &[forward.name(input), &zero], vec![]);
                        names.insert(input, after);
                    }
                }
            }
        });
        let scopes: HashMap<NodeIndex, String> = members.iter().map(|&m| (m, format!("recompute/{}", graph.node(m).name))).collect();
        let mut replay = Replay { names, scopes, trained: HashMap::new() };
        for &m in members {
            let trained = cx.located(graph.node(m).span, |cx| graph.node(m).op.rule().lower_train(cx, &replay.at(graph, m)));
            replay.trained.insert(m, trained);
        }
        replay
    }

    /// Node `n` of the block as its rules see it in the second pass.
    pub(super) fn at<'a>(&'a self, graph: &'a Graph, n: NodeIndex) -> LowerAt<'a> {
        LowerAt {
            name: &self.scopes[&n],
            node: &graph.node(n).name,
            inputs: graph.inputs(n).into_iter().map(|i| self.names[&i].clone()).collect(),
            output: self.names[&n].clone(),
            input_shapes: graph.input_shapes(n),
        }
    }

    /// What node `n`'s second training lowering saved for its gradient.
    pub(super) fn saved(&self, n: NodeIndex) -> &Saved {
        &self.trained[&n].saved
    }
}
