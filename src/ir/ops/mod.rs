//! The op table. Every op is a struct in one of these files that implements `OpRule`: its shape
//! rule, its parameters, its cost, its lowering (inference and training mode, `ir::lower`) and its
//! gradient live together. `Op::rule` is the single place that dispatches on the op kind.

mod conv;
mod dense;
mod elementwise;
mod norm;
mod pool;
mod structural;

pub use conv::{Conv, Padding};
pub use dense::Fc;
pub use elementwise::{Add, Dropout, Relu, Scale, Softmax};
pub use norm::BatchNorm;
pub use pool::{GlobalPool, Pool, PoolKind};
pub use structural::{Concat, Flatten, Input};

use super::lower::{GradAt, Grads, LowerAt, Lowering, Trained};
use super::{ParamSpec, Shape};

/// A shape rule failure; the pass that calls the rule adds the node's location.
#[derive(Debug, Clone)]
pub struct ShapeError {
    pub message: String,
    /// The input slot at fault, when one is (shown as a secondary location).
    pub input: Option<usize>,
}

impl ShapeError {
    pub fn new(message: impl Into<String>) -> ShapeError {
        ShapeError { message: message.into(), input: None }
    }

    pub fn at_input(mut self, slot: usize) -> ShapeError {
        self.input = Some(slot);
        self
    }
}

/// Multiply-adds of one example under the two counting conventions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Conv and fully-connected multiply-adds, bias excluded (incc's default convention).
    pub macs: u64,
    /// What fvcore counts: `macs`, plus 2 per batch-norm output element and 1 per input element
    /// of a global average pool.
    pub fvcore: u64,
    /// Output elements of conv and fully-connected layers (fvcore's activation count).
    pub activations: u64,
}

impl Cost {
    /// A conv or fully-connected layer: its multiply-adds count in both conventions.
    pub fn linear(macs: u64, output: &Shape) -> Cost {
        Cost { macs, fvcore: macs, activations: output.numel() }
    }
}

pub trait OpRule {
    /// The op's short name, as in IR dumps and cost tables.
    fn kind(&self) -> &'static str;
    /// Attributes in the language's own words (`3x3 /2 valid -> 96`).
    fn describe(&self) -> String;
    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError>;
    fn params(&self, _inputs: &[&Shape], _output: &Shape) -> Vec<ParamSpec> {
        vec![]
    }
    fn cost(&self, _inputs: &[&Shape], _output: &Shape) -> Cost {
        Cost::default()
    }
    /// The op in standard ONNX (opset 18), inference semantics.
    fn lower(&self, cx: &mut Lowering, at: &LowerAt);
    /// The op in training mode (batch statistics, dropout masks); the inference form by default.
    /// Returns what the rest of the step needs of it: the values its gradient rule reads, and
    /// the batch values of its running statistics (one for each parameter with a `Running*` role).
    fn lower_train(&self, cx: &mut Lowering, at: &LowerAt) -> Trained {
        self.lower(cx, at);
        Trained::default()
    }
    /// Inputs a training step feeds this op besides its parameters: a dropout's mask.
    fn step_inputs(&self, _output: &Shape) -> Vec<StepInput> {
        vec![]
    }
    /// Reverse mode: the gradients of the inputs and parameters, given the output's (and what
    /// `lower_train` saved, `GradAt::saved`). `None`: the op has no gradient rule (autodiff
    /// reports it at the op's source location).
    fn gradient(&self, _cx: &mut Lowering, _at: &LowerAt, _g: &GradAt) -> Option<Grads> {
        None
    }
    /// Multiply-adds of the backward pass (incc convention), for `incc flops --train`;
    /// `input_grad`: whether the input's gradient is computed.
    fn backward_macs(&self, _inputs: &[&Shape], _output: &Shape, _input_grad: bool) -> u64 {
        0
    }
}

/// A tensor the training step is fed for an op each step, `<node>.<suffix>` [N, shape...]: a
/// dropout mask, each element 0 with probability `drop` and 1 / (1 - drop) otherwise, drawn on the
/// host (every step a new one; a resumed run does not replay old masks).
#[derive(Clone, Debug, PartialEq)]
pub struct StepInput {
    pub suffix: &'static str,
    pub shape: Vec<usize>,
    pub drop: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Input(Input),
    Conv(Conv),
    BatchNorm(BatchNorm),
    Relu(Relu),
    Pool(Pool),
    GlobalPool(GlobalPool),
    Concat(Concat),
    Add(Add),
    Scale(Scale),
    Dropout(Dropout),
    Fc(Fc),
    Flatten(Flatten),
    Softmax(Softmax),
}

