//! Compile-time benchmarks (not timed tests): `cargo bench --bench compile`.
//!
//! 1. Front end: parse + elaborate + infer shapes + cost of inception_resnet_v2 (target: well under
//!    100 ms), against the baseline of reading its source files.
//! 2. Whole compile to a file with seeded weights (target: well under 2 s), against the baseline of
//!    writing the same number of bytes with one `std::fs::write` + fsync (the I/O floor).

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
        report(&c.graph, Convention::Incc, None, 1).totals.macs
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
    let _ = std::fs::remove_dir_all(&dir);
}
