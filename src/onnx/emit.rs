//! IR -> ONNX inference graph: the forward lowering (`forward`, inference mode) plus the model
//! around it: parameters become initializers named by the compiler's hierarchical names, every
//! value gets a value_info with its shape and a symbolic batch `N`.
//!
//! The parameters' values are not copied into the model: their initializers carry names, types and
//! shapes only, and [`encode`] and [`write`] take the values from the weights as they write (a
//! model is never held twice: inception_resnet_v2's 224 MB are written straight from the weights).

use super::convert::protos;
use super::forward::{self, Mode, LOGITS, PROBABILITIES};
use super::proto::tensor_proto::{DataLocation, DataType};
use super::proto::tensor_shape_proto::{dimension, Dimension};
use super::proto::type_proto::{self, Value as TypeValue};
use super::proto::*;
use crate::ir::lower::{Lowering, IMAGES};
use crate::ir::Graph;
use crate::source::SourceMap;
use crate::weights::{bytemuck_f32, Weights};
use prost::Message;
use std::io::Write;
use std::path::Path;

pub const OPSET: i64 = 18;
pub const IR_VERSION: i64 = 8;
/// Protobuf cannot hold a message over 2 GiB: past this, initializers go to a side file.
pub const EXTERNAL_DATA_THRESHOLD: usize = 1 << 30;

pub struct EmitOptions {
    /// A fixed batch size; `None` keeps the symbolic `N`.
    pub batch: Option<usize>,
    /// `key = value` pairs for the model's metadata_props.
    pub metadata: Vec<(String, String)>,
}

/// Builds the model. The parameters' initializers have no values: [`encode`] and [`write`] take
/// them from `weights` (the same weights), inline or, for models too large for one protobuf
/// message, in a side file.
pub fn emit(graph: &Graph, weights: &Weights, sources: &SourceMap, options: &EmitOptions) -> Result<ModelProto, String> {
    emit_with(graph, Some(weights), sources, options)
}

/// With `weights`, parameters are initializers; without, graph inputs.
fn emit_with(graph: &Graph, weights: Option<&Weights>, sources: &SourceMap, options: &EmitOptions) -> Result<ModelProto, String> {
    let batch = options.batch;
    let value_info = |name: &str, dims: &[usize]| value_info(name, dims, batch, DataType::Float);
    let mut cx = Lowering::default();
    let forward = forward::lower(graph, Mode::Inference, &mut cx)?;

    let mut initializers = vec![];
    let mut param_inputs = vec![];
    for (name, spec) in forward.order.iter().flat_map(|&n| graph.params(n)) {
        let Some(weights) = weights else {
            param_inputs.push(plain_value_info(&name, &spec.shape));
            continue;
        };
        let tensor = weights.tensors.get(&name).ok_or_else(|| format!("no value for parameter `{name}`"))?;
        if tensor.shape != spec.shape {
            return Err(format!("parameter `{name}` has shape {:?}, the graph needs {:?}", tensor.shape, spec.shape));
        }
        initializers.push(TensorProto {
            name,
            dims: tensor.shape.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            ..TensorProto::default()
        });
    }
    let values = forward.values.iter().chain(&cx.intermediates).map(|(name, dims)| value_info(name, dims)).collect();
    let mut outputs = vec![value_info(LOGITS, &graph.shape(forward.outputs.logits).0)];
    if let Some(p) = forward.outputs.probabilities {
        outputs.push(value_info(PROBABILITIES, &graph.shape(p).0));
    }
    let (nodes, constants) = protos(cx, sources);
    initializers.extend(constants);
    let graph_proto = GraphProto {
        name: graph.name.clone(),
        node: nodes,
        initializer: initializers,
        input: std::iter::once(value_info(IMAGES, &graph.shape(graph.input).0)).chain(param_inputs).collect(),
        output: outputs,
        value_info: values,
        doc_string: format!("network {} compiled by incc", graph.name),
        ..GraphProto::default()
    };
    Ok(model(graph_proto, format!("{} (inference graph)", graph.name), &options.metadata))
}

