//! The concat -> residual rewrite: IR before and after on small graphs, `--residualize` on whole
//! networks, and the proof that plain IR-v1 blocks plus `--residualize` give the hand-written form.

use crate::common::{arch, compile_arch, compile_src, compile_with, snapshots, structure};
use incc::elab::Settings;
use incc::passes::{PassOptions, ResidualizeSpec};
use incc::report::cost::{report, Convention};
use std::path::Path;

const SMALL_RESIDUAL: &str = r#"
defaults { conv: bn(eps = 0.001), relu, same }
block block35(scale: float) {
  residual(scale) {
    branch0: conv 1x1 8
    branch1: conv 1x1 8 -> conv 3x3 8
  }
  relu
}
network tiny(classes: int = 10) {
  input 3x17x17
  stem: conv 3x3 24 stride 2 valid
  repeat: repeat 2 { block35(scale = 0.17) }
  global avgpool
  classif: fc classes
}
"#;

fn dump_after(src: &str, passes: &PassOptions, pass: &str) -> String {
    let c = compile_src(src, passes, Some(pass)).unwrap_or_else(|f| panic!("{}", f.render()));
    incc::ir::text::dump(&c.graph, Some(&c.sources))
}

#[test]
fn residual_block_before_and_after_the_rewrite() {
    let before = dump_after(SMALL_RESIDUAL, &PassOptions::default(), "infer-shapes");
    let after = dump_after(SMALL_RESIDUAL, &PassOptions::default(), "residual-rewrite");
    assert!(before.contains("[residual x0.17 via repeat.0.conv2d + stem.relu]"), "{before}");
    // The projection returns to the block's input width, known from shape inference: 24.
    assert!(after.contains("repeat.0.conv2d = conv 1x1 valid -> 24 +bias (repeat.0.concat) : 24x8x8"), "{after}");
    assert!(after.contains("repeat.0.add = add (repeat.0.scale, stem.relu) : 24x8x8"), "{after}");
    snapshots(|| {
        insta::assert_snapshot!("residual__small_before", before);
        insta::assert_snapshot!("residual__small_after", after);
    });
}

const SMALL_PLAIN: &str = r#"
defaults { conv: bn(eps = 0.001), relu, same }
block inception(w: int) {
  concat {
    branch0: conv 1x1 w
    branch1: conv 1x1 w -> conv 3x3 w
  }
}
block reduction {
  concat {
    branch0: conv 3x3 16 stride 2 valid
    branch1: maxpool 3x3 stride 2 valid
  }
}
network tiny {
  input 3x17x17
  stem: conv 3x3 16
  a: inception(w = 8)
  r: reduction
  global avgpool
  classif: fc 10
}
"#;

#[test]
fn residualize_rewrites_plain_blocks_and_refuses_reductions_with_a_located_reason() {
    let passes = PassOptions { residualize: Some(ResidualizeSpec::parse("scale=0.1").expect("spec")), ..PassOptions::default() };
    let before = dump_after(SMALL_PLAIN, &passes, "infer-shapes");
    let marked = dump_after(SMALL_PLAIN, &passes, "residualize");
    let c = compile_src(SMALL_PLAIN, &passes, None).expect("compiles");
    let after = incc::ir::text::dump(&c.graph, Some(&c.sources));
    assert!(marked.contains("a.concat = concat (a.branch0.relu, a.branch1.1.relu) [residual x0.1 via a.conv2d + stem.relu, relu]"), "{marked}");
    assert!(after.contains("a.relu = relu (a.add) : 16x17x17"), "{after}");
    let warnings: Vec<String> = c.warnings.iter().map(|w| w.render(&c.sources)).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("`r` (reduction) stays as it is: it changes the grid from 17x17 to 8x8"), "{}", warnings[0]);
    snapshots(|| {
        insta::assert_snapshot!("residualize__small_before", before);
        insta::assert_snapshot!("residualize__small_after", after);
        insta::assert_snapshot!("residualize__small_refusal", warnings.join("\n"));
    });
}

