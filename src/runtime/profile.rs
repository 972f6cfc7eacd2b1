//! Where the time goes: reading an ONNX Runtime profile and summarising it per op type and per
//! node.
//!
//! A session built with profiling writes a Chrome trace (a JSON array of events, times in
//! microseconds) when it ends. The events read here:
//! - `cat "Session"`, `name "model_run"`: one run, start `ts`, length `dur`;
//! - `cat "Node"`, `name "<node>_kernel_time"`: one node's kernel in a run, with `args.op_name`
//!   (the op type of the node ONNX Runtime ran, after its own graph optimisations: fused convs are
//!   `Conv`, layout changes `ReorderInput`/`ReorderOutput`) and `args.provider`.
//!
//! The `<node>_fence_before` / `_fence_after` events of a node are waits around its kernel, not
//! work, and are skipped, as are the other session events (loading, initialisation). A kernel
//! belongs to the run whose span holds its start. Kernel times are host times around each
//! kernel's `Compute`: on the CPU that is the work; on CUDA, whose kernels are launched
//! asynchronously, mostly the launch, and a run's wall time holds the wait for the GPU.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use comfy_table::{presets, CellAlignment, Table};
use serde::{Deserialize, Serialize};

use super::error::RuntimeError;

/// How many of the slowest nodes a summary lists.
pub const SLOWEST_NODES: usize = 15;

/// A stretch of time in a trace, in microseconds from the trace's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start_us: u64,
    pub dur_us: u64,
}

impl Span {
    fn holds(&self, t: u64) -> bool {
        self.start_us <= t && t <= self.start_us + self.dur_us
    }
}

/// One node's kernel in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The node's name in the graph ONNX Runtime ran (a fused node may carry a suffix, `_nchwc`).
    pub node: String,
    /// Its op type (`args.op_name`).
    pub op: String,
    /// The execution provider that ran it (`args.provider`).
    pub provider: String,
    pub span: Span,
}

/// The events of a profile that incc reads, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// Every `model_run`.
    pub runs: Vec<Span>,
    /// Every node kernel, of every run.
    pub kernels: Vec<Kernel>,
}

/// The fields of a trace event that incc reads; the others (memory, shapes, threads) are ignored.
#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    cat: String,
    #[serde(default)]
    name: String,
    ts: Option<u64>,
    dur: Option<u64>,
    #[serde(default)]
    args: EventArgs,
}

#[derive(Deserialize, Default)]
struct EventArgs {
    op_name: Option<String>,
    provider: Option<String>,
}

impl Trace {
    /// Reads the profile ONNX Runtime wrote to `file`.
    ///
    /// # Errors
    /// An unreadable file, or one that is not an ONNX Runtime profile; the message names the file.
    pub fn read(file: &Path) -> Result<Self, RuntimeError> {
        let bad = |reason: String| RuntimeError::File { path: file.to_path_buf(), reason };
        let text = std::fs::read_to_string(file).map_err(|e| bad(format!("cannot read the ONNX Runtime profile: {e}")))?;
        Self::parse(&text).map_err(bad)
    }

    /// Parses the text of a profile.
    ///
    /// # Errors
    /// Text that is not a JSON array of trace events, or a run or kernel event without its time,
    /// op type or provider.
    pub fn parse(text: &str) -> Result<Self, String> {
        let events: Vec<Event> = serde_json::from_str(text).map_err(|e| format!("not an ONNX Runtime profile (a JSON array of trace events): {e}"))?;
        let mut trace = Self::default();
        for (i, event) in events.into_iter().enumerate() {
            let missing = |what: &str| format!("event {i} (`{}`) has no {what}", event.name);
            let span = || match (event.ts, event.dur) {
                (Some(start_us), Some(dur_us)) => Ok(Span { start_us, dur_us }),
                _ => Err(missing("ts or dur")),
            };
            match event.cat.as_str() {
                "Session" if event.name == "model_run" => trace.runs.push(span()?),
                "Node" => {
                    let Some(node) = event.name.strip_suffix("_kernel_time") else { continue };
                    let op = event.args.op_name.clone().ok_or_else(|| missing("args.op_name"))?;
                    let provider = event.args.provider.clone().ok_or_else(|| missing("args.provider"))?;
                    trace.kernels.push(Kernel { node: node.to_owned(), op, provider, span: span()? });
                }
                _ => {}
            }
        }
        Ok(trace)
    }

