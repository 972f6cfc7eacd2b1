//! The five networks of archs/ against the reference figures of numbers.md, exactly; their
//! parameter names against timm's state-dict keys; snapshots of their cost tables and parameter lists.

use crate::common::{arch, compile_arch, compile_with, root, snapshots};
use incc::elab::Settings;
use incc::passes::PassOptions;
use incc::report::cost::{render_table, report, Convention};
use std::collections::HashMap;

struct Reference {
    arch: &'static str,
    params: u64,
    params_without_bn: u64,
    conv_layers: u64,
    macs: u64,
    fvcore: u64,
    /// (frame path, output shape CxHxW) after each stage.
    stages: &'static [(&'static str, &'static str)],
}

/// numbers.md, "Totals" and "Output after each stage".
const REFERENCES: &[Reference] = &[
    Reference {
        arch: "inception_v3",
        params: 23_834_568,
        params_without_bn: 23_800_136,
        conv_layers: 94,
        macs: 5_713_216_096,
        fvcore: 5_731_282_144,
        stages: &[
            ("Pool2", "192x35x35"),
            ("Mixed_5b", "256x35x35"),
            ("Mixed_5d", "288x35x35"),
            ("Mixed_6a", "768x17x17"),
            ("Mixed_6e", "768x17x17"),
            ("Mixed_7a", "1280x8x8"),
            ("Mixed_7c", "2048x8x8"),
            ("fc", "1000"),
        ],
    },
    Reference {
        arch: "inception_v4",
        params: 42_679_816,
        params_without_bn: 42_616_648,
        conv_layers: 149,
        macs: 12_253_974_624,
        fvcore: 12_284_251_296,
        stages: &[
            ("features.0-5", "384x35x35"),
            ("features.6-9", "384x35x35"),
            ("features.10", "1024x17x17"),
            ("features.11-17", "1024x17x17"),
            ("features.18", "1536x8x8"),
            ("features.19-21", "1536x8x8"),
            ("last_linear", "1000"),
        ],
    },
    Reference {
        arch: "inception_resnet_v1",
        params: 22_756_328,
        params_without_bn: 22_729_288,
        conv_layers: 127,
        macs: 6_206_361_696,
        fvcore: 6_223_281_920,
        stages: &[
            ("conv2d_4b", "256x35x35"),
            ("repeat_1", "256x35x35"),
            ("mixed_6a", "896x17x17"),
            ("repeat_2", "896x17x17"),
            ("mixed_7a", "1792x8x8"),
            ("repeat_3", "1792x8x8"),
            ("logits", "1000"),
        ],
    },
    Reference {
        arch: "inception_resnet_v2",
        params: 55_843_464,
        params_without_bn: 55_782_920,
        conv_layers: 244,
        macs: 13_155_794_016,
        fvcore: 13_182_930_592,
        stages: &[
            ("mixed_5b", "320x35x35"),
            ("repeat", "320x35x35"),
            ("mixed_6a", "1088x17x17"),
            ("repeat_1", "1088x17x17"),
            ("mixed_7a", "2080x8x8"),
            ("repeat_2", "2080x8x8"),
            ("block8", "2080x8x8"),
            ("conv2d_7b", "1536x8x8"),
            ("classif", "1000"),
        ],
    },
    Reference {
        arch: "inception_resnet_v2_paper",
        params: 32_433_928,
        params_without_bn: 32_401_064,
        conv_layers: 132,
        macs: 9_257_953_632,
        fvcore: 9_279_631_168,
        stages: &[
            ("stem", "384x35x35"),
            ("repeat", "384x35x35"),
            ("mixed_6a", "1152x17x17"),
            ("repeat_1", "1152x17x17"),
            ("mixed_7a", "2144x8x8"),
            ("repeat_2", "2144x8x8"),
            ("classif", "1000"),
        ],
    },
];

#[test]
fn totals_match_the_reference_implementations_exactly() {
    for r in REFERENCES {
        let c = compile_arch(r.arch);
        let incc = report(&c.graph, Convention::Incc, None, 1).expect("the costs fit in 64 bits").totals;
        let fvcore = report(&c.graph, Convention::Fvcore, None, 1).expect("the costs fit in 64 bits").totals;
        assert_eq!(incc.params, r.params, "{} parameters", r.arch);
        assert_eq!(incc.params_without_bn, r.params_without_bn, "{} parameters without batch norm", r.arch);
        assert_eq!(incc.conv_layers, r.conv_layers, "{} conv layers", r.arch);
        assert_eq!(incc.macs, r.macs, "{} conv + fc multiply-adds", r.arch);
        assert_eq!(fvcore.macs, r.fvcore, "{} fvcore total", r.arch);
        assert_eq!(incc.fvcore, r.fvcore, "{} fvcore total beside the incc convention", r.arch);
        assert_eq!(incc.flops, 2 * r.macs, "{} FLOPs", r.arch);
    }
}

