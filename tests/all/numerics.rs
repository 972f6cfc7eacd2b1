//! Emitted models in ONNX Runtime against values computed here: by hand for a tiny network, and by
//! a naive reference interpreter of the IR (written in this file, independent of the ONNX lowering)
//! for a small Inception-ResNet with random batch-norm statistics, folded and unfolded.

use crate::common::{arch, compile_src, ort_ready};
use crate::onnx::{artifact, TINY_RESIDUAL};
use incc::driver::{build_onnx, WeightsSource};
use incc::elab::Settings;
use incc::ir::ops::{Op, PoolKind};
use incc::ir::Graph;
use incc::onnx::emit::encode;
use incc::passes::PassOptions;
use incc::runtime::session::{Model, SessionConfig};
use incc::runtime::tensor::run;
use incc::weights::{Tensor, Weights};
use std::collections::HashMap;
use std::path::Path;

fn run_model(model: &incc::onnx::proto::ModelProto, weights: &Weights, input: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let mut m = Model::from_bytes(encode(model, Some(weights)).expect("encodes"), SessionConfig::default()).expect("loads");
    run(&mut m, input, shape).expect("runs").remove(0).2
}

/// conv 2x2 (weights [[1, 0], [0, 1]], bias 0.5) -> relu -> global average -> fc 2, on 0..8.
#[test]
fn a_hand_computed_network() {
    if !ort_ready() {
        return;
    }
    let c =
        compile_src("network hand {\n  input 1x3x3\n  c: conv 2x2 1 relu\n  global avgpool\n  f: fc 2\n}\n", &PassOptions::default(), None).expect("compiles");
    let mut w = Weights::default();
    w.tensors.insert("c.weight".into(), Tensor { shape: vec![1, 1, 2, 2], data: vec![1.0, 0.0, 0.0, 1.0] });
    w.tensors.insert("c.bias".into(), Tensor { shape: vec![1], data: vec![0.5] });
    w.tensors.insert("f.weight".into(), Tensor { shape: vec![2, 1], data: vec![1.0, -2.0] });
    w.tensors.insert("f.bias".into(), Tensor { shape: vec![2], data: vec![0.0, 1.0] });
    let options = incc::onnx::emit::EmitOptions { batch: None, metadata: vec![] };
    let model = incc::onnx::emit::emit(&c.graph, &w, &c.sources, &options).expect("emits");
    let input: Vec<f32> = (0..9).map(|v| v as f32).collect();
    // Windows: 0+4, 1+5, 3+7, 4+8, plus 0.5 -> 4.5, 6.5, 10.5, 12.5; mean 8.5; fc: [8.5, -17 + 1].
    assert_eq!(run_model(&model, &w, &input, [1, 1, 3, 3]), vec![8.5, -16.0]);
}

