//! What an op's lowering writes into: nodes in ONNX's vocabulary (op types, attributes, opset 18
//! semantics), constants and the shapes of intermediate values, with no protobuf types: the ONNX
//! back end (`onnx::convert`) turns them into `NodeProto`s and `TensorProto`s. Each op's
//! `OpRule::lower`, `lower_train` and `gradient` (in `ir/ops/`) state their own ONNX form with
//! these helpers; values are named by strings, and a value one rule makes for another is handed
//! over as a returned handle (`Trained`), never re-derived from a naming convention.

use super::Shape;
use crate::source::Span;
use std::any::Any;
use std::collections::HashSet;

/// The graph input holding the images [N, C, H, W]: the forward lowering names the IR's input so,
/// and `Lowering::batch_size` reads the batch size from its shape.
pub const IMAGES: &str = "images";

/// One node: an ONNX op with its inputs, outputs and attributes, and the source location it is
/// stamped with (its doc_string).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op_type: &'static str,
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<Attribute>,
    pub span: Option<Span>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub name: &'static str,
    pub value: AttributeValue,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    String(String),
}

/// A constant tensor (an initializer that is not a parameter).
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    pub name: String,
    pub dims: Vec<usize>,
    pub values: ConstantValues,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConstantValues {
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

/// One IR node being lowered: the names of what it writes, its parameters, the values it reads
/// and the value it must define.
pub struct LowerAt<'a> {
    /// The name of its ONNX nodes and the prefix of its private values: the IR node's name, or
    /// another when the node is lowered a second time (a recomputed block, `train/recompute.rs`).
    pub name: &'a str,
    /// The IR node's name, which its parameters and step inputs are named after.
    pub node: &'a str,
    pub inputs: Vec<String>,
    pub output: String,
    pub input_shapes: Vec<&'a Shape>,
}

impl LowerAt<'_> {
    /// The initializer or graph input holding one of this node's parameters or step inputs
    /// (`features.0.conv.weight`, `ir::param_name`).
    pub fn param(&self, suffix: &str) -> String {
        super::param_name(self.node, suffix)
    }

    /// The inputs of a linear op: its input, `weight`, and `bias` if it has one.
    pub fn linear_inputs(&self, bias: bool) -> Vec<String> {
        let mut inputs = vec![self.inputs[0].clone(), self.param("weight")];
        if bias {
            inputs.push(self.param("bias"));
        }
        inputs
    }

    /// A value private to this node's lowering (`global_avgpool/pooled`).
    pub fn internal(&self, what: &str) -> String {
        format!("{}/{what}", self.name)
    }
}

#[derive(Default)]
pub struct Lowering {
    pub nodes: Vec<Node>,
    /// Non-trainable constants an op needs (a residual scale, reduction axes); initializers.
    pub constants: Vec<Constant>,
    constant_names: HashSet<String>,
    /// Shapes (batch excluded) of values made inside a lowering, for value_info.
    pub intermediates: Vec<(String, Vec<usize>)>,
    /// The batch size, when the graph is compiled for one (a training step's statistics then
    /// divide by constants).
    pub batch: Option<usize>,
    /// The batch size as a float scalar, once computed from `images` (dynamic batch).
    batch_value: Option<String>,
    /// The source location new nodes are stamped with (`located`).
    span: Option<Span>,
}

/// What an op's training-mode lowering leaves for the rest of the step, as handles to the values
/// it made: the step reads nothing of an op's by a name it would have to know.
#[derive(Default)]
pub struct Trained {
    /// What its gradient rule reads (`GradAt::saved`).
    pub saved: Saved,
    /// Each running statistic's batch value (a parameter with a `Running*` role), which the
    /// step's update (`train/update.rs`) moves it towards.
    pub running: Vec<RunningStat>,
    /// Per-channel batch statistics ([1, C, 1, 1]) that a debugging step exports as
    /// `<node>/<name>` [C].
    pub channel_stats: Vec<(&'static str, String)>,
}

/// running' = (1 - momentum) * running + momentum * batch, for the parameter `<node>.<suffix>`.
pub struct RunningStat {
    pub suffix: &'static str,
    pub batch: String,
    pub momentum: f32,
}

/// Values a training lowering keeps for its own op's gradient rule, in a type of that op's choosing
/// (batch norm's centred input and scale, max pooling's argmax indices). Type-erased so that
/// `OpRule` stays object-safe; both ends are in the op's one file.
#[derive(Default)]
pub struct Saved(Option<Box<dyn Any>>);

impl Saved {
    pub fn new<T: Any>(values: T) -> Saved {
        Saved(Some(Box::new(values)))
    }

    /// What the op's `lower_train` saved. Reverse mode hands each node what its own lowering
    /// returned, so a mismatch is a bug in that op's file (its gradient check fails on it).
    pub fn get<T: Any>(&self) -> &T {
        self.0.as_ref().and_then(|b| b.downcast_ref()).unwrap_or_else(|| panic!("the training lowering saved no `{}`", std::any::type_name::<T>()))
    }
}

/// What reverse mode tells an op's gradient rule: the gradient of the loss with respect to its
/// output, which inputs need one (the image input does not), and what its training lowering saved.
pub struct GradAt<'a> {
    pub dy: String,
    pub wants: Vec<bool>,
    /// Which of equivalent forms to write (the step's device decides: `train::Target`).
    pub forms: GradientForms,
    pub saved: &'a Saved,
}

