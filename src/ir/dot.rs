//! Graphviz rendering: nodes labelled with op and shape, block instances drawn as nested clusters.

use super::{FrameId, FrameKind, Graph};
use std::collections::BTreeMap;
use std::fmt::Write;

pub fn dot(graph: &Graph) -> String {
    // Group nodes under the chain of block/repeat frames that encloses them.
    #[derive(Default)]
    struct Cluster {
        nodes: Vec<String>,
        children: BTreeMap<usize, Cluster>,
    }
    let mut root = Cluster::default();
    let order = graph.order();
    let id = |n: petgraph::stable_graph::NodeIndex| format!("n{}", n.index());
    for &n in &order {
        let node = graph.node(n);
        let mut cluster = &mut root;
        for f in graph.frame_chain(node.frame) {
            if graph.frame(f).kind != FrameKind::Layer {
                cluster = cluster.children.entry(f.0).or_default();
            }
        }
        let shape = node.shape.as_ref().map_or(String::new(), |s| format!("\\n{s}"));
        let desc = node.op.rule().describe();
        let desc = if desc.is_empty() { String::new() } else { format!(" {desc}") };
        cluster.nodes.push(format!("{} [label=\"{}\\n{}{}{}\"];", id(n), escape(&node.name), node.op.rule().kind(), escape(&desc), shape));
    }
    fn write_cluster(out: &mut String, graph: &Graph, c: &Cluster, depth: usize) {
        let pad = "  ".repeat(depth);
        for line in &c.nodes {
            writeln!(out, "{pad}{line}").expect("write to string");
        }
        for (f, child) in &c.children {
            let frame = graph.frame(FrameId(*f));
            let label = match &frame.kind {
                FrameKind::Block { block } => format!("{} ({block})", frame.path),
                FrameKind::Repeat { count } => format!("{} (repeat {count})", frame.path),
                FrameKind::Layer => frame.path.clone(),
            };
            writeln!(out, "{pad}subgraph cluster_{f} {{").expect("write to string");
            writeln!(out, "{pad}  label=\"{}\";", escape(&label)).expect("write to string");
            write_cluster(out, graph, child, depth + 1);
            writeln!(out, "{pad}}}").expect("write to string");
        }
    }
    let mut out = format!("digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontsize=10];\n", escape(&graph.name));
    write_cluster(&mut out, graph, &root, 1);
    for &n in &order {
        for i in graph.inputs(n) {
            writeln!(out, "  {} -> {};", id(i), id(n)).expect("write to string");
        }
    }
    out.push_str("}\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