/// A reference forward pass over the IR: direct loops, f64, one example at a time.
fn reference(graph: &Graph, w: &Weights, input: &[f32]) -> Vec<f64> {
    let mut values: HashMap<_, Vec<f64>> = HashMap::new();
    for n in graph.order() {
        let node = graph.node(n);
        let ins: Vec<&Vec<f64>> = graph.inputs(n).iter().map(|i| &values[i]).collect();
        let in_shapes = graph.input_shapes(n);
        let out_shape = graph.shape(n).0.clone();
        let p = |s: &str| w.tensors[&format!("{}.{s}", node.name)].data.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
        let out = match &node.op {
            Op::Input(_) => input.iter().map(|&v| f64::from(v)).collect(),
            Op::Conv(conv) => {
                let (ci, h, wd) = (in_shapes[0].0[0], in_shapes[0].0[1], in_shapes[0].0[2]);
                let (co, ho, wo) = (out_shape[0], out_shape[1], out_shape[2]);
                let [t, l, _, _] = conv.pads(in_shapes[0]);
                let (kh, kw) = (conv.kernel[0], conv.kernel[1]);
                let weight = p("weight");
                let bias = if conv.bias { p("bias") } else { vec![0.0; co] };
                let mut y = vec![0.0; co * ho * wo];
                for o in 0..co {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let mut acc = bias[o];
                            for c in 0..ci {
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let iy = (oy * conv.stride[0] + ky) as isize - t as isize;
                                        let ix = (ox * conv.stride[1] + kx) as isize - l as isize;
                                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                            acc += weight[((o * ci + c) * kh + ky) * kw + kx] * ins[0][(c * h + iy as usize) * wd + ix as usize];
                                        }
                                    }
                                }
                            }
                            y[(o * ho + oy) * wo + ox] = acc;
                        }
                    }
                }
                y
            }
            Op::BatchNorm(bn) => {
                let (g, b, m, v) = (p("weight"), p("bias"), p("running_mean"), p("running_var"));
                let per = ins[0].len() / g.len();
                ins[0]
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        let c = i / per;
                        (x - m[c]) / (v[c] + bn.eps).sqrt() * g[c] + b[c]
                    })
                    .collect()
            }
            Op::Relu(_) => ins[0].iter().map(|x| x.max(0.0)).collect(),
            Op::Pool(pool) => {
                let (c, h, wd) = (in_shapes[0].0[0], in_shapes[0].0[1], in_shapes[0].0[2]);
                let (ho, wo) = (out_shape[1], out_shape[2]);
                let [t, l, _, _] = pool.pads(in_shapes[0]);
                let mut y = vec![0.0; c * ho * wo];
                for ch in 0..c {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let (mut acc, mut count, mut best) = (0.0, 0usize, f64::NEG_INFINITY);
                            for ky in 0..pool.kernel[0] {
                                for kx in 0..pool.kernel[1] {
                                    let iy = (oy * pool.stride[0] + ky) as isize - t as isize;
                                    let ix = (ox * pool.stride[1] + kx) as isize - l as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                        let v = ins[0][(ch * h + iy as usize) * wd + ix as usize];
                                        acc += v;
                                        count += 1;
                                        best = best.max(v);
                                    }
                                }
                            }
                            let window = if pool.count_include_pad { pool.kernel[0] * pool.kernel[1] } else { count };
                            y[(ch * ho + oy) * wo + ox] = if pool.kind == PoolKind::Max { best } else { acc / window as f64 };
                        }
                    }
                }
                y
            }
            Op::GlobalPool(g) => {
                let c = in_shapes[0].0[0];
                let per = ins[0].len() / c;
                (0..c)
                    .map(|ch| {
                        let s = &ins[0][ch * per..(ch + 1) * per];
                        if g.kind == PoolKind::Avg {
                            s.iter().sum::<f64>() / per as f64
                        } else {
                            s.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                        }
                    })
                    .collect()
            }
            Op::Concat(_) => ins.iter().flat_map(|v| v.iter().copied()).collect(),
            Op::Add(_) => ins[0].iter().zip(ins[1]).map(|(a, b)| a + b).collect(),
            Op::Scale(s) => ins[0].iter().map(|x| x * s.factor).collect(),
            Op::Dropout(_) | Op::Flatten(_) => ins[0].clone(),
            Op::Fc(fc) => {
                let weight = p("weight");
                let bias = if fc.bias { p("bias") } else { vec![0.0; fc.out_features] };
                (0..fc.out_features).map(|o| bias[o] + ins[0].iter().enumerate().map(|(i, x)| weight[o * ins[0].len() + i] * x).sum::<f64>()).collect()
            }
            Op::Softmax(_) => {
                let m = ins[0].iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = ins[0].iter().map(|x| (x - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(|x| x / s).collect()
            }
        };
        values.insert(n, out);
    }
    values.remove(&graph.output).expect("output computed")
}

/// Random batch-norm statistics, so that normalisation and folding are not the identity.
fn randomise_batch_norm(w: &mut Weights) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    for (name, t) in &mut w.tensors {
        let f: Box<dyn Fn(f32) -> f32> = if name.ends_with("bn.running_var") || name.ends_with("bn.weight") {
            Box::new(|u| 0.5 + u)
        } else if name.ends_with("bn.running_mean") || name.ends_with("bn.bias") {
            Box::new(|u| u - 0.5)
        } else {
            continue;
        };
        for v in &mut t.data {
            *v = f(next());
        }
    }
}

fn batch_input(n: usize, chw: usize) -> Vec<f32> {
    (0..n * chw).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect()
}

#[test]
fn tiny_inception_resnet_matches_the_reference_interpreter_folded_and_not() {
    if !ort_ready() {
        return;
    }
    let plain = artifact(Path::new(TINY_RESIDUAL), false, None);
    let mut weights = plain.weights.clone();
    randomise_batch_norm(&mut weights);
    let options = incc::onnx::emit::EmitOptions { batch: None, metadata: vec![] };
    let model = incc::onnx::emit::emit(&plain.compiled.graph, &weights, &plain.compiled.sources, &options).expect("emits");
    let n = 3;
    let chw = 3 * 15 * 15;
    let input = batch_input(n, chw);
    let got = run_model(&model, &weights, &input, [n, 3, 15, 15]);
    let mut worst: f64 = 0.0;
    for i in 0..n {
        let expect = reference(&plain.compiled.graph, &weights, &input[i * chw..(i + 1) * chw]);
        let scale = expect.iter().map(|v| v.abs()).fold(1e-6, f64::max);
        for (g, e) in got[i * 5..(i + 1) * 5].iter().zip(&expect) {
            worst = worst.max((f64::from(*g) - e).abs() / scale);
        }
    }
    assert!(worst < 1e-5, "ONNX Runtime vs reference: {worst:e}");

    // Folding batch norm (IR and weights alike) gives the same outputs to 1e-5.
    let mut folded_graph = plain.compiled.graph.clone();
    let folds = incc::passes::fold_bn::fold_graph(&mut folded_graph);
    let mut folded_weights = weights.clone();
    incc::passes::fold_bn::fold_weights(&mut folded_weights, &folds).expect("folds");
    let folded = incc::onnx::emit::emit(&folded_graph, &folded_weights, &plain.compiled.sources, &options).expect("emits");
    assert!(folded.graph.as_ref().expect("graph").node.iter().all(|n| n.op_type != "BatchNormalization"));
    let got_folded = run_model(&folded, &folded_weights, &input, [n, 3, 15, 15]);
    let scale = got.iter().map(|v| v.abs()).fold(1e-6, f32::max);
    let diff = got.iter().zip(&got_folded).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale;
    assert!(diff < 1e-5, "folded vs unfolded: {diff:e}");
}