    /// The runs after the first `skip` (warm-up runs) summarised, with the `top` slowest nodes.
    ///
    /// # Errors
    /// No run after the warm-up runs.
    pub fn summarise(&self, skip: usize, top: usize) -> Result<Profile, String> {
        let mut runs = self.runs.clone();
        runs.sort_by_key(|r| r.start_us);
        let runs = runs
            .get(skip..)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| format!("the profile has {} run(s), none after the {skip} warm-up run(s) left out", self.runs.len()))?;
        let profiled = self.kernels.iter().filter(|k| {
            let i = runs.partition_point(|r| r.start_us <= k.span.start_us);
            i > 0 && runs[i - 1].holds(k.span.start_us)
        });

        #[derive(Default)]
        struct Totals<'a> {
            us: u64,
            kernels: usize,
            nodes: BTreeSet<&'a str>,
        }
        let mut by_op: BTreeMap<&str, Totals> = BTreeMap::new();
        let mut by_node: BTreeMap<&str, (&Kernel, u64)> = BTreeMap::new();
        let mut by_provider: BTreeMap<&str, (Totals, BTreeSet<&str>)> = BTreeMap::new();
        for k in profiled {
            let provider = by_provider.entry(&k.provider).or_default();
            provider.0.us += k.span.dur_us;
            provider.0.kernels += 1;
            provider.0.nodes.insert(&k.node);
            provider.1.insert(&k.op);
            let op = by_op.entry(&k.op).or_default();
            op.us += k.span.dur_us;
            op.kernels += 1;
            op.nodes.insert(&k.node);
            by_node.entry(&k.node).or_insert((k, 0)).1 += k.span.dur_us;
        }
        let n = runs.len() as f64;
        let kernel_us: u64 = by_op.values().map(|t| t.us).sum();
        let share = |us: u64| if kernel_us == 0 { 0.0 } else { 100.0 * us as f64 / kernel_us as f64 };
        let ms = |us: u64| us as f64 / 1e3;

        let mut ops: Vec<OpTime> = by_op
            .into_iter()
            .map(|(op, t)| OpTime {
                op: op.to_owned(),
                nodes: t.nodes.len(),
                kernels: t.kernels,
                total_ms: ms(t.us),
                ms_per_run: ms(t.us) / n,
                share: share(t.us),
            })
            .collect();
        ops.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then_with(|| a.op.cmp(&b.op)));
        let mut providers: Vec<ProviderTime> = by_provider
            .into_iter()
            .map(|(provider, (t, ops))| ProviderTime {
                provider: provider.to_owned(),
                nodes: t.nodes.len(),
                ms_per_run: ms(t.us) / n,
                share: share(t.us),
                ops: ops.into_iter().map(str::to_owned).collect(),
            })
            .collect();
        providers.sort_by(|a, b| b.nodes.cmp(&a.nodes).then_with(|| a.provider.cmp(&b.provider)));
        let nodes = by_node.len();
        let mut slowest: Vec<NodeTime> = by_node
            .into_iter()
            .map(|(node, (k, us))| NodeTime {
                node: node.to_owned(),
                op: k.op.clone(),
                provider: k.provider.clone(),
                total_ms: ms(us),
                ms_per_run: ms(us) / n,
                share: share(us),
            })
            .collect();
        slowest.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then_with(|| a.node.cmp(&b.node)));
        slowest.truncate(top);
        Ok(Profile { runs: runs.len(), nodes, run_ms: ms(runs.iter().map(|r| r.dur_us).sum()) / n, kernel_ms: ms(kernel_us) / n, providers, ops, slowest })
    }
}

