//! The parameter list: every parameter and buffer name with its shape, in state-dict order.

use crate::ir::{Graph, ParamSpec, Shape};
use petgraph::stable_graph::NodeIndex;

pub fn param_list(graph: &Graph) -> Vec<(String, ParamSpec)> {
    graph.order().into_iter().flat_map(|n| graph.params(n)).collect()
}

/// `name shape` lines, the format of the timm reference fixtures.
pub fn render(graph: &Graph) -> String {
    param_list(graph).iter().map(|(name, p)| format!("{name} {}\n", Shape(p.shape.clone()))).collect()
}

/// Elements of the trainable parameters of `n` (whose inputs have `inputs` shapes), and of its
/// buffers (running statistics). Both fit in `u64`: `infer-shapes` bounds them.
pub fn node_elements(graph: &Graph, n: NodeIndex, inputs: &[&Shape]) -> (u64, u64) {
    let (mut trainable, mut buffers) = (0, 0);
    for p in graph.node(n).op.rule().params(inputs, graph.shape(n)) {
        *(if p.role.is_trainable() { &mut trainable } else { &mut buffers }) += p.shape.iter().map(|&d| d as u64).product::<u64>();
    }
    (trainable, buffers)
}

/// The network's trainable parameters (running statistics not included).
pub fn trainable(graph: &Graph) -> u64 {
    graph.g.node_indices().map(|n| node_elements(graph, n, &graph.input_shapes(n)).0).sum()
}