impl Op {
    pub fn rule(&self) -> &dyn OpRule {
        match self {
            Op::Input(o) => o,
            Op::Conv(o) => o,
            Op::BatchNorm(o) => o,
            Op::Relu(o) => o,
            Op::Pool(o) => o,
            Op::GlobalPool(o) => o,
            Op::Concat(o) => o,
            Op::Add(o) => o,
            Op::Scale(o) => o,
            Op::Dropout(o) => o,
            Op::Fc(o) => o,
            Op::Flatten(o) => o,
            Op::Softmax(o) => o,
        }
    }
}

/// Checks the number of inputs and that the first is a CxHxW feature map.
pub(crate) fn one_feature_map<'a>(op: &str, inputs: &[&'a Shape]) -> Result<&'a Shape, ShapeError> {
    let x = one_input(op, inputs)?;
    if x.0.len() != 3 {
        return Err(ShapeError::new(format!(
            "{op} needs a CxHxW feature map, but its input is the flat vector {x} (remove the `flatten` or global pool before it)"
        ))
        .at_input(0));
    }
    Ok(x)
}

pub(crate) fn one_input<'a>(op: &str, inputs: &[&'a Shape]) -> Result<&'a Shape, ShapeError> {
    match inputs {
        [x] => Ok(x),
        _ => Err(ShapeError::new(format!("{op} takes one input, got {}", inputs.len()))),
    }
}