#[test]
fn every_stage_has_the_reference_output_shape() {
    for r in REFERENCES {
        let c = compile_arch(r.arch);
        let rows = report(&c.graph, Convention::Incc, Some(1), 1).expect("the costs fit in 64 bits").rows;
        let outputs: HashMap<&str, &str> = rows.iter().map(|row| (row.name.as_str(), row.output.as_str())).collect();
        for (stage, shape) in r.stages {
            assert_eq!(outputs.get(stage).copied(), Some(*shape), "{} stage {stage}; rows: {outputs:?}", r.arch);
        }
    }
}

#[test]
fn per_stage_parameters_match_numbers_md() {
    let expect: &[(&str, &[(&str, u64)])] = &[
        (
            "inception_v4",
            &[
                ("features.0-5", 605_728),
                ("features.6-9", 1_270_528),
                ("features.10", 2_306_112),
                ("features.11-17", 20_553_792),
                ("features.18", 2_747_392),
                ("features.19-21", 13_659_264),
                ("last_linear", 1_537_000),
            ],
        ),
        (
            "inception_resnet_v2",
            &[
                ("conv2d_1a", 928),
                ("conv2d_2a", 9_280),
                ("conv2d_2b", 18_560),
                ("conv2d_3b", 5_280),
                ("conv2d_4a", 138_624),
                ("mixed_5b", 268_320),
                ("repeat", 1_231_680),
                ("mixed_6a", 2_664_960),
                ("repeat_1", 22_535_680),
                ("mixed_7a", 3_880_960),
                ("repeat_2", 18_318_816),
                ("block8", 2_035_424),
                ("conv2d_7b", 3_197_952),
                ("classif", 1_537_000),
            ],
        ),
        (
            "inception_v3",
            &[
                ("Mixed_5b", 255_904),
                ("Mixed_5c", 277_472),
                ("Mixed_5d", 285_152),
                ("Mixed_6a", 1_153_280),
                ("Mixed_6b", 1_297_408),
                ("Mixed_6c", 1_691_008),
                ("Mixed_6d", 1_691_008),
                ("Mixed_6e", 2_141_952),
                ("Mixed_7a", 1_698_304),
                ("Mixed_7b", 5_044_608),
                ("Mixed_7c", 6_076_800),
                ("fc", 2_049_000),
            ],
        ),
    ];
    for (name, stages) in expect {
        let c = compile_arch(name);
        let rows = report(&c.graph, Convention::Incc, Some(1), 1).expect("the costs fit in 64 bits").rows;
        for (stage, params) in *stages {
            let row = rows.iter().find(|r| r.name == *stage).unwrap_or_else(|| panic!("{name}: no row {stage}"));
            assert_eq!(row.params, *params, "{name} {stage}");
        }
    }
    // IR-v1 stages that numbers.md gives: stem, 5 x A, reduction A, 10 x B, reduction B, 5 x C, FC.
    let c = compile_arch("inception_resnet_v1");
    let rows = report(&c.graph, Convention::Incc, Some(1), 1).expect("the costs fit in 64 bits").rows;
    let stem: u64 = rows.iter().filter(|r| r.name.starts_with("conv2d_")).map(|r| r.params).sum();
    assert_eq!(stem, 615_552);
    for (stage, params) in
        [("repeat_1", 387_200), ("mixed_6a", 1_710_080), ("repeat_2", 6_900_480), ("mixed_7a", 3_346_176), ("repeat_3", 8_003_840), ("logits", 1_793_000)]
    {
        assert_eq!(rows.iter().find(|r| r.name == stage).map(|r| r.params), Some(params), "inception_resnet_v1 {stage}");
    }
}

/// Parameter names and shapes equal timm's state-dict keys, in state-dict order, so that published
/// checkpoints load by name. The fixtures were written by scripts/timm_reference.py from timm itself.
#[test]
fn parameter_names_equal_timm_state_dict_keys() {
    for name in ["inception_v3", "inception_v4", "inception_resnet_v2"] {
        let c = compile_arch(name);
        let ours = incc::report::params::render(&c.graph);
        let fixture = std::fs::read_to_string(root().join(format!("tests/fixtures/timm/{name}.keys.txt"))).expect("fixture");
        let timm: String = fixture.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
        assert_eq!(ours.lines().count(), timm.lines().count(), "{name}: number of keys");
        for (i, (a, b)) in ours.lines().zip(timm.lines()).enumerate() {
            assert_eq!(a, b, "{name}: key {i}");
        }
    }
}

