//! The concat -> residual rewrite (paper Fig 1c and Fig 20), the only way residual blocks are built.
//!
//! Rule, stated once:
//!   concat(b1..bk) marked residual(scale, act) with block input x
//!     => [relu] (add (scale (conv1x1_linear_bias(concat(b1..bk)) -> C(x)), s), x)
//! `residual(scale) { ... }` in the language marks its concat; `--residualize` marks the final
//! concat of every block instance whose branches all start at the block's input and keep its grid.

use super::shapes::{in_instance, infer_node, Parameters};
use crate::diag::Diagnostic;
use crate::ir::ops::{Add, Conv, Op, Padding, Relu, Scale};
use crate::ir::{Frame, FrameKind, Graph, Node, ResidualMark};
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, HashMap, HashSet};

/// `--residualize scale=0.1,block35=0.17`: a default scale and per-block scales.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResidualizeSpec {
    pub default_scale: Option<f64>,
    pub per_block: BTreeMap<String, f64>,
}

impl ResidualizeSpec {
    pub fn parse(text: &str) -> Result<ResidualizeSpec, String> {
        let mut spec = ResidualizeSpec::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("`{part}`: expected KEY=SCALE"))?;
            let scale: f64 =
                value.trim().parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| format!("`{part}`: `{}` is not a number", value.trim()))?;
            match key.trim() {
                "scale" => spec.default_scale = Some(scale),
                block => {
                    spec.per_block.insert(block.to_string(), scale);
                }
            }
        }
        if spec.default_scale.is_none() && spec.per_block.is_empty() {
            return Err("give a scale, as in `scale=0.1` or `block35=0.17,scale=0.1`".into());
        }
        Ok(spec)
    }
}

/// Marks every eligible block's final concat. Returns one warning per block left as it is.
pub fn residualize(graph: &mut Graph, spec: &ResidualizeSpec) -> Result<Vec<Diagnostic>, Diagnostic> {
    let present: HashSet<&str> = graph
        .frames
        .iter()
        .filter_map(|f| match &f.kind {
            FrameKind::Block { block } => Some(block.as_str()),
            _ => None,
        })
        .collect();
    if let Some(unknown) = spec.per_block.keys().find(|k| !present.contains(k.as_str())) {
        let mut names: Vec<&str> = present.into_iter().collect();
        names.sort();
        return Err(Diagnostic::error(format!("--residualize {unknown}=...: the network has no block `{unknown}`"))
            .note(format!("blocks in this network: {}", names.join(", "))));
    }
    let mut notes = vec![];
    let instances: Vec<(Frame, String)> = graph
        .frames
        .iter()
        .filter_map(|f| match &f.kind {
            FrameKind::Block { block } => Some((f.clone(), block.clone())),
            _ => None,
        })
        .collect();
    for (frame, block) in instances {
        let Some((x, out)) = frame.io else { continue };
        if !matches!(graph.node(out).op, Op::Concat(_)) || graph.node(out).residual.is_some() {
            continue;
        }
        let refuse = |why: String| Diagnostic::warning(format!("`{}` ({block}) stays as it is: {why}", frame.path)).at(frame.span, "not residualized");
        let (from, to) = (graph.shape(x), graph.shape(out));
        if from.grid() != to.grid() {
            let grid = |s: &crate::ir::Shape| s.grid().map_or(format!("{s}"), |(h, w)| format!("{h}x{w}"));
            notes.push(refuse(format!("it changes the grid from {} to {}, so its input cannot be added back", grid(from), grid(to))));
            continue;
        }
        if !branches_start_at(graph, out, x) {
            notes.push(refuse("its concat's branches do not all start at the block's input".into()));
            continue;
        }
        let Some(scale) = spec.per_block.get(&block).copied().or(spec.default_scale) else {
            notes.push(refuse("no scale given for it (add `scale=S` or `{block}=S`)".replace("{block}", &block)));
            continue;
        };
        let scope = out_scope(&graph.node(out).name);
        graph.g[out].residual = Some(ResidualMark { scale, activation: true, projection: join(&scope, crate::elab::DEFAULT_PROJECTION), input: x });
    }
    Ok(notes)
}

/// True when every path into `concat`'s branches, walking back, enters from `x` and only from `x`.
fn branches_start_at(graph: &Graph, concat: NodeIndex, x: NodeIndex) -> bool {
    let mut stack = graph.inputs(concat);
    let mut seen = HashSet::new();
    while let Some(n) = stack.pop() {
        if n == x {
            continue;
        }
        if !seen.insert(n) {
            continue;
        }
        let inputs = graph.inputs(n);
        if inputs.is_empty() {
            return false; // reached the network input without passing x
        }
        stack.extend(inputs);
    }
    // Every walk ended at x; x itself must not be one of the branch nodes.
    !seen.contains(&x)
}

