//! The parameter list: every parameter and buffer name with its shape, in state-dict order.

use crate::ir::{Graph, ParamSpec, Shape};

pub fn param_list(graph: &Graph) -> Vec<(String, ParamSpec)> {
    graph.order().into_iter().flat_map(|n| graph.params(n)).collect()
}

/// `name shape` lines, the format of the timm reference fixtures.
pub fn render(graph: &Graph) -> String {
    param_list(graph).iter().map(|(name, p)| format!("{name} {}\n", Shape(p.shape.clone()))).collect()
}