/// A model around `graph`: incc as the producer, opset 18 / IR 8, `metadata` as metadata_props.
pub fn model(graph: GraphProto, doc_string: String, metadata: &[(String, String)]) -> ModelProto {
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "incc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string,
        graph: Some(graph),
        metadata_props: metadata.iter().map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() }).collect(),
        ..ModelProto::default()
    }
}

/// The evaluation graph of a training setup: the inference graph with every parameter and
/// running statistic as a graph input of the same name (the training step's names), so that one
/// checkpoint, fed by name, serves both; no weights are stored in it.
pub fn emit_eval(graph: &Graph, sources: &SourceMap, batch: Option<usize>) -> Result<ModelProto, String> {
    let options = EmitOptions { batch, metadata: vec![("incc.graph".into(), "evaluation".into())] };
    emit_with(graph, None, sources, &options)
}

/// A tensor's type: `batch` (a fixed size, or the symbolic `N` when `None`) then `dims`.
pub fn value_info(name: &str, dims: &[usize], batch: Option<usize>, elem: DataType) -> ValueInfoProto {
    let first = match batch {
        Some(n) => dimension::Value::DimValue(n as i64),
        None => dimension::Value::DimParam("N".into()),
    };
    let dims = std::iter::once(first).chain(dims.iter().map(|&d| dimension::Value::DimValue(d as i64))).collect();
    typed(name, dims, elem)
}

/// A tensor's type with exactly `dims` (no batch): parameters, optimizer state, scalars.
pub fn plain_value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    typed(name, dims.iter().map(|&d| dimension::Value::DimValue(d as i64)).collect(), DataType::Float)
}

fn typed(name: &str, dims: Vec<dimension::Value>, elem: DataType) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim: dims.into_iter().map(|v| Dimension { value: Some(v), ..Dimension::default() }).collect() }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

/// The model's bytes: `model` with every parameter's values, from `weights`, in its initializer
/// (see [`emit`]); the same bytes as prost's encoding of the filled-in model.
///
/// # Errors
/// An initializer without values and no tensor for it in `weights`.
pub fn encode(model: &ModelProto, weights: Option<&Weights>) -> std::io::Result<Vec<u8>> {
    let plan = Plan::new(model, weights, None)?;
    let mut bytes = Vec::with_capacity(plan.model_len);
    plan.write_model(&mut bytes)?;
    Ok(bytes)
}

/// Writes the model atomically, its parameters' values taken from `weights` (see [`emit`]) and
/// streamed to the file, never copied. Past `threshold` bytes of values, they go to `<file>.data`
/// beside it (ONNX external data) and the model refers to them by offset.
///
/// # Errors
/// As [`encode`], and the file system's.
pub fn write(model: &ModelProto, weights: Option<&Weights>, path: &Path, threshold: usize) -> std::io::Result<()> {
    let inline = Plan::new(model, weights, None)?;
    if inline.data_bytes <= threshold {
        crate::fsutil::write_atomic_with(path, |w| inline.write_model(w))?;
        return remove_side_file(path);
    }
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into());
    let data_name = format!("{file_name}.data");
    let external = Plan::new(model, weights, Some(&data_name))?;
    crate::fsutil::write_atomic_with(&path.with_file_name(&data_name), |w| external.write_side_file(w))?;
    crate::fsutil::write_atomic_with(path, |w| external.write_model(w))
}

/// How a model is written without a second copy of its values: the model's and the graph's own
/// fields encoded apart from the initializers, and each initializer as its fields plus a
/// reference to its bytes. Prost writes fields in number order, so the pieces are joined at the
/// initializers' field (5 of GraphProto) and the graph's (7 of ModelProto).
struct Plan<'a> {
    model: Vec<u8>,
    graph: Vec<u8>,
    tensors: Vec<PlannedTensor<'a>>,
    /// Bytes of values in all (inline or in the side file).
    data_bytes: usize,
    graph_len: usize,
    model_len: usize,
}