pub(crate) fn fmt_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// What the ops' unit tests share: shapes from dimensions, and a check of an op's lowerings.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Cost, OpRule, ShapeError};
    use crate::ir::lower::{GradAt, GradientForms, Grads, LowerAt, Lowering, Trained, IMAGES};
    use crate::ir::{ParamRole, ParamSpec, Shape};
    use std::collections::HashSet;

    pub fn infer(op: &dyn OpRule, inputs: &[&[usize]]) -> Result<Shape, ShapeError> {
        let shapes: Vec<Shape> = inputs.iter().map(|d| Shape(d.to_vec())).collect();
        op.infer(&shapes.iter().collect::<Vec<_>>())
    }

    /// The op's rules applied to inputs of these dimensions.
    pub struct Applied {
        pub output: Vec<usize>,
        /// (suffix, shape, role) of each parameter.
        pub params: Vec<(&'static str, Vec<usize>, ParamRole)>,
        pub cost: Cost,
        /// Backward multiply-adds with and without the input's gradient.
        pub backward_macs: [u64; 2],
    }

    pub fn apply(op: &dyn OpRule, inputs: &[&[usize]]) -> Applied {
        let shapes: Vec<Shape> = inputs.iter().map(|d| Shape(d.to_vec())).collect();
        let shapes: Vec<&Shape> = shapes.iter().collect();
        let output = op.infer(&shapes).expect("a valid case");
        Applied {
            params: op.params(&shapes, &output).into_iter().map(|p: ParamSpec| (p.suffix, p.shape, p.role)).collect(),
            cost: op.cost(&shapes, &output),
            backward_macs: [true, false].map(|input_grad| op.backward_macs(&shapes, &output, input_grad)),
            output: output.0,
        }
    }

    /// Lowers `op` (node `n`, inputs `x0`, `x1`, ...) in inference and in training mode (batch size
    /// fixed and read from `images`), then writes its gradient in both gradient forms, and checks
    /// each: every node reads only values defined before it (graph inputs, the op's parameters and
    /// step inputs, constants, outputs of earlier nodes) and defines values not defined yet; the
    /// forms define the output; the training form gives one batch value per running statistic;
    /// the gradient gives one value per input and per trainable parameter. Returns the gradient
    /// (`None`: the op has no gradient rule).
    pub fn check_lowerings(op: &dyn OpRule, inputs: &[&[usize]]) -> Option<Grads> {
        let shapes: Vec<Shape> = inputs.iter().map(|d| Shape(d.to_vec())).collect();
        let input_shapes: Vec<&Shape> = shapes.iter().collect();
        let output = op.infer(&input_shapes).expect("a valid case");
        let params = op.params(&input_shapes, &output);
        let at = LowerAt {
            name: "n",
            node: "n",
            inputs: (0..inputs.len()).map(|i| format!("x{i}")).collect(),
            // The input op stands for the graph input itself.
            output: if inputs.is_empty() { IMAGES.to_string() } else { "y".to_string() },
            input_shapes,
        };
        let mut graph_values: HashSet<String> = at.inputs.iter().cloned().chain([IMAGES.to_string()]).collect();
        graph_values.extend(params.iter().map(|p| at.param(p.suffix)));

        let mut cx = Lowering::default();
        op.lower(&mut cx, &at);
        check_constants_read(op, &cx);
        let defined = check_defined(&cx, graph_values.clone(), 0);
        assert!(defined.contains(&at.output), "{}: the inference form does not define its output", op.kind());

        graph_values.extend(op.step_inputs(&output).iter().map(|s| at.param(s.suffix)));
        let mut gradient = None;
        for (batch, forms) in
            [(Some(2), GradientForms { flipped_conv_dx: true, dw_by_offset: true }), (None, GradientForms { flipped_conv_dx: false, dw_by_offset: false })]
        {
            let mut cx = Lowering::default();
            cx.batch = batch;
            let trained = op.lower_train(&mut cx, &at);
            let mut defined = check_defined(&cx, graph_values.clone(), 0);
            assert!(defined.contains(&at.output), "{}: the training form does not define its output", op.kind());
            check_trained(op, &trained, &params, &defined);
            let forward_nodes = cx.nodes.len();
            defined.insert("dy".to_string());
            let g = GradAt { dy: "dy".into(), wants: vec![true; inputs.len()], forms, saved: &trained.saved };
            let grads = op.gradient(&mut cx, &at, &g)?;
            let defined = check_defined(&cx, defined, forward_nodes);
            assert_eq!(grads.inputs.len(), inputs.len(), "{}: one gradient per input", op.kind());
            for dx in &grads.inputs {
                assert!(dx.as_ref().is_some_and(|dx| defined.contains(dx)), "{}: input gradient {dx:?} is not defined", op.kind());
            }
            let trainable: HashSet<&str> = params.iter().filter(|p| p.role.is_trainable()).map(|p| p.suffix).collect();
            assert_eq!(grads.params.iter().map(|(s, _)| *s).collect::<HashSet<_>>(), trainable, "{}: one gradient per trainable parameter", op.kind());
            for (suffix, dp) in &grads.params {
                assert!(defined.contains(dp), "{}: gradient of `{suffix}` ({dp}) is not defined", op.kind());
            }
            check_constants_read(op, &cx);
            gradient = Some(grads);
        }
        gradient
    }

    /// Walks the nodes from `first`: each reads defined values and defines new ones.
    fn check_defined(cx: &Lowering, mut defined: HashSet<String>, first: usize) -> HashSet<String> {
        defined.extend(cx.constants.iter().map(|c| c.name.clone()));
        for node in &cx.nodes[first..] {
            for input in &node.inputs {
                assert!(defined.contains(input), "{} `{}` reads `{input}`, which nothing defines before it", node.op_type, node.name);
            }
            for output in &node.outputs {
                assert!(defined.insert(output.clone()), "{} `{}` defines `{output}` a second time", node.op_type, node.name);
            }
        }
        defined
    }

    /// Every constant a lowering made is read by one of its nodes (a constant nothing reads is
    /// left in the model; ONNX Runtime warns about each).
    fn check_constants_read(op: &dyn OpRule, cx: &Lowering) {
        let read: HashSet<&str> = cx.nodes.iter().flat_map(|n| n.inputs.iter().map(String::as_str)).collect();
        let unread: Vec<&str> = cx.constants.iter().map(|c| c.name.as_str()).filter(|c| !read.contains(c)).collect();
        assert!(unread.is_empty(), "{}: constants no node reads: {unread:?}", op.kind());
    }

    fn check_trained(op: &dyn OpRule, trained: &Trained, params: &[crate::ir::ParamSpec], defined: &HashSet<String>) {
        let running: Vec<&str> = params.iter().filter(|p| matches!(p.role, ParamRole::RunningMean | ParamRole::RunningVar)).map(|p| p.suffix).collect();
        let given: Vec<&str> = trained.running.iter().map(|r| r.suffix).collect();
        assert_eq!(given, running, "{}: one batch value per running statistic", op.kind());
        for value in trained.running.iter().map(|r| &r.batch).chain(trained.channel_stats.iter().map(|(_, v)| v)) {
            assert!(defined.contains(value), "{}: `{value}` is not defined", op.kind());
        }
    }
}
