//! The update after the backward pass — L2 weight decay, clipping by the global norm, the
//! optimizer, the parameters' moving average — applied to flat groups of parameters: the
//! gradients of every parameter with the same decay join one vector, and the update runs on
//! that vector. A step then runs a few dozen update kernels instead of about a dozen per
//! parameter tensor (inception_resnet_v2 has 694 trainable tensors); on a GPU, where each kernel
//! launch costs more than updating a small tensor, this is PyTorch's multi-tensor `foreach`
//! optimizer.
//!
//! Optimizer slots and the moving average are graph inputs per group (`opt/<group>.<slot>`,
//! `ema`). Checkpoints keep them per parameter (`<param>.<slot>`, `ema/<param>`), independent
//! of the grouping: [`Packed`] converts between the two.
//!
//! Packed values are [1, P], not [P]: ONNX's shape inference treats a 1-D tensor as a possible
//! shape and tracks its P elements symbolically (out of memory for P = 56 M); a row it leaves
//! alone. Compiled for a GPU, each member starts on a row of `Target::packing_row` elements
//! (zeros fill the rest of its last row; they stay zero through every update), so that joining
//! and cutting the vector runs along a short axis of rows.

use super::{Optimizer, TrainConfig};
use crate::ir::lower::{int, Lowering, RunningStat};
use crate::ir::{Graph, ParamRole};
use crate::onnx::emit::plain_value_info;
use crate::onnx::proto::ValueInfoProto;
use crate::weights::{Tensor, TensorRef};
use std::collections::{BTreeMap, HashMap};

/// A graph value that is the concatenation of named tensors, flattened, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Packed {
    pub name: String,
    pub members: Vec<(String, Vec<usize>)>,
    /// Each member starts at a multiple of this many elements (1: no gaps).
    pub row: usize,
}

impl Packed {
    fn sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.members.iter().map(|(_, shape)| shape.iter().product::<usize>())
    }

    /// The elements a member of `size` takes, with the zeros that fill its last row.
    fn span(&self, size: usize) -> usize {
        size.div_ceil(self.row) * self.row
    }

    pub fn len(&self) -> usize {
        self.sizes().map(|s| self.span(s)).sum()
    }

    /// A value per element, `f(member)` for each member's elements and 0 for the gaps.
    fn spread(&self, f: impl Fn(&str) -> f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        for ((name, _), size) in self.members.iter().zip(self.sizes()) {
            out.extend(std::iter::repeat_n(f(name), size));
            out.resize(out.len() + self.span(size) - size, 0.0);
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The members of `tensors`, concatenated.
    pub fn pack(&self, tensors: &BTreeMap<String, Tensor>) -> Result<Tensor, String> {
        let mut data = Vec::with_capacity(self.len());
        for (name, shape) in &self.members {
            let t = tensors.get(name).ok_or_else(|| format!("no value for `{name}` (a checkpoint of another network or optimizer?)"))?;
            if &t.shape != shape {
                return Err(format!("`{name}` has shape {:?}, the network needs {shape:?}", t.shape));
            }
            data.extend_from_slice(&t.data);
            data.resize(data.len() + self.span(t.data.len()) - t.data.len(), 0.0);
        }
        Ok(Tensor { shape: vec![1, data.len()], data })
    }

    /// The members, cut back out of the packed values.
    pub fn unpack(&self, flat: &[f32]) -> Vec<(String, Tensor)> {
        self.member_views(flat).map(|t| t.to_owned()).collect()
    }

    /// Each member's values in `flat` (this packed value), where they are.
    pub fn member_views<'a>(&'a self, flat: &'a [f32]) -> impl Iterator<Item = TensorRef<'a>> + 'a {
        let mut rest = flat;
        self.members.iter().zip(self.sizes()).map(move |((name, shape), size)| {
            let (head, tail) = rest.split_at(size);
            rest = &tail[self.span(size) - size..];
            TensorRef { name, shape, data: head }
        })
    }

    /// Renames the members: a group's slot `ms` has members `<param>.ms`.
    fn map_members(&self, name: String, f: impl Fn(&str) -> String) -> Packed {
        Packed { name, members: self.members.iter().map(|(m, s)| (f(m), s.clone())).collect(), row: self.row }
    }
}

