//! Which execution provider actually ran each node. ONNX Runtime may place some nodes (shape
//! arithmetic, unsupported ops) on the CPU even when CUDA was asked for; the only reliable record
//! is its profile, so this builds a profiling twin of the model's session and runs it once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::error::RuntimeError;
use super::images::synthetic_batch;
use super::profile::Trace;
use super::session::{end_profiling, Model};
use super::tensor::{input_tensor, run_tensor};

/// Runs `model` once on a synthetic batch of `shape` with profiling on and counts the nodes each
/// execution provider ran, e.g. `{"CPUExecutionProvider": 4, "CUDAExecutionProvider": 312}`.
///
/// It builds a second session from the same model and configuration (the profile must be
/// switched on when a session is created), so it costs one extra model load.
///
/// # Errors
/// As [`super::tensor::run`], and an unreadable profile.
pub fn providers_used(model: &Model, shape: [usize; 4]) -> Result<BTreeMap<String, usize>, RuntimeError> {
    let input = input_tensor(model.image_input()?, synthetic_batch(shape, 0)?, shape)?;
    let mut session = model.profiling_twin(&profile_prefix())?;
    run_tensor(&mut session, &input)?;
    let file = end_profiling(&mut session)?;
    let trace = Trace::read(&file);
    // The profile is only a by-product: a file left behind is no reason to fail.
    let _ = std::fs::remove_file(&file);
    Ok(count_nodes(&trace?))
}

/// The counts as one line, most nodes first:
/// `CUDAExecutionProvider (312 nodes), CPUExecutionProvider (4 nodes)`.
#[must_use]
pub fn describe_providers(counts: &BTreeMap<String, usize>) -> String {
    let mut counts: Vec<(&String, &usize)> = counts.iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let parts: Vec<String> = counts.into_iter().map(|(provider, &n)| format!("{provider} ({n} node{})", if n == 1 { "" } else { "s" })).collect();
    parts.join(", ")
}

/// A fresh prefix per call: sessions in one process (parallel tests) must not share a file.
fn profile_prefix() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("incc-profile-{}-{n}", std::process::id()))
}

/// Counts distinct nodes per provider.
fn count_nodes(trace: &Trace) -> BTreeMap<String, usize> {
    let mut nodes: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for kernel in &trace.kernels {
        nodes.entry(&kernel.provider).or_default().insert(&kernel.node);
    }
    nodes.into_iter().map(|(provider, names)| (provider.to_owned(), names.len())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_kernel_events_per_provider() {
        // Three nodes on CUDA and one on the CPU, over three runs, with fence and session events.
        let trace = Trace::parse(include_str!("../../tests/fixtures/ort_profile.json")).unwrap();
        let counts = count_nodes(&trace);
        assert_eq!(counts.get("CUDAExecutionProvider"), Some(&3));
        assert_eq!(counts.get("CPUExecutionProvider"), Some(&1));
        assert_eq!(counts.len(), 2);
        assert_eq!(describe_providers(&counts), "CUDAExecutionProvider (3 nodes), CPUExecutionProvider (1 node)");
    }
}
