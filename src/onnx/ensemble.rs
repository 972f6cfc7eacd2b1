//! `incc compile --ensemble`: ONE model whose output `probabilities` is the average of its
//! members' softmax probabilities. Each member is its own inference model with every name (node,
//! value, initializer) under the prefix `m<i>/`. Members that take the same input (size and
//! preprocessing) share one input, `images`; otherwise each member has its own, `m<i>/images`,
//! and the metadata says how to feed each (no resize in the graph: a resize of the normalised
//! input is not the member's own preprocessing of the image).

use super::emit::{model, value_info};
use super::forward::{LOGITS, PROBABILITIES};
use super::proto::tensor_proto::DataType;
use super::proto::*;
use crate::ir::lower::IMAGES;

/// The metadata that says how a member is fed.
const FEEDING: [&str; 5] = ["incc.input", "incc.mean", "incc.std", "incc.crop_pct", "incc.interpolation"];

/// The prefix of member `i`'s names.
fn prefix(i: usize) -> String {
    format!("m{i}/")
}

/// The ensemble of `members` (inference models as `emit` writes them, with their weights).
///
/// # Errors
/// No members, a member without a graph or a `logits` output, or members whose class counts differ.
pub fn ensemble(members: &[ModelProto]) -> Result<ModelProto, String> {
    let graphs: Vec<&GraphProto> = members.iter().map(|m| m.graph.as_ref().ok_or("a member has no graph")).collect::<Result<_, _>>()?;
    let first = graphs.first().ok_or("an ensemble needs members")?;
    let feeding = |m: &ModelProto| -> Vec<String> {
        FEEDING.iter().map(|k| m.metadata_props.iter().find(|p| p.key == *k).map_or(String::new(), |p| p.value.clone())).collect()
    };
    let input_of = |g: &GraphProto| g.input.iter().find(|i| i.name == IMAGES).cloned();
    let shared = members.iter().all(|m| feeding(m) == feeding(&members[0])) && graphs.iter().all(|g| input_of(g) == input_of(first));
    let logits_of = |g: &GraphProto| g.output.iter().find(|o| o.name == LOGITS).cloned();
    let classes = |g: &GraphProto| -> Result<Option<i64>, String> {
        let out = logits_of(g).ok_or_else(|| format!("member `{}` has no `{LOGITS}` output", g.name))?;
        Ok(dims(&out).get(1).copied().flatten())
    };
    let want = classes(first)?;
    for g in &graphs[1..] {
        let got = classes(g)?;
        if got != want {
            return Err(format!("member `{}` outputs {got:?} classes, `{}` {want:?}: the members of an ensemble must share their classes", g.name, first.name));
        }
    }

    let mut graph = GraphProto { name: "ensemble".into(), ..GraphProto::default() };
    if shared {
        graph.input.push(input_of(first).ok_or("a member has no `images` input")?);
    }
    let mut probabilities = vec![];
    for (i, g) in graphs.iter().enumerate() {
        let p = prefix(i);
        let rename = |name: &str| if name.is_empty() || (shared && name == IMAGES) { name.to_owned() } else { format!("{p}{name}") };
        for n in &g.node {
            graph.node.push(NodeProto {
                name: rename(&n.name),
                input: n.input.iter().map(|x| rename(x)).collect(),
                output: n.output.iter().map(|x| rename(x)).collect(),
                ..n.clone()
            });
        }
        graph.initializer.extend(g.initializer.iter().map(|t| TensorProto { name: rename(&t.name), ..t.clone() }));
        graph.input.extend(g.input.iter().filter(|x| !(shared && x.name == IMAGES)).map(|x| ValueInfoProto { name: rename(&x.name), ..x.clone() }));
        graph.value_info.extend(g.value_info.iter().chain(&g.output).map(|x| ValueInfoProto { name: rename(&x.name), ..x.clone() }));
        // The member's probabilities from its logits, whether or not it ends in a softmax.
        let member = format!("{p}ensemble/{PROBABILITIES}");
        graph.node.push(NodeProto {
            name: format!("{p}ensemble/softmax"),
            op_type: "Softmax".into(),
            input: vec![rename(LOGITS)],
            output: vec![member.clone()],
            attribute: vec![AttributeProto { name: "axis".into(), r#type: attribute_proto::AttributeType::Int as i32, i: 1, ..AttributeProto::default() }],
            doc_string: format!("member {i}: softmax of its logits"),
            ..NodeProto::default()
        });
        probabilities.push(member);
    }
    graph.node.push(NodeProto {
        name: "ensemble/mean".into(),
        op_type: "Mean".into(),
        input: probabilities,
        output: vec![PROBABILITIES.into()],
        doc_string: "the members' probabilities averaged".into(),
        ..NodeProto::default()
    });
    let out = logits_of(first).ok_or("no logits")?;
    let batch = dims(&out).first().copied().flatten().map(|b| b as usize);
    let class_count = want.ok_or("the members' class count is not fixed")? as usize;
    graph.output.push(value_info(PROBABILITIES, &[class_count], batch, DataType::Float));
    graph.doc_string = format!("ensemble of {} networks compiled by incc", graphs.len());

    let mut metadata = vec![
        ("incc.version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("incc.ensemble.members".to_owned(), graphs.len().to_string()),
        (
            "incc.ensemble.inputs".to_owned(),
            if shared {
                format!("one, `{IMAGES}`, shared by every member")
            } else {
                format!("one per member, `m<i>/{IMAGES}`, each preprocessed as incc.ensemble.m<i>.* says (no resize in the graph)")
            },
        ),
    ];
    for (i, m) in members.iter().enumerate() {
        for p in &m.metadata_props {
            if p.key.starts_with("incc.") && p.key != "incc.version" {
                metadata.push((format!("incc.ensemble.m{i}.{}", &p.key["incc.".len()..]), p.value.clone()));
            }
        }
    }
    if shared {
        // The shared input is fed as every member is: `incc run` reads these.
        metadata.extend(FEEDING.iter().zip(feeding(&members[0])).filter(|(_, v)| !v.is_empty()).map(|(k, v)| ((*k).to_owned(), v)));
    }
    Ok(model(graph, format!("ensemble of {} networks: their softmax probabilities averaged", members.len()), &metadata))
}

/// The dimensions of a tensor value: `None` for a symbolic one.
fn dims(v: &ValueInfoProto) -> Vec<Option<i64>> {
    use tensor_shape_proto::dimension::Value;
    let Some(TypeProto { value: Some(type_proto::Value::TensorType(t)), .. }) = &v.r#type else { return vec![] };
    t.shape.as_ref().map_or(vec![], |s| {
        s.dim
            .iter()
            .map(|d| match d.value {
                Some(Value::DimValue(n)) => Some(n),
                _ => None,
            })
            .collect()
    })
}
