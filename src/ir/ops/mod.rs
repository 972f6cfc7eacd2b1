//! The op table. Every op is a struct in one of these files that implements `OpRule`: its shape
//! rule, its parameters and its cost live together (and later its ONNX lowering and gradient).
//! `Op::rule` is the single place that dispatches on the op kind.

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

use super::{ParamSpec, Shape};
use crate::onnx::lower::{GradAt, Grads, LowerAt, Lowering};

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
    fn lower_train(&self, cx: &mut Lowering, at: &LowerAt) {
        self.lower(cx, at);
    }
    /// Inputs a training step feeds this op besides its parameters, as (suffix, per-example
    /// shape): a dropout's mask.
    fn step_inputs(&self, _output: &Shape) -> Vec<(&'static str, Vec<usize>)> {
        vec![]
    }
    /// The momentum of the op's running statistics (parameters with a `Running*` role): the
    /// training step moves each towards the batch value its `lower_train` defines as
    /// `<param>/batch`.
    fn running_momentum(&self) -> Option<f32> {
        None
    }
    /// Reverse mode: the gradients of the inputs and parameters, given the output's. `None`: the
    /// op has no gradient rule (autodiff reports it at the op's source location).
    fn gradient(&self, _cx: &mut Lowering, _at: &LowerAt, _g: &GradAt) -> Option<Grads> {
        None
    }
    /// Multiply-adds of the backward pass (incc convention), for `incc flops --train`;
    /// `input_grad`: whether the input's gradient is computed.
    fn backward_macs(&self, _inputs: &[&Shape], _output: &Shape, _input_grad: bool) -> u64 {
        0
    }
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
