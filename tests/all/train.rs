//! Training-step graphs in ONNX Runtime: per-op gradient checks against central finite
//! differences, a full step checked piece by piece against computations written here, loss going
//! down, the evaluation graph agreeing with the training graph, every network's step.

use crate::common::{arch, compile_src, ort_ready, python_check, root, snapshots};
use incc::driver::Compiled;
use incc::ir::ops::Op;
use incc::onnx::proto::{tensor_shape_proto, type_proto, ModelProto};
use incc::passes::PassOptions;
use incc::runtime::session::{Model, SessionConfig};
use incc::runtime::tensor::{run_named, Feed};
use incc::train::update::{pack_all, packed_state, Packed};
use incc::train::Target;
use incc::train::{emit_training, Optimizer, TrainConfig};
use incc::weights::{Tensor, Weights};
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Deterministic values in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

struct Step {
    model: Model,
    graph: incc::ir::Graph,
    batch: usize,
    images: Vec<f32>,
    labels: Vec<i64>,
    masks: HashMap<String, Vec<f32>>,
    /// The step's flat optimizer slots, from the per-parameter ones the tests keep.
    packed: Vec<Packed>,
}

impl Step {
    /// A step compiled for any batch size (the batch size read from `images`).
    fn new(c: &Compiled, cfg: &TrainConfig, batch: usize) -> Step {
        Step::compiled(c, cfg, batch, None)
    }

    /// A step compiled for `batch` (batch-norm counts are constants), as `incc train` compiles it.
    fn fixed(c: &Compiled, cfg: &TrainConfig, batch: usize) -> Step {
        Step::compiled(c, cfg, batch, Some(batch))
    }

    fn compiled(c: &Compiled, cfg: &TrainConfig, batch: usize, fixed: Option<usize>) -> Step {
        let model = emit_training(&c.graph, &c.sources, cfg, fixed).unwrap_or_else(|d| panic!("{}", d.render(&c.sources)));
        let model = Model::from_bytes(prost::Message::encode_to_vec(&model), SessionConfig { threads: Some(1), ..SessionConfig::default() }).expect("loads");
        let input = c.graph.shape(c.graph.input).numel() as usize;
        let classes = c.graph.shape(incc::train::logits_node(&c.graph)).0[0];
        let mut masks = HashMap::new();
        for n in c.graph.order() {
            for input in c.graph.node(n).op.rule().step_inputs(c.graph.shape(n)) {
                // A fixed mask: every fifth element dropped, the others scaled by 1 / 0.8.
                let len = batch * input.shape.iter().product::<usize>();
                masks.insert(format!("{}.{}", c.graph.node(n).name, input.suffix), (0..len).map(|i| if i % 5 == 2 { 0.0 } else { 1.25 }).collect());
            }
        }
        Step {
            model,
            graph: c.graph.clone(),
            batch,
            images: noise(7, batch * input),
            labels: (0..batch).map(|i| (i * 3 % classes) as i64).collect(),
            masks,
            packed: packed_state(&c.graph, cfg),
        }
    }

    /// Runs one step; every output by name.
    fn run(&mut self, weights: &Weights, state: &HashMap<String, Vec<f32>>, lr: f32) -> HashMap<String, Vec<f32>> {
        let in_shape = &self.graph.shape(self.graph.input).0;
        let mut feeds = vec![
            ("images".to_string(), Feed::F32([vec![self.batch], in_shape.clone()].concat(), self.images.clone())),
            ("labels".to_string(), Feed::I64(vec![self.batch], self.labels.clone())),
            ("learning_rate".to_string(), Feed::F32(vec![], vec![lr])),
        ];
        if self.model.info().inputs.iter().any(|i| i.name == "ema_decay") {
            feeds.push(("ema_decay".to_string(), Feed::F32(vec![], vec![EMA_DECAY])));
        }
        for (name, mask) in &self.masks {
            let per = mask.len() / self.batch;
            feeds.push((name.clone(), Feed::F32(vec![self.batch, per], mask.clone())));
        }
        // Parameters, running statistics and slots, packed as the step takes them.
        let mut values: BTreeMap<String, Tensor> = weights.tensors.clone();
        for (name, v) in state {
            // `<param>.<slot>` or `ema/<param>`: the shape of the parameter.
            let param = name.strip_prefix("ema/").unwrap_or_else(|| name.rsplit_once('.').map_or(name.as_str(), |(b, _)| b));
            values.insert(name.clone(), Tensor { shape: weights.tensors[param].shape.clone(), data: v.clone() });
        }
        pack_all(&self.packed, &mut values).expect("every packed value's members");
        for input in &self.model.info().inputs {
            if let Some(t) = values.get(&input.name) {
                feeds.push((input.name.clone(), Feed::F32(t.shape.clone(), t.data.clone())));
            }
        }
        let mut out: HashMap<String, Vec<f32>> = run_named(&mut self.model, feeds).expect("the step runs").into_iter().map(|(n, _, v)| (n, v)).collect();
        // Packed new values per member: `<param>.<slot>__new`, `<stat>__new`.
        for p in &self.packed {
            if let Some(flat) = out.remove(&format!("{}__new", p.name)) {
                out.extend(p.unpack(&flat).into_iter().map(|(n, t)| (format!("{n}__new"), t.data)));
            }
        }
        out
    }
}

/// The moving average's decay fed to steps that keep one.
const EMA_DECAY: f32 = 0.75;

/// Optimizer state at its initial values, for every trainable parameter.
fn initial_state(weights: &Weights, graph: &incc::ir::Graph, optimizer: &Optimizer) -> HashMap<String, Vec<f32>> {
    let mut state = HashMap::new();
    for (name, spec) in incc::report::params::param_list(graph) {
        if spec.role.is_trainable() {
            for (slot, init) in optimizer.slots() {
                state.insert(format!("{name}.{slot}"), vec![*init; weights.tensors[&name].data.len()]);
            }
        }
    }
    state
}

fn sgd() -> TrainConfig {
    TrainConfig { optimizer: Optimizer::Sgd { momentum: 0.0, nesterov: false }, debug_outputs: true, ..TrainConfig::default() }
}