/// Where the time of some runs went. Times are in milliseconds; shares are percentages of the
/// kernels' total time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// Runs summarised (warm-up runs are left out).
    pub runs: usize,
    /// Nodes ONNX Runtime ran per run (after its graph optimisations).
    pub nodes: usize,
    /// Wall time of a run, on average (`model_run`).
    pub run_ms: f64,
    /// Time in kernels per run, on average; the rest of `run_ms` went between kernels (feeding,
    /// allocation, scheduling, copies).
    pub kernel_ms: f64,
    /// Per execution provider, most nodes first: on CUDA, the nodes ONNX Runtime left on the CPU
    /// (each a copy between host and device) show here.
    pub providers: Vec<ProviderTime>,
    /// Per op type, most time first.
    pub ops: Vec<OpTime>,
    /// The slowest nodes, most time first.
    pub slowest: Vec<NodeTime>,
}

/// The nodes one execution provider ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderTime {
    pub provider: String,
    pub nodes: usize,
    pub ms_per_run: f64,
    pub share: f64,
    /// The op types it ran.
    pub ops: Vec<String>,
}

/// The time of one op type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpTime {
    pub op: String,
    /// Nodes of this op type.
    pub nodes: usize,
    /// Kernel events (nodes x runs).
    pub kernels: usize,
    pub total_ms: f64,
    pub ms_per_run: f64,
    pub share: f64,
}

/// The time of one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeTime {
    pub node: String,
    pub op: String,
    pub provider: String,
    pub total_ms: f64,
    pub ms_per_run: f64,
    pub share: f64,
}

impl Profile {
    /// A line of totals, then the op types and the slowest nodes as aligned (Markdown-compatible)
    /// tables.
    #[must_use]
    pub fn render(&self) -> String {
        let between = self.run_ms - self.kernel_ms;
        let in_kernels = if self.run_ms > 0.0 { 100.0 * self.kernel_ms / self.run_ms } else { 0.0 };
        let mut ops = Table::new();
        for o in &self.ops {
            ops.add_row([o.op.clone(), o.nodes.to_string(), o.kernels.to_string(), ms(o.ms_per_run), ms(o.total_ms), percent(o.share)]);
        }
        let mut nodes = Table::new();
        for n in &self.slowest {
            let provider = n.provider.strip_suffix("ExecutionProvider").unwrap_or(&n.provider);
            nodes.add_row([n.node.clone(), n.op.clone(), provider.to_owned(), ms(n.ms_per_run), percent(n.share)]);
        }
        let ops = styled(ops, &["op", "nodes", "kernels", "ms/run", "total ms", "share"], 1);
        let nodes = styled(nodes, &["node", "op", "provider", "ms/run", "share"], 3);
        // The main provider's op types go without saying; a minor one's (CPU fallbacks) are named.
        let providers: Vec<String> = self
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let name = p.provider.strip_suffix("ExecutionProvider").unwrap_or(&p.provider);
                let ops = if i == 0 { String::new() } else { format!(": {}", p.ops.join(", ")) };
                format!("{name} {} node{} ({}){ops}", p.nodes, if p.nodes == 1 { "" } else { "s" }, percent(p.share))
            })
            .collect();
        format!(
            "{} run{}, {} nodes: {} ms per run, {} ms ({:.1} %) in kernels, {} ms between them\nby provider: {}\n{ops}\nslowest {} nodes:\n{nodes}\n",
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            self.nodes,
            ms(self.run_ms),
            ms(self.kernel_ms),
            in_kernels,
            ms(between),
            providers.join("; "),
            self.slowest.len(),
        )
    }
}

