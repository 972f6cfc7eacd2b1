//! Training graphs: the forward pass in training mode, the loss, reverse-mode autodiff over the
//! IR (each op's `OpRule::gradient`), weight decay, gradient clipping and the optimizer, emitted
//! as ONE standard-ONNX graph that performs a whole training step in an ordinary ONNX Runtime
//! session.
//!
//! Inputs: `images` [N,C,H,W], `labels` int64 [N], `learning_rate` (scalar), `step` (Adam),
//! `ema_decay` (with a moving average), each dropout's `<node>.mask`, every parameter and running
//! statistic, the flat optimizer slots `opt/<group>.<slot>` and average `ema` (`update.rs`).
//! Outputs: `loss`, `logits`, and `<name>__new` for every state input (two buffer sets swapped
//! each step; never one buffer as both input and output).

pub mod optim;
pub mod update;

use crate::diag::Diagnostic;
use crate::ir::ops::Op;
use crate::ir::{Graph, ParamRole};
use crate::onnx::emit::{model, plain_value_info, value_info};
use crate::onnx::lower::{int, GradAt, LowerAt, Lowering, Target};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::*;
use crate::source::SourceMap;
pub use optim::Optimizer;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    /// Label smoothing of the softmax cross-entropy (0.1 as Inception-v3/v4 trained).
    pub label_smoothing: f32,
    /// L2 weight decay (AdamW: decoupled decay).
    pub weight_decay: f32,
    /// Whether weight decay applies to biases and batch-norm parameters too (off by default).
    pub decay_all: bool,
    /// Clip gradients to this global norm.
    pub clip_norm: Option<f32>,
    /// The device the step is compiled for (chooses among gradient forms).
    #[serde(default)]
    pub target: Target,
    /// Keep a moving average of the parameters and running statistics in the step (input
    /// `ema_decay`, state `ema`), so that it never leaves the device.
    #[serde(default)]
    pub ema: bool,
    /// Also output every parameter's gradient (before weight decay and clipping) as
    /// `<param>__grad`, and each batch norm's batch mean and (biased) variance as `<node>/mean_c`,
    /// `<node>/var_c` (for checks and debugging).
    pub debug_outputs: bool,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            optimizer: Optimizer::paper_rmsprop(),
            label_smoothing: 0.1,
            weight_decay: 0.0,
            decay_all: false,
            clip_norm: None,
            target: Target::Cpu,
            ema: false,
            debug_outputs: false,
        }
    }
}

/// A parameter of the training graph.
struct Param {
    name: String,
    shape: Vec<usize>,
    role: ParamRole,
}

/// The node whose output is the logits: the network's output, or the input of a final softmax
/// (the loss applies its own log-softmax).
pub fn logits_node(graph: &Graph) -> NodeIndex {
    match graph.node(graph.output).op {
        Op::Softmax(_) => graph.inputs(graph.output)[0],
        _ => graph.output,
    }
}

