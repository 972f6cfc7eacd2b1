//! Which execution provider actually ran each node. ONNX Runtime may place some nodes (shape
//! arithmetic, unsupported ops) on the CPU even when CUDA was asked for; the only reliable record
//! is its profile, so this builds a profiling twin of the model's session and runs it once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::error::RuntimeError;
use super::images::synthetic_batch;
use super::session::{build_session, Model};
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
    let input = input_tensor(model.image_input()?, synthetic_batch(shape, 0), shape)?;
    let mut session = build_session(&model.source, model.config(), Some(&profile_prefix()))?;
    run_tensor(&mut session, &input)?;
    let file = PathBuf::from(session.end_profiling().map_err(RuntimeError::ort("ending the profile"))?);
    let counts = read_profile(&file);
    // The profile is only a by-product: a file left behind is no reason to fail.
    let _ = std::fs::remove_file(&file);
    counts
}

/// The counts as one line, most nodes first:
/// `CUDAExecutionProvider (312 nodes), CPUExecutionProvider (4 nodes)`.
#[must_use]
pub fn describe_providers(counts: &BTreeMap<String, usize>) -> String {
    let mut counts: Vec<(&String, &usize)> = counts.iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let parts: Vec<String> = counts
        .into_iter()
        .map(|(provider, &n)| format!("{provider} ({n} node{})", if n == 1 { "" } else { "s" }))
        .collect();
    parts.join(", ")
}

/// A fresh prefix per call: sessions in one process (parallel tests) must not share a file.
fn profile_prefix() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("incc-profile-{}-{n}", std::process::id()))
}

fn read_profile(file: &Path) -> Result<BTreeMap<String, usize>, RuntimeError> {
    let bad = |reason: String| RuntimeError::File { path: file.to_path_buf(), reason };
    let text = std::fs::read_to_string(file).map_err(|e| bad(format!("cannot read the ONNX Runtime profile: {e}")))?;
    let events: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("the ONNX Runtime profile is not JSON: {e}")))?;
    Ok(count_nodes(&events))
}

/// Counts distinct nodes per provider. Node events have `cat == "Node"`, a name ending in
/// `_kernel_time` (the `_fence_*` events of the same node are skipped) and `args.provider`.
fn count_nodes(events: &serde_json::Value) -> BTreeMap<String, usize> {
    let mut nodes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in events.as_array().into_iter().flatten().filter(|e| e["cat"] == "Node") {
        let name = event["name"].as_str().and_then(|n| n.strip_suffix("_kernel_time"));
        if let (Some(name), Some(provider)) = (name, event["args"]["provider"].as_str()) {
            nodes.entry(provider.to_owned()).or_default().insert(name.to_owned());
        }
    }
    nodes.into_iter().map(|(provider, names)| (provider, names.len())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_kernel_events_per_provider() {
        let events = serde_json::json!([
            {"cat": "Session", "name": "model_run", "args": {}},
            {"cat": "Node", "name": "conv_fence_before", "args": {"provider": "CUDAExecutionProvider"}},
            {"cat": "Node", "name": "conv_kernel_time", "args": {"provider": "CUDAExecutionProvider"}},
            {"cat": "Node", "name": "conv_kernel_time", "args": {"provider": "CUDAExecutionProvider"}},
            {"cat": "Node", "name": "relu_kernel_time", "args": {"provider": "CUDAExecutionProvider"}},
            {"cat": "Node", "name": "shape_kernel_time", "args": {"provider": "CPUExecutionProvider"}},
        ]);
        let counts = count_nodes(&events);
        assert_eq!(counts.get("CUDAExecutionProvider"), Some(&2));
        assert_eq!(counts.get("CPUExecutionProvider"), Some(&1));
        assert_eq!(counts.len(), 2);
        assert_eq!(describe_providers(&counts), "CUDAExecutionProvider (2 nodes), CPUExecutionProvider (1 node)");
    }
}
