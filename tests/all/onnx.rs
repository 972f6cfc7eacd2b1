//! The ONNX back end: readable snapshots of emitted models, validation by the ONNX project's own
//! checker, external data, batch-norm folding on the IR and the weights.

use crate::common::{arch, python_check, snapshots};
use incc::driver::{build_onnx, Artifact, WeightsSource};
use incc::elab::Settings;
use incc::passes::PassOptions;
use std::path::Path;

pub const TINY_RESIDUAL: &str = "tests/fixtures/tiny_residual.inc";

pub fn artifact(path: &Path, fold_bn: bool, batch: Option<usize>) -> Artifact {
    let passes = PassOptions { fold_bn, ..PassOptions::default() };
    build_onnx(path, &Settings::default(), &passes, WeightsSource::Seed(0), batch).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn emitted_graphs_in_text_form() {
    let tiny = artifact(Path::new(TINY_RESIDUAL), false, None);
    let folded = artifact(Path::new(TINY_RESIDUAL), true, Some(4));
    let v4 = artifact(&arch("inception_v4"), false, None);
    snapshots(|| {
        insta::assert_snapshot!("onnx__tiny_residual", incc::onnx::text::render(&tiny.model));
        insta::assert_snapshot!("onnx__tiny_residual_folded_batch4", incc::onnx::text::render(&folded.model));
        insta::assert_snapshot!("onnx__inception_v4", incc::onnx::text::render(&v4.model));
    });
}

#[test]
fn initializers_are_named_by_the_compiler_and_nodes_carry_their_source_line() {
    let a = artifact(&arch("inception_resnet_v2"), false, None);
    let g = a.model.graph.as_ref().expect("graph");
    let params = incc::report::params::param_list(&a.compiled.graph);
    let names: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    for (name, _) in &params {
        assert!(names.contains(&name.as_str()), "no initializer {name}");
    }
    let conv = g.node.iter().find(|n| n.name == "repeat.3.branch1.1.conv").expect("node by source path");
    assert_eq!(conv.op_type, "Conv");
    assert!(conv.doc_string.starts_with("archs/inception_resnet_v2.inc:"), "{}", conv.doc_string);
    let meta: std::collections::HashMap<&str, &str> = a.model.metadata_props.iter().map(|m| (m.key.as_str(), m.value.as_str())).collect();
    assert_eq!(meta["incc.parameters"], "55843464");
    assert_eq!(meta["incc.macs"], "13155794016");
    assert_eq!(meta["incc.input"], "3x299x299");
    assert_eq!(meta["incc.source_sha256"].len(), 64);
    // Every intermediate value has its shape.
    assert!(g.value_info.len() >= g.node.len() - 1);
}

#[test]
fn folding_batch_norm_removes_it_from_the_graph_and_gives_convs_a_bias() {
    let a = artifact(&arch("inception_v4"), true, None);
    let g = a.model.graph.as_ref().expect("graph");
    assert!(g.node.iter().all(|n| n.op_type != "BatchNormalization"));
    assert_eq!(g.node.iter().filter(|n| n.op_type == "Conv").count(), 149);
    assert!(g.initializer.iter().any(|t| t.name == "features.0.conv.bias"));
    assert_eq!(a.compiled.folds.len(), 149);
}

/// The ONNX project's checker (full_check) and strict shape inference accept every network in
/// archs/, and the tiny test networks, folded or not. Needs Python's `onnx` package: CI installs it.
#[test]
fn every_emitted_model_passes_the_onnx_checker() {
    let dir = std::env::temp_dir().join(format!("incc-onnx-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut paths = vec![];
    let mut cases: Vec<(std::path::PathBuf, bool)> =
        ["inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2", "inception_resnet_v2_paper"]
            .into_iter()
            .map(|n| (arch(n), false))
            .collect();
    cases.push((TINY_RESIDUAL.into(), false));
    cases.push((TINY_RESIDUAL.into(), true));
    cases.push((arch("inception_resnet_v1"), true));
    for (i, (path, fold)) in cases.iter().enumerate() {
        let a = artifact(path, *fold, None);
        let out = dir.join(format!("{i}.onnx"));
        incc::onnx::emit::write(&a.model, Some(&a.weights), &out, incc::onnx::emit::EXTERNAL_DATA_THRESHOLD).expect("write");
        paths.push(out);
    }
    let args: Vec<std::ffi::OsString> = paths.iter().map(|p| p.clone().into_os_string()).collect();
    python_check("check_onnx.py", &args, "the `onnx` package", "the ONNX checker refused a model");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn large_models_keep_their_weights_in_an_external_data_file() {
    let a = artifact(Path::new(TINY_RESIDUAL), false, None);
    let dir = std::env::temp_dir().join(format!("incc-external-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tiny.onnx");
    incc::onnx::emit::write(&a.model, Some(&a.weights), &path, 0).expect("write with external data");
    let model: incc::onnx::proto::ModelProto = prost::Message::decode(std::fs::read(&path).expect("model").as_slice()).expect("decodes");
    let data = std::fs::read(dir.join("tiny.onnx.data")).expect("side file");
    let g = model.graph.expect("graph");
    let weight = g.initializer.iter().find(|t| t.name == "stem.conv.weight").expect("weight");
    assert!(weight.raw_data.is_empty());
    let field = |k: &str| weight.external_data.iter().find(|e| e.key == k).map(|e| e.value.clone()).expect(k);
    assert_eq!(field("location"), "tiny.onnx.data");
    let (offset, length): (usize, usize) = (field("offset").parse().expect("offset"), field("length").parse().expect("length"));
    assert_eq!(offset % 4096, 0);
    let expect = &a.weights.tensors["stem.conv.weight"].data;
    assert_eq!(&data[offset..offset + length], incc::weights::bytemuck_f32(expect));
    // No temporary files are left behind.
    let mut left: Vec<String> = std::fs::read_dir(&dir).expect("dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["tiny.onnx", "tiny.onnx.data"]);
    // A model small enough to hold its weights, written over it, takes the old side file away.
    incc::onnx::emit::write(&a.model, Some(&a.weights), &path, incc::onnx::emit::EXTERNAL_DATA_THRESHOLD).expect("write inline");
    assert!(!dir.join("tiny.onnx.data").exists(), "the larger model's side file is left behind");
    let model: incc::onnx::proto::ModelProto = prost::Message::decode(std::fs::read(&path).expect("model").as_slice()).expect("decodes");
    assert!(model.graph.expect("graph").initializer.iter().all(|t| t.external_data.is_empty()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The parameters' values are streamed from the weights as the model is encoded or written: the
/// bytes equal prost's encoding of the model with every value copied in, and a parameter without
/// values is an error that names it.
#[test]
fn models_are_written_straight_from_the_weights() {
    use incc::onnx::emit::{encode, write};
    let a = artifact(Path::new(TINY_RESIDUAL), false, None);
    let mut filled = a.model.clone();
    for t in &mut filled.graph.as_mut().expect("graph").initializer {
        if let Some(w) = a.weights.tensors.get(&t.name) {
            t.raw_data = incc::weights::bytemuck_f32(&w.data).to_vec();
        }
    }
    let expect = prost::Message::encode_to_vec(&filled);
    assert_eq!(encode(&a.model, Some(&a.weights)).expect("encodes"), expect);
    let dir = std::env::temp_dir().join(format!("incc-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tiny.onnx");
    write(&a.model, Some(&a.weights), &path, usize::MAX).expect("writes");
    assert_eq!(std::fs::read(&path).expect("written"), expect);
    let _ = std::fs::remove_dir_all(&dir);

    let mut missing = a.weights.clone();
    missing.tensors.remove("stem.conv.weight");
    let err = encode(&a.model, Some(&missing)).expect_err("a parameter has no values").to_string();
    assert_eq!(err, "initializer `stem.conv.weight` has no values and the weights have no tensor of that name");
    assert!(encode(&a.model, None).is_err());
}

#[test]
fn safetensors_round_trip_and_a_checkpoint_that_does_not_fit_is_listed_in_one_error() {
    let a = artifact(Path::new(TINY_RESIDUAL), false, None);
    let dir = std::env::temp_dir().join(format!("incc-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("w.safetensors");
    incc::weights::save(&file, &a.weights).expect("save");
    let loaded = incc::weights::load(&file, &a.compiled.graph).expect("load");
    assert_eq!(loaded, a.weights);

    let mut wrong = a.weights.clone();
    wrong.tensors.remove("stem.conv.weight");
    wrong.tensors.get_mut("classif.weight").expect("fc").shape.reverse();
    wrong.tensors.insert("extra.weight".into(), incc::weights::Tensor::filled(vec![2], 0.0));
    wrong.tensors.insert("stem.bn.num_batches_tracked".into(), incc::weights::Tensor::filled(vec![], 0.0));
    incc::weights::save(&file, &wrong).expect("save");
    let err = incc::weights::load(&file, &a.compiled.graph).expect_err("does not fit").to_string();
    let err = err.replace(&dir.display().to_string(), "DIR");
    snapshots(|| insta::assert_snapshot!("weights__mismatch", err));

    std::fs::write(&file, b"not safetensors").expect("write");
    let err = incc::weights::load(&file, &a.compiled.graph).expect_err("corrupt").to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
