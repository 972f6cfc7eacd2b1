//! The runtime API on tiny ONNX models built here with the prost types, whose outputs are worked
//! out by hand. Every test needs ONNX Runtime: without one it prints `skipped: ...` and passes,
//! unless `CI` is set, where it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use incc::driver::{build_onnx, WeightsSource};
use incc::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension::Value as DimValue, tensor_shape_proto::Dimension, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use incc::runtime::bench::{bench, profile, render_table, BenchConfig};
use incc::runtime::error::RuntimeError;
use incc::runtime::images::{preprocess, synthetic_batch, Preprocess};
use incc::runtime::profile::{ProfileFiles, Trace, SLOWEST_NODES};
use incc::runtime::providers::{describe_providers, providers_used};
use incc::runtime::session::{Dim, Model, Provider, SessionConfig};
use incc::runtime::tensor::run;
use incc::runtime::topk::top_k;
use prost::Message;

use crate::common::{ort_ready, snapshots};

// ---- tiny model builders -------------------------------------------------------------------

/// A dimension: a number, or a symbolic name.
enum D {
    N(i64),
    S(&'static str),
}

fn value_info(name: &str, dims: &[D]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                D::N(n) => DimValue::DimValue(*n),
                D::S(s) => DimValue::DimParam((*s).to_owned()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: DataType::Float as i32, shape: Some(TensorShapeProto { dim }) })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn initializer(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto { name: name.to_owned(), dims: dims.to_vec(), data_type: DataType::Float as i32, float_data: data.to_vec(), ..Default::default() }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.to_owned(), r#type: AttributeType::Int as i32, i, ..Default::default() }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: format!("{}_{}", op.to_lowercase(), outputs[0]),
        op_type: op.to_owned(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: outputs.iter().map(|s| (*s).to_owned()).collect(),
        attribute,
        ..Default::default()
    }
}

struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    input: ValueInfoProto,
    outputs: Vec<ValueInfoProto>,
    metadata: Vec<(&'static str, &'static str)>,
}

fn encode(g: Graph) -> Vec<u8> {
    ModelProto {
        ir_version: 10,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 18 }],
        producer_name: "incc-tests".to_owned(),
        graph: Some(GraphProto {
            name: "tiny".to_owned(),
            node: g.nodes,
            initializer: g.initializers,
            input: vec![g.input],
            output: g.outputs,
            ..Default::default()
        }),
        metadata_props: g.metadata.into_iter().map(|(key, value)| StringStringEntryProto { key: key.to_owned(), value: value.to_owned() }).collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// x [N, 2, 2, 2] -> 1x1 Conv (3 output channels) -> `conv` -> Relu -> `relu`; both are outputs.
fn conv_relu_model() -> Vec<u8> {
    encode(Graph {
        nodes: vec![node("Conv", &["x", "w", "b"], &["conv"], vec![]), node("Relu", &["conv"], &["relu"], vec![])],
        initializers: vec![
            // out0 = x0 + 2 x1 + 0.5;  out1 = -x0 + 0.5 x1 - 1;  out2 = -3 x1 + 2
            initializer("w", &[3, 2, 1, 1], &[1.0, 2.0, -1.0, 0.5, 0.0, -3.0]),
            initializer("b", &[3], &[0.5, -1.0, 2.0]),
        ],
        input: value_info("x", &[D::S("N"), D::N(2), D::N(2), D::N(2)]),
        outputs: vec![value_info("conv", &[D::S("N"), D::N(3), D::N(2), D::N(2)]), value_info("relu", &[D::S("N"), D::N(3), D::N(2), D::N(2)])],
        metadata: vec![("incc.mean", "0.5,0.5,0.5"), ("incc.std", "0.5,0.5,0.5"), ("incc.network", "tiny")],
    })
}

