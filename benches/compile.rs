//! Compile-time benchmarks (not timed tests): `cargo bench --bench compile`.
//!
//! 1. Front end: parse + elaborate + infer shapes + cost of inception_resnet_v2 (target: well under
//!    100 ms), against the baseline of reading its source files.
//! 2. Whole compile to a file with seeded weights (target: well under 2 s), against the baseline of
//!    writing the same number of bytes with one `std::fs::write` + fsync (the I/O floor).
//! 3. Large generated networks (`repeat N { an Inception block }`, N = 1000 to 8000, and a 3 MB file
//!    of written-out blocks): `incc check` (compile) and `incc flops` (cost report) must be linear
//!    in the graph's size. The baseline is the time per node of the smallest network, in the same
//!    run; the ratio per node at each larger size should stay near 1 (it was ~8 at N = 8000 when
//!    naming rows, automatic names and the residual rewrite were quadratic). Target: a few-MB file
//!    checks in seconds.

use incc::driver::{build_onnx, compile, WeightsSource};
use incc::report::cost::{report, Convention};
use std::path::Path;
use std::time::{Duration, Instant};

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time<R>(runs: usize, mut f: impl FnMut() -> R) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let arch = Path::new("archs/inception_resnet_v2.inc");
    let front = time(20, || {
        let c = compile(arch, &Default::default(), &Default::default(), None).expect("compiles");
        report(&c.graph, Convention::Incc, None, 1).expect("the costs fit in 64 bits").totals.macs
    });
    let read = time(20, || ["archs/inception_resnet_v2.inc", "archs/lib/inception_v4.inc"].map(|p| std::fs::read_to_string(p).expect("read")));
    println!("front end (parse, elaborate, shapes, cost) of inception_resnet_v2: {:.2} ms (median of 20)", front.as_secs_f64() * 1e3);
    println!("  baseline, reading its two source files: {:.3} ms; ratio {:.0}x", read.as_secs_f64() * 1e3, front.as_secs_f64() / read.as_secs_f64());

    let dir = std::env::temp_dir().join(format!("incc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("irv2.onnx");
    let mut bytes = 0;
    let whole = time(5, || {
        let a = build_onnx(arch, &Default::default(), &Default::default(), WeightsSource::Seed(0), None).expect("builds");
        incc::onnx::emit::write(&a.model, Some(&a.weights), &out, incc::onnx::emit::EXTERNAL_DATA_THRESHOLD).expect("writes");
        bytes = std::fs::metadata(&out).expect("written").len() as usize;
    });
    let payload = vec![1u8; bytes];
    let floor = time(5, || incc::fsutil::write_atomic(&dir.join("floor.bin"), &payload).expect("writes"));
    println!("compile inception_resnet_v2 with seeded weights to a {:.0} MB file: {:.2} s (median of 5)", bytes as f64 / 1e6, whole.as_secs_f64());
    println!(
        "  baseline, writing {:.0} MB atomically: {:.2} s; ratio {:.2}x",
        bytes as f64 / 1e6,
        floor.as_secs_f64(),
        whole.as_secs_f64() / floor.as_secs_f64()
    );
    large_networks(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An Inception-A block (four branches, a pool, a concat) at a width that keeps 8000 copies within
/// the parameter bound; residual, so that the residual rewrite is timed too.
const BLOCK: &str = "
defaults {
  conv: bn(eps = 0.001), relu, same
  avgpool: stride 1, same, exclude_pad
}
block inception_a {
  residual(0.2) {
    branch0: conv 1x1 24
    branch1: conv 1x1 16 -> conv 3x3 24
    branch2: conv 1x1 16 -> conv 3x3 24 -> conv 3x3 24
    branch3: avgpool 3x3 -> conv 1x1 24
  }
  relu
}
";

/// About `bytes` of source: concats written out one after another, unlabelled (automatic names).
fn written_out(bytes: usize) -> String {
    let mut text = "defaults {\n  conv: bn(eps = 0.001), relu, same\n}\nnetwork flat {\n  input 64x17x17\n".to_string();
    while text.len() < bytes {
        text.push_str("  concat {\n    conv 1x1 32\n    conv 1x1 16 -> conv 3x3 16\n    maxpool 3x3 stride 1 same -> conv 1x1 16\n  }\n");
    }
    text + "  global avgpool\n  fc 10\n}\n"
}

fn large_networks(dir: &Path) {
    let mut cases: Vec<(String, String)> = [1000, 2000, 4000, 8000]
        .into_iter()
        .map(|n| {
            (
                format!("repeat {n} {{ inception_a }}"),
                format!("{BLOCK}network big {{\n  input 96x35x35\n  features: repeat {n} {{ inception_a }}\n  global avgpool\n  fc 1000\n}}\n"),
            )
        })
        .collect();
    cases.push(("3 MB of written-out blocks".to_string(), written_out(3_000_000)));
    let mut baseline: Option<(f64, f64)> = None;
    for (what, text) in cases {
        let file = dir.join("large.inc");
        std::fs::write(&file, &text).expect("writes");
        let mut nodes = 0;
        let check = time(3, || {
            let c = compile(&file, &Default::default(), &Default::default(), None).expect("compiles");
            nodes = c.graph.g.node_count();
            c
        });
        let c = compile(&file, &Default::default(), &Default::default(), None).expect("compiles");
        let flops = time(3, || report(&c.graph, Convention::Incc, None, 1).expect("the costs fit in 64 bits").totals.macs);
        let per_node = (check.as_secs_f64() / nodes as f64, flops.as_secs_f64() / nodes as f64);
        let (check_base, flops_base) = *baseline.get_or_insert(per_node);
        println!(
            "{what} ({:.1} MB, {nodes} nodes): check {:.2} s, flops {:.2} s (medians of 3); per node vs the smallest: {:.2}x, {:.2}x",
            text.len() as f64 / 1e6,
            check.as_secs_f64(),
            flops.as_secs_f64(),
            per_node.0 / check_base,
            per_node.1 / flops_base
        );
    }
}