/// The Markdown style, `header`, names in the first `names` columns (left), numbers after them
/// (right).
fn styled(mut table: Table, header: &[&str], names: usize) -> Table {
    table.load_style(presets::ASCII_MARKDOWN);
    table.set_header(header);
    for column in table.column_iter_mut().skip(names) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    table
}

fn ms(v: f64) -> String {
    format!("{v:.3}")
}

fn percent(v: f64) -> String {
    format!("{v:.1} %")
}

/// Where a profile requested with `--profile FILE.json` goes: the summary as JSON in `FILE.json`,
/// and ONNX Runtime's own trace beside it in `FILE.trace.json` (for chrome://tracing or
/// Perfetto).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileFiles {
    summary: PathBuf,
}

impl ProfileFiles {
    /// # Errors
    /// The summary's folder does not exist (ONNX Runtime would silently write nothing there).
    pub fn new(summary: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let summary = summary.into();
        let folder = match summary.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if summary.file_name().is_none() || !folder.is_dir() {
            let reason = format!("cannot write the profile here: `{}` is not a folder", folder.display());
            return Err(RuntimeError::File { path: summary, reason });
        }
        Ok(Self { summary })
    }

    /// The summary (JSON).
    #[must_use]
    pub fn summary(&self) -> &Path {
        &self.summary
    }

    /// ONNX Runtime's trace, kept.
    #[must_use]
    pub fn trace(&self) -> PathBuf {
        self.summary.with_extension("trace.json")
    }

    /// The prefix to give ONNX Runtime (it appends the date and `.json`): a hidden name in the
    /// summary's folder, so that the trace is renamed into place, never copied across file systems
    /// or left half-written under its final name.
    #[must_use]
    pub fn ort_prefix(&self) -> PathBuf {
        let name = self.summary.file_name().unwrap_or_default().to_string_lossy();
        self.summary.with_file_name(format!(".{name}.ort-{}", std::process::id()))
    }