#[test]
fn cost_tables_and_parameter_lists() {
    for r in REFERENCES {
        let c = compile_arch(r.arch);
        let table = render_table(&report(&c.graph, Convention::Incc, None, 1).expect("the costs fit in 64 bits"), &format!("archs/{}.inc", r.arch));
        let params = incc::report::params::render(&c.graph);
        snapshots(|| {
            insta::assert_snapshot!(format!("flops__{}", r.arch), table);
            insta::assert_snapshot!(format!("params__{}", r.arch), params);
        });
    }
}

#[test]
fn depth_one_in_the_fvcore_convention_as_json() {
    let c = compile_arch("inception_v4");
    let json = serde_json::to_string_pretty(&report(&c.graph, Convention::Fvcore, Some(1), 1).expect("the costs fit in 64 bits")).expect("json");
    snapshots(|| insta::assert_snapshot!("flops__inception_v4_depth1_fvcore_json", json));
}

/// `--set classes=10 --input 3x149x149 --batch 32`: the cost follows the settings.
#[test]
fn settings_change_classes_input_and_batch() {
    let settings = Settings { set: vec![("classes".into(), "10".into())], input: Some(vec![3, 149, 149]), ..Settings::default() };
    let c = compile_with(&arch("inception_v4"), &settings, &PassOptions::default(), None).expect("compiles");
    assert_eq!(c.graph.shape(c.graph.output).to_string(), "10");
    let r = report(&c.graph, Convention::Incc, Some(1), 32).expect("the costs fit in 64 bits");
    let stem = r.rows.iter().find(|row| row.name == "features.0-5").expect("stem row");
    assert_eq!(stem.output, "384x16x16"); // 149 -> 74 -> 72 -> 72 -> 35 -> 33 -> 16
    let one = report(&c.graph, Convention::Incc, Some(1), 1).expect("the costs fit in 64 bits").totals;
    assert_eq!(r.totals.macs, 32 * one.macs);
    assert_eq!(one.params, 42_679_816 - 1_537_000 + 1536 * 10 + 10);
}

/// Cost figures are exact 64-bit counts: a batch that takes one past `u64` is an error at the
/// layer where the running total crosses, never a wrapped number.
#[test]
fn the_cost_of_a_batch_past_64_bits_is_a_located_error() {
    let c = compile_arch("inception_v4");
    let one = report(&c.graph, Convention::Fvcore, None, 1).expect("the costs fit in 64 bits").totals;
    // 2^28 x 12.3 G multiply-adds fit (3.3e18); their FLOPs too (6.6e18 < 1.8e19).
    let batch = 1 << 28;
    let t = report(&c.graph, Convention::Fvcore, None, batch).expect("the costs fit in 64 bits").totals;
    let exact = |v: u64| u128::from(v) * u128::from(batch);
    assert_eq!((u128::from(t.macs), u128::from(t.flops), u128::from(t.activations)), (exact(one.macs), exact(one.flops), exact(one.activations)));
    // 2^30: the FLOPs (2.6e19) do not.
    for batch in [1 << 30, u64::MAX] {
        let Err(d) = report(&c.graph, Convention::Fvcore, None, batch) else { panic!("a batch of {batch} fitted") };
        assert_eq!(d.message, format!("the cost of a batch of {batch} does not fit in 64 bits"));
        assert!(d.labels.iter().any(|(_, _, primary)| *primary), "located at a layer");
    }
}

/// A large generated network (1500 residual blocks, 21 k nodes: 25x the largest in archs/, and small
/// enough for CI) checks and gets its cost report. Both are linear in its size (`benches/compile.rs`
/// times them, to 8000 blocks and a 3 MB file); this only asserts that it finishes, with the right
/// figures.
#[test]
fn a_large_generated_network_checks_and_reports() {
    let blocks = 1500;
    let mut text = "defaults { conv: bn(eps = 0.001), relu, same }\n".to_string();
    text.push_str("block unit {\n  residual(0.2) {\n    conv 1x1 8\n    conv 1x1 8 -> conv 3x3 8\n  }\n  relu\n}\n");
    // Unlabelled uses, so that automatic names (`unit`, `unit_1`, ...) are made for the whole file.
    text.push_str(&format!("network large {{\n  input 32x9x9\n{}  global avgpool\n  fc 10\n}}\n", "  unit\n".repeat(blocks)));
    let c = crate::common::compile_src(&text, &PassOptions::default(), None).unwrap_or_else(|f| panic!("{}", f.render()));
    // Per block: 3 convs of 3 nodes (conv, batch norm, relu), the concat, the projection, scale, add, relu.
    assert_eq!(c.graph.g.node_count(), 1 + blocks * 14 + 2);
    let t = report(&c.graph, Convention::Incc, None, 1).expect("the costs fit in 64 bits").totals;
    let per_block = (32 * 8 + 32 * 8 + 8 * 8 * 9) + 3 * 2 * 8 + (16 * 32 + 32);
    assert_eq!(t.params, blocks as u64 * per_block + 32 * 10 + 10);
}
