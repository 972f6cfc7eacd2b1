//! Training curves: reading `metrics.jsonl` and drawing PNG and SVG figures.

use incc::plot::{plot, read_run, EpochPoint, PlotError};
use std::path::{Path, PathBuf};

/// A fresh folder per test (tests run in parallel in one process).
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("incc-plot-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write_run(dir: &Path, name: &str, lines: &str) -> PathBuf {
    let run = dir.join(name);
    std::fs::create_dir_all(&run).expect("run dir");
    std::fs::write(run.join("metrics.jsonl"), lines).expect("metrics");
    run
}

/// `epochs` epochs of a run whose loss decays towards `floor`, with step lines, unknown keys and
/// validation every epoch but the first.
fn metrics(epochs: u32, floor: f64) -> String {
    let mut out = String::new();
    for e in 1..=epochs {
        let loss = floor + 2.0 * (-(e as f64) / 8.0).exp();
        for s in 0..3 {
            out += &format!("{{\"kind\":\"step\",\"epoch\":{e},\"step\":{},\"loss\":{},\"lr\":0.045}}\n", e * 3 + s, loss + 0.1);
        }
        let (val_loss, top1) = if e == 1 { ("null".to_string(), "null".to_string()) } else { (format!("{}", loss + 0.15), format!("{}", 1.0 - loss / 4.0)) };
        out += &format!(
            "{{\"kind\":\"epoch\",\"epoch\":{e},\"train_loss\":{loss},\"val_loss\":{val_loss},\"val_top1\":{top1},\"val_top5\":null,\"lr\":0.045,\"seconds\":12.5,\"images_per_s\":800}}\n"
        );
    }
    out
}

