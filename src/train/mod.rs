//! Training graphs: the forward pass in training mode, the loss, reverse-mode autodiff over the
//! IR (each op's `OpRule::gradient`), weight decay, gradient clipping and the optimizer, emitted
//! as ONE standard-ONNX graph that performs a whole training step in an ordinary ONNX Runtime
//! session.
//!
//! Inputs: `images` [N,C,H,W], `labels` int64 [N], `learning_rate` (scalar), `step` (Adam),
//! `ema_decay` (with a moving average), each dropout's `<node>.mask`, every parameter and running
//! statistic, the flat optimizer slots `opt/<group>.<slot>` and average `ema` (`update.rs`).
//! Outputs: `loss`, `logits`, and `<name>__new` for every state input; the metadata
//! `incc.in_place` lists the state whose new value may be written over the old (`memory.rs`).

mod backward;
mod memory;
pub mod optim;
mod recompute;
pub mod update;

use crate::diag::Diagnostic;
use crate::ir::lower::{int, GradientForms, Lowering, RunningStat, IMAGES};
use crate::ir::{param_name, Graph};
use crate::onnx::convert::protos;
use crate::onnx::emit::{model, plain_value_info, value_info};
use crate::onnx::forward::{self, Forward, Mode, LOGITS};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::*;
use crate::source::SourceMap;
pub use forward::logits_node;
pub use optim::Optimizer;
pub use recompute::Recompute;
use std::collections::{HashMap, HashSet};

/// The metadata key of the state a step may update in place: a JSON list of names.
pub const IN_PLACE: &str = "incc.in_place";

/// What a training step is compiled for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// ONNX Runtime's CPU kernels: weight gradients as products per kernel offset beat a strided conv.
    #[default]
    Cpu,
    /// cuDNN: a weight gradient as one (dilated) convolution.
    Gpu,
}

impl Target {
    /// The gradient forms that are fast on this device.
    pub fn gradient_forms(self) -> GradientForms {
        let cpu = self == Target::Cpu;
        GradientForms { flipped_conv_dx: cpu, dw_by_offset: cpu }
    }

    /// Elements per row of the packed update vectors (`update::Packed`): each member starts on a
    /// row. ONNX Runtime's CUDA `Concat` and `Split` build an index of the whole concatenated axis
    /// on the host at every run (`axis_dimension_input_output_mapping`): over one [1, P] row of
    /// inception_resnet_v2's 56 M parameters that took 1.65 s of a 2.1 s step on an H200
    /// (benches/gpu/RESULTS.md). Joined as rows of 1024, the axis is 55 k long.
    pub fn packing_row(self) -> usize {
        match self {
            Target::Cpu => 1,
            Target::Gpu => 1024,
        }
    }
}

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
    /// What the backward pass computes again rather than keep from the forward pass.
    #[serde(default)]
    pub recompute: Recompute,
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
            recompute: Recompute::None,
            debug_outputs: false,
        }
    }
}

impl TrainConfig {
    /// Every number within its range; the error names the option that sets it.
    pub fn check(&self) -> Result<(), String> {
        let momentum = match self.optimizer {
            Optimizer::Sgd { momentum, .. } | Optimizer::Rmsprop { momentum, .. } => momentum,
            Optimizer::Adam { .. } => 0.0,
        };
        let ranges = [
            ("--momentum", momentum, 0.0..1.0, "at least 0 and below 1"),
            ("--label-smoothing", self.label_smoothing, 0.0..1.0, "at least 0 and below 1"),
            ("--weight-decay", self.weight_decay, 0.0..f32::INFINITY, "a finite number at least 0"),
            ("--clip-norm", self.clip_norm.unwrap_or(1.0), f32::MIN_POSITIVE..f32::INFINITY, "a finite number above 0"),
        ];
        match ranges.into_iter().find(|(_, v, range, _)| !range.contains(v)) {
            Some((option, v, _, want)) => Err(format!("{option} must be {want}, not {v}")),
            None => Ok(()),
        }
    }
}

