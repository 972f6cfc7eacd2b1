//! IR -> ONNX inference graph: the forward lowering (`forward`, inference mode) plus the model
//! around it: parameters become initializers named by the compiler's hierarchical names, every
//! value gets a value_info with its shape and a symbolic batch `N`.

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

/// Builds the model. Initializers hold their data inline; `write` moves them to a side file when
/// the model is too large for one protobuf message.
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
            raw_data: bytemuck_f32(&tensor.data).to_vec(),
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

/// Writes the model atomically. Past `threshold` bytes of initializers, their data goes to
/// `<file>.data` beside it (ONNX external data) and the model refers to it by offset.
pub fn write(model: &ModelProto, path: &Path, threshold: usize) -> std::io::Result<()> {
    let graph = model.graph.as_ref().expect("an emitted model has a graph");
    let data_bytes: usize = graph.initializer.iter().map(|t| t.raw_data.len()).sum();
    if data_bytes <= threshold {
        crate::fsutil::write_atomic(path, &model.encode_to_vec())?;
        return remove_side_file(path);
    }
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into());
    let data_name = format!("{file_name}.data");
    let data_path = path.with_file_name(&data_name);
    let mut external = model.clone();
    let tensors = &mut external.graph.as_mut().expect("graph").initializer;
    crate::fsutil::write_atomic_with(&data_path, |w| {
        use std::io::Write;
        let mut offset = 0usize;
        for t in tensors.iter_mut().filter(|t| !t.raw_data.is_empty()) {
            // Aligned offsets let runtimes map the file directly.
            let pad = offset.next_multiple_of(4096) - offset;
            w.write_all(&vec![0u8; pad])?;
            offset += pad;
            w.write_all(&t.raw_data)?;
            t.external_data = vec![
                StringStringEntryProto { key: "location".into(), value: data_name.clone() },
                StringStringEntryProto { key: "offset".into(), value: offset.to_string() },
                StringStringEntryProto { key: "length".into(), value: t.raw_data.len().to_string() },
            ];
            t.data_location = DataLocation::External as i32;
            offset += t.raw_data.len();
            t.raw_data = Vec::new();
        }
        Ok(())
    })?;
    crate::fsutil::write_atomic(path, &external.encode_to_vec())
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