#[test]
fn reads_epochs_ignoring_steps_and_unknown_keys() {
    let dir = temp_dir("read");
    let resumed = "{\"kind\":\"epoch\",\"epoch\":2,\"train_loss\":9.0,\"val_loss\":null,\"val_top1\":null,\"val_top5\":null,\"lr\":0.1}\n";
    let run = read_run(&write_run(&dir, "plain", &(resumed.to_string() + &metrics(3, 0.5) + "\n{\"kind\":\"config\",\"x\":1}\n"))).expect("reads");
    assert_eq!(run.name, "plain");
    assert_eq!(run.epochs.iter().map(|p| p.epoch).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(run.epochs[0].val_loss, None);
    // The later line for epoch 2 (as after a resume) wins.
    let e2 = &run.epochs[1];
    assert_eq!((e2.val_top5, e2.lr), (None, 0.045));
    assert!(e2.train_loss < 9.0 && e2.val_top1.is_some());
    let diverged = "{\"kind\":\"epoch\",\"epoch\":1,\"train_loss\":null,\"val_loss\":null,\"val_top1\":null,\"val_top5\":null,\"lr\":0.1}\n";
    let run = read_run(&write_run(&dir, "diverged", diverged)).expect("a null loss is NaN");
    assert!(run.epochs[0].train_loss.is_nan());
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a crash in the middle of a line leaves (a run being written looks the same), glued to
/// the next line when an older incc resumed the run: the whole lines are read, the cut ones
/// skipped.
#[test]
fn lines_cut_short_or_glued_together_are_read() {
    let dir = temp_dir("torn");
    let good = metrics(3, 0.5);
    let lines: Vec<&str> = good.lines().collect();
    let epoch2 = lines.iter().position(|l| l.contains("\"kind\":\"epoch\",\"epoch\":2")).expect("epoch 2");
    // Epoch 2's line cut short and the next line glued to it; and a last line cut short.
    let torn = format!("{}\n{}{}\n{}{{\"kind\":\"epoch\",\"epo", lines[..epoch2].join("\n"), &lines[epoch2][..30], lines[epoch2 + 1..].join("\n"), "\n");
    let run = read_run(&write_run(&dir, "torn", &torn)).expect("reads");
    assert_eq!(run.epochs.iter().map(|p| p.epoch).collect::<Vec<_>>(), [1, 3]);
    // Two whole lines glued together are both read.
    let glued = good.replacen("}\n{", "}{", 3);
    let run = read_run(&write_run(&dir, "glued", &glued)).expect("reads");
    assert_eq!(run.epochs.len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_metrics_name_the_file_and_line() {
    let dir = temp_dir("errors");
    let good = &metrics(2, 0.5);
    let cases = [
        ("garbage", format!("{good}{{\"kind\":\"epoch\"]\n"), ":9: expected `,` or `}` at column 16"),
        ("glued_garbage", format!("{good}{{\"kind\":\"step\"}}x\n"), ":9: expected value at column 16"),
        ("no_kind", format!("{good}{{\"epoch\":3}}\n"), ":9: no \"kind\" string (expected \"epoch\" or \"step\")"),
        ("missing", format!("{good}{{\"kind\":\"epoch\",\"epoch\":3}}\n"), ":9: epoch line: missing field `train_loss`"),
        (
            "percent",
            format!("{good}{{\"kind\":\"epoch\",\"epoch\":3,\"train_loss\":1,\"val_top1\":75.2,\"lr\":0.1}}\n"),
            ":9: val_top1 is 75.2, not a fraction in [0, 1]",
        ),
        ("steps_only", "{\"kind\":\"step\",\"epoch\":1,\"step\":1,\"loss\":2.3,\"lr\":0.1}\n".to_string(), ": no epoch lines"),
    ];
    for (name, text, expected) in cases {
        let run = write_run(&dir, name, &text);
        let message = read_run(&run).expect_err(name).to_string();
        let file = run.join("metrics.jsonl").display().to_string();
        assert!(message.starts_with(&format!("{file}{expected}")), "{name}: {message}");
    }
    let missing = read_run(&dir.join("absent")).expect_err("no file").to_string();
    assert!(missing.starts_with("cannot read ") && missing.contains("absent/metrics.jsonl"), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plots_two_runs_to_png_and_svg() {
    let dir = temp_dir("draw");
    let runs = [
        read_run(&write_run(&dir, "inception_v4", &metrics(30, 0.8))).expect("plain"),
        read_run(&write_run(&dir, "inception_resnet_v2", &metrics(24, 0.5))).expect("residual"),
    ];

    let png = dir.join("curves.png");
    plot(&runs, &png).expect("png");
    let image = image::open(&png).expect("decodes").to_rgb8();
    assert_eq!(image.dimensions(), (1200, 500));
    let colours: std::collections::HashSet<_> = image.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 20, "{} colours", colours.len());
    // Text and axes are grey; only the curves are saturated.
    let saturated = image.pixels().filter(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 100).count();
    assert!(saturated > 2000, "{saturated} curve pixels");

    let svg = dir.join("curves.svg");
    plot(&runs, &svg).expect("svg");
    let text = std::fs::read_to_string(&svg).expect("svg text");
    assert!(text.starts_with("<svg") && text.contains("inception_v4") && text.contains("inception_resnet_v2"));
    assert!(text.contains("top-1 error (%)") && text.contains("epoch"));

    // One epoch only (an empty x range) still draws.
    let single = read_run(&write_run(&dir, "single", &metrics(1, 0.5))).expect("single");
    plot(&[single], &dir.join("single.png")).expect("one epoch");

    let pdf = dir.join("curves.pdf");
    assert!(matches!(plot(&runs, &pdf), Err(PlotError::Format { .. })));
    assert!(!pdf.exists());
    assert!(matches!(plot(&[], &png), Err(PlotError::NoRuns)));
    let leftovers: Vec<_> =
        std::fs::read_dir(&dir).expect("dir").filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.contains(".tmp-")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_built_in_code_plots() {
    let p = EpochPoint { epoch: 1, train_loss: 2.0, val_loss: Some(2.1), val_top1: Some(0.4), val_top5: None, lr: 0.1 };
    let run = incc::plot::Run { name: "by hand".into(), epochs: vec![p] };
    let dir = temp_dir("by-hand");
    plot(&[run], &dir.join("by hand.svg")).expect("a run built in code plots");
    let _ = std::fs::remove_dir_all(&dir);
}
