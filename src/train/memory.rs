//! How a training step's graph holds memory in ONNX Runtime, decided when it is written: the
//! order of its nodes, and which state may be updated in place.
//!
//! ONNX Runtime's sequential executor runs the nodes in `GraphViewer`'s default topological order,
//! a depth-first search back from the leaf nodes that visits a node's inputs from the highest node
//! index down, each node placed once all of its inputs are; every value lives from the node that
//! makes it to its last reader. A value that does not depend on the batch (a transposed weight,
//! the packed parameters, `momentum * mom`) is therefore made wherever the search first meets it:
//! when its node index is above that of the batch's values it joins, at the start of the step,
//! and it then stays alive through the whole forward and backward pass (the RMSProp momentum
//! term of inception_resnet_v2, 213 MiB, did). [`batch_independent_first`] writes those nodes
//! first, which places each right before its first reader.
//!
//! The state `x` and its new value `x__new` can share one buffer when nothing reads `x` after
//! `x__new` is written: [`in_place`] checks that every node that reads `x` (directly or through an
//! op that ONNX Runtime lets alias its input, such as `Reshape`) is an ancestor of the node that
//! writes `x__new`, or is that node itself, elementwise. Every topological order then reads before
//! it writes. ONNX Runtime's own rewrites keep these dependencies (they replace nodes by nodes that
//! compute the same values from the same inputs).

use crate::onnx::proto::NodeProto;
use std::collections::{HashMap, HashSet};

/// Ops whose output ONNX Runtime may place in their input's buffer (a view).
const ALIASING: [&str; 5] = ["Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"];

/// Elementwise ops that may write their output over an input of the same shape: element `i` is
/// read before it is written.
const ELEMENTWISE: [&str; 4] = ["Add", "Sub", "Mul", "Div"];

/// The nodes, those that do not depend on `late` (the batch, the gradients: the values that
/// arrive with each step) first, each group in its order. A topological order stays one: a node
/// that does not depend on `late` has no ancestor that does.
pub fn batch_independent_first(nodes: Vec<NodeProto>, late: &HashSet<&str>) -> Vec<NodeProto> {
    let mut depends: HashSet<String> = late.iter().map(|s| s.to_string()).collect();
    let (mut early, mut rest) = (vec![], vec![]);
    for node in nodes {
        if node.input.iter().any(|i| depends.contains(i)) {
            depends.extend(node.output.iter().cloned());
            rest.push(node);
        } else {
            early.push(node);
        }
    }
    early.extend(rest);
    early
}

/// The state inputs `x` of `nodes` that may share their buffer with `x__new` (see the module
/// comment), in the order of `state`.
pub fn in_place(nodes: &[NodeProto], state: &[&str]) -> Vec<String> {
    let producer: HashMap<&str, usize> = nodes.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
    // The nodes each node reads from, as indices (the search below runs once per state value).
    let sources: Vec<Vec<usize>> = nodes.iter().map(|n| n.input.iter().filter_map(|i| producer.get(i.as_str()).copied()).collect()).collect();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for input in &n.input {
            readers.entry(input.as_str()).or_default().push(i);
        }
    }
    let mut seen = vec![0usize; nodes.len()];
    let mut safe = vec![];
    for (pass, &x) in (1..).zip(state) {
        let new = format!("{x}__new");
        let Some(&writer) = producer.get(new.as_str()) else { continue };
        // Every node that reads x's buffer, and whether it reads x itself (not a view).
        let mut reads: Vec<(usize, bool)> = vec![];
        let mut views = vec![(x, true)];
        while let Some((value, direct)) = views.pop() {
            for &r in readers.get(value).into_iter().flatten() {
                reads.push((r, direct));
                if ALIASING.contains(&nodes[r].op_type.as_str()) {
                    views.extend(nodes[r].output.iter().map(|o| (o.as_str(), false)));
                }
            }
        }
        mark_ancestors(&sources, writer, pass, &mut seen);
        let writer_may_read = ELEMENTWISE.contains(&nodes[writer].op_type.as_str());
        if reads.iter().all(|&(r, direct)| (r != writer && seen[r] == pass) || (r == writer && direct && writer_may_read)) {
            safe.push(x.to_string());
        }
    }
    safe
}

/// Marks every strict ancestor of `node` with `pass`.
fn mark_ancestors(sources: &[Vec<usize>], node: usize, pass: usize, seen: &mut [usize]) {
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        for &p in &sources[n] {
            if seen[p] != pass {
                seen[p] = pass;
                stack.push(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..NodeProto::default()
        }
    }

    fn names(nodes: &[NodeProto]) -> Vec<&str> {
        nodes.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn values_that_do_not_depend_on_the_batch_are_written_first() {
        let nodes = vec![
            node("Conv", &["images", "w"], "y"),
            node("Transpose", &["w"], "wt"),
            node("Conv", &["y", "wt"], "dx"),
            node("Mul", &["mom", "mu"], "mom_old"),
            node("Add", &["mom_old", "dx"], "mom__new"),
        ];
        let late = HashSet::from(["images"]);
        assert_eq!(names(&batch_independent_first(nodes, &late)), ["wt", "mom_old", "y", "dx", "mom__new"]);
    }

    #[test]
    fn state_is_updated_in_place_only_when_every_reader_comes_first() {
        let nodes = vec![
            // w: read by the forward and (as a view) by the packing, both before the update.
            node("Reshape", &["w", "shape"], "w/flat"),
            node("Conv", &["images", "w"], "y"),
            node("Mul", &["w/flat", "y"], "g"),
            node("Sub", &["w/flat", "g"], "w/new_flat"),
            node("Reshape", &["w/new_flat", "shape"], "w__new"),
            // v: its elementwise writer reads it directly, which is safe.
            node("Add", &["v", "g"], "v__new"),
            // u: read after its new value, by a node that is not the writer's ancestor.
            node("Identity", &["g"], "u__new"),
            node("Mul", &["u", "g"], "late_reader"),
            // s: the writer reads it through a view, which is not elementwise safe.
            node("Reshape", &["s", "shape"], "s/view"),
            node("Add", &["s/view", "g"], "s__new"),
            // t: the writer is not elementwise.
            node("Transpose", &["t"], "t__new"),
        ];
        assert_eq!(in_place(&nodes, &["w", "v", "u", "s", "t", "missing"]), ["w", "v"]);
    }
}