/// One training step of `graph` as a model: the forward pass in training mode, the loss, the
/// backward pass, the update; `batch` fixes the batch size (batch-norm counts become constants).
pub fn emit_training(graph: &Graph, sources: &SourceMap, cfg: &TrainConfig, batch: Option<usize>) -> Result<ModelProto, Diagnostic> {
    let mut pass = backward_pass(graph, cfg, batch)?;
    let grads = update::pack_gradients(&mut pass.cx, graph, cfg, &pass.grads);
    let (update_inputs, update_outputs) = update::apply(&mut pass.cx, graph, cfg, &grads);
    let mut inputs = pass.inputs;
    inputs.extend(step_scalars(cfg));
    inputs.extend(update_inputs);
    let mut outputs = pass.outputs;
    outputs.extend(update_outputs);
    Ok(finish(pass.cx, graph, sources, cfg, Part::Step, inputs, outputs, pass.values, &pass.batch))
}

/// The training step as two graphs, for data-parallel training: the gradients of a replica's
/// batch, then, after they are averaged across replicas, the update. Both are written by the
/// same code as [`emit_training`]'s single graph, which is the two joined.
pub struct SplitStep {
    /// The forward pass in training mode, the loss and the backward pass: outputs `loss`,
    /// `logits`, each bucket (a group's packed gradient, before weight decay and clipping) and
    /// `running__new` (the running statistics moved towards this replica's batch statistics).
    pub gradients: ModelProto,
    /// Weight decay, clipping by the global norm, the optimizer and the moving average: inputs
    /// the (averaged) buckets, the parameters, slots, `learning_rate`, `step`, `ema_decay`, `ema`
    /// and `running__new`; outputs every other state's `__new`.
    pub update: ModelProto,
    /// The buckets, in order.
    pub buckets: Vec<update::Bucket>,
}

/// [`emit_training`]'s step as its two halves (see [`SplitStep`]).
pub fn emit_split_training(graph: &Graph, sources: &SourceMap, cfg: &TrainConfig, batch: Option<usize>) -> Result<SplitStep, Diagnostic> {
    let mut pass = backward_pass(graph, cfg, batch)?;
    let buckets = update::buckets(graph, cfg);
    let grads = update::pack_gradients(&mut pass.cx, graph, cfg, &pass.grads);
    let mut outputs = pass.outputs;
    for (bucket, grad) in buckets.iter().zip(&grads) {
        if *grad != bucket.name {
            pass.cx.op("Identity", bucket.name.clone(), &[grad], vec![]);
        }
        outputs.push(plain_value_info(&bucket.name, &[1, bucket.len]));
    }
    let gradients = finish(pass.cx, graph, sources, cfg, Part::Gradients, pass.inputs, outputs, pass.values, &pass.batch);

    let mut cx = Lowering::default();
    cx.batch = batch;
    let names: Vec<String> = buckets.iter().map(|b| b.name.clone()).collect();
    let (update_inputs, update_outputs) = update::apply(&mut cx, graph, cfg, &names);
    let mut inputs: Vec<ValueInfoProto> = buckets.iter().map(|b| plain_value_info(&b.name, &[1, b.len])).collect();
    inputs.extend(trainable_inputs(graph));
    inputs.extend(step_scalars(cfg));
    if let Some(len) = update::reads_running(graph, cfg) {
        inputs.push(plain_value_info(update::RUNNING_NEW, &[1, len]));
    }
    inputs.extend(update_inputs);
    let mut arriving = names;
    arriving.push(update::RUNNING_NEW.into());
    let update = finish(cx, graph, sources, cfg, Part::Update, inputs, update_outputs, vec![], &arriving);
    Ok(SplitStep { gradients, update, buckets })
}

/// What a backward pass leaves to the update: the lowering so far, the graph inputs and outputs
/// it has (the batch, the parameters, `running`; `loss`, `logits`, `running__new`), the names of
/// the batch's inputs, every parameter's gradient by name, and the forward values' shapes.
struct BackwardPass {
    cx: Lowering,
    inputs: Vec<ValueInfoProto>,
    batch: Vec<String>,
    outputs: Vec<ValueInfoProto>,
    grads: HashMap<String, String>,
    values: Vec<ValueInfoProto>,
}