#[test]
fn every_network_runs_with_the_expected_output_shape() {
    if !ort_ready() {
        return;
    }
    // A small input keeps this quick; every stage still runs (75 is the smallest IR-v2 takes).
    let settings = Settings { input: Some(vec![3, 75, 75]), ..Settings::default() };
    for name in ["inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2", "inception_resnet_v2_paper"] {
        let a = build_onnx(&arch(name), &settings, &PassOptions::default(), WeightsSource::Seed(1), None).unwrap_or_else(|e| panic!("{e}"));
        let mut m = Model::from_bytes(encode(&a.model, Some(&a.weights)).expect("encodes"), SessionConfig::default()).expect("loads");
        let out = run(&mut m, &batch_input(2, 3 * 75 * 75), [2, 3, 75, 75]).expect("runs");
        assert_eq!(out[0].0, "logits", "{name}");
        assert_eq!(out[0].1, vec![2, 1000], "{name}");
        assert!(out[0].2.iter().all(|v| v.is_finite()), "{name}");
    }
}

#[test]
fn the_same_seed_gives_the_same_model_and_another_seed_another() {
    let build = |seed| {
        let a = build_onnx(Path::new(TINY_RESIDUAL), &Settings::default(), &PassOptions::default(), WeightsSource::Seed(seed), None).expect("builds");
        encode(&a.model, Some(&a.weights)).expect("encodes")
    };
    assert_eq!(build(3), build(3));
    assert_ne!(build(3), build(4));
}

#[test]
fn a_fixed_batch_is_enforced_by_the_runtime() {
    if !ort_ready() {
        return;
    }
    let a = artifact(Path::new(TINY_RESIDUAL), false, Some(2));
    let mut m = Model::from_bytes(encode(&a.model, Some(&a.weights)).expect("encodes"), SessionConfig::default()).expect("loads");
    assert_eq!(run(&mut m, &batch_input(2, 675), [2, 3, 15, 15]).expect("runs")[0].1, vec![2, 5]);
    let err = run(&mut m, &batch_input(3, 675), [3, 3, 15, 15]).expect_err("batch 3 does not fit");
    assert!(err.to_string().contains("must be 2"), "{err}");
}

/// The three networks with timm's own weights give timm's PyTorch logits. The reference files
/// (weights, input, logits) are made by `scripts/timm_reference.py`, which needs torch and timm:
/// this runs where they were made (`INCC_TIMM_REF`, default /tmp/timm_ref) and says it skipped
/// elsewhere. Tolerance: 1e-3 of the largest logit, the float32 gap between PyTorch and ONNX Runtime.
#[test]
fn compiled_networks_with_timm_weights_reproduce_timm_logits() {
    let dir = std::path::PathBuf::from(std::env::var_os("INCC_TIMM_REF").unwrap_or_else(|| "/tmp/timm_ref".into()));
    if !dir.join("inception_v4.calibrated.safetensors").exists() {
        eprintln!("skipped: no timm reference files in {} (scripts/timm_reference.py makes them)", dir.display());
        return;
    }
    if !ort_ready() {
        return;
    }
    let read_f32 = |name: String| -> Vec<f32> {
        let bytes = std::fs::read(dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    for (name, fold) in [("inception_v3", false), ("inception_v4", false), ("inception_v4", true), ("inception_resnet_v2", false)] {
        let weights = dir.join(format!("{name}.calibrated.safetensors"));
        let passes = PassOptions { fold_bn: fold, ..PassOptions::default() };
        let a = build_onnx(&arch(name), &Settings::default(), &passes, WeightsSource::File(&weights), None).unwrap_or_else(|e| panic!("{e}"));
        let reference = read_f32(format!("{name}.calibrated.logits.f32"));
        let images = read_f32(format!("{name}.calibrated.input.f32"));
        let n = reference.len() / 1000;
        let got = run_model(&a.model, &a.weights, &images, [n, 3, 299, 299]);
        let scale = reference.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let diff = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale;
        eprintln!("{name}{}: max |incc - timm| / max |timm| = {diff:.2e}", if fold { " (batch norm folded)" } else { "" });
        assert!(diff < 1e-3, "{name}: {diff:e}");
    }
}