/// Trainable parameters updated as one vector: those with one weight-decay coefficient.
struct Group {
    params: Packed,
    decay: f32,
}

fn groups(graph: &Graph, cfg: &TrainConfig) -> Vec<Group> {
    let decays = |role: ParamRole| cfg.weight_decay != 0.0 && (cfg.decay_all || role == ParamRole::Weight);
    let mut decayed = vec![];
    let mut plain = vec![];
    for (name, spec) in crate::report::params::param_list(graph).into_iter().filter(|(_, p)| p.role.is_trainable()) {
        if decays(spec.role) { &mut decayed } else { &mut plain }.push((name, spec.shape));
    }
    let names = if decayed.is_empty() || plain.is_empty() { ["opt/all", "opt/all"] } else { ["opt/decayed", "opt/plain"] };
    let row = cfg.target.packing_row();
    [(names[0], decayed, cfg.weight_decay), (names[1], plain, 0.0)]
        .into_iter()
        .filter(|(_, members, _)| !members.is_empty())
        .map(|(name, members, decay)| Group { params: Packed { name: name.into(), members, row }, decay })
        .collect()
}

/// Every running statistic (`running`).
fn running(graph: &Graph, cfg: &TrainConfig) -> Option<Packed> {
    let members: Vec<(String, Vec<usize>)> =
        graph.order().into_iter().flat_map(|n| graph.params(n)).filter(|(_, p)| !p.role.is_trainable()).map(|(name, spec)| (name, spec.shape)).collect();
    (!members.is_empty()).then(|| Packed { name: RUNNING.into(), members, row: cfg.target.packing_row() })
}

/// The moving average (`ema`), when the step keeps one: every group's parameters, then the
/// running statistics, in the order of their packed new values.
fn average(graph: &Graph, cfg: &TrainConfig, groups: &[Group]) -> Option<Packed> {
    let running = running(graph, cfg).map(|r| r.members).unwrap_or_default();
    let members = groups.iter().flat_map(|g| g.params.members.iter().cloned()).chain(running).collect();
    cfg.ema.then(|| Packed { name: "ema".into(), members, row: cfg.target.packing_row() })
}

/// The step's packed state inputs: each group's optimizer slots (members `<param>.<slot>`), the
/// running statistics and the moving average (members `ema/<param>`).
pub fn packed_state(graph: &Graph, cfg: &TrainConfig) -> Vec<Packed> {
    let groups = groups(graph, cfg);
    let slots = groups
        .iter()
        .flat_map(|g| cfg.optimizer.slots().iter().map(move |(slot, _)| g.params.map_members(format!("{}.{slot}", g.params.name), |p| format!("{p}.{slot}"))));
    let ema = average(graph, cfg, &groups).map(|a| a.map_members(a.name.clone(), |p| format!("ema/{p}")));
    slots.chain(running(graph, cfg)).chain(ema).collect()
}

/// Concatenates the values (each with its number of elements), flattened, into one row `name`,
/// each starting at a multiple of `row` elements (see the module comment).
fn flatten(cx: &mut Lowering, name: String, values: &[(&str, usize)], row: usize) -> String {
    if let [(one, size)] = values {
        let flat = cx.op("Flatten", format!("{one}/flat"), &[one], vec![int("axis", 0)]);
        return pad_row(cx, &flat, *size, row, format!("{one}/padded"));
    }
    if row == 1 {
        return join_pieces(cx, name, values);
    }
    let (as_row, as_rows) = (cx.ints(&[1, -1]), cx.ints(&[-1, row as i64]));
    let rows: Vec<String> = values
        .iter()
        .map(|(v, size)| {
            let flat = cx.op("Reshape", format!("{v}/flat"), &[v, &as_row], vec![]);
            let padded = pad_row(cx, &flat, *size, row, format!("{v}/padded"));
            cx.op("Reshape", format!("{v}/rows"), &[&padded, &as_rows], vec![])
        })
        .collect();
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let joined = cx.op("Concat", format!("{name}/rows"), &refs, vec![int("axis", 0)]);
    cx.op("Reshape", name, &[&joined, &as_row], vec![])
}