/// Central differences of the loss against the gradient's inner product with the direction, in
/// two directions of the parameters `along` picks: a random one, and the gradient's own (a random
/// direction can be nearly orthogonal to the gradient, leaving no signal).
fn check_gradients(name: &str, c: &Compiled, target: Target, along: impl Fn(&str) -> bool) {
    let mut step = Step::new(c, &TrainConfig { target, ..sgd() }, 3);
    let mut weights = incc::weights::init(&c.graph, 5);
    for (n, t) in &mut weights.tensors {
        if n.ends_with("bn.weight") || n.ends_with(".bias") {
            let shift = noise(n.len() as u64, t.data.len());
            for (v, r) in t.data.iter_mut().zip(shift) {
                *v += 0.3 * r;
            }
        }
    }
    let state = HashMap::new();
    let out = step.run(&weights, &state, 0.0);
    let params: Vec<String> =
        incc::report::params::param_list(&c.graph).into_iter().filter(|(n, p)| p.role.is_trainable() && along(n)).map(|(n, _)| n).collect();
    assert!(!params.is_empty(), "{name}: no parameters to move");
    let random: HashMap<String, Vec<f32>> = params.iter().enumerate().map(|(i, n)| (n.clone(), noise(100 + i as u64, weights.tensors[n].data.len()))).collect();
    let gradient: HashMap<String, Vec<f32>> = params.iter().map(|n| (n.clone(), out[&format!("{n}__grad")].clone())).collect();
    for (towards, direction) in [("a random direction", random), ("the gradient", gradient)] {
        let norm: f64 = direction.values().flatten().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        let analytic: f64 =
            params.iter().map(|n| out[&format!("{n}__grad")].iter().zip(&direction[n]).map(|(&g, &d)| f64::from(g) * f64::from(d)).sum::<f64>()).sum::<f64>()
                / norm;
        // A step small enough that few ReLUs change sides (their kinks bias larger steps), large
        // enough that float32 rounding of the loss stays well below the signal.
        let shifted = |sign: f32, step: &mut Step| {
            let mut w = weights.clone();
            for (n, d) in &direction {
                for (v, dv) in w.tensors.get_mut(n).expect("param").data.iter_mut().zip(d) {
                    *v += sign * dv / norm as f32;
                }
            }
            f64::from(step.run(&w, &state, 0.0)["loss"][0])
        };
        let h = 5e-4f32;
        let numeric = (shifted(h, &mut step) - shifted(-h, &mut step)) / (2.0 * f64::from(h));
        let err = (numeric - analytic).abs() / analytic.abs().max(1e-2);
        eprintln!("{name}, towards {towards}: directional derivative {analytic:.6} (gradient), {numeric:.6} (finite differences)");
        assert!(
            err < 3e-2,
            "{name}, towards {towards}: directional derivative {analytic:.6} (gradient) vs {numeric:.6} (finite differences), relative error {err:.2e}"
        );
    }
}

const HEAD: &str = "  global avgpool\n  dropout 0.2\n  classif: fc 4";
const DEFAULTS: &str = "defaults { conv: bn(eps = 0.001), relu, same }\n";

/// A network: a stem conv (so that every op after it gets an input gradient), `body`, and a head
/// (global average pool, dropout, fc).
fn net(input: &str, body: &str) -> String {
    headless(input, &format!("{body}\n{HEAD}"))
}

/// A network whose `body` ends in the class scores.
fn headless(input: &str, body: &str) -> String {
    format!("{DEFAULTS}network t {{\n  input {input}\n  stem: conv 3x3 6 stride 2 valid\n{body}\n}}\n")
}

/// How an op's gradient rule is checked.
enum Case {
    /// Tiny networks (what each shows, source) that use the op; the gradient of each one's
    /// training step is checked against finite differences, in both gradient forms.
    Networks(Vec<(&'static str, String)>),
    /// The op has no gradient rule, and why none is needed.
    NoRule(&'static str),
}

/// Lists every op with its `Case`, and writes `variant`, an exhaustive `match` over `Op` (no
/// `_ =>` arm): a new op does not compile until it is listed here, with a case.
macro_rules! every_op {
    ($($variant:ident => $case:expr,)*) => {
        fn variant(op: &Op) -> &'static str {
            match op {
                $(Op::$variant(..) => stringify!($variant),)*
            }
        }

        fn every_case() -> Vec<(&'static str, Case)> {
            vec![$((stringify!($variant), $case),)*]
        }
    };
}

every_op! {
    Input => Case::NoRule("the network's input: no gradient is wanted for the images"),
    Conv => Case::Networks(vec![
        ("rgb stem, 3x3 stride 2 valid, (H - k) not divisible by 2", net("3x24x24", "  a: conv 3x3 5 stride 2 valid")),
        ("1x7 and 7x1 same", net("3x17x17", "  a: conv 1x7 5\n  b: conv 7x1 5")),
        ("1x3 and 3x1 same", net("3x13x13", "  a: conv 1x3 5\n  b: conv 3x1 5")),
        ("5x5 same and 1x1", net("3x13x13", "  a: conv 5x5 5\n  b: conv 1x1 4")),
        ("3x3 stride 2 TF same (asymmetric padding)", net("3x19x19", "  a: conv 3x3 5 stride 2 same")),
        ("without batch norm, with a bias", net("3x13x13", "  a: conv 3x3 4 nobn bias")),
        ("fewer positions than output channels (dW as one product over the batch)", net("3x4x4", "  a: conv 3x3 20\n  b: conv 1x1 6\n  c: conv 3x3 5")),
        ("the same at stride 2, 3x3 and 1x1", net("3x19x19", "  a: conv 3x3 24 stride 2 valid\n  b: conv 1x1 5 stride 2 valid")),
    ]),
    BatchNorm => Case::Networks(vec![("after every conv, batch statistics", net("3x13x13", "  a: conv 3x3 5"))]),
    Relu => Case::Networks(vec![("after convs and an fc", headless("3x13x13", "  a: conv 3x3 4\n  flatten\n  f: fc 6 relu\n  classif: fc 5"))]),
    Pool => Case::Networks(vec![
        ("max pool 3x3 stride 2 valid", net("3x17x17", "  p: maxpool 3x3 stride 2 valid\n  a: conv 1x1 5")),
        ("average pool 3x3 same, padding excluded", net("3x13x13", "  p: avgpool 3x3 stride 1 same exclude_pad\n  a: conv 1x1 5")),
        ("average pool 3x3 stride 2, padding included", net("3x13x13", "  p: avgpool 3x3 stride 2 pad 1 include_pad\n  a: conv 1x1 5")),
    ]),
    // Global max pooling has none: `an_op_without_a_gradient_rule_is_a_located_error`.
    GlobalPool => Case::Networks(vec![("global average pool", net("3x13x13", "  a: conv 3x3 5"))]),
    Concat => Case::Networks(vec![("concat", net("3x13x13", "  concat {\n    x: conv 1x1 3\n    y: conv 3x3 4\n  }"))]),
    Add => Case::Networks(vec![("residual sum", net("3x13x13", "  residual(0.3) {\n    x: conv 1x1 3\n    y: conv 3x3 4\n  }\n  relu"))]),
    Scale => Case::Networks(vec![("residual scale", net("3x13x13", "  residual(0.3) {\n    x: conv 1x1 3\n    y: conv 3x3 4\n  }\n  relu"))]),
    Dropout => Case::Networks(vec![("dropout before the classifier", net("3x13x13", "  a: conv 1x1 5"))]),
    Fc => Case::Networks(vec![("two fc layers", headless("3x13x13", "  a: conv 3x3 4\n  flatten\n  f: fc 6 relu\n  classif: fc 5"))]),
    Flatten => Case::Networks(vec![("flatten before an fc", headless("3x13x13", "  a: conv 3x3 4 nobn bias\n  flatten\n  classif: fc 5"))]),
    // A final softmax is not part of the step (the loss applies its own); one inside is.
    Softmax => Case::Networks(vec![("a softmax between two fc layers", headless("3x13x13", "  a: conv 3x3 4\n  global avgpool\n  f: fc 6\n  softmax\n  classif: fc 4"))]),
}

/// The trainable parameters of the nodes of `op` and of every node before them: the derivative of
/// the loss along them runs through `op`'s gradient rule (parameters after it would dilute an error
/// in it).
fn upstream_params(c: &Compiled, op: &str) -> HashSet<String> {
    let mut stack: Vec<NodeIndex> = c.graph.g.node_indices().filter(|&n| variant(&c.graph.node(n).op) == op).collect();
    let mut seen = HashSet::new();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(c.graph.inputs(n));
        }
    }
    seen.into_iter().flat_map(|n| c.graph.params(n)).filter(|(_, p)| p.role.is_trainable()).map(|(name, _)| name).collect()
}

