//! `ir::lower`'s nodes and constants as protobuf: `NodeProto`s with their source location as
//! doc_string, `TensorProto` initializers.

use super::proto::attribute_proto::AttributeType;
use super::proto::tensor_proto::DataType;
use super::proto::{AttributeProto, NodeProto, TensorProto};
use crate::ir::lower::{Attribute, AttributeValue, Constant, ConstantValues, Lowering, Node};
use crate::source::SourceMap;

/// The nodes and constants a lowering wrote, in order.
pub fn protos(cx: Lowering, sources: &SourceMap) -> (Vec<NodeProto>, Vec<TensorProto>) {
    (cx.nodes.into_iter().map(|n| node(n, sources)).collect(), cx.constants.into_iter().map(constant).collect())
}

fn node(n: Node, sources: &SourceMap) -> NodeProto {
    NodeProto {
        op_type: n.op_type.to_string(),
        name: n.name,
        input: n.inputs,
        output: n.outputs,
        attribute: n.attributes.into_iter().map(attribute).collect(),
        doc_string: n.span.map(|s| sources.location(s)).unwrap_or_default(),
        ..NodeProto::default()
    }
}

fn attribute(a: Attribute) -> AttributeProto {
    let name = a.name.to_string();
    match a.value {
        AttributeValue::Int(i) => AttributeProto { name, r#type: AttributeType::Int as i32, i, ..AttributeProto::default() },
        AttributeValue::Ints(ints) => AttributeProto { name, r#type: AttributeType::Ints as i32, ints, ..AttributeProto::default() },
        AttributeValue::Float(f) => AttributeProto { name, r#type: AttributeType::Float as i32, f, ..AttributeProto::default() },
        AttributeValue::String(s) => AttributeProto { name, r#type: AttributeType::String as i32, s: s.into_bytes(), ..AttributeProto::default() },
    }
}

fn constant(c: Constant) -> TensorProto {
    let dims = c.dims.iter().map(|&d| d as i64).collect();
    match c.values {
        ConstantValues::Float(float_data) => TensorProto { name: c.name, dims, data_type: DataType::Float as i32, float_data, ..TensorProto::default() },
        ConstantValues::Int64(int64_data) => TensorProto { name: c.name, dims, data_type: DataType::Int64 as i32, int64_data, ..TensorProto::default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_irs_float_type_code_is_onnxs() {
        assert_eq!(crate::ir::lower::ONNX_FLOAT, DataType::Float as i64);
    }
}