/// Several values as one row, joined as [1, 1, K] pieces, not as [1, K] rows: OpenVINO (2026.4,
/// its EliminateReduceReshape pass) drops a Reshape that keeps the rank of a ReduceSum without
/// kept dimensions, so a conv weight gradient made a row reached the Concat as
/// [Cout, Cin*kh*kw] and the step did not compile there (docs/openvino-repro.md); and not as [K]
/// vectors either, which ONNX's shape inference tracks element by element (see the module
/// comment).
fn join_pieces(cx: &mut Lowering, name: String, values: &[(&str, usize)]) -> String {
    let piece_shape = cx.ints(&[1, 1, -1]);
    let pieces: Vec<String> = values.iter().map(|(v, _)| cx.op("Reshape", format!("{v}/flat"), &[v, &piece_shape], vec![])).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let joined = cx.op("Concat", format!("{name}/pieces"), &refs, vec![int("axis", 2)]);
    let outer = cx.ints(&[0]);
    cx.op("Squeeze", name, &[&joined, &outer], vec![])
}

/// A [1, size] row with zeros to the next multiple of `row` elements.
fn pad_row(cx: &mut Lowering, flat: &str, size: usize, row: usize, name: String) -> String {
    let gap = size.div_ceil(row) * row - size;
    if gap == 0 {
        return flat.to_string();
    }
    let pads = cx.ints(&[0, 0, 0, gap as i64]);
    cx.op("Pad", name, &[flat, &pads], vec![])
}

/// Cuts `flat` into the members' `<member>__new` values.
fn unflatten(cx: &mut Lowering, flat: &str, members: &Packed) {
    let outputs: Vec<String> = members.members.iter().map(|(m, _)| format!("{m}/new_flat")).collect();
    if let [one] = outputs.as_slice() {
        cx.op("Identity", one.clone(), &[flat], vec![]);
    } else if members.row == 1 {
        let sizes: Vec<i64> = members.sizes().map(|s| s as i64).collect();
        let sizes = cx.ints(&sizes);
        let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        cx.node("Split", format!("{flat}/split"), &[flat, &sizes], &refs, vec![int("axis", 1)]);
    } else {
        let (as_row, as_rows) = (cx.ints(&[1, -1]), cx.ints(&[-1, members.row as i64]));
        let rows = cx.op("Reshape", format!("{flat}/as_rows"), &[flat, &as_rows], vec![]);
        let counts: Vec<i64> = members.sizes().map(|s| (members.span(s) / members.row) as i64).collect();
        let counts = cx.ints(&counts);
        let pieces: Vec<String> = members.members.iter().map(|(m, _)| format!("{m}/new_rows")).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        cx.node("Split", format!("{flat}/split"), &[&rows, &counts], &refs, vec![int("axis", 0)]);
        for (piece, output) in pieces.iter().zip(&outputs) {
            cx.op("Reshape", output.clone(), &[piece, &as_row], vec![]);
        }
    }
    for (((member, shape), piece), size) in members.members.iter().zip(&outputs).zip(members.sizes()) {
        let cut = if members.span(size) == size {
            piece.clone()
        } else {
            let (start, end, axis) = (cx.ints(&[0]), cx.ints(&[size as i64]), cx.ints(&[1]));
            cx.op("Slice", format!("{member}/new_cut"), &[piece, &start, &end, &axis], vec![])
        };
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let dims = cx.ints(&dims);
        cx.op("Reshape", format!("{member}__new"), &[&cut, &dims], vec![]);
    }
}

/// A group's packed gradient (before weight decay and clipping): what data-parallel training
/// averages across processes, one contiguous bucket per group.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// The graph value: `opt/<group>/grad`.
    pub name: String,
    pub len: usize,
}

/// The buckets of a step, in the order of the update groups.
pub fn buckets(graph: &Graph, cfg: &TrainConfig) -> Vec<Bucket> {
    groups(graph, cfg).iter().map(|g| Bucket { name: format!("{}/grad", g.params.name), len: g.params.len() }).collect()
}