    /// Moves the trace ONNX Runtime wrote (`written`) to [`Self::trace`], summarises it leaving
    /// out the first `skip` runs (warm-up), and writes the summary atomically.
    ///
    /// # Errors
    /// The trace cannot be moved, read or summarised, or the summary cannot be written; each
    /// message names its file.
    pub fn finish(&self, written: &Path, skip: usize) -> Result<Profile, RuntimeError> {
        let trace = self.trace();
        std::fs::rename(written, &trace)
            .map_err(|e| RuntimeError::File { path: trace.clone(), reason: format!("cannot move ONNX Runtime's profile `{}` here: {e}", written.display()) })?;
        let profile = Trace::read(&trace)?.summarise(skip, SLOWEST_NODES).map_err(|reason| RuntimeError::File { path: trace.clone(), reason })?;
        let json = serde_json::to_vec_pretty(&profile).expect("a profile serialises");
        crate::fsutil::write_atomic(&self.summary, &json)
            .map_err(|e| RuntimeError::File { path: self.summary.clone(), reason: format!("cannot write the profile summary: {e}") })?;
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two runs after a warm-up run, as ONNX Runtime writes them (fence and session events
    /// included, args trimmed): a fused conv and a layout change, a relu, a shape op on the CPU.
    const TRACE: &str = include_str!("../../tests/fixtures/ort_profile.json");

    #[test]
    fn parses_runs_and_kernels_and_skips_fences() {
        let trace = Trace::parse(TRACE).unwrap();
        assert_eq!(trace.runs, [Span { start_us: 6000, dur_us: 700 }, Span { start_us: 7000, dur_us: 120 }, Span { start_us: 8000, dur_us: 130 }]);
        assert_eq!(trace.kernels.len(), 9);
        assert_eq!(
            trace.kernels[1],
            Kernel { node: "conv_nchwc".into(), op: "Conv".into(), provider: "CUDAExecutionProvider".into(), span: Span { start_us: 7005, dur_us: 60 } }
        );
        assert!(trace.kernels.iter().all(|k| !k.node.contains("fence")));
    }

    #[test]
    fn summary_leaves_out_the_warm_up_run() {
        let p = Trace::parse(TRACE).unwrap().summarise(1, 3).unwrap();
        assert_eq!((p.runs, p.nodes), (2, 4));
        assert_eq!(p.run_ms, 0.125);
        assert_eq!(p.kernel_ms, 0.1); // (100 + 100) us over 2 runs
        let ops: Vec<(&str, usize, usize, f64, f64)> = p.ops.iter().map(|o| (o.op.as_str(), o.nodes, o.kernels, o.total_ms, o.share)).collect();
        assert_eq!(ops, [("Conv", 1, 2, 0.1, 50.0), ("Relu", 1, 2, 0.04, 20.0), ("Shape", 1, 2, 0.04, 20.0), ("ReorderOutput", 1, 2, 0.02, 10.0)]);
        assert_eq!(p.ops[0].ms_per_run, 0.05);
        let nodes: Vec<(&str, &str, &str)> = p.slowest.iter().map(|n| (n.node.as_str(), n.op.as_str(), n.provider.as_str())).collect();
        assert_eq!(
            nodes,
            [("conv_nchwc", "Conv", "CUDAExecutionProvider"), ("relu", "Relu", "CUDAExecutionProvider"), ("shape", "Shape", "CPUExecutionProvider")]
        );
        // Without skipping, the first run's slow conv dominates.
        let all = Trace::parse(TRACE).unwrap().summarise(0, 3).unwrap();
        assert_eq!((all.runs, all.ops[0].kernels, all.ops[0].total_ms), (3, 3, 0.6));
    }

    #[test]
    fn no_run_left_is_an_error() {
        let err = Trace::parse(TRACE).unwrap().summarise(3, 3).unwrap_err();
        assert_eq!(err, "the profile has 3 run(s), none after the 3 warm-up run(s) left out");
        let err = Trace::parse("[]").unwrap().summarise(0, 3).unwrap_err();
        assert!(err.contains("has 0 run(s)"), "{err}");
    }

    #[test]
    fn malformed_profiles_are_errors_not_panics() {
        for (text, expected) in [
            ("{\"traceEvents\": []}", "not an ONNX Runtime profile"),
            (
                "[{\"cat\": \"Node\", \"name\": \"x_kernel_time\", \"ts\": 1, \"dur\": 2, \"args\": {\"provider\": \"CPUExecutionProvider\"}}]",
                "event 0 (`x_kernel_time`) has no args.op_name",
            ),
            ("[{\"cat\": \"Session\", \"name\": \"model_run\", \"ts\": 1}]", "event 0 (`model_run`) has no ts or dur"),
        ] {
            let err = Trace::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let file = std::env::temp_dir().join(format!("incc-profile-test-{}.json", std::process::id()));
        std::fs::write(&file, "[{\"cat\": \"Node\", \"name\": trunc").unwrap();
        let err = Trace::read(&file).unwrap_err().to_string();
        let _ = std::fs::remove_file(&file);
        assert!(err.starts_with(&file.display().to_string()) && err.contains("not an ONNX Runtime profile"), "{err}");
    }

    #[test]
    fn files_beside_the_summary() {
        let folder = std::env::temp_dir();
        let files = ProfileFiles::new(folder.join("p.json")).unwrap();
        assert_eq!(files.trace(), folder.join("p.trace.json"));
        let prefix = files.ort_prefix();
        assert_eq!(prefix.parent(), Some(folder.as_path()));
        assert!(prefix.file_name().unwrap().to_string_lossy().starts_with(".p.json.ort-"), "{prefix:?}");
        let err = ProfileFiles::new(folder.join("no-such-folder-incc/p.json")).unwrap_err().to_string();
        assert!(err.contains("no-such-folder-incc` is not a folder"), "{err}");
    }
}
