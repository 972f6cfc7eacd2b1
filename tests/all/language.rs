//! The language's semantics on small inputs: naming, scopes, defaults, padding, expressions.

use crate::common::{compile_src, snapshots};
use incc::passes::PassOptions;

fn names_and_shapes(src: &str) -> String {
    let c = compile_src(src, &PassOptions::default(), None).unwrap_or_else(|f| panic!("{}", f.render()));
    c.graph.order().into_iter().map(|n| format!("{} {} {}\n", c.graph.node(n).name, c.graph.node(n).op.rule().kind(), c.graph.shape(n))).collect()
}

#[test]
fn naming_follows_modules_and_sequentials() {
    let out = names_and_shapes(
        r#"
defaults { conv: bn, relu, same }
block unit { conv 1x1 4 }
block twin { concat { a: conv 1x1 2 ; b: conv 1x1 3 } }
network n {
  input 3x8x8
  conv 3x3 4              // unlabelled in a module: `conv`
  conv 3x3 4              // then `conv_1`
  seq: conv 1x1 4 -> unit -> repeat 2 { unit }   // indexed: 0, 1, then the repeat splices 2, 3
  rep: repeat 2 { twin }  // its own indexed scope
  (x: conv 1x1 4) -> y: conv 1x1 4   // a group labels one element of a chain
  inline unit             // the block's layers take names here
}
"#,
    );
    snapshots(|| insta::assert_snapshot!("language__naming", out));
}

#[test]
fn same_padding_is_tensorflow_same_and_pools_default_to_their_kernel_as_stride() {
    let out = names_and_shapes(
        r#"
network n {
  input 3x9x9
  a: conv 3x3 4 stride 2 same        // ceil(9/2) = 5, pads (1,1,1,1)
  b: conv 2x2 4 stride 2 same        // ceil(5/2) = 3, pads (0,0,1,1)
  c: conv 1x7 4 same                 // 3x3
  d: conv 3x3 4 pad (0, 1)           // 1x3
  e: maxpool 1x3                     // stride = kernel: 1x1
}
"#,
    );
    assert!(out.contains("a conv 4x5x5"), "{out}");
    assert!(out.contains("b conv 4x3x3"), "{out}");
    assert!(out.contains("c conv 4x3x3"), "{out}");
    assert!(out.contains("d conv 4x1x3"), "{out}");
    assert!(out.contains("e maxpool 4x1x1"), "{out}");
    let c = compile_src("network n {\n input 3x5x5\n b: conv 2x2 4 stride 2 same\n}\n", &PassOptions::default(), None).expect("compiles");
    let b = c.graph.find("b").expect("node b");
    let (incc::ir::ops::Op::Conv(conv), input) = (&c.graph.node(b).op, c.graph.shape(c.graph.input)) else { panic!("conv") };
    assert_eq!(conv.pads(input), [0, 0, 1, 1], "odd padding goes to the bottom and right, as in TensorFlow");
}

#[test]
fn expressions_defaults_and_arguments() {
    let out = names_and_shapes(
        r#"
block widen(w: int, factor: int = 2, half: int = w / 2) {
  a: conv 1x1 w * factor
  b: conv 1x1 half + (w % 3) - 1
}
network n(k: int = 6) {
  input 3x4x4
  x: widen(k)
  y: widen(w = k + 2, factor = 3)
  dropout 0.5 / 2 + 25e-2
}
"#,
    );
    let c = compile_src("network n {\n input 1x1x1\n dropout 0.5 / 2 + 25e-2 - 7 / 2 + 3.5\n}", &PassOptions::default(), None).expect("compiles");
    assert!(incc::ir::text::dump(&c.graph, None).contains("dropout = dropout 0.5 (input)"));
    assert!(out.contains("x.a conv 12x4x4"), "{out}");
    assert!(out.contains("x.b conv 2x4x4"), "{out}"); // 6/2 + 0 - 1
    assert!(out.contains("y.a conv 24x4x4"), "{out}");
    assert!(out.contains("y.b conv 5x4x4"), "{out}"); // 8/2 + 2 - 1
}

#[test]
fn defaults_belong_to_the_file_that_declares_them_and_layer_options_override_them() {
    let c = compile_src(
        r#"
import "lib/inception_v4.inc"
defaults { conv: nobn, linear }
network n {
  input 3x35x35
  a: conv 3x3 4                // this file: no bn, no relu, bias (no bn)
  b: conv 3x3 4 bn relu same   // overridden
  r: reduction_a(k = 2, l = 2, m = 2, n = 2)   // the library's defaults: bn + relu
}
"#,
        &PassOptions::default(),
        None,
    )
    .unwrap_or_else(|f| panic!("{}", f.render()));
    let dump = incc::ir::text::dump(&c.graph, None);
    assert!(dump.contains("a = conv 3x3 valid -> 4 +bias (input) : 4x33x33"), "{dump}");
    assert!(dump.contains("b.conv = conv 3x3 same -> 4 (a) : 4x33x33"), "{dump}");
    assert!(dump.contains("b.bn = batchnorm eps 0.00001 momentum 0.1"), "{dump}");
    assert!(dump.contains("r.branch0.bn = batchnorm eps 0.001"), "{dump}");
    assert!(dump.contains("r.branch0.relu = relu"), "{dump}");
}

#[test]
fn graph_text_and_dot_of_a_small_network() {
    let src = r#"
defaults { conv: bn(eps = 0.001), relu, same }
block mixed(w: int) {
  concat {
    branch0: conv 1x1 w
    branch1: avgpool 3x3 stride 1 same exclude_pad -> conv 1x1 w
  }
}
network small(classes: int = 10) {
  input 3x16x16
  stem: conv 3x3 8 stride 2 valid
  m: mixed(w = 4)
  global avgpool
  dropout 0.2
  classif: fc classes
  softmax
}
"#;
    let c = compile_src(src, &PassOptions::default(), None).unwrap_or_else(|f| panic!("{}", f.render()));
    snapshots(|| {
        insta::assert_snapshot!("graph__small_text", incc::ir::text::dump(&c.graph, Some(&c.sources)));
        insta::assert_snapshot!("graph__small_dot", incc::ir::dot::dot(&c.graph));
    });
}
