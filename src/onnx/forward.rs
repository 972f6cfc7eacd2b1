//! The network's forward pass, the one lowering that the inference graph (`emit`) and a training
//! step (`train`) share: it names the graph's values (`images`, `logits`, `probabilities`, else
//! the node's name), lowers every node with its op's rule in inference or training mode, and
//! stamps each ONNX node with the `file:line:col` of the IR node it came from.

use crate::ir::lower::{LowerAt, Lowering, Trained, IMAGES};
use crate::ir::ops::Op;
use crate::ir::Graph;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

pub const LOGITS: &str = "logits";
pub const PROBABILITIES: &str = "probabilities";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each op's `lower`: running statistics, dropout off.
    Inference,
    /// Each op's `lower_train`, without a final softmax (the loss applies its own log-softmax).
    Training,
}

/// The nodes whose values the model outputs.
#[derive(Clone, Copy, Debug)]
pub struct Outputs {
    pub logits: NodeIndex,
    /// The final softmax, when the network ends in one.
    pub probabilities: Option<NodeIndex>,
}

/// The one place that decides what the network outputs: a final softmax means the logits are its
/// input and the probabilities its output; otherwise the output is the logits.
pub fn outputs(graph: &Graph) -> Outputs {
    match graph.node(graph.output).op {
        Op::Softmax(_) => Outputs { logits: graph.inputs(graph.output)[0], probabilities: Some(graph.output) },
        _ => Outputs { logits: graph.output, probabilities: None },
    }
}

/// The node whose output is the logits (the class count is its width).
pub fn logits_node(graph: &Graph) -> NodeIndex {
    outputs(graph).logits
}

/// The lowered forward pass.
pub struct Forward {
    pub outputs: Outputs,
    /// The IR nodes lowered, in order: all but the input (the graph input `images` itself) and,
    /// in training mode, a final softmax.
    pub order: Vec<NodeIndex>,
    names: HashMap<NodeIndex, String>,
    /// Training mode: what each lowered node's `lower_train` returned.
    pub trained: HashMap<NodeIndex, Trained>,
    /// The shapes (batch excluded) of the lowered nodes' values but the outputs, for value_info.
    pub values: Vec<(String, Vec<usize>)>,
}

impl Forward {
    /// The ONNX value holding node `n`'s output.
    pub fn name(&self, n: NodeIndex) -> &str {
        &self.names[&n]
    }

    /// Node `n` as its op's rules see it (the gradient rule sees what the lowering saw).
    pub fn at<'g>(&self, graph: &'g Graph, n: NodeIndex) -> LowerAt<'g> {
        lower_at(graph, &self.names, n)
    }
}

fn lower_at<'g>(graph: &'g Graph, names: &HashMap<NodeIndex, String>, n: NodeIndex) -> LowerAt<'g> {
    let name = &graph.node(n).name;
    LowerAt {
        name,
        node: name,
        inputs: graph.inputs(n).into_iter().map(|i| names[&i].clone()).collect(),
        output: names[&n].clone(),
        input_shapes: graph.input_shapes(n),
    }
}

/// Writes the forward pass of `graph` into `cx`.
pub fn lower(graph: &Graph, mode: Mode, cx: &mut Lowering) -> Result<Forward, String> {
    let outputs = outputs(graph);
    if outputs.logits == graph.input {
        return Err("the network has no layers: its output is its input".into());
    }
    let every = graph.order();
    let skipped = |n: NodeIndex| n == graph.input || (mode == Mode::Training && Some(n) == outputs.probabilities);
    let order: Vec<NodeIndex> = every.iter().copied().filter(|&n| !skipped(n)).collect();
    let names: HashMap<NodeIndex, String> = every
        .into_iter()
        .map(|n| {
            let name = match n {
                n if n == graph.input => IMAGES.to_string(),
                n if n == outputs.logits => LOGITS.to_string(),
                n if Some(n) == outputs.probabilities => PROBABILITIES.to_string(),
                n => graph.node(n).name.clone(),
            };
            (n, name)
        })
        .collect();
    let (mut trained, mut values) = (HashMap::new(), vec![]);
    for &n in &order {
        let node = graph.node(n);
        let at = lower_at(graph, &names, n);
        cx.located(node.span, |cx| match mode {
            Mode::Inference => node.op.rule().lower(cx, &at),
            Mode::Training => {
                trained.insert(n, node.op.rule().lower_train(cx, &at));
            }
        });
        if n != outputs.logits && Some(n) != outputs.probabilities {
            values.push((names[&n].clone(), graph.shape(n).0.clone()));
        }
    }
    Ok(Forward { outputs, order, names, trained, values })
}