fn out_scope(name: &str) -> String {
    name.rsplit_once('.').map_or(String::new(), |(scope, _)| scope.to_string())
}

fn join(scope: &str, segment: &str) -> String {
    if scope.is_empty() {
        segment.to_string()
    } else {
        format!("{scope}.{segment}")
    }
}

/// Rewrites every marked concat, in one topological sweep that infers shapes as it goes (a rewrite
/// changes the widths downstream of it), so that a network of n blocks takes O(n), not O(n^2).
pub fn rewrite_residuals(graph: &mut Graph) -> Result<(), Diagnostic> {
    if graph.g.node_weights().all(|n| n.residual.is_none()) {
        return Ok(());
    }
    let mut names: HashMap<String, NodeIndex> = graph.g.node_indices().map(|n| (graph.node(n).name.clone(), n)).collect();
    let mut replaced = HashMap::new();
    let mut parameters = Parameters::default();
    for n in graph.order() {
        infer_node(graph, n, &mut parameters)?;
        if graph.node(n).residual.is_some() {
            let (out, added) = rewrite_one(graph, n, &mut names, &replaced)?;
            for a in added {
                infer_node(graph, a, &mut parameters)?;
            }
            replaced.insert(n, out);
        }
    }
    graph.replace_ends(&replaced);
    Ok(())
}

/// Rewrites concat `c`; returns the node that replaces it and the nodes added, in order.
fn rewrite_one(
    graph: &mut Graph,
    c: NodeIndex,
    names: &mut HashMap<String, NodeIndex>,
    replaced: &HashMap<NodeIndex, NodeIndex>,
) -> Result<(NodeIndex, Vec<NodeIndex>), Diagnostic> {
    let mark = graph.g[c].residual.take().expect("only marked concats are rewritten");
    let node = graph.node(c).clone();
    // The block's input may be an earlier block's concat, replaced by its sum.
    let x = replaced.get(&mark.input).copied().unwrap_or(mark.input);
    let (from, to) = (graph.shape(x).clone(), graph.shape(c).clone());
    let in_instance = |d: Diagnostic| in_instance(graph, c, d);
    if from.grid().is_none() {
        return Err(in_instance(
            Diagnostic::error(format!("a residual block needs a CxHxW feature map as its input, but its input is the flat vector {from}"))
                .at(node.span, "this residual block")
                .also(graph.node(x).span, format!("this gives {from}"))
                .note("the projection back to the input's width is a 1x1 conv; put the block before the flatten or global pool"),
        ));
    }
    if from.grid() != to.grid() {
        return Err(in_instance(
            Diagnostic::error(format!("a residual block must keep its grid, but its input is {from} and its branches give {to}"))
                .at(node.span, "the sum cannot add these")
                .also(graph.node(x).span, format!("the block's input, {from}")),
        ));
    }
    let scope = out_scope(&node.name);
    let frame = graph.add_frame(Frame {
        path: mark.projection.clone(),
        kind: FrameKind::Layer,
        span: node.span,
        parent: graph.frame(node.frame).parent.filter(|_| graph.frame(node.frame).kind == FrameKind::Layer).or(Some(node.frame)),
        io: None,
    });
    let mut added = vec![];
    let mut add = |graph: &mut Graph, op: Op, name: String, inputs: &[NodeIndex]| -> Result<NodeIndex, Diagnostic> {
        if let Some(&existing) = names.get(&name) {
            return Err(Diagnostic::error(format!("the residual rewrite needs the name `{name}`, which is taken"))
                .at(node.span, "this residual block")
                .also(graph.node(existing).span, "already used here"));
        }
        let n = graph.g.add_node(Node { op, name: name.clone(), span: node.span, frame, shape: None, residual: None });
        names.insert(name, n);
        added.push(n);
        for (slot, &i) in inputs.iter().enumerate() {
            graph.g.add_edge(i, n, slot);
        }
        Ok(n)
    };
    let conv = Conv { out_channels: from.channels(), kernel: [1, 1], stride: [1, 1], padding: Padding::Valid, bias: true };
    // The projection is connected to the concat last, once the concat's other readers moved.
    let proj = add(graph, Op::Conv(conv), mark.projection.clone(), &[])?;
    let mut out = proj;
    if mark.scale != 1.0 {
        out = add(graph, Op::Scale(Scale { factor: mark.scale }), join(&scope, "scale"), &[out])?;
    }
    out = add(graph, Op::Add(Add), join(&scope, "add"), &[out, x])?;
    if mark.activation {
        out = add(graph, Op::Relu(Relu), join(&scope, "relu"), &[out])?;
    }
    // The block's value is now the sum: everything that read the concat reads the sum.
    graph.replace_uses(c, out);
    graph.g.add_edge(c, proj, 0);
    Ok((out, added))
}