/// Writes each group's packed gradient from the parameters' gradients in `grads` (by name);
/// returns the values, in the order of [`buckets`] (a group of one tensor is that tensor's
/// flattened gradient, not yet a value of the bucket's name).
pub(super) fn pack_gradients(cx: &mut Lowering, graph: &Graph, cfg: &TrainConfig, grads: &HashMap<String, String>) -> Vec<String> {
    groups(graph, cfg)
        .iter()
        .map(|g| {
            let member_grads: Vec<(&str, usize)> = g.params.members.iter().zip(g.params.sizes()).map(|((p, _), n)| (grads[p].as_str(), n)).collect();
            flatten(cx, format!("{}/grad", g.params.name), &member_grads, g.params.row)
        })
        .collect()
}

/// Writes every running statistic's move towards its batch value in `running_stats` (by
/// parameter name) as `running__new`; returns the graph input and output that adds.
pub(super) fn update_running(
    cx: &mut Lowering,
    graph: &Graph,
    cfg: &TrainConfig,
    running_stats: &HashMap<String, &RunningStat>,
) -> Option<(ValueInfoProto, ValueInfoProto)> {
    let stats = running(graph, cfg)?;
    // running' = running + (batch - running) * momentum, every statistic at once.
    let stat = |member: &str| running_stats.get(member).unwrap_or_else(|| panic!("the training lowering gives no batch value for `{member}`"));
    let refs: Vec<(&str, usize)> = stats.members.iter().zip(stats.sizes()).map(|((m, _), n)| (stat(m).batch.as_str(), n)).collect();
    let momenta = stats.spread(|m| stat(m).momentum);
    let batch = flatten(cx, "running/batch".into(), &refs, stats.row);
    let momentum = cx.floats("running/momentum".into(), &[1, stats.len()], momenta);
    let diff = cx.op("Sub", "running/diff".into(), &[&batch, RUNNING], vec![]);
    let step = cx.op("Mul", "running/step".into(), &[&diff, &momentum], vec![]);
    cx.op("Add", RUNNING_NEW.into(), &[RUNNING, &step], vec![]);
    Some((plain_value_info(RUNNING, &[1, stats.len()]), plain_value_info(RUNNING_NEW, &[1, stats.len()])))
}

/// Every running statistic, packed (state of the step).
pub const RUNNING: &str = "running";

/// The running statistics after the step's forward pass.
pub const RUNNING_NEW: &str = "running__new";

