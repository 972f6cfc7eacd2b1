//! Latency and throughput of a model at several batch sizes, on synthetic input, and where the
//! time of a run goes.

use std::time::{Duration, Instant};

use comfy_table::{presets, CellAlignment, Table};
use serde::Serialize;

use super::error::RuntimeError;
use super::images::synthetic_batch;
use super::profile::{Profile, ProfileFiles};
use super::session::{end_profiling, Model};
use super::tensor::{input_tensor, run_tensor};

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchConfig {
    /// Batch sizes, each measured separately.
    pub batches: Vec<usize>,
    /// Untimed runs first (allocation, kernel selection, caches).
    pub warmup: usize,
    /// Timed runs at least.
    pub iterations: usize,
    /// Keep running until this much time was spent on timed runs too.
    pub min_time: Duration,
    /// Never more timed runs than this, whatever `min_time` says.
    pub max_iterations: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self { batches: vec![1], warmup: 3, iterations: 10, min_time: Duration::from_secs(1), max_iterations: 1000 }
    }
}

/// Timings at one batch size; latencies are per run (whole batch), in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    /// Batch size.
    pub batch: usize,
    /// Timed runs.
    pub iterations: usize,
    /// Median latency.
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
    /// 10th percentile.
    pub p10_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Throughput at the median latency.
    pub images_per_s: f64,
}

/// Benchmarks `model` on synthetic input of shape `[batch, C, H, W]` for each batch in `cfg`:
/// warm-up runs, then timed runs until both `iterations` and `min_time` are reached (at most
/// `max_iterations`). Only `Session::run` is timed; the input is built once per batch size.
///
/// # Errors
/// No batch sizes, a batch of 0, or anything [`super::tensor::run`] reports.
pub fn bench(model: &mut Model, input_chw_shape: [usize; 3], cfg: &BenchConfig) -> Result<Vec<BenchResult>, RuntimeError> {
    Ok(bench_interleaved(&mut [model], input_chw_shape, cfg)?.remove(0))
}

/// Benchmarks several models on the same input, alternating their runs (A, B, A, B, ...) so that
/// a change in machine load between runs affects each alike: their ratios stay meaningful on a
/// busy machine. One result list per model, in order.
///
/// # Errors
/// As [`bench`].
pub fn bench_interleaved(models: &mut [&mut Model], input_chw_shape: [usize; 3], cfg: &BenchConfig) -> Result<Vec<Vec<BenchResult>>, RuntimeError> {
    if cfg.batches.is_empty() {
        return Err(RuntimeError::Input("bench: no batch sizes given".to_owned()));
    }
    let [c, h, w] = input_chw_shape;
    let mut results: Vec<Vec<BenchResult>> = models.iter().map(|_| Vec::with_capacity(cfg.batches.len())).collect();
    for &batch in &cfg.batches {
        let shape = [batch, c, h, w];
        let inputs = models.iter().map(|m| input_tensor(m.image_input()?, synthetic_batch(shape, 0)?, shape)).collect::<Result<Vec<_>, _>>()?;
        let mut run_once = |i: usize| -> Result<Duration, RuntimeError> {
            let (name, tensor) = &inputs[i];
            let start = Instant::now();
            models[i].session.run(ort::inputs![name.as_str() => tensor]).map_err(RuntimeError::ort("running the model"))?;
            Ok(start.elapsed())
        };
        for _ in 0..cfg.warmup {
            for i in 0..inputs.len() {
                run_once(i)?;
            }
        }
        let wanted = cfg.iterations.clamp(1, cfg.max_iterations.max(1));
        let mut times = vec![Vec::with_capacity(wanted); inputs.len()];
        let mut total = Duration::ZERO;
        while times[0].len() < cfg.max_iterations.max(1) && (times[0].len() < wanted || total < cfg.min_time) {
            for (i, t) in times.iter_mut().enumerate() {
                let elapsed = run_once(i)?;
                if i == 0 {
                    total += elapsed;
                }
                t.push(elapsed.as_secs_f64() * 1e3);
            }
        }
        for (r, t) in results.iter_mut().zip(times) {
            r.push(summarise(batch, t));
        }
    }
    Ok(results)
}

/// Profiles `runs` runs of `model` on a synthetic batch of `batch` images in a profiling twin
/// session, after `warmup` runs the summary leaves out, and writes `files` (see [`ProfileFiles`]).
///
/// # Errors
/// As [`bench`], and the profile's files (their messages name them).
pub fn profile(model: &Model, input_chw_shape: [usize; 3], batch: usize, warmup: usize, runs: usize, files: &ProfileFiles) -> Result<Profile, RuntimeError> {
    let [c, h, w] = input_chw_shape;
    let shape = [batch, c, h, w];
    let input = input_tensor(model.image_input()?, synthetic_batch(shape, 0)?, shape)?;
    let mut session = model.profiling_twin(&files.ort_prefix())?;
    let ran = (0..warmup + runs).try_for_each(|_| run_tensor(&mut session, &input).map(drop));
    let written = end_profiling(&mut session)?;
    if let Err(e) = ran {
        // A failed run leaves no half profile behind.
        let _ = std::fs::remove_file(&written);
        return Err(e);
    }
    files.finish(&written, warmup)
}

fn summarise(batch: usize, mut times_ms: Vec<f64>) -> BenchResult {
    times_ms.sort_by(f64::total_cmp);
    let median_ms = percentile(&times_ms, 50.0);
    BenchResult {
        batch,
        iterations: times_ms.len(),
        median_ms,
        min_ms: times_ms[0],
        max_ms: times_ms[times_ms.len() - 1],
        p10_ms: percentile(&times_ms, 10.0),
        p90_ms: percentile(&times_ms, 90.0),
        images_per_s: batch as f64 / (median_ms / 1e3),
    }
}

/// Linear interpolation between closest ranks (numpy's default) on sorted, non-empty data.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// The results as an aligned (Markdown-compatible) text table.
#[must_use]
pub fn render_table(results: &[BenchResult]) -> String {
    let mut table = Table::new();
    table.load_style(presets::ASCII_MARKDOWN);
    table.set_header(["batch", "runs", "median ms", "p10 ms", "p90 ms", "min ms", "max ms", "images/s"]);
    for r in results {
        let ms = |v: f64| format!("{v:.3}");
        table.add_row([
            r.batch.to_string(),
            r.iterations.to_string(),
            ms(r.median_ms),
            ms(r.p10_ms),
            ms(r.p90_ms),
            ms(r.min_ms),
            ms(r.max_ms),
            format!("{:.1}", r.images_per_s),
        ]);
    }
    for column in table.column_iter_mut() {
        column.set_cell_alignment(CellAlignment::Right);
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let data = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&data, 50.0), 3.0);
        assert_eq!(percentile(&data, 10.0), 1.4);
        assert_eq!(percentile(&data, 90.0), 4.6);
        assert_eq!(percentile(&[7.0], 90.0), 7.0);
    }

    #[test]
    fn summary_and_table() {
        let r = summarise(4, vec![4.0, 2.0, 3.0, 1.0, 5.0]);
        assert_eq!((r.iterations, r.min_ms, r.max_ms, r.median_ms), (5, 1.0, 5.0, 3.0));
        assert!((r.images_per_s - 4.0 / 0.003).abs() < 1e-6);
        let text = render_table(&[r]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("| batch |"), "{text}");
        assert!(lines[2].contains(" 3.000 |") && lines[2].contains("1333.3"), "{text}");
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "aligned:\n{text}");
    }
}