/// The forward pass in training mode, the loss, the backward pass and the running statistics'
/// update.
fn backward_pass(graph: &Graph, cfg: &TrainConfig, batch: Option<usize>) -> Result<BackwardPass, Diagnostic> {
    let mut cx = Lowering::default();
    cx.batch = batch;
    let forward = forward::lower(graph, Mode::Training, &mut cx)
        .map_err(|e| Diagnostic::error(e).at(graph.node(graph.input).span, "the input is the network's output"))?;
    let classes = graph.shape(forward.outputs.logits).0[0];
    let dlogits = loss(&mut cx, classes, cfg.label_smoothing);
    let grads = backward::backward(graph, &forward, &mut cx, dlogits, cfg.target.gradient_forms(), cfg.recompute)?;
    let running: HashMap<String, &RunningStat> =
        forward.order.iter().flat_map(|n| forward.trained[n].running.iter().map(move |stat| (param_name(&graph.node(*n).name, stat.suffix), stat))).collect();
    let mut inputs = batch_inputs(graph, &forward, batch);
    let batch_names = inputs.iter().map(|i| i.name.clone()).collect();
    inputs.extend(trainable_inputs(graph));
    let mut outputs = vec![plain_value_info("loss", &[]), value_info(LOGITS, &[classes], batch, DataType::Float)];
    if let Some((input, output)) = update::update_running(&mut cx, graph, cfg, &running) {
        inputs.push(input);
        outputs.push(output);
    }
    if cfg.debug_outputs {
        outputs.extend(debug_outputs(&mut cx, graph, &forward, &grads));
    }
    let values = forward.values.iter().map(|(name, dims)| value_info(name, dims, batch, DataType::Float)).collect();
    Ok(BackwardPass { cx, inputs, batch: batch_names, outputs, grads, values })
}

/// Which graph of a step a model is.
#[derive(Clone, Copy)]
enum Part {
    Step,
    Gradients,
    Update,
}

impl Part {
    /// The `incc.graph` metadata and the graph's name suffix.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Part::Step => ("training step", "train"),
            Part::Gradients => ("training step: gradients", "train_gradients"),
            Part::Update => ("training step: update", "train_update"),
        }
    }
}

/// The graph of one part of a step. `arriving` names the inputs that come with each step (the
/// batch; the update's gradients): the nodes that do not depend on them are written first.
#[allow(clippy::too_many_arguments)] // the pieces of one model
fn finish(
    cx: Lowering,
    graph: &Graph,
    sources: &SourceMap,
    cfg: &TrainConfig,
    part: Part,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    values: Vec<ValueInfoProto>,
    arriving: &[String],
) -> ModelProto {
    let (what, suffix) = part.names();
    let (nodes, constants) = protos(cx, sources);
    let nodes = memory::batch_independent_first(nodes, &arriving.iter().map(String::as_str).collect());
    let outputs_named: HashSet<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
    let state: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).filter(|x| outputs_named.contains(format!("{x}__new").as_str())).collect();
    let in_place = memory::in_place(&nodes, &state);
    let metadata = vec![
        ("incc.graph".to_string(), what.to_string()),
        ("incc.network".to_string(), graph.name.clone()),
        ("incc.train".to_string(), serde_json::to_string(cfg).expect("serialisable")),
        ("incc.optimizer.state_init".to_string(), cfg.optimizer.slots().iter().map(|(s, v)| format!("{s}={v}")).collect::<Vec<_>>().join(",")),
        (IN_PLACE.to_string(), serde_json::to_string(&in_place).expect("serialisable")),
    ];
    let graph_proto = GraphProto {
        name: format!("{}_{suffix}", graph.name),
        node: nodes,
        initializer: constants,
        input: inputs,
        output: outputs,
        value_info: values,
        doc_string: format!("{what} of network {}, compiled by incc", graph.name),
        ..GraphProto::default()
    };
    model(graph_proto, format!("{} ({what})", graph.name), &metadata)
}