#[test]
fn gradients_of_every_op_match_finite_differences() {
    if !ort_ready() {
        return;
    }
    for (op, case) in every_case() {
        let networks = match case {
            Case::Networks(networks) => networks,
            Case::NoRule(why) => {
                eprintln!("{op}: no gradient rule ({why})");
                continue;
            }
        };
        for (what, src) in &networks {
            let c = compile_src(src, &PassOptions::default(), None).unwrap_or_else(|f| panic!("{op}, {what}: {}", f.render()));
            let upstream = upstream_params(&c, op);
            assert!(!upstream.is_empty(), "the case `{what}` of {op} has no {op} with parameters before it");
            // Both forms of the conv gradients: the CPU's (im2col) and the GPU's (one conv).
            for target in [Target::Cpu, Target::Gpu] {
                check_gradients(&format!("{op}, {what} ({target:?})"), &c, target, |p| upstream.contains(p));
            }
        }
    }
}

#[test]
fn a_full_step_of_a_small_inception_resnet_checked_piece_by_piece() {
    if !ort_ready() {
        return;
    }
    let c = crate::common::compile_with(&root().join(crate::onnx::TINY_RESIDUAL), &Default::default(), &PassOptions::default(), None).expect("compiles");
    // RMSProp as the paper, smoothing 0.1, a moving average of the parameters.
    let cfg = TrainConfig { debug_outputs: true, ema: true, ..TrainConfig::default() };
    let weights = incc::weights::init(&c.graph, 11);
    let mut state = initial_state(&weights, &c.graph, &cfg.optimizer);
    // An average unlike the parameters: ema/<p> = p / 2.
    for (name, t) in &weights.tensors {
        state.insert(format!("ema/{name}"), t.data.iter().map(|v| v / 2.0).collect());
    }
    let lr = 0.045f32;
    // Compiled for any batch size, and for this one (as `incc train` compiles it).
    for mut step in [Step::new(&c, &cfg, 4), Step::fixed(&c, &cfg, 4)] {
        let out = step.run(&weights, &state, lr);

        // The loss from the logits: softmax cross-entropy with label smoothing 0.1, mean over the batch.
        let logits = &out["logits"];
        let k = 5;
        let mut loss = 0.0f64;
        for (i, row) in logits.chunks(k).enumerate() {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&v| (f64::from(v) - m).exp()).sum::<f64>().ln();
            for (j, &v) in row.iter().enumerate() {
                let q = 0.1 / k as f64 + if j as i64 == step.labels[i] { 0.9 } else { 0.0 };
                loss -= q * (f64::from(v) - lse) / 4.0;
            }
        }
        assert!((f64::from(out["loss"][0]) - loss).abs() < 1e-5, "loss {} vs {loss}", out["loss"][0]);

        // TensorFlow's RMSProp on the gradient the graph computed, parameter by parameter.
        for (name, spec) in incc::report::params::param_list(&c.graph) {
            if !spec.role.is_trainable() {
                continue;
            }
            let (p, g) = (&weights.tensors[&name].data, &out[&format!("{name}__grad")]);
            for i in 0..p.len() {
                let ms = 0.9 * 1.0 + 0.1 * g[i] * g[i];
                let mom = 0.9 * 0.0 + lr * g[i] / (ms + 1.0).sqrt();
                let expect = p[i] - mom;
                let got = out[&format!("{name}__new")][i];
                assert!((got - expect).abs() <= 1e-6 * (1.0 + expect.abs()), "{name}[{i}]: {got} vs {expect}");
                assert!((out[&format!("{name}.ms__new")][i] - ms).abs() <= 1e-6);
            }
        }
        // Running statistics: momentum 0.1 towards the batch mean and the unbiased batch variance.
        for n in c.graph.order() {
            if let incc::ir::ops::Op::BatchNorm(_) = c.graph.node(n).op {
                let name = &c.graph.node(n).name;
                let m = (4 * c.graph.shape(n).0[1] * c.graph.shape(n).0[2]) as f32;
                let (mean, var) = (&out[&format!("{name}/mean_c")], &out[&format!("{name}/var_c")]);
                for ch in 0..mean.len() {
                    let rm = 0.9 * 0.0 + 0.1 * mean[ch];
                    let rv = 0.9 * 1.0 + 0.1 * var[ch] * m / (m - 1.0);
                    assert!((out[&format!("{name}.running_mean__new")][ch] - rm).abs() < 1e-6, "{name} mean");
                    assert!((out[&format!("{name}.running_var__new")][ch] - rv).abs() < 1e-5, "{name} var");
                }
            }
        }
        // The moving average of every parameter and running statistic, towards its new value.
        for (name, t) in &weights.tensors {
            let (new, avg) = (&out[&format!("{name}__new")], &out[&format!("ema/{name}__new")]);
            for i in 0..t.data.len() {
                let expect = EMA_DECAY * t.data[i] / 2.0 + (1.0 - EMA_DECAY) * new[i];
                assert!((avg[i] - expect).abs() <= 1e-6 * (1.0 + expect.abs()), "ema/{name}[{i}]: {} vs {expect}", avg[i]);
            }
        }
    }
    // And the gradients themselves, by finite differences over the whole network.
    check_gradients("tiny Inception-ResNet", &c, Target::Cpu, |_| true);
}

/// The CPU's gradient forms (im2col weight gradients, stride-1 dX as a conv with flipped weights)
/// and the GPU's (dilated-conv weight gradients, ConvTranspose dX) agree element by element.
#[test]
fn cpu_and_gpu_gradient_forms_agree_element_by_element() {
    if !ort_ready() {
        return;
    }
    let c = crate::common::compile_with(&root().join(crate::onnx::TINY_RESIDUAL), &Default::default(), &PassOptions::default(), None).expect("compiles");
    let weights = incc::weights::init(&c.graph, 4);
    let [cpu, gpu] = [Target::Cpu, Target::Gpu].map(|target| Step::new(&c, &TrainConfig { target, ..sgd() }, 3).run(&weights, &HashMap::new(), 0.0));
    for (name, spec) in incc::report::params::param_list(&c.graph) {
        if !spec.role.is_trainable() {
            continue;
        }
        let (a, b) = (&cpu[&format!("{name}__grad")], &gpu[&format!("{name}__grad")]);
        let scale = a.iter().map(|v| v.abs()).fold(1e-6, f32::max);
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(diff <= 1e-4 * scale, "{name}: CPU and GPU gradient forms differ by {diff:e} (largest {scale:e})");
    }
}

