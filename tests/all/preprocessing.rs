//! Preprocessing declared on a network's `input` line: the reference values of archs/, carried
//! into the model's metadata and into the transform `incc eval` applies; without a declaration,
//! the defaults of before.

use crate::common::{arch, compile_arch, compile_src};
use incc::data::{DataSpec, Split};
use incc::driver::{build_onnx, WeightsSource};
use incc::elab::Settings;
use incc::ir::preprocessing::{Interpolation, Preprocessing};
use incc::passes::PassOptions;
use incc::runtime::images::{self, Preprocess};
use incc::trainer::Examples;
use std::collections::BTreeMap;

fn declared(mean: f64, std: f64, crop: f64, interpolation: Interpolation) -> Preprocessing {
    Preprocessing { mean: Some(vec![mean]), std: Some(vec![std]), crop: Some(crop), interpolation: Some(interpolation) }
}

#[test]
fn the_networks_declare_timms_preprocessing() {
    use Interpolation::{Bicubic, Bilinear};
    for (name, want) in [
        ("inception_v3", declared(0.5, 0.5, 0.875, Bicubic)),
        ("inception_v4", declared(0.5, 0.5, 0.875, Bicubic)),
        ("inception_resnet_v2", declared(0.5, 0.5, 0.8975, Bicubic)),
        ("inception_resnet_v1", declared(0.5, 0.5, 0.875, Bilinear)),
        ("inception_resnet_v2_paper", declared(0.5, 0.5, 0.875, Bilinear)),
        ("mini/inception_fmnist", declared(0.5, 0.5, 1.0, Bilinear)),
        ("mini/inception_resnet_fmnist", declared(0.5, 0.5, 1.0, Bilinear)),
    ] {
        assert_eq!(compile_arch(name).graph.preprocessing, want, "{name}");
    }
}

#[test]
fn per_channel_values_and_the_files_defaults_are_read() {
    let src = "defaults { input: crop 0.9 }\nnetwork n {\n  input 3x8x8 mean 0.485,0.456,0.406 std 0.229, 0.224, 0.225 bilinear\n  conv 3x3 4\n}\n";
    let c = compile_src(src, &PassOptions::default(), None).unwrap_or_else(|f| panic!("{}", f.render()));
    let want = Preprocessing {
        mean: Some(vec![0.485, 0.456, 0.406]),
        std: Some(vec![0.229, 0.224, 0.225]),
        crop: Some(0.9),
        interpolation: Some(Interpolation::Bilinear),
    };
    assert_eq!(c.graph.preprocessing, want);
    let none = compile_src("network n {\n  input 3x8x8\n  conv 3x3 4\n}\n", &PassOptions::default(), None).unwrap_or_else(|f| panic!("{}", f.render()));
    assert_eq!(none.graph.preprocessing, Preprocessing::default());
}

fn metadata(src: &std::path::Path) -> BTreeMap<String, String> {
    let a = build_onnx(src, &Settings::default(), &PassOptions::default(), WeightsSource::Seed(0), None).unwrap_or_else(|e| panic!("{e}"));
    a.model.metadata_props.into_iter().map(|p| (p.key, p.value)).collect()
}

#[test]
fn the_metadata_says_what_the_input_line_declares_and_incc_run_reads_it() {
    let m = metadata(&arch("mini/inception_fmnist"));
    let pick = |k: &str| m.get(k).map(String::as_str);
    assert_eq!(
        (pick("incc.mean"), pick("incc.std"), pick("incc.crop_pct"), pick("incc.interpolation")),
        (Some("0.5"), Some("0.5"), Some("1"), Some("bilinear"))
    );
    let pre = Preprocess::new(28, 28).with_metadata(&m).expect("readable metadata");
    assert_eq!((pre.mean, pre.std, pre.crop_pct, pre.interpolation), ([0.5; 3], [0.5; 3], 1.0, images::Interpolation::Bilinear));

    // Without a declaration: Inception's values, as before the declaration existed.
    let dir = crate::common::fresh_folder("preprocessing-undeclared");
    let path = dir.join("plain.inc");
    std::fs::write(&path, "network plain {\n  input 3x16x16\n  conv 3x3 4\n  global avgpool\n  fc 3\n}\n").expect("writable");
    let m = metadata(&path);
    let pick = |k: &str| m.get(k).map(String::as_str);
    assert_eq!(
        (pick("incc.mean"), pick("incc.std"), pick("incc.crop_pct"), pick("incc.interpolation")),
        (Some("0.5,0.5,0.5"), Some("0.5,0.5,0.5"), Some("0.875"), Some("bicubic"))
    );
}

#[test]
fn eval_transforms_with_the_declared_values_and_the_data_sets_elsewhere() {
    let spec: DataSpec = "synthetic:4,299,10".parse().expect("a data spec");
    let irv2 = compile_arch("inception_resnet_v2");
    let t = Examples::open(&spec, Split::Validation, &irv2.graph, None).expect("opens").transform;
    assert_eq!((t.crop_pct, t.interpolation, t.mean.clone(), t.std.clone()), (0.8975, images::Interpolation::Bicubic, vec![0.5; 3], vec![0.5; 3]));
    let v1 = compile_arch("inception_resnet_v1");
    let t = Examples::open(&spec, Split::Validation, &v1.graph, None).expect("opens").transform;
    assert_eq!((t.crop_pct, t.interpolation), (0.875, images::Interpolation::Bilinear));
    // Undeclared: the data set's crop (synthetic data: 1.0) and bicubic, as before.
    let plain = compile_src("network n {\n  input 3x8x8\n  conv 3x3 4\n}\n", &PassOptions::default(), None).unwrap_or_else(|f| panic!("{}", f.render()));
    let t = Examples::open(&spec, Split::Validation, &plain.graph, None).expect("opens").transform;
    assert_eq!((t.crop_pct, t.interpolation), (1.0, images::Interpolation::Bicubic));
}