/// The paper's construction, checked end to end: IR-v1 written as plain Inception blocks, plus
/// `--residualize` with its three scales, is the hand-written residual IR-v1, node for node.
#[test]
fn plain_inception_resnet_v1_residualized_equals_the_hand_written_form() {
    let hand = compile_arch("inception_resnet_v1");
    let passes = PassOptions { residualize: Some(ResidualizeSpec::parse("block35=0.17,block17=0.10,block8=0.20").expect("spec")), ..PassOptions::default() };
    let plain = compile_with(Path::new("tests/fixtures/inception_resnet_v1_plain.inc"), &Settings::default(), &passes, None)
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let (a, b) = (structure(&hand), structure(&plain));
    if a != b {
        let first = a.lines().zip(b.lines()).position(|(x, y)| x != y);
        panic!("graphs differ at line {first:?}:\nhand:  {:?}\nplain: {:?}", first.map(|i| a.lines().nth(i)), first.map(|i| b.lines().nth(i)));
    }
    // The two reductions are left as they are, each with its reason.
    let refused: Vec<String> = plain.warnings.iter().map(|w| w.message.clone()).collect();
    assert_eq!(
        refused,
        [
            "`mixed_6a` (reduction_a) stays as it is: it changes the grid from 35x35 to 17x17, so its input cannot be added back",
            "`mixed_7a` (mixed_7a) stays as it is: it changes the grid from 17x17 to 8x8, so its input cannot be added back",
        ]
    );
    // And without --residualize the plain network is a different, narrower one.
    let unrewritten =
        compile_with(Path::new("tests/fixtures/inception_resnet_v1_plain.inc"), &Settings::default(), &PassOptions::default(), None).expect("compiles");
    assert_ne!(structure(&unrewritten), a);
}

/// Inception-v4's residual twin: every Inception-A/B/C gains a 1x1 projection of its own width.
#[test]
fn residualized_inception_v4_adds_one_projection_per_inception_block() {
    let plain = compile_arch("inception_v4");
    let passes = PassOptions { residualize: Some(ResidualizeSpec::parse("scale=0.1").expect("spec")), ..PassOptions::default() };
    let twin = compile_with(&arch("inception_v4"), &Settings::default(), &passes, None).unwrap_or_else(|f| panic!("{}", f.render()));
    let (p, t) = (
        report(&plain.graph, Convention::Incc, None, 1).expect("the costs fit in 64 bits").totals,
        report(&twin.graph, Convention::Incc, None, 1).expect("the costs fit in 64 bits").totals,
    );
    // 4 x (384*384+384) + 7 x (1024*1024+1024) + 3 x (1536*1536+1536)
    let added_params = 4 * (384 * 384 + 384) + 7 * (1024 * 1024 + 1024) + 3 * (1536 * 1536 + 1536);
    let added_macs = 4 * 384 * 384 * 35 * 35 + 7 * 1024 * 1024 * 17 * 17 + 3 * 1536 * 1536 * 8 * 8;
    assert_eq!(t.params - p.params, added_params);
    assert_eq!(t.macs - p.macs, added_macs);
    assert_eq!(t.conv_layers - p.conv_layers, 14);
    let refused: Vec<&str> = twin.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(refused.len(), 6, "{refused:?}"); // stem_v4, mixed_3a/4a/5a, reduction_a, reduction_b
    snapshots(|| {
        let rendered: Vec<String> = twin.warnings.iter().map(|w| w.render(&twin.sources)).collect();
        insta::assert_snapshot!("residualize__inception_v4_refusals", rendered.join("\n"));
    });
}

#[test]
fn residualize_spec_errors() {
    assert!(ResidualizeSpec::parse("").is_err());
    assert!(ResidualizeSpec::parse("scale").unwrap_err().contains("expected KEY=SCALE"));
    assert!(ResidualizeSpec::parse("scale=abc").unwrap_err().contains("not a number"));
    let passes = PassOptions { residualize: Some(ResidualizeSpec::parse("no_such_block=0.1").expect("spec")), ..PassOptions::default() };
    let Err(err) = compile_with(&arch("inception_v4"), &Settings::default(), &passes, None) else { panic!("an unknown block must be refused") };
    assert!(err.render().contains("the network has no block `no_such_block`"), "{}", err.render());
}

/// The Fashion-MNIST pair of archs/mini: the hand-written residual twin is exactly what
/// `--residualize scale=0.2` makes of the plain network, and costs under 5 % more.
#[test]
fn the_mini_residual_twin_equals_the_residualized_plain_network() {
    let hand = compile_arch("mini/inception_resnet_fmnist");
    let passes = PassOptions { residualize: Some(ResidualizeSpec::parse("scale=0.2").expect("spec")), ..PassOptions::default() };
    let twin = compile_with(&arch("mini/inception_fmnist"), &Settings::default(), &passes, None).unwrap_or_else(|f| panic!("{}", f.render()));
    let strip = |s: String| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(structure(&hand)), strip(structure(&twin)));
    let plain = report(&compile_arch("mini/inception_fmnist").graph, Convention::Incc, None, 1).expect("the costs fit in 64 bits").totals.macs as f64;
    let residual = report(&hand.graph, Convention::Incc, None, 1).expect("the costs fit in 64 bits").totals.macs as f64;
    assert!(residual / plain < 1.05, "the twin costs {:.1} % more", 100.0 * (residual / plain - 1.0));
}
