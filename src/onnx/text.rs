//! A readable text form of an ONNX model, after the ONNX textual syntax, with weights elided: what
//! the snapshots of emitted graphs store. It renders the decoded model, so it shows what was written.

use super::proto::attribute_proto::AttributeType;
use super::proto::tensor_proto::DataType;
use super::proto::tensor_shape_proto::dimension::Value as Dim;
use super::proto::type_proto::Value as TypeValue;
use super::proto::*;
use std::collections::HashMap;
use std::fmt::Write;

fn type_name(elem_type: i32) -> String {
    DataType::try_from(elem_type).map_or_else(|_| format!("type{elem_type}"), |t| t.as_str_name().to_lowercase())
}

fn value_type(v: &ValueInfoProto) -> String {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => {
            let dims: Vec<String> = t
                .shape
                .iter()
                .flat_map(|s| &s.dim)
                .map(|d| match &d.value {
                    Some(Dim::DimValue(v)) => v.to_string(),
                    Some(Dim::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect();
            format!("{}[{}]", type_name(t.elem_type), dims.join(","))
        }
        _ => "?".into(),
    }
}

fn attribute(a: &AttributeProto) -> String {
    let value = match AttributeType::try_from(a.r#type) {
        Ok(AttributeType::Int) => a.i.to_string(),
        Ok(AttributeType::Float) => format!("{:?}", a.f),
        Ok(AttributeType::Ints) => format!("{:?}", a.ints),
        Ok(AttributeType::Floats) => format!("{:?}", a.floats),
        Ok(AttributeType::String) => format!("{:?}", String::from_utf8_lossy(&a.s)),
        _ => "...".into(),
    };
    format!("{} = {value}", a.name)
}

fn initializer(t: &TensorProto) -> String {
    let dims: Vec<String> = t.dims.iter().map(i64::to_string).collect();
    let ty = format!("{}[{}]", type_name(t.data_type), dims.join(","));
    // Scalars and tiny constants are shown; weights are elided.
    if !t.float_data.is_empty() && t.float_data.len() <= 4 {
        format!("{ty} {} = {:?}", t.name, t.float_data)
    } else if !t.int64_data.is_empty() && t.int64_data.len() <= 8 {
        format!("{ty} {} = {:?}", t.name, t.int64_data)
    } else {
        format!("{ty} {}", t.name)
    }
}

pub fn render(model: &ModelProto) -> String {
    let mut out = String::new();
    let opsets: Vec<String> = model.opset_import.iter().map(|o| format!("\"{}\" : {}", o.domain, o.version)).collect();
    writeln!(out, "<\n  ir_version: {},\n  opset_import: [{}],\n  producer_name: \"{}\"", model.ir_version, opsets.join(", "), model.producer_name)
        .expect("string");
    for m in &model.metadata_props {
        writeln!(out, "  metadata {}: {:?}", m.key, m.value).expect("string");
    }
    out.push_str(">\n");
    let Some(g) = &model.graph else {
        out.push_str("(no graph)\n");
        return out;
    };
    let io = |vs: &[ValueInfoProto]| vs.iter().map(|v| format!("{} {}", value_type(v), v.name)).collect::<Vec<_>>().join(", ");
    writeln!(out, "{} ({}) => ({})", g.name, io(&g.input), io(&g.output)).expect("string");
    out.push_str("  <\n");
    for t in &g.initializer {
        writeln!(out, "    {}", initializer(t)).expect("string");
    }
    out.push_str("  >\n{\n");
    let types: HashMap<&str, String> = g.value_info.iter().chain(&g.output).map(|v| (v.name.as_str(), value_type(v))).collect();
    for n in &g.node {
        let attrs: Vec<String> = n.attribute.iter().map(attribute).collect();
        let attrs = if attrs.is_empty() { String::new() } else { format!(" <{}>", attrs.join(", ")) };
        let outputs: Vec<String> = n.output.iter().map(|o| types.get(o.as_str()).map_or_else(|| o.clone(), |t| format!("{t} {o}"))).collect();
        let name = if n.output.len() == 1 && n.output[0] == n.name { String::new() } else { format!("[{}] ", n.name) };
        writeln!(out, "  {name}{} = {}{attrs} ({})", outputs.join(", "), n.op_type, n.input.join(", ")).expect("string");
        if !n.doc_string.is_empty() {
            writeln!(out, "      # {}", n.doc_string).expect("string");
        }
    }
    out.push_str("}\n");
    out
}
