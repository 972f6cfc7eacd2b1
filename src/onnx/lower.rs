//! What an op's lowering writes into: ONNX nodes, constants and the shapes of intermediate values.
//! Each op's `OpRule::lower` (in `ir/ops/`) states its own ONNX form with these helpers.

use super::proto::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};
use crate::ir::Shape;
use std::collections::HashSet;

/// One IR node being lowered: its name, the ONNX values it reads and the value it must define.
pub struct LowerAt<'a> {
    pub name: &'a str,
    pub inputs: Vec<String>,
    pub output: String,
    pub input_shapes: Vec<&'a Shape>,
}

impl LowerAt<'_> {
    /// The initializer holding one of this node's parameters (`features.0.conv.weight`).
    pub fn param(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.name)
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
    pub nodes: Vec<NodeProto>,
    /// Non-trainable constants an op needs (a residual scale, reduction axes); initializers.
    pub constants: Vec<TensorProto>,
    constant_names: HashSet<String>,
    /// Shapes (batch excluded) of values made inside a lowering, for value_info.
    pub intermediates: Vec<(String, Vec<usize>)>,
    /// The batch size, when the graph is compiled for one (a training step's statistics then
    /// divide by constants).
    pub batch: Option<usize>,
    /// The batch size as a float scalar, once computed from `images` (dynamic batch).
    batch_value: Option<String>,
}

/// What reverse mode tells an op's gradient rule: the gradient of the loss with respect to its
/// output, and which inputs need one (the image input does not).
pub struct GradAt {
    pub dy: String,
    pub wants: Vec<bool>,
    /// The device the step is compiled for: gradient rules with several forms pick the fast one.
    pub target: Target,
}

/// What a training step is compiled for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// ONNX Runtime's CPU kernels: im2col + MatMul weight gradients beat a strided conv.
    #[default]
    Cpu,
    /// cuDNN: a weight gradient as one (dilated) convolution, no im2col tensors in memory.
    Gpu,
}

/// What a gradient rule writes: a gradient per input (None where not wanted) and one per
/// trainable parameter, by suffix (`weight`, `bias`).
#[derive(Default)]
pub struct Grads {
    pub inputs: Vec<Option<String>>,
    pub params: Vec<(&'static str, String)>,
}

impl Lowering {
    pub fn node(&mut self, op_type: &str, name: impl Into<String>, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            op_type: op_type.to_string(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attributes,
            ..NodeProto::default()
        });
    }

    /// A float scalar constant (rank 0), returned by name.
    pub fn scalar(&mut self, name: String, value: f32) -> String {
        self.floats(name, &[], vec![value])
    }

    /// A float constant of any shape; one with a name already defined is not defined again.
    pub fn floats(&mut self, name: String, dims: &[usize], values: Vec<f32>) -> String {
        if self.constant_names.insert(name.clone()) {
            self.constants.push(TensorProto {
                name: name.clone(),
                dims: dims.iter().map(|&d| d as i64).collect(),
                data_type: DataType::Float as i32,
                float_data: values,
                ..TensorProto::default()
            });
        }
        name
    }

    /// A 1-D int64 constant (axes, shapes, split sizes), shared by name: `ints(&[0, 2, 3])` is
    /// defined once as `const/ints/0_2_3`.
    pub fn ints(&mut self, values: &[i64]) -> String {
        let text: Vec<String> = values.iter().map(|v| v.to_string().replace('-', "m")).collect();
        self.int64_constant(format!("const/ints/{}", text.join("_")), &[values.len() as i64], values)
    }

    /// An int64 scalar constant (rank 0), `const/int/<value>`: where the spec allows a scalar or a
    /// one-element tensor (`OneHot`'s depth), the scalar is what every ONNX implementation reads
    /// (the ONNX reference evaluator rejects the other).
    pub fn int_scalar(&mut self, value: i64) -> String {
        self.int64_constant(format!("const/int/{}", value.to_string().replace('-', "m")), &[], &[value])
    }

    fn int64_constant(&mut self, name: String, dims: &[i64], values: &[i64]) -> String {
        if self.constant_names.insert(name.clone()) {
            self.constants.push(TensorProto {
                name: name.clone(),
                dims: dims.to_vec(),
                data_type: DataType::Int64 as i32,
                int64_data: values.to_vec(),
                ..TensorProto::default()
            });
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
        let shape = self.op("Shape", "batch/shape".into(), &["images"], vec![int("start", 0), int("end", 1)]);
        let n = self.op("Cast", "batch/n".into(), &[&shape], vec![int("to", DataType::Float as i64)]);
        // [1] -> a scalar, so that it broadcasts like the constant.
        let scalar_shape = self.ints(&[]);
        let n = self.op("Reshape", "batch/size".into(), &[&n, &scalar_shape], vec![]);
        self.batch_value = Some(n.clone());
        n
    }

    /// A one-node op with one output named `output`; returns the output's name.
    pub fn op(&mut self, op_type: &str, output: String, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        self.node(op_type, output.clone(), inputs, &[&output], attributes);
        output
    }
}

pub fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: values.iter().map(|&v| v as i64).collect(), ..AttributeProto::default() }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..AttributeProto::default() }
}

pub fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::String as i32, s: value.as_bytes().to_vec(), ..AttributeProto::default() }
}

pub fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: value, ..AttributeProto::default() }
}

/// kernel_shape, strides and pads of a window op (pads in ONNX order: top, left, bottom, right).
pub fn window(kernel: [usize; 2], stride: [usize; 2], pads: [usize; 4]) -> Vec<AttributeProto> {
    vec![ints("kernel_shape", &kernel), ints("strides", &stride), ints("pads", &pads)]
}