/// Equivalent gradient forms that differ in speed by device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GradientForms {
    /// A stride-1 conv's input gradient as a conv with flipped weights (ONNX Runtime's CPU Conv is
    /// several times faster than its ConvTranspose) rather than a transposed conv.
    pub flipped_conv_dx: bool,
    /// A conv's weight gradient as products per kernel offset once a window holds more than ~32
    /// values, rather than one dilated conv (cuDNN's fast form).
    pub dw_by_offset: bool,
}

/// What a gradient rule writes: a gradient per input (None where not wanted) and one per
/// trainable parameter, by suffix (`weight`, `bias`).
#[derive(Default)]
pub struct Grads {
    pub inputs: Vec<Option<String>>,
    pub params: Vec<(&'static str, String)>,
}

impl Lowering {
    pub fn node(&mut self, op_type: &'static str, name: impl Into<String>, inputs: &[&str], outputs: &[&str], attributes: Vec<Attribute>) {
        self.nodes.push(Node {
            op_type,
            name: name.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attributes,
            span: self.span,
        });
    }

    /// A one-node op with one output named `output`; returns the output's name.
    pub fn op(&mut self, op_type: &'static str, output: String, inputs: &[&str], attributes: Vec<Attribute>) -> String {
        self.node(op_type, output.clone(), inputs, &[&output], attributes);
        output
    }

    /// Runs `write` with every node it adds stamped with `span`: the IR node it lowers.
    pub fn located<R>(&mut self, span: Span, write: impl FnOnce(&mut Lowering) -> R) -> R {
        let outer = self.span.replace(span);
        let result = write(self);
        self.span = outer;
        result
    }

    /// A float scalar constant (rank 0), returned by name.
    pub fn scalar(&mut self, name: String, value: f32) -> String {
        self.floats(name, &[], vec![value])
    }

    /// A float constant of any shape; one with a name already defined is not defined again.
    pub fn floats(&mut self, name: String, dims: &[usize], values: Vec<f32>) -> String {
        self.constant(name, dims, ConstantValues::Float(values))
    }

    /// A 1-D int64 constant (axes, shapes, split sizes), shared by name: `ints(&[0, 2, 3])` is
    /// defined once as `const/ints/0_2_3`.
    pub fn ints(&mut self, values: &[i64]) -> String {
        let text: Vec<String> = values.iter().map(|v| v.to_string().replace('-', "m")).collect();
        self.constant(format!("const/ints/{}", text.join("_")), &[values.len()], ConstantValues::Int64(values.to_vec()))
    }

    /// An int64 scalar constant (rank 0), `const/int/<value>`: where the spec allows a scalar or a
    /// one-element tensor (`OneHot`'s depth), the scalar is what every ONNX implementation reads
    /// (the ONNX reference evaluator rejects the other).
    pub fn int_scalar(&mut self, value: i64) -> String {
        self.constant(format!("const/int/{}", value.to_string().replace('-', "m")), &[], ConstantValues::Int64(vec![value]))
    }

    fn constant(&mut self, name: String, dims: &[usize], values: ConstantValues) -> String {
        if self.constant_names.insert(name.clone()) {
            self.constants.push(Constant { name: name.clone(), dims: dims.to_vec(), values });
        }
        name
    }

    /// The batch size as a float scalar: a constant, or read once from the shape of `images`.
    pub fn batch_size(&mut self) -> String {
        if let Some(n) = self.batch {
            return self.scalar(format!("const/batch/{n}"), n as f32);
        }
        if let Some(name) = &self.batch_value {
            return name.clone();
        }
        let shape = self.op("Shape", "batch/shape".into(), &[IMAGES], vec![int("start", 0), int("end", 1)]);
        let n = self.op("Cast", "batch/n".into(), &[&shape], vec![int("to", ONNX_FLOAT)]);
        // [1] -> a scalar, so that it broadcasts like the constant.
        let scalar_shape = self.ints(&[]);
        let n = self.op("Reshape", "batch/size".into(), &[&n, &scalar_shape], vec![]);
        self.batch_value = Some(n.clone());
        n
    }
}

/// ONNX's element type code of float32 (`TensorProto.DataType.FLOAT`), for `Cast`.
pub const ONNX_FLOAT: i64 = 1;

fn attribute(name: &'static str, value: AttributeValue) -> Attribute {
    Attribute { name, value }
}

pub fn ints(name: &'static str, values: &[usize]) -> Attribute {
    attribute(name, AttributeValue::Ints(values.iter().map(|&v| v as i64).collect()))
}

pub fn int(name: &'static str, value: i64) -> Attribute {
    attribute(name, AttributeValue::Int(value))
}

pub fn string(name: &'static str, value: &str) -> Attribute {
    attribute(name, AttributeValue::String(value.to_string()))
}

pub fn float(name: &'static str, value: f32) -> Attribute {
    attribute(name, AttributeValue::Float(value))
}

/// kernel_shape, strides and pads of a window op (pads in ONNX order: top, left, bottom, right).
pub fn window(kernel: [usize; 2], stride: [usize; 2], pads: [usize; 4]) -> Vec<Attribute> {
    vec![ints("kernel_shape", &kernel), ints("strides", &stride), ints("pads", &pads)]
}