/// Softmax cross-entropy of `logits` against `labels` with label smoothing, mean over the batch,
/// as the output `loss`; returns the gradient of the loss with respect to the logits.
fn loss(cx: &mut Lowering, classes: usize, smoothing: f32) -> String {
    let eps = smoothing;
    let depth = cx.int_scalar(classes as i64);
    let on_off = cx.floats("loss/on_off".into(), &[2], vec![eps / classes as f32, 1.0 - eps + eps / classes as f32]);
    let target = cx.op("OneHot", "loss/target".into(), &["labels", &depth, &on_off], vec![int("axis", -1)]);
    let logp = cx.op("LogSoftmax", "loss/logp".into(), &[LOGITS], vec![int("axis", 1)]);
    let prod = cx.op("Mul", "loss/prod".into(), &[&target, &logp], vec![]);
    let class_axis = cx.ints(&[1]);
    let per_example = cx.op("ReduceSum", "loss/per_example".into(), &[&prod, &class_axis], vec![int("keepdims", 0)]);
    let mean = cx.op("ReduceMean", "loss/mean".into(), &[&per_example], vec![int("keepdims", 0)]);
    cx.op("Neg", "loss".into(), &[&mean], vec![]);
    // d loss / d logits = (softmax - target) / N
    let p = cx.op("Exp", "loss/d/p".into(), &[&logp], vec![]);
    let diff = cx.op("Sub", "loss/d/diff".into(), &[&p, &target], vec![]);
    let n_f = cx.batch_size();
    cx.op("Div", "loss/d/logits".into(), &[&diff, &n_f], vec![])
}

/// The inputs of a replica's batch: `images`, `labels` and the ops' step inputs (dropout masks).
fn batch_inputs(graph: &Graph, forward: &Forward, batch: Option<usize>) -> Vec<ValueInfoProto> {
    let mut inputs = vec![value_info(IMAGES, &graph.shape(graph.input).0, batch, DataType::Float)];
    inputs.push(value_info("labels", &[], batch, DataType::Int64));
    for &n in &forward.order {
        for input in graph.node(n).op.rule().step_inputs(graph.shape(n)) {
            inputs.push(value_info(&param_name(&graph.node(n).name, input.suffix), &input.shape, batch, DataType::Float));
        }
    }
    inputs
}

/// The trainable parameters, as inputs. Running statistics are inputs packed (`update.rs`), not
/// one by one.
fn trainable_inputs(graph: &Graph) -> Vec<ValueInfoProto> {
    crate::report::params::param_list(graph)
        .into_iter()
        .filter(|(_, p)| p.role.is_trainable())
        .map(|(name, spec)| plain_value_info(&name, &spec.shape))
        .collect()
}

/// The update's scalars: the learning rate and the step number (Adam).
fn step_scalars(cfg: &TrainConfig) -> Vec<ValueInfoProto> {
    let mut inputs = vec![plain_value_info("learning_rate", &[])];
    if cfg.optimizer.needs_step() {
        inputs.push(plain_value_info("step", &[]));
    }
    inputs
}

/// Every parameter's gradient (before weight decay and clipping) as `<param>__grad`, and each
/// op's per-channel batch statistics as `<node>/<stat>`.
fn debug_outputs(cx: &mut Lowering, graph: &Graph, forward: &Forward, grads: &HashMap<String, String>) -> Vec<ValueInfoProto> {
    let mut outputs = vec![];
    for (name, spec) in forward.order.iter().flat_map(|&n| graph.params(n)).filter(|(_, p)| p.role.is_trainable()) {
        let exported = cx.op("Identity", format!("{name}__grad"), &[&grads[&name]], vec![]);
        outputs.push(plain_value_info(&exported, &spec.shape));
    }
    for &n in &forward.order {
        for (stat, value) in &forward.trained[&n].channel_stats {
            let flat = cx.ints(&[-1]);
            let exported = cx.op("Reshape", format!("{}/{stat}", graph.node(n).name), &[value, &flat], vec![]);
            outputs.push(plain_value_info(&exported, &[graph.shape(n).channels()]));
        }
    }
    outputs
}