/// x [N, 2, 1, 1] -> Flatten -> Gemm (W [3, 2], transB, C [3]) -> `logits` [N, 3].
fn gemm_model() -> Vec<u8> {
    encode(Graph {
        nodes: vec![node("Flatten", &["x"], &["flat"], vec![int_attr("axis", 1)]), node("Gemm", &["flat", "w", "c"], &["logits"], vec![int_attr("transB", 1)])],
        // logits = [x0, x1, x0 + x1 + 1]
        initializers: vec![initializer("w", &[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), initializer("c", &[3], &[0.0, 0.0, 1.0])],
        input: value_info("x", &[D::S("N"), D::N(2), D::N(1), D::N(1)]),
        outputs: vec![value_info("logits", &[D::S("N"), D::N(3)])],
        metadata: vec![],
    })
}

fn cpu() -> SessionConfig {
    SessionConfig { threads: Some(1), ..SessionConfig::default() }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("incc-runtime-test-{}-{name}", std::process::id()))
}

// ---- tests -----------------------------------------------------------------------------------

#[test]
fn conv_relu_outputs_by_hand() {
    if !ort_ready() {
        return;
    }
    let mut model = Model::from_bytes(conv_relu_model(), cpu()).unwrap();
    // Example 0: channel 0 = [1, 2, 3, 4], channel 1 = [-1, 0, 1, 2]; example 1 is its negation.
    let x0 = [1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 2.0];
    let images: Vec<f32> = x0.iter().copied().chain(x0.iter().map(|v| -v)).collect();
    let outputs = run(&mut model, &images, [2, 2, 2, 2]).unwrap();
    let names: Vec<&str> = outputs.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(names, ["conv", "relu"]);
    #[rustfmt::skip]
    let conv = [
        -0.5, 2.5, 5.5, 8.5,   -2.5, -3.0, -3.5, -4.0,   5.0, 2.0, -1.0, -4.0,
        1.5, -1.5, -4.5, -7.5,  0.5, 1.0, 1.5, 2.0,     -1.0, 2.0, 5.0, 8.0,
    ];
    let relu: Vec<f32> = conv.iter().map(|v: &f32| v.max(0.0)).collect();
    for (name, shape, data) in &outputs {
        assert_eq!(shape, &[2, 3, 2, 2], "{name}");
        let want: &[f32] = if name == "conv" { &conv } else { &relu };
        for (got, want) in data.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{name}: got {data:?}, want {want:?}");
        }
    }
}