/// Writes the update of every trainable parameter from its group's packed gradient in
/// `packed_grads` (in the order of [`buckets`]) as `<param>__new`, the slots' `__new` values and
/// the average's (over the new parameters and `running__new`, the running statistics after this
/// step); returns the graph inputs and outputs that adds (the parameters themselves, the
/// learning rate and the step number are inputs already).
pub(super) fn apply(cx: &mut Lowering, graph: &Graph, cfg: &TrainConfig, packed_grads: &[String]) -> (Vec<ValueInfoProto>, Vec<ValueInfoProto>) {
    let groups = groups(graph, cfg);
    let decoupled = matches!(cfg.optimizer, Optimizer::Adam { decoupled: true, .. });
    let mut flat_grads = vec![];
    for (g, grad) in groups.iter().zip(packed_grads) {
        let name = &g.params.name;
        let mut grad = grad.clone();
        let member_params: Vec<(&str, usize)> = g.params.members.iter().zip(g.params.sizes()).map(|((p, _), n)| (p.as_str(), n)).collect();
        let param = flatten(cx, format!("{name}/param"), &member_params, g.params.row);
        if g.decay != 0.0 && !decoupled {
            let wd = cx.scalar(format!("const/{:e}", g.decay), g.decay);
            let decay = cx.op("Mul", format!("{name}/decay"), &[&param, &wd], vec![]);
            grad = cx.op("Add", format!("{name}/grad_decayed"), &[&grad, &decay], vec![]);
        }
        flat_grads.push((param, grad));
    }
    if let Some(clip) = cfg.clip_norm {
        clip_by_global_norm(cx, &groups, &mut flat_grads, clip);
    }
    cfg.optimizer.prepare(cx);
    let (mut inputs, mut outputs) = (vec![], vec![]);
    let mut news = vec![];
    for (g, (param, grad)) in groups.iter().zip(&flat_grads) {
        let decay = if decoupled { g.decay } else { 0.0 };
        let updated = cfg.optimizer.update(cx, &g.params.name, param, grad, decay);
        unflatten(cx, &updated, &g.params);
        for (name, shape) in &g.params.members {
            outputs.push(plain_value_info(&format!("{name}__new"), shape));
        }
        news.push((updated, g.params.len()));
        for (slot, _) in cfg.optimizer.slots() {
            let slot = format!("{}.{slot}", g.params.name);
            inputs.push(plain_value_info(&slot, &[1, g.params.len()]));
            outputs.push(plain_value_info(&format!("{slot}__new"), &[1, g.params.len()]));
        }
    }
    if let Some(stats) = running(graph, cfg) {
        news.push((RUNNING_NEW.into(), stats.len()));
    }
    if let Some(avg) = average(graph, cfg, &groups) {
        // ema' = ema + (new - ema) * (1 - decay); `ema_decay` is fed each step (it ramps up).
        let refs: Vec<(&str, usize)> = news.iter().map(|(v, n)| (v.as_str(), *n)).collect();
        let new = flatten(cx, "ema/new".into(), &refs, avg.row);
        let one = cx.scalar("const/one".into(), 1.0);
        let rate = cx.op("Sub", "ema/rate".into(), &[&one, "ema_decay"], vec![]);
        let diff = cx.op("Sub", "ema/diff".into(), &[&new, "ema"], vec![]);
        let step = cx.op("Mul", "ema/step".into(), &[&diff, &rate], vec![]);
        cx.op("Add", "ema__new".into(), &["ema", &step], vec![]);
        inputs.push(plain_value_info("ema_decay", &[]));
        inputs.push(plain_value_info("ema", &[1, avg.len()]));
        outputs.push(plain_value_info("ema__new", &[1, avg.len()]));
    }
    (inputs, outputs)
}

/// Whether the update reads the running statistics after the step (`running__new`): the moving
/// average covers them.
pub(super) fn reads_running(graph: &Graph, cfg: &TrainConfig) -> Option<usize> {
    running(graph, cfg).filter(|_| cfg.ema).map(|r| r.len())
}

/// g * clip / max(norm, clip), the norm over every group's gradient.
fn clip_by_global_norm(cx: &mut Lowering, groups: &[Group], flat_grads: &mut [(String, String)], clip: f32) {
    let squares: Vec<String> = groups
        .iter()
        .zip(flat_grads.iter())
        .map(|(g, (_, grad))| cx.op("ReduceSumSquare", format!("{}/grad_sq", g.params.name), &[grad], vec![int("keepdims", 0)]))
        .collect();
    let refs: Vec<&str> = squares.iter().map(String::as_str).collect();
    let total = cx.op("Sum", "clip/total_sq".into(), &refs, vec![]);
    let norm = cx.op("Sqrt", "clip/norm".into(), &[&total], vec![]);
    let limit = cx.scalar("clip/limit".into(), clip);
    let larger = cx.op("Max", "clip/larger".into(), &[&norm, &limit], vec![]);
    let factor = cx.op("Div", "clip/factor".into(), &[&limit, &larger], vec![]);
    for (g, (_, grad)) in groups.iter().zip(flat_grads.iter_mut()) {
        *grad = cx.op("Mul", format!("{}/grad_clipped", g.params.name), &[grad.as_str(), &factor], vec![]);
    }
}

/// Adds each packed value to `tensors`, from its members there.
pub fn pack_all(packed: &[Packed], tensors: &mut BTreeMap<String, Tensor>) -> Result<(), String> {
    for p in packed {
        let value = p.pack(tensors)?;
        tensors.insert(p.name.clone(), value);
    }
    Ok(())
}