pub fn emit_training(graph: &Graph, sources: &SourceMap, cfg: &TrainConfig, batch: Option<usize>) -> Result<ModelProto, Diagnostic> {
    let logits = logits_node(graph);
    let order: Vec<NodeIndex> = graph.order().into_iter().filter(|&n| n != graph.output || n == logits).collect();
    let name_of = |n: NodeIndex| -> String {
        if n == graph.input {
            "images".into()
        } else if n == logits {
            "logits".into()
        } else {
            graph.node(n).name.clone()
        }
    };
    let at = |n: NodeIndex| LowerAt {
        name: &graph.node(n).name,
        inputs: graph.inputs(n).into_iter().map(name_of).collect(),
        output: name_of(n),
        input_shapes: graph.input_shapes(n),
    };
    let mut cx = Lowering::default();
    cx.batch = batch;
    let mut inputs = vec![value_info("images", &graph.shape(graph.input).0, batch, DataType::Float)];
    inputs.push(value_info("labels", &[], batch, DataType::Int64));
    inputs.push(plain_value_info("learning_rate", &[]));
    if cfg.optimizer.needs_step() {
        inputs.push(plain_value_info("step", &[]));
    }
    let mut params: Vec<Param> = vec![];
    let mut values = vec![];

    // Forward, training mode.
    for &n in &order {
        if n == graph.input {
            continue;
        }
        let node = graph.node(n);
        let first = cx.nodes.len();
        node.op.rule().lower_train(&mut cx, &at(n));
        stamp(&mut cx.nodes[first..], sources, node.span);
        for (suffix, dims) in node.op.rule().step_inputs(graph.shape(n)) {
            inputs.push(value_info(&format!("{}.{suffix}", node.name), &dims, batch, DataType::Float));
        }
        for (name, spec) in graph.params(n) {
            params.push(Param { name, shape: spec.shape, role: spec.role });
        }
        if n != logits {
            values.push(value_info(&name_of(n), &graph.shape(n).0, batch, DataType::Float));
        }
    }

    // Loss: softmax cross-entropy with label smoothing, mean over the batch.
    let classes = graph.shape(logits).0[0];
    let eps = cfg.label_smoothing;
    let depth = cx.int_scalar(classes as i64);
    let on_off = cx.floats("loss/on_off".into(), &[2], vec![eps / classes as f32, 1.0 - eps + eps / classes as f32]);
    let target = cx.op("OneHot", "loss/target".into(), &["labels", &depth, &on_off], vec![int("axis", -1)]);
    let logp = cx.op("LogSoftmax", "loss/logp".into(), &["logits"], vec![int("axis", 1)]);
    let prod = cx.op("Mul", "loss/prod".into(), &[&target, &logp], vec![]);
    let class_axis = cx.ints(&[1]);
    let per_example = cx.op("ReduceSum", "loss/per_example".into(), &[&prod, &class_axis], vec![int("keepdims", 0)]);
    let mean = cx.op("ReduceMean", "loss/mean".into(), &[&per_example], vec![int("keepdims", 0)]);
    cx.op("Neg", "loss".into(), &[&mean], vec![]);
    // d loss / d logits = (softmax - target) / N
    let p = cx.op("Exp", "loss/d/p".into(), &[&logp], vec![]);
    let diff = cx.op("Sub", "loss/d/diff".into(), &[&p, &target], vec![]);
    let n_f = cx.batch_size();
    let dlogits = cx.op("Div", "loss/d/logits".into(), &[&diff, &n_f], vec![]);

    // Backward: each node's gradient rule, in reverse order; pieces of one gradient are summed.
    let mut pieces: HashMap<NodeIndex, Vec<String>> = HashMap::from([(logits, vec![dlogits])]);
    let mut grads: HashMap<String, String> = HashMap::new();
    for &n in order.iter().rev() {
        if n == graph.input {
            continue;
        }
        let Some(dy) = pieces.remove(&n) else { continue };
        let node = graph.node(n);
        let dy = if dy.len() == 1 {
            dy.into_iter().next().expect("one piece")
        } else {
            let refs: Vec<&str> = dy.iter().map(String::as_str).collect();
            cx.op("Sum", format!("{}/grad", node.name), &refs, vec![])
        };
        let ins = graph.inputs(n);
        let wants: Vec<bool> = ins.iter().map(|&i| i != graph.input).collect();
        let first = cx.nodes.len();
        let here = at(n);
        let g = node.op.rule().gradient(&mut cx, &here, &GradAt { dy, wants, target: cfg.target }).ok_or_else(|| {
            Diagnostic::error(format!("`{}` has no gradient rule, so `{}` cannot be trained", node.op.rule().kind(), node.name))
                .at(node.span, format!("a {} here", node.op.rule().kind()))
                .note("replace it with an op that has one (e.g. `global avgpool` for `global maxpool`), or compile without --train")
        })?;
        stamp(&mut cx.nodes[first..], sources, node.span);
        for (i, gi) in ins.iter().zip(g.inputs) {
            if let Some(gi) = gi {
                pieces.entry(*i).or_default().push(gi);
            }
        }
        for (suffix, gp) in g.params {
            grads.insert(format!("{}.{suffix}", node.name), gp);
        }
    }

    // The update, then the graph's inputs and outputs.
    let mut outputs = vec![plain_value_info("loss", &[]), value_info("logits", &[classes], batch, DataType::Float)];
    // Running statistics are inputs packed (`update.rs`), not one by one.
    for p in params.iter().filter(|p| p.role.is_trainable()) {
        inputs.push(plain_value_info(&p.name, &p.shape));
    }
    let (update_inputs, update_outputs) = update::emit(&mut cx, graph, cfg, &grads);
    inputs.extend(update_inputs);
    outputs.extend(update_outputs);
    if cfg.debug_outputs {
        for p in params.iter().filter(|p| p.role.is_trainable()) {
            let exported = cx.op("Identity", format!("{}__grad", p.name), &[&grads[&p.name]], vec![]);
            outputs.push(plain_value_info(&exported, &p.shape));
        }
        for &n in &order {
            if let Op::BatchNorm(_) = graph.node(n).op {
                let c = graph.shape(n).channels();
                let flat = cx.ints(&[-1]);
                for (stat, from) in [("mean_c", "mean"), ("var_c", "var")] {
                    let name = &graph.node(n).name;
                    let exported = cx.op("Reshape", format!("{name}/{stat}"), &[&format!("{name}/{from}"), &flat], vec![]);
                    outputs.push(plain_value_info(&exported, &[c]));
                }
            }
        }
    }
    let metadata = vec![
        ("incc.graph".to_string(), "training step".to_string()),
        ("incc.network".to_string(), graph.name.clone()),
        ("incc.train".to_string(), serde_json::to_string(cfg).expect("serialisable")),
        ("incc.optimizer.state_init".to_string(), cfg.optimizer.slots().iter().map(|(s, v)| format!("{s}={v}")).collect::<Vec<_>>().join(",")),
    ];
    let graph_proto = GraphProto {
        name: format!("{}_train", graph.name),
        node: cx.nodes,
        initializer: cx.constants,
        input: inputs,
        output: outputs,
        value_info: values,
        doc_string: format!("one training step of network {}, compiled by incc", graph.name),
        ..GraphProto::default()
    };
    Ok(model(graph_proto, format!("{} (training step)", graph.name), &metadata))
}

fn stamp(nodes: &mut [NodeProto], sources: &SourceMap, span: crate::source::Span) {
    let location = sources.location(span);
    for n in nodes {
        n.doc_string = location.clone();
    }
}