#[test]
fn model_info_has_symbolic_batch_and_metadata() {
    if !ort_ready() {
        return;
    }
    let model = Model::from_bytes(conv_relu_model(), cpu()).unwrap();
    let info = model.info();
    assert_eq!(info.inputs.len(), 1);
    let input = &info.inputs[0];
    assert_eq!((input.name.as_str(), input.element_type.as_str()), ("x", "f32"));
    assert_eq!(input.dims, [Dim::Symbolic("N".into()), Dim::Fixed(2), Dim::Fixed(2), Dim::Fixed(2)]);
    assert_eq!(input.shape_text(), "[N, 2, 2, 2]");
    assert_eq!(info.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["conv", "relu"]);
    let expected: BTreeMap<String, String> =
        [("incc.mean", "0.5,0.5,0.5"), ("incc.std", "0.5,0.5,0.5"), ("incc.network", "tiny")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    assert_eq!(info.metadata, expected);
    // The metadata feeds the image preprocessing.
    let pre = Preprocess::new(2, 2).with_metadata(&info.metadata).unwrap();
    assert_eq!((pre.mean, pre.std), ([0.5; 3], [0.5; 3]));
}

#[test]
fn gemm_from_path_then_top_k() {
    if !ort_ready() {
        return;
    }
    let path = temp_path("gemm.onnx");
    std::fs::write(&path, gemm_model()).unwrap();
    let loaded = Model::from_path(&path, SessionConfig::default());
    std::fs::remove_file(&path).unwrap();
    let mut model = loaded.unwrap();
    let outputs = run(&mut model, &[1.0, 2.0, -3.0, 0.5], [2, 2, 1, 1]).unwrap();
    let (name, shape, logits) = &outputs[0];
    assert_eq!((name.as_str(), shape.as_slice()), ("logits", &[2, 3][..]));
    assert_eq!(logits, &[1.0, 2.0, 4.0, -3.0, 0.5, -1.5]);
    let top = top_k(logits, shape, 2).unwrap();
    assert_eq!(top[0].iter().map(|t| t.0).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(top[1].iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2]);
    // softmax([1, 2, 4])[2] = e^4 / (e + e^2 + e^4)
    let e = std::f32::consts::E;
    assert!((top[0][0].1 - e.powi(4) / (e + e * e + e.powi(4))).abs() < 1e-6);
}

#[test]
fn preprocessed_image_runs() {
    if !ort_ready() {
        return;
    }
    // A uniform 3x3 image through the Inception preprocessing to 2x2; the conv model takes two
    // channels, so it gets the R and G planes.
    let image = image::RgbImage::from_pixel(3, 3, image::Rgb([255, 0, 128]));
    let chw = preprocess(&image, &Preprocess::new(2, 2)).unwrap();
    assert_eq!(chw.len(), 12);
    let mut model = Model::from_bytes(conv_relu_model(), cpu()).unwrap();
    let outputs = run(&mut model, &chw[..8], [1, 2, 2, 2]).unwrap();
    // R = 1, G = -1 after Inception normalisation: conv = [1 - 2 + 0.5, -1 - 0.5 - 1, 3 + 2].
    let conv = &outputs[0].2;
    for (c, want) in [-0.5f32, -2.5, 5.0].iter().enumerate() {
        assert!(conv[c * 4..c * 4 + 4].iter().all(|v| (v - want).abs() < 1e-6), "{conv:?}");
    }
}

#[test]
fn wrong_input_shape_names_the_dimension() {
    if !ort_ready() {
        return;
    }
    let mut model = Model::from_bytes(conv_relu_model(), cpu()).unwrap();
    let err = run(&mut model, &[0.0; 12], [1, 3, 2, 2]).unwrap_err().to_string();
    assert!(err.contains("input `x` expects shape [N, 2, 2, 2]"), "{err}");
    assert!(err.contains("dim 1 (channels) must be 2, got 3"), "{err}");
    let err = run(&mut model, &[0.0; 8], [1, 2, 2, 4]).unwrap_err().to_string();
    assert!(err.contains("dim 3 (width) must be 2, got 4"), "{err}");
    let err = run(&mut model, &[0.0; 8], [0, 2, 2, 2]).unwrap_err().to_string();
    assert!(err.contains("dim 0 (batch) is 0"), "{err}");
    let err = run(&mut model, &[0.0; 7], [1, 2, 2, 2]).unwrap_err().to_string();
    assert!(err.contains("needs 8 values, but 7 were given"), "{err}");

    // A rank-2 input cannot take an NCHW batch.
    let flat = encode(Graph {
        nodes: vec![node("Relu", &["x"], &["y"], vec![])],
        initializers: vec![],
        input: value_info("x", &[D::S("N"), D::N(4)]),
        outputs: vec![value_info("y", &[D::S("N"), D::N(4)])],
        metadata: vec![],
    });
    let mut model = Model::from_bytes(flat, cpu()).unwrap();
    let err = run(&mut model, &[0.0; 4], [1, 4, 1, 1]).unwrap_err().to_string();
    assert!(err.contains("rank 2, not 4"), "{err}");
}

#[test]
fn load_errors_are_clear() {
    if !ort_ready() {
        return;
    }
    let err = Model::from_bytes(b"not a model".to_vec(), cpu()).unwrap_err();
    assert!(matches!(err, RuntimeError::Load { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cannot load the model (11 bytes in memory): "), "{err}");
    let missing = temp_path("missing.onnx");
    let err = Model::from_path(&missing, cpu()).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[test]
fn bench_tiny_model() {
    if !ort_ready() {
        return;
    }
    let mut model = Model::from_bytes(conv_relu_model(), cpu()).unwrap();
    let cfg = BenchConfig { batches: vec![1, 4], warmup: 2, iterations: 5, min_time: Duration::ZERO, max_iterations: 100 };
    let results = bench(&mut model, [2, 2, 2], &cfg).unwrap();
    assert_eq!(results.iter().map(|r| r.batch).collect::<Vec<_>>(), [1, 4]);
    for r in &results {
        assert_eq!(r.iterations, 5);
        assert!(r.min_ms > 0.0 && r.images_per_s > 0.0, "{r:?}");
        assert!(r.min_ms <= r.p10_ms && r.p10_ms <= r.median_ms && r.median_ms <= r.p90_ms && r.p90_ms <= r.max_ms);
    }
    let json = serde_json::to_value(&results).unwrap();
    assert_eq!(json[1]["batch"], 4);
    assert!(json[0]["median_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(render_table(&results).lines().count(), 4);

    // min_time extends past `iterations` (up to max_iterations).
    let cfg = BenchConfig { batches: vec![1], warmup: 0, iterations: 1, min_time: Duration::from_millis(20), max_iterations: 1_000_000 };
    let r = &bench(&mut model, [2, 2, 2], &cfg).unwrap()[0];
    assert!(r.iterations > 1, "{r:?}");
    let err = bench(&mut model, [3, 2, 2], &BenchConfig::default()).unwrap_err().to_string();
    assert!(err.contains("dim 1 (channels)"), "{err}");
}

#[test]
fn providers_used_on_cpu() {
    if !ort_ready() {
        return;
    }
    let model = Model::from_bytes(conv_relu_model(), cpu()).unwrap();
    let counts = providers_used(&model, [1, 2, 2, 2]).unwrap();
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["CPUExecutionProvider"], "{counts:?}");
    assert!(counts["CPUExecutionProvider"] >= 1, "{counts:?}");
}

/// A real profile on the CPU: the op types are those of the emitted graph (this network has
/// nothing for ONNX Runtime to fuse) plus its layout changes, every node ran once per run, and
/// the times add up.
#[test]
fn profile_of_a_compiled_model_has_the_ops_it_ran() {
    if !ort_ready() {
        return;
    }
    let artifact = build_onnx(Path::new("tests/fixtures/unfused.inc"), &Default::default(), &Default::default(), WeightsSource::Seed(0), None).unwrap();
    let emitted = &artifact.model.graph.as_ref().unwrap().node;
    let model = Model::from_bytes(incc::onnx::emit::encode(&artifact.model, Some(&artifact.weights)).unwrap(), cpu()).unwrap();
    let dir = temp_path("profile");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let files = ProfileFiles::new(dir.join("p.json")).unwrap();
    let p = profile(&model, [3, 12, 12], 2, 1, 3, &files).unwrap();

    assert_eq!(p.runs, 3);
    const LAYOUT: [&str; 2] = ["ReorderInput", "ReorderOutput"];
    let ran: BTreeSet<&str> = p.ops.iter().map(|o| o.op.as_str()).filter(|op| !LAYOUT.contains(op)).collect();
    let expected: BTreeSet<&str> = emitted.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ran, expected, "{}", p.render());
    assert_eq!(expected, BTreeSet::from(["Conv", "MaxPool", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]));
    let layout_nodes: usize = p.ops.iter().filter(|o| LAYOUT.contains(&o.op.as_str())).map(|o| o.nodes).sum();
    assert_eq!(p.nodes, emitted.len() + layout_nodes);
    for o in &p.ops {
        assert_eq!(o.kernels, 3 * o.nodes, "{o:?}");
        assert!(o.total_ms >= 0.0 && (o.ms_per_run * 3.0 - o.total_ms).abs() < 1e-9, "{o:?}");
    }
    assert!(p.ops.iter().filter(|o| ["Conv", "Gemm"].contains(&o.op.as_str())).all(|o| o.total_ms > 0.0), "{}", p.render());
    let shares: f64 = p.ops.iter().map(|o| o.share).sum();
    assert!((shares - 100.0).abs() < 1e-9, "{shares}");
    assert!(p.kernel_ms > 0.0 && p.run_ms >= p.kernel_ms, "{p:?}");
    assert_eq!(p.slowest.len(), p.nodes.min(SLOWEST_NODES));
    assert!(p.slowest.windows(2).all(|w| w[0].total_ms >= w[1].total_ms));
    assert!(p.slowest.iter().all(|n| n.provider == "CPUExecutionProvider"));

    // The summary as written, and ONNX Runtime's trace beside it (with the warm-up run); nothing else.
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(files.summary()).unwrap()).unwrap();
    let ops: Vec<&str> = written["ops"].as_array().unwrap().iter().map(|o| o["op"].as_str().unwrap()).collect();
    assert_eq!(ops, p.ops.iter().map(|o| o.op.as_str()).collect::<Vec<_>>());
    assert_eq!((written["runs"].as_u64(), written["nodes"].as_u64()), (Some(3), Some(p.nodes as u64)));
    assert!((written["kernel_ms"].as_f64().unwrap() - p.kernel_ms).abs() < 1e-12, "{written}");
    assert_eq!(Trace::read(&files.trace()).unwrap().runs.len(), 4);
    let mut left: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["p.json", "p.trace.json"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The summary of a hand-written trace (fixed times): the table users read and the JSON it writes.
#[test]
fn profile_summary_of_a_hand_written_trace() {
    let p = Trace::read(Path::new("tests/fixtures/ort_profile.json")).unwrap().summarise(1, SLOWEST_NODES).unwrap();
    snapshots(|| {
        insta::assert_snapshot!("profile__table", p.render());
        insta::assert_json_snapshot!("profile__json", p);
    });
}

/// Without the `cuda` feature, or with a CPU-only library, asking for CUDA is a clear error (not
/// a panic, not a CPU fallback). Where CUDA works, the model must give the CPU's results with
/// its nodes on the CUDA provider; set `INCC_EXPECT_CUDA=1` to make a CUDA failure fatal.
#[test]
fn cuda_runs_or_fails_clearly() {
    if !ort_ready() {
        return;
    }
    let config = SessionConfig { provider: Provider::Cuda { device: 0 }, ..SessionConfig::default() };
    let err = match Model::from_bytes(conv_relu_model(), config) {
        Ok(mut model) => {
            let images = synthetic_batch([3, 2, 2, 2], 1).expect("small");
            let on_gpu = run(&mut model, &images, [3, 2, 2, 2]).unwrap();
            let on_cpu = run(&mut Model::from_bytes(conv_relu_model(), cpu()).unwrap(), &images, [3, 2, 2, 2]).unwrap();
            for ((name, _, gpu), (_, _, cpu)) in on_gpu.iter().zip(&on_cpu) {
                let diff = gpu.iter().zip(cpu).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(diff < 1e-4, "{name}: GPU and CPU differ by {diff}");
            }
            let counts = providers_used(&model, [1, 2, 2, 2]).unwrap();
            eprintln!("CUDA: {}", describe_providers(&counts));
            assert!(counts.get("CUDAExecutionProvider").is_some_and(|&n| n >= 1), "{counts:?}");
            // A device that does not exist is a CUDA error too, not a model error.
            let absent = SessionConfig { provider: Provider::Cuda { device: 99 }, ..SessionConfig::default() };
            let err = Model::from_bytes(conv_relu_model(), absent).unwrap_err();
            eprintln!("cuda:99: {err}");
            assert!(matches!(err, RuntimeError::CudaUnavailable { .. }), "{err:?}");
            return;
        }
        Err(err) => err,
    };
    let text = err.to_string();
    assert!(std::env::var_os("INCC_EXPECT_CUDA").is_none(), "INCC_EXPECT_CUDA is set, but: {text}");
    if cfg!(feature = "cuda") {
        let lib = incc::runtime::ortlib::initialised().unwrap().path.display().to_string();
        assert!(matches!(err, RuntimeError::CudaUnavailable { .. }), "{err:?}");
        assert!(text.contains(&lib), "the message names the library: {text}");
    } else {
        assert!(matches!(err, RuntimeError::CudaNotBuilt), "{err:?}");
        assert!(text.contains("--features cuda"), "{text}");
    }
}