/// The tiny Inception-ResNet with a step that keeps every kind of state: RMSProp's slots in two
/// weight-decay groups, running statistics, the moving average (clipping too).
fn tiny_with_every_kind_of_state() -> (Compiled, TrainConfig) {
    let c = crate::common::compile_with(&root().join(crate::onnx::TINY_RESIDUAL), &Default::default(), &PassOptions::default(), None).expect("compiles");
    (c, TrainConfig { weight_decay: 1e-3, clip_norm: Some(0.5), ema: true, ..TrainConfig::default() })
}

/// Compiled for a GPU, the packed update lays each parameter out on rows of `packing_row`
/// elements; three steps of RMSProp with weight decay (two groups), clipping and the moving
/// average give what the CPU's single-row layout gives: every parameter, slot, running statistic
/// and average.
#[test]
fn the_gpu_row_layout_updates_as_the_cpu_layout() {
    if !ort_ready() {
        return;
    }
    let (c, cfg) = tiny_with_every_kind_of_state();
    let [cpu, gpu] = [Target::Cpu, Target::Gpu].map(|target| {
        let cfg = TrainConfig { target, ..cfg.clone() };
        let mut step = Step::new(&c, &cfg, 3);
        let mut weights = incc::weights::init(&c.graph, 5);
        let mut state = initial_state(&weights, &c.graph, &cfg.optimizer);
        state.extend(weights.tensors.iter().map(|(name, t)| (format!("ema/{name}"), t.data.clone())));
        let mut out = HashMap::new();
        for _ in 0..3 {
            out = step.run(&weights, &state, 0.045);
            for (name, t) in weights.tensors.iter_mut() {
                t.data = out[&format!("{name}__new")].clone();
            }
            for (name, v) in state.iter_mut() {
                *v = out[&format!("{name}__new")].clone();
            }
        }
        out
    });
    let news: Vec<&String> = cpu.keys().filter(|k| k.ends_with("__new")).collect();
    assert!(news.iter().any(|k| k.starts_with("ema/")) && news.iter().any(|k| k.ends_with(".ms__new")), "{news:?}");
    for name in news {
        let (a, b) = (&cpu[name], &gpu[name]);
        assert_eq!(a.len(), b.len(), "{name}");
        let scale = a.iter().map(|v| v.abs()).fold(1e-6, f32::max);
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(diff <= 1e-4 * scale, "{name}: the CPU and GPU layouts differ by {diff:e} (largest {scale:e})");
    }
}

#[test]
fn the_loss_falls_over_fifty_steps_on_a_fixed_batch() {
    if !ort_ready() {
        return;
    }
    let c = crate::common::compile_with(&root().join(crate::onnx::TINY_RESIDUAL), &Default::default(), &PassOptions::default(), None).expect("compiles");
    let cfg = TrainConfig::default();
    let mut step = Step::new(&c, &cfg, 8);
    let mut weights = incc::weights::init(&c.graph, 3);
    let mut state = initial_state(&weights, &c.graph, &cfg.optimizer);
    let mut losses = vec![];
    for _ in 0..50 {
        let out = step.run(&weights, &state, 0.045);
        losses.push(out["loss"][0]);
        for t in weights.tensors.iter_mut() {
            t.1.data = out[&format!("{}__new", t.0)].clone();
        }
        for (name, v) in state.iter_mut() {
            *v = out[&format!("{name}__new")].clone();
        }
    }
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[49] < 0.5 * losses[0], "loss {} -> {}: {losses:?}", losses[0], losses[49]);
}