/// The step's state by name, with each packed value replaced by its members.
pub fn unpack_all(packed: &[Packed], state: impl IntoIterator<Item = (String, Tensor)>) -> BTreeMap<String, Tensor> {
    let state: Vec<(String, Tensor)> = state.into_iter().collect();
    let views: Vec<TensorRef<'_>> = state.iter().map(|(name, t)| TensorRef::of((name, t))).collect();
    unpacked_views(packed, &views).iter().map(TensorRef::to_owned).collect()
}

/// The state as the checkpoint names it (each packed value as its members), where it is, in name
/// order.
pub fn unpacked_views<'a>(packed: &'a [Packed], state: &[TensorRef<'a>]) -> Vec<TensorRef<'a>> {
    let mut views: Vec<TensorRef<'a>> = state
        .iter()
        .flat_map(|t| match packed.iter().find(|p| p.name == t.name) {
            Some(p) => p.member_views(t.data).collect(),
            None => vec![*t],
        })
        .collect();
    views.sort_by(|a, b| a.name.cmp(b.name));
    views
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed() -> Packed {
        Packed { name: "opt/all.ms".into(), members: vec![("a.ms".into(), vec![2, 3]), ("b.ms".into(), vec![4]), ("c.ms".into(), vec![1, 1, 1, 1])], row: 1 }
    }

    fn tensor(shape: Vec<usize>, start: f32) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor { shape, data: (0..n).map(|i| start + i as f32).collect() }
    }

    #[test]
    fn pack_then_unpack_gives_the_members_back() {
        let p = packed();
        let tensors: BTreeMap<String, Tensor> = [("a.ms", vec![2, 3], 0.0), ("b.ms", vec![4], 10.0), ("c.ms", vec![1, 1, 1, 1], 20.0)]
            .into_iter()
            .map(|(n, s, v)| (n.to_string(), tensor(s, v)))
            .collect();
        let flat = p.pack(&tensors).unwrap();
        assert_eq!(flat.shape, vec![1, 11]);
        assert_eq!(p.len(), 11);
        let back: BTreeMap<String, Tensor> = p.unpack(&flat.data).into_iter().collect();
        assert_eq!(back, tensors);
        // unpack_all replaces the packed value by its members and keeps the rest.
        let state = [("opt/all.ms".to_string(), flat), ("w".to_string(), tensor(vec![2], 5.0))];
        let all = unpack_all(std::slice::from_ref(&p), state);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["a.ms", "b.ms", "c.ms", "w"]);
    }

    #[test]
    fn in_rows_each_member_starts_a_row_and_the_gaps_are_zero() {
        let p = Packed { row: 4, ..packed() };
        let tensors: BTreeMap<String, Tensor> = [("a.ms", vec![2, 3], 1.0), ("b.ms", vec![4], 10.0), ("c.ms", vec![1, 1, 1, 1], 20.0)]
            .into_iter()
            .map(|(n, s, v)| (n.to_string(), tensor(s, v)))
            .collect();
        let flat = p.pack(&tensors).unwrap();
        assert_eq!(p.len(), 16);
        assert_eq!(flat.shape, vec![1, 16]);
        assert_eq!(flat.data, [1., 2., 3., 4., 5., 6., 0., 0., 10., 11., 12., 13., 20., 0., 0., 0.]);
        assert_eq!(p.spread(|m| m.len() as f32), [4., 4., 4., 4., 4., 4., 0., 0., 4., 4., 4., 4., 4., 0., 0., 0.]);
        let back: BTreeMap<String, Tensor> = p.unpack(&flat.data).into_iter().collect();
        assert_eq!(back, tensors);
    }

    #[test]
    fn a_missing_or_misshapen_member_is_an_error_naming_it() {
        let p = packed();
        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::from([("a.ms".to_string(), tensor(vec![2, 3], 0.0)), ("b.ms".to_string(), tensor(vec![4], 0.0))]);
        assert_eq!(p.pack(&tensors).unwrap_err(), "no value for `c.ms` (a checkpoint of another network or optimizer?)");
        tensors.insert("c.ms".into(), tensor(vec![2], 0.0));
        assert_eq!(p.pack(&tensors).unwrap_err(), "`c.ms` has shape [2], the network needs [1, 1, 1, 1]");
    }
}