struct PlannedTensor<'a> {
    /// The TensorProto's fields without its data.
    fields: Vec<u8>,
    /// Its values: inline as `raw_data`, or at an aligned offset of the side file.
    data: &'a [u8],
    external: bool,
    len: usize,
}

const GRAPH_FIELD: u32 = 7;
const INITIALIZER_FIELD: u32 = 5;
const RAW_DATA_FIELD: u32 = 9;
/// Offsets in the side file are multiples of this, so that runtimes can map it directly.
const SIDE_FILE_ALIGNMENT: usize = 4096;

impl<'a> Plan<'a> {
    /// With `side_file`, every initializer's raw bytes go there; otherwise inline.
    fn new(model: &'a ModelProto, weights: Option<&'a Weights>, side_file: Option<&str>) -> std::io::Result<Plan<'a>> {
        let ModelProto {
            ir_version,
            opset_import,
            producer_name,
            producer_version,
            domain,
            model_version,
            doc_string,
            graph,
            metadata_props,
            training_info,
            functions,
            configuration,
        } = model;
        let model_fields = ModelProto {
            ir_version: *ir_version,
            opset_import: opset_import.clone(),
            producer_name: producer_name.clone(),
            producer_version: producer_version.clone(),
            domain: domain.clone(),
            model_version: *model_version,
            doc_string: doc_string.clone(),
            graph: None,
            metadata_props: metadata_props.clone(),
            training_info: training_info.clone(),
            functions: functions.clone(),
            configuration: configuration.clone(),
        };
        let graph = graph.as_ref().ok_or_else(|| std::io::Error::other("the model has no graph"))?;
        let GraphProto { node, name, initializer, sparse_initializer, doc_string, input, output, value_info, quantization_annotation, metadata_props } = graph;
        let graph_fields = GraphProto {
            node: node.clone(),
            name: name.clone(),
            initializer: vec![],
            sparse_initializer: sparse_initializer.clone(),
            doc_string: doc_string.clone(),
            input: input.clone(),
            output: output.clone(),
            value_info: value_info.clone(),
            quantization_annotation: quantization_annotation.clone(),
            metadata_props: metadata_props.clone(),
        };
        let mut tensors = Vec::with_capacity(initializer.len());
        let mut offset = 0usize;
        for t in initializer {
            let data = values(t, weights)?;
            let mut fields = TensorProto { raw_data: vec![], ..t.clone() };
            let external = side_file.is_some() && !data.is_empty();
            if let (Some(location), true) = (side_file, external) {
                offset = offset.next_multiple_of(SIDE_FILE_ALIGNMENT);
                fields.external_data = vec![
                    StringStringEntryProto { key: "location".into(), value: location.to_string() },
                    StringStringEntryProto { key: "offset".into(), value: offset.to_string() },
                    StringStringEntryProto { key: "length".into(), value: data.len().to_string() },
                ];
                fields.data_location = DataLocation::External as i32;
                offset += data.len();
            }
            let fields = fields.encode_to_vec();
            let len = fields.len() + if external || data.is_empty() { 0 } else { field_len(RAW_DATA_FIELD, data.len()) };
            tensors.push(PlannedTensor { fields, data, external, len });
        }
        let graph = graph_fields.encode_to_vec();
        let model = model_fields.encode_to_vec();
        let graph_len = graph.len() + tensors.iter().map(|t| field_len(INITIALIZER_FIELD, t.len)).sum::<usize>();
        let model_len = model.len() + field_len(GRAPH_FIELD, graph_len);
        let data_bytes = tensors.iter().map(|t| t.data.len()).sum();
        Ok(Plan { model, graph, tensors, data_bytes, graph_len, model_len })
    }

    fn write_model(&self, w: &mut impl Write) -> std::io::Result<()> {
        let (model_head, model_tail) = self.model.split_at(fields_up_to(&self.model, GRAPH_FIELD));
        w.write_all(model_head)?;
        write_key_len(w, GRAPH_FIELD, self.graph_len)?;
        let (graph_head, graph_tail) = self.graph.split_at(fields_up_to(&self.graph, INITIALIZER_FIELD));
        w.write_all(graph_head)?;
        for t in &self.tensors {
            write_key_len(w, INITIALIZER_FIELD, t.len)?;
            let (head, tail) = t.fields.split_at(fields_up_to(&t.fields, RAW_DATA_FIELD));
            w.write_all(head)?;
            if !t.external && !t.data.is_empty() {
                write_key_len(w, RAW_DATA_FIELD, t.data.len())?;
                w.write_all(t.data)?;
            }
            w.write_all(tail)?;
        }
        w.write_all(graph_tail)?;
        w.write_all(model_tail)
    }

    /// The side file: every external initializer's bytes at the offset its fields name.
    fn write_side_file(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut offset = 0usize;
        for t in self.tensors.iter().filter(|t| t.external) {
            let pad = offset.next_multiple_of(SIDE_FILE_ALIGNMENT) - offset;
            w.write_all(&vec![0u8; pad])?;
            w.write_all(t.data)?;
            offset += pad + t.data.len();
        }
        Ok(())
    }
}