/// The evaluation graph, fed the training graph's batch statistics as running statistics, with
/// dropout off (a mask of ones), gives the training graph's logits.
#[test]
fn the_evaluation_graph_gives_the_training_graphs_logits() {
    if !ort_ready() {
        return;
    }
    let c = crate::common::compile_with(&root().join(crate::onnx::TINY_RESIDUAL), &Default::default(), &PassOptions::default(), None).expect("compiles");
    let mut step = Step::new(&c, &sgd(), 4);
    for m in step.masks.values_mut() {
        m.iter_mut().for_each(|v| *v = 1.0);
    }
    let mut weights = incc::weights::init(&c.graph, 2);
    let out = step.run(&weights, &HashMap::new(), 0.0);
    for n in c.graph.order() {
        if let incc::ir::ops::Op::BatchNorm(_) = c.graph.node(n).op {
            let name = c.graph.node(n).name.clone();
            weights.tensors.get_mut(&format!("{name}.running_mean")).expect("stat").data = out[&format!("{name}/mean_c")].clone();
            weights.tensors.get_mut(&format!("{name}.running_var")).expect("stat").data = out[&format!("{name}/var_c")].clone();
        }
    }
    let eval = incc::onnx::emit::emit_eval(&c.graph, &c.sources, None).expect("emits");
    let mut model = Model::from_bytes(prost::Message::encode_to_vec(&eval), SessionConfig::default()).expect("loads");
    let mut feeds = vec![("images".to_string(), Feed::F32(vec![4, 3, 15, 15], step.images.clone()))];
    for (name, t) in &weights.tensors {
        feeds.push((name.clone(), Feed::F32(t.shape.clone(), t.data.clone())));
    }
    let logits = run_named(&mut model, feeds).expect("runs").remove(0).2;
    let scale = logits.iter().map(|v| v.abs()).fold(1e-6, f32::max);
    let diff = logits.iter().zip(&out["logits"]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale;
    assert!(diff < 1e-4, "evaluation vs training logits: {diff:e}");
}

#[test]
fn every_network_compiles_a_training_step_that_validates_and_runs() {
    let small = incc::elab::Settings { input: Some(vec![3, 75, 75]), ..Default::default() };
    let dir = std::env::temp_dir().join(format!("incc-train-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // [compiled for the CPU, for a GPU]
    let mut paths: [Vec<std::ffi::OsString>; 2] = Default::default();
    for name in ["inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2", "inception_resnet_v2_paper"] {
        let c = crate::common::compile_with(&arch(name), &small, &PassOptions::default(), None).expect("compiles");
        for (i, cfg) in [
            TrainConfig::default(),
            TrainConfig {
                optimizer: Optimizer::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, decoupled: true },
                weight_decay: 0.05,
                clip_norm: Some(1.0),
                ema: true,
                target: Target::Gpu,
                recompute: incc::train::Recompute::Blocks,
                ..TrainConfig::default()
            },
        ]
        .iter()
        .enumerate()
        {
            let model = emit_training(&c.graph, &c.sources, cfg, None).unwrap_or_else(|d| panic!("{}", d.render(&c.sources)));
            let graph = model.graph.as_ref().expect("a graph");
            let read: HashSet<&str> = graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
            let unread: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).filter(|t| !read.contains(t)).collect();
            assert!(unread.is_empty(), "{name}: constants no node reads: {unread:?}");
            let path = dir.join(format!("{name}-{i}.onnx"));
            incc::onnx::emit::write(&model, None, &path, incc::onnx::emit::EXTERNAL_DATA_THRESHOLD).expect("write");
            paths[i].push(path.into_os_string());
        }
        if ort_ready() && name == "inception_resnet_v2" {
            let cfg = TrainConfig::default();
            let mut step = Step::new(&c, &cfg, 2);
            let weights = incc::weights::init(&c.graph, 0);
            let state = initial_state(&weights, &c.graph, &cfg.optimizer);
            let out = step.run(&weights, &state, 0.045);
            assert!(out["loss"][0].is_finite() && out["loss"][0] > 0.0);
        }
    }
    python_check("check_onnx.py", &paths[0], "the `onnx` package", "the ONNX checker refused a training graph");
    // Compiled for a GPU, the packed update joins rows of `packing_row` elements: inception_resnet_v2's
    // 56 M parameters make 55 k rows (one [1, P] row made ONNX Runtime's CUDA Concat index 56 M
    // entries on the host at every step).
    let gpu = [vec!["--longest-join".into(), "65536".into()], paths[1].clone()].concat();
    python_check("check_onnx.py", &gpu, "the `onnx` package", "a GPU training graph joins a long axis (or the ONNX checker refused it)");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_op_without_a_gradient_rule_is_a_located_error() {
    let src = "network n {\n  input 3x8x8\n  c: conv 3x3 4\n  global maxpool\n  fc 3\n}\n";
    let c = compile_src(src, &PassOptions::default(), None).expect("compiles");
    let err = emit_training(&c.graph, &c.sources, &TrainConfig::default(), None).expect_err("no gradient for global max pooling");
    snapshots(|| insta::assert_snapshot!("train__no_gradient_rule", err.render(&c.sources)));
}

#[test]
fn a_tiny_training_step_in_text_form() {
    let src = "defaults { conv: bn(eps = 0.001), relu, same }\nnetwork tiny {\n  input 1x6x6\n  c: conv 3x3 2 stride 2 valid\n  p: maxpool 2x2\n  global avgpool\n  dropout 0.5\n  f: fc 3\n}\n";
    let c = compile_src(src, &PassOptions::default(), None).expect("compiles");
    let cfg = TrainConfig { optimizer: Optimizer::Sgd { momentum: 0.9, nesterov: true }, weight_decay: 1e-4, clip_norm: Some(5.0), ..TrainConfig::default() };
    let model = emit_training(&c.graph, &c.sources, &cfg, Some(2)).expect("emits");
    snapshots(|| insta::assert_snapshot!("train__tiny_step", incc::onnx::text::render(&model)));
}

/// The graph transformers skipped for training steps on the CPU
/// (`session::IDLE_ON_TRAINING_STEPS`, most of a session's creation) change nothing in them: ONNX
/// Runtime's optimised step is the same with and without them. An ONNX Runtime whose transformers
/// start to rewrite these graphs fails here.
#[test]
fn the_transformers_skipped_on_training_steps_change_nothing_in_them() {
    if !ort_ready() {
        return;
    }
    let c = incc::driver::compile(&root().join("benches/small_inception_resnet.inc"), &Default::default(), &PassOptions::default(), None).expect("compiles");
    let step = emit_training(&c.graph, &c.sources, &TrainConfig::default(), Some(4)).unwrap_or_else(|d| panic!("{}", d.render(&c.sources)));
    let bytes = prost::Message::encode_to_vec(&step);
    let dir = std::env::temp_dir().join(format!("incc-idle-transformers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let optimised = |file: &str, skip: &str| {
        let path = dir.join(file);
        let env = incc::runtime::ortlib::environment().expect("initialised");
        let builder = ort::session::Session::builder(env).expect("builder").with_optimized_model_path(&path).expect("path");
        let mut builder = builder.with_config_entry("optimization.disable_specified_optimizers", skip).expect("config");
        builder.commit_from_memory(&bytes).expect("loads");
        let model: incc::onnx::proto::ModelProto = prost::Message::decode(std::fs::read(&path).expect("saved").as_slice()).expect("decodes");
        let mut nodes: Vec<String> =
            model.graph.expect("graph").node.iter().map(|n| format!("{}:{}({}) -> {}", n.domain, n.op_type, n.input.join(","), n.output.join(","))).collect();
        nodes.sort();
        nodes
    };
    let all = optimised("all.onnx", "");
    let lean = optimised("lean.onnx", &incc::runtime::session::IDLE_ON_TRAINING_STEPS.join(";"));
    // Skipping one that does change it shows the skipping works.
    let unfused = optimised("unfused.onnx", "MatmulTransposeFusion");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(all.len() > 500, "{} nodes", all.len());
    assert_eq!(all, lean);
    assert_ne!(all, unfused);
}

/// The float64 training step of `STEM_149` (conv 3x3 stride 2 valid, batch norm with batch
/// statistics, ReLU, global average, fc, softmax cross-entropy without smoothing), in direct
/// loops: the loss, logits, batch variance and every parameter's gradient.
struct Stem149Reference {
    loss: f64,
    logits: Vec<f64>,
    var: Vec<f64>,
    /// Each parameter's gradient and its condition: the largest sum of its terms' magnitudes over
    /// its largest value (the sums cancel: float32's error bound is this many times larger).
    grads: Vec<(&'static str, Vec<f64>, f64)>,
}

const STEM_149: &str = "defaults { conv: bn(eps = 0.001), relu, same }\nnetwork stem149 {\n  input 3x299x299\n  stem: conv 3x3 8 stride 2 valid\n  global avgpool\n  classif: fc 10\n}\n";

fn stem149_reference(w: &Weights, images: &[f32], labels: &[i64]) -> Stem149Reference {
    let (n, ci, h, co, ho, k) = (labels.len(), 3, 299, 8, 149, 10);
    let p = |name: &str| w.tensors[name].data.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
    let (wc, gamma, beta, wf, bf) = (p("stem.conv.weight"), p("stem.bn.weight"), p("stem.bn.bias"), p("classif.weight"), p("classif.bias"));
    let x = |b: usize, c: usize, i: usize, j: usize| f64::from(images[((b * ci + c) * h + i) * h + j]);
    let area = ho * ho;
    let m = (n * area) as f64;
    // conv: z[b][c][i * ho + j]
    let mut z = vec![vec![vec![0.0; area]; co]; n];
    for (b, zb) in z.iter_mut().enumerate() {
        for (c, zc) in zb.iter_mut().enumerate() {
            for (pos, v) in zc.iter_mut().enumerate() {
                let (i, j) = (2 * (pos / ho), 2 * (pos % ho));
                let mut s = 0.0;
                for d in 0..ci {
                    for (ki, kj) in (0..9).map(|t| (t / 3, t % 3)) {
                        s += wc[((c * ci + d) * 3 + ki) * 3 + kj] * x(b, d, i + ki, j + kj);
                    }
                }
                *v = s;
            }
        }
    }
    let sum_over = |f: &dyn Fn(usize, usize, usize) -> f64, c: usize| (0..n).map(|b| (0..area).map(|pos| f(b, c, pos)).sum::<f64>()).sum::<f64>();
    let mean: Vec<f64> = (0..co).map(|c| sum_over(&|b, c, pos| z[b][c][pos], c) / m).collect();
    let var: Vec<f64> = (0..co).map(|c| sum_over(&|b, c, pos| (z[b][c][pos] - mean[c]).powi(2), c) / m).collect();
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + 1e-3).sqrt()).collect();
    let xhat = |b: usize, c: usize, pos: usize| (z[b][c][pos] - mean[c]) * invstd[c];
    let y = |b: usize, c: usize, pos: usize| gamma[c] * xhat(b, c, pos) + beta[c];
    let pooled: Vec<f64> = (0..n * co).map(|bc| (0..area).map(|pos| y(bc / co, bc % co, pos).max(0.0)).sum::<f64>() / area as f64).collect();
    let logits: Vec<f64> = (0..n * k).map(|bk| bf[bk % k] + (0..co).map(|c| wf[bk % k * co + c] * pooled[bk / k * co + c]).sum::<f64>()).collect();
    // Softmax cross-entropy, mean over the batch; d loss / d logits = (softmax - onehot) / n.
    let mut loss = 0.0;
    let mut dlogits = vec![0.0; n * k];
    for b in 0..n {
        let row = &logits[b * k..(b + 1) * k];
        let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = top + row.iter().map(|v| (v - top).exp()).sum::<f64>().ln();
        loss -= (row[labels[b] as usize] - lse) / n as f64;
        for j in 0..k {
            dlogits[b * k + j] = ((row[j] - lse).exp() - if j as i64 == labels[b] { 1.0 } else { 0.0 }) / n as f64;
        }
    }
    // Each gradient element as (sum of its terms, sum of their magnitudes).
    let sum = |terms: &mut dyn Iterator<Item = f64>| terms.fold((0.0, 0.0), |(s, a): (f64, f64), t| (s + t, a + t.abs()));
    let dwf: Vec<(f64, f64)> = (0..k * co).map(|kc| sum(&mut (0..n).map(|b| dlogits[b * k + kc / co] * pooled[b * co + kc % co]))).collect();
    let dbf: Vec<(f64, f64)> = (0..k).map(|j| sum(&mut (0..n).map(|b| dlogits[b * k + j]))).collect();
    let dpooled: Vec<f64> = (0..n * co).map(|bc| (0..k).map(|j| dlogits[bc / co * k + j] * wf[j * co + bc % co]).sum()).collect();
    // Through the average and the ReLU: dy = dpooled / area where y > 0.
    let dy = |b: usize, c: usize, pos: usize| if y(b, c, pos) > 0.0 { dpooled[b * co + c] / area as f64 } else { 0.0 };
    let dbeta: Vec<(f64, f64)> = (0..co).map(|c| sum(&mut (0..n * area).map(|i| dy(i / area, c, i % area)))).collect();
    let dgamma: Vec<(f64, f64)> = (0..co).map(|c| sum(&mut (0..n * area).map(|i| dy(i / area, c, i % area) * xhat(i / area, c, i % area)))).collect();
    let mut dwc = vec![(0.0, 0.0); co * ci * 9];
    for (b, zb) in z.iter().enumerate() {
        for (c, zc) in zb.iter().enumerate() {
            for pos in 0..zc.len() {
                let dz = gamma[c] * invstd[c] * (dy(b, c, pos) - dbeta[c].0 / m - xhat(b, c, pos) * dgamma[c].0 / m);
                let (i, j) = (2 * (pos / ho), 2 * (pos % ho));
                for d in 0..ci {
                    for (ki, kj) in (0..9).map(|t| (t / 3, t % 3)) {
                        let (at, term) = (((c * ci + d) * 3 + ki) * 3 + kj, dz * x(b, d, i + ki, j + kj));
                        dwc[at] = (dwc[at].0 + term, dwc[at].1 + term.abs());
                    }
                }
            }
        }
    }
    let grads = [("stem.conv.weight", dwc), ("stem.bn.weight", dgamma), ("stem.bn.bias", dbeta), ("classif.weight", dwf), ("classif.bias", dbf)];
    let largest = |v: &mut dyn Iterator<Item = f64>| v.fold(0.0f64, |a, x| a.max(x.abs()));
    let grads = grads
        .into_iter()
        .map(|(name, g)| {
            let condition = largest(&mut g.iter().map(|e| e.1)) / largest(&mut g.iter().map(|e| e.0));
            (name, g.into_iter().map(|e| e.0).collect(), condition)
        })
        .collect();
    Stem149Reference { loss, logits, var, grads }
}

/// Issue 17: a training step's batch statistics over a large early feature map (8 x 149 x 149
/// values per channel) as accurate as float32 arithmetic allows. Float32 summation of M terms in
/// pairs or blocks is within u log2(M) of the sum of their magnitudes (u = 2^-24; Higham,
/// "Accuracy and Stability of Numerical Algorithms", 4.2), 1.0e-6 here; the values after the
/// statistics get twice that, and each gradient that times its condition (its sums cancel: 1 to
/// 100 here; PyTorch's float32 step is off by 1.4e-4 in the conv's). One ONNX `ReduceSumSquare` over
/// [0, 2, 3] summed each channel in a single float32 chain in ONNX Runtime's CPU kernels: the
/// variance was off by 4e-5, the logits and every gradient by 2e-5 to 4e-4.
#[test]
fn a_large_early_feature_map_trains_with_float32_accuracy() {
    if !ort_ready() {
        return;
    }
    let c = compile_src(STEM_149, &PassOptions::default(), None).unwrap_or_else(|f| panic!("{}", f.render()));
    let cfg = TrainConfig { label_smoothing: 0.0, ..sgd() };
    let mut step = Step::fixed(&c, &cfg, 8);
    let mut weights = incc::weights::init(&c.graph, 1);
    for (name, t) in weights.tensors.iter_mut().filter(|(n, _)| n.starts_with("stem.bn.")) {
        for (v, r) in t.data.iter_mut().zip(noise(name.len() as u64, 8)) {
            *v += 0.3 * r;
        }
    }
    let out = step.run(&weights, &HashMap::new(), 0.0);
    let reference = stem149_reference(&weights, &step.images, &step.labels);
    let m = (8 * 149 * 149) as f64;
    let tolerance = 2.0 * f64::from(f32::EPSILON) / 2.0 * m.log2();
    let relative = |got: &[f32], want: &[f64]| {
        let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        got.iter().zip(want).fold(0.0f64, |a, (g, w)| a.max((f64::from(*g) - w).abs())) / scale
    };
    let mut checks = vec![
        ("loss".to_string(), relative(&out["loss"], &[reference.loss]), tolerance),
        ("logits".to_string(), relative(&out["logits"], &reference.logits), tolerance),
        ("batch variance".to_string(), relative(&out["stem.bn/var_c"], &reference.var), tolerance),
    ];
    for (name, want, condition) in &reference.grads {
        checks.push((format!("gradient of {name}"), relative(&out[&format!("{name}__grad")], want), tolerance * condition));
    }
    let report: Vec<String> = checks.iter().map(|(what, err, allowed)| format!("{what}: {err:.2e} (at most {allowed:.2e})")).collect();
    eprintln!("relative error against float64: {}", report.join(", "));
    for (what, err, allowed) in &checks {
        assert!(err <= allowed, "{what}: relative error {err:.2e} against float64, more than float32's {allowed:.2e} ({})", report.join(", "));
    }
}

/// The state a step's graphs update (`x` with an output `x__new`), seeded, in the graphs' shapes.
fn seeded_state(models: &[&ModelProto]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut state: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for m in models {
        let g = m.graph.as_ref().expect("a graph");
        let news: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
        for input in g.input.iter().filter(|i| news.contains(format!("{}__new", i.name).as_str())) {
            let Some(type_proto::Value::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else { panic!("{} is a tensor", input.name) };
            let dims = t.shape.as_ref().expect("a shape").dim.iter().map(|d| match d.value {
                Some(tensor_shape_proto::dimension::Value::DimValue(v)) => v as usize,
                _ => panic!("{}: state has a fixed shape", input.name),
            });
            state.insert(input.name.clone(), dims.collect());
        }
    }
    // Positive values: RMSProp's mean square must be.
    state
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| (name, shape.clone(), noise(i as u64 + 1, shape.iter().product()).iter().map(|v| v.abs() + 0.01).collect()))
        .collect()
}

/// `model` as bytes, without the state it lists as safe to update in place.
fn without_in_place(model: &ModelProto) -> Vec<u8> {
    let mut model = model.clone();
    model.metadata_props.retain(|p| p.key != incc::train::IN_PLACE);
    prost::Message::encode_to_vec(&model)
}

/// The step writes each new value over the old (one buffer per state value: half the state's
/// memory) and trains bit for bit as with two buffer sets swapped each step; the data-parallel
/// step's two graphs too (the update reads the running statistics the gradients graph wrote).
#[test]
fn a_step_updated_in_place_trains_as_with_two_buffer_sets() {
    use incc::trainer::engine::{StepEngine, StepInputs, StepModels};
    if !ort_ready() {
        return;
    }
    let (c, cfg) = tiny_with_every_kind_of_state();
    let batch = 4;
    let single = emit_training(&c.graph, &c.sources, &cfg, Some(batch)).expect("emits");
    let split = incc::train::emit_split_training(&c.graph, &c.sources, &cfg, Some(batch)).expect("emits");
    let encode = |m: &ModelProto| prost::Message::encode_to_vec(m);
    let buckets: Vec<(String, usize)> = split.buckets.iter().map(|b| (b.name.clone(), b.len)).collect();
    let input = &c.graph.shape(c.graph.input).0;
    let images = noise(3, batch * input.iter().product::<usize>());
    let labels: Vec<i64> = (0..batch as i64).collect();
    let masks = c
        .graph
        .order()
        .into_iter()
        .flat_map(|n| c.graph.node(n).op.rule().step_inputs(c.graph.shape(n)).into_iter().map(move |i| (n, i)))
        .map(|(n, i)| {
            let per: usize = i.shape.iter().product();
            (format!("{}.{}", c.graph.node(n).name, i.suffix), vec![batch, per], (0..batch * per).map(|k| if k % 5 == 2 { 0.0 } else { 1.25 }).collect())
        })
        .collect();
    let inputs = StepInputs {
        images: &images,
        image_shape: [batch, input[0], input[1], input[2]],
        labels: &labels,
        scalars: vec![("learning_rate", 0.045), ("ema_decay", EMA_DECAY)],
        masks,
    };
    let cases = [
        ("one graph", StepModels::Single(encode(&single)), StepModels::Single(without_in_place(&single)), seeded_state(&[&single])),
        (
            "gradients and update",
            StepModels::Split { gradients: encode(&split.gradients), update: encode(&split.update), buckets: buckets.clone() },
            StepModels::Split { gradients: without_in_place(&split.gradients), update: without_in_place(&split.update), buckets },
            seeded_state(&[&split.gradients, &split.update]),
        ),
    ];
    for (what, in_place, swapped, state) in cases {
        let config = SessionConfig { threads: Some(1), ..SessionConfig::default() };
        let [mut a, mut b] = [in_place, swapped].map(|models| StepEngine::new(models, config.clone(), state.clone(), None).expect("engine"));
        assert_eq!((a.in_place_count(), b.in_place_count()), (state.len(), 0), "{what}: every state value in place, or none");
        for _ in 0..3 {
            for engine in [&mut a, &mut b] {
                engine.step(std::slice::from_ref(&inputs), &mut |_| Ok(())).expect("a step");
            }
        }
        let values = |e: &StepEngine| e.with_state(|s| s.iter().map(|t| (t.name.to_string(), t.data.to_vec())).collect::<Vec<_>>()).expect("state");
        let (after, reference) = (values(&a), values(&b));
        assert_eq!(after.len(), state.len());
        for ((name, x), (_, y)) in after.iter().zip(&reference) {
            assert!(x == y, "{what}: `{name}` differs between the in-place and the swapped step");
        }
        let moved = after.iter().zip(&state).filter(|((_, x), (_, _, x0))| x != x0).count();
        assert!(moved > state.len() / 2, "{what}: the steps changed only {moved} of {} state values", state.len());
    }
}

/// ONNX Runtime runs a step's nodes in an order that follows their numbers, and its own rewrites
/// renumber nodes: with its Reshape fusion on, every weight gradient of the mini Inception-ResNet
/// ran after the whole backward pass (up to 970 of 1,828 nodes after the layer's input gradient),
/// keeping each layer's input and output gradient alive until then. Read from the profile of
/// `incc train`: each conv's weight gradient runs beside its input gradient.
#[test]
fn onnx_runtime_computes_each_weight_gradient_beside_its_input_gradient() {
    if !ort_ready() {
        return;
    }
    let dir = crate::common::fresh_folder("gradient-order");
    let (run, profile) = (dir.join("run"), dir.join("p.json"));
    let (code, _, err) = crate::common::incc(&[
        "train",
        "archs/mini/inception_resnet_fmnist.inc",
        "--data",
        "synthetic:16,28,10",
        "--batch",
        "8",
        "--max-steps",
        "2",
        "--threads",
        "1",
        "--quiet",
        "--out",
        run.to_str().expect("a path"),
        "--profile",
        profile.to_str().expect("a path"),
    ]);
    assert_eq!(code, 0, "{err}");
    let trace: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(dir.join("p.trace.json")).expect("the trace")).expect("JSON");
    let last_run = trace.iter().filter(|e| e["cat"] == "Session" && e["name"] == "model_run").filter_map(|e| e["ts"].as_u64()).max().expect("a run");
    let mut nodes: Vec<(u64, &str)> = trace
        .iter()
        .filter(|e| e["cat"] == "Node" && e["ts"].as_u64() > Some(last_run))
        .filter_map(|e| Some((e["ts"].as_u64()?, e["name"].as_str()?.strip_suffix("_kernel_time")?)))
        .collect();
    nodes.sort();
    let (mut first_dx, mut last_dw) = (HashMap::new(), HashMap::new());
    for (k, (_, name)) in nodes.iter().enumerate() {
        if let Some((conv, _)) = name.split_once(".conv/dx") {
            first_dx.entry(conv).or_insert(k);
        } else if let Some((conv, _)) = name.split_once(".conv/dw") {
            last_dw.insert(conv, k);
        }
    }
    assert!(first_dx.len() > 20, "{first_dx:?}");
    for (conv, dx) in &first_dx {
        let gap = last_dw[conv] as i64 - *dx as i64;
        assert!(gap < nodes.len() as i64 / 20, "{conv}: its weight gradient ran {gap} of {} nodes after its input gradient", nodes.len());
    }
}

/// `--accumulate K`: K micro-batches through the gradients graph, their gradients averaged, one
/// update. Without batch norm that is the whole batch's step (SGD with weight decay; RMSProp with
/// a moving average and clipping by the averaged gradient's norm); with batch norm and dropout it
/// trains (statistics per micro-batch, each its rows of the masks). K must divide the batch.
#[test]
fn accumulating_micro_batches_trains_as_the_whole_batch() {
    if !ort_ready() {
        return;
    }
    let dir = crate::common::fresh_folder("accumulate");
    let train = |arch: &str, name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let out = out.to_str().expect("a path").to_string();
        let base =
            ["train", arch, "--data", "synthetic:96,12,5", "--batch", "32", "--max-steps", "5", "--seed", "3", "--threads", "1", "--workers", "1", "--quiet"];
        let (code, _, err) = crate::common::incc(&[&base[..], extra, &["--out", &out]].concat());
        (code, err, out)
    };
    let load = |out: &str| incc::trainer::checkpoint::load(&std::path::Path::new(out).join("last.safetensors")).expect("a checkpoint");
    let sgd = ["--optimizer", "sgd", "--lr", "0.1", "--weight-decay", "0.001"];
    let rmsprop = ["--optimizer", "rmsprop", "--ema", "0.9", "--clip-norm", "0.05"];
    for (name, optimizer) in [("sgd", &sgd[..]), ("rmsprop", &rmsprop[..])] {
        let (code, err, whole) = train("tests/fixtures/dp_plain.inc", &format!("{name}-whole"), optimizer);
        assert_eq!(code, 0, "{err}");
        let (code, err, micro) = train("tests/fixtures/dp_plain.inc", &format!("{name}-micro"), &[optimizer, &["--accumulate", "4"]].concat());
        assert_eq!(code, 0, "{err}");
        let (a, b) = (load(&whole), load(&micro));
        assert_eq!(a.position.step, b.position.step);
        assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
        for (tensor, t) in &a.tensors {
            for (x, y) in t.data.iter().zip(&b.tensors[tensor].data) {
                assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{name}: `{tensor}` is {x} whole and {y} accumulated");
            }
        }
    }
    let (code, err, out) = train(crate::onnx::TINY_RESIDUAL, "batch-norm", &["--accumulate", "2"]);
    assert_eq!(code, 0, "{err}");
    let c = load(&out);
    assert!(
        c.tensors.iter().filter(|(n, _)| n.ends_with("running_var")).all(|(_, t)| t.data.iter().all(|v| v.is_finite() && *v != 1.0)),
        "running statistics moved"
    );
    let (code, err, _) = train("tests/fixtures/dp_plain.inc", "indivisible", &["--accumulate", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--accumulate 3 must divide each process's batch of 32 examples"), "{err}");
    // The micro-batches' gradients are summed on the host; a profile is of a one-graph step.
    let (code, err, _) = train("tests/fixtures/dp_plain.inc", "on-cuda", &["--accumulate", "2", "--provider", "cuda"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--accumulate sums the micro-batches' gradients on the host: it runs on the CPU provider"), "{err}");
    let profile = dir.join("p.json");
    let (code, err, _) = train("tests/fixtures/dp_plain.inc", "profiled", &["--accumulate", "2", "--profile", profile.to_str().expect("a path")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--profile profiles a step that is one graph: profile a run of one process, without --accumulate"), "{err}");
}

/// `--recompute blocks`: each block's values are computed a second time right before its
/// gradients. The step computes the same values (the second pass runs the same kernels on the
/// same inputs; here bit for bit), and its backward pass reads nothing the forward pass made inside
/// a block but the block's output (the next block's input, which its replay starts from).
#[test]
fn recomputing_blocks_trains_as_keeping_their_values() {
    use incc::ir::FrameKind;
    use incc::train::Recompute;
    let c = crate::common::compile_arch("mini/inception_resnet_fmnist");
    let g = &c.graph;
    let cfg = TrainConfig { recompute: Recompute::Blocks, ..TrainConfig::default() };
    let model = emit_training(g, &c.sources, &cfg, Some(4)).expect("emits");
    let nodes = &model.graph.as_ref().expect("a graph").node;
    let producer: HashMap<&str, usize> = nodes.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for v in &n.input {
            readers.entry(v.as_str()).or_default().push(i);
        }
    }
    // The backward pass: every node that depends on the gradient of the logits.
    let mut backward = HashSet::new();
    let mut stack = vec![producer["loss/d/logits"]];
    while let Some(i) = stack.pop() {
        if backward.insert(i) {
            stack.extend(nodes[i].output.iter().flat_map(|o| readers.get(o.as_str()).into_iter().flatten()));
        }
    }
    let in_block = |n: NodeIndex| g.frame_chain(g.node(n).frame).iter().any(|&f| matches!(g.frame(f).kind, FrameKind::Block { .. }));
    let block_outputs: HashSet<&str> = g.frames.iter().filter_map(|f| f.io).map(|(_, last)| g.node(last).name.as_str()).collect();
    let block_nodes: Vec<&str> = g.order().into_iter().filter(|&n| in_block(n)).map(|n| g.node(n).name.as_str()).collect();
    assert!(block_nodes.len() > 50, "{block_nodes:?}");
    let of_block_node = |value: &str| block_nodes.iter().any(|b| value == *b || value.starts_with(&format!("{b}/")));
    let mut replayed = 0;
    for &i in &backward {
        let node = &nodes[i];
        replayed += usize::from(node.name.starts_with("recompute/"));
        for value in &node.input {
            let made_before = producer.get(value.as_str()).is_some_and(|p| !backward.contains(p));
            assert!(
                !(made_before && of_block_node(value)) || block_outputs.contains(value.as_str()),
                "`{}` ({}) in the backward pass reads `{value}`, which the forward pass made inside a block",
                node.name,
                node.op_type
            );
        }
    }
    assert!(replayed > block_nodes.len(), "{replayed} nodes replay {} block nodes", block_nodes.len());
    let flat = compile_src("network flat {\n  input 1x8x8\n  c: conv 3x3 4\n  global avgpool\n  fc 3\n}\n", &PassOptions::default(), None).expect("compiles");
    let err = emit_training(&flat.graph, &flat.sources, &cfg, None).expect_err("no block to recompute");
    snapshots(|| insta::assert_snapshot!("train__recompute_without_blocks", err.render(&flat.sources)));

    if !ort_ready() {
        return;
    }
    let dir = crate::common::fresh_folder("recompute");
    let train = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let base = ["train", "archs/mini/inception_resnet_fmnist.inc", "--data", "synthetic:48,28,10", "--batch", "16", "--max-steps", "3", "--seed", "5"];
        let (code, _, err) =
            crate::common::incc(&[&base[..], &["--threads", "1", "--workers", "1", "--quiet", "--out", out.to_str().expect("a path")], extra].concat());
        assert_eq!(code, 0, "{name}: {err}");
        incc::trainer::checkpoint::load(&out.join("last.safetensors")).expect("a checkpoint")
    };
    let (kept, recomputed) = (train("kept", &[]), train("recomputed", &["--recompute", "blocks"]));
    assert_eq!(kept.tensors.keys().collect::<Vec<_>>(), recomputed.tensors.keys().collect::<Vec<_>>());
    for (tensor, t) in &kept.tensors {
        for (x, y) in t.data.iter().zip(&recomputed.tensors[tensor].data) {
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "`{tensor}` is {x} kept and {y} recomputed");
        }
    }
}