/// An initializer's raw bytes: its `raw_data`, or for a parameter [`emit`] left without values,
/// its tensor in `weights`. Constants held as typed lists (`float_data`, `int64_data`) have none.
fn values<'a>(t: &'a TensorProto, weights: Option<&'a Weights>) -> std::io::Result<&'a [u8]> {
    if !t.raw_data.is_empty() || has_typed_values(t) {
        return Ok(&t.raw_data);
    }
    let elements: i64 = t.dims.iter().product();
    match weights.and_then(|w| w.tensors.get(&t.name)) {
        Some(tensor) if tensor.data.len() as i64 == elements => Ok(bytemuck_f32(&tensor.data)),
        Some(tensor) => Err(std::io::Error::other(format!("parameter `{}` has {} values, its initializer needs {elements}", t.name, tensor.data.len()))),
        None if elements == 0 => Ok(&t.raw_data),
        None => Err(std::io::Error::other(format!("initializer `{}` has no values and the weights have no tensor of that name", t.name))),
    }
}

fn has_typed_values(t: &TensorProto) -> bool {
    !(t.float_data.is_empty()
        && t.int32_data.is_empty()
        && t.string_data.is_empty()
        && t.int64_data.is_empty()
        && t.double_data.is_empty()
        && t.uint64_data.is_empty())
}

/// Bytes of a length-delimited field with `len` bytes of payload.
fn field_len(field: u32, len: usize) -> usize {
    prost::encoding::key_len(field) + prost::encoding::encoded_len_varint(len as u64) + len
}

fn write_key_len(w: &mut impl Write, field: u32, len: usize) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(16);
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut head);
    prost::encoding::encode_varint(len as u64, &mut head);
    w.write_all(&head)
}

/// Where the fields numbered above `field` begin in an encoded message (prost writes fields in
/// number order).
fn fields_up_to(mut message: &[u8], field: u32) -> usize {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let total = message.len();
    while !message.is_empty() {
        let here = total - message.len();
        let (number, wire) = decode_key(&mut message).expect("prost wrote this message");
        if number > field {
            return here;
        }
        let skip = match wire {
            WireType::Varint => {
                decode_varint(&mut message).expect("prost wrote this message");
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => decode_varint(&mut message).expect("prost wrote this message") as usize,
            WireType::StartGroup | WireType::EndGroup => unreachable!("ONNX has no groups"),
        };
        message = &message[skip..];
    }
    total
}

/// Removes `<file>.data` beside a model written without one: the values of a larger model written
/// there before, which belong to no file any more.
fn remove_side_file(path: &Path) -> std::io::Result<()> {
    let Some(name) = path.file_name() else { return Ok(()) };
    let side = path.with_file_name(format!("{}.data", name.to_string_lossy()));
    match std::fs::symlink_metadata(&side) {
        Ok(meta) if meta.is_file() => std::fs::remove_file(side),
        _ => Ok(()),
    }
}
