//! No lost runs, no panics, no silent wrong answers (issue 15), as a user meets them: the `incc`
//! binary on a run folder, a device, a signal, a kill, a changed file, a corrupt checkpoint or a
//! bad option. Runs train `tests/fixtures/tiny_residual.inc` on synthetic data (milliseconds a
//! step), single-threaded, so that two runs of the same steps agree bit for bit.

use crate::common::{fresh_folder, incc, ort_ready};
use incc::trainer::checkpoint::{self, Checkpoint};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TINY: &str = "tests/fixtures/tiny_residual.inc";

/// A run of 300 steps: 3 epochs of 100 batches of 8, validated on 16 examples.
const LONG_RUN: [&str; 15] =
    ["train", TINY, "--data", "synthetic:800,15,5", "--batch", "8", "--epochs", "3", "--limit-val", "16", "--threads", "1", "--quiet", "--seed", "3"];

/// A run of 8 steps (one epoch of batches of 8) of the network `arch`, in `out`, with `more`.
fn short_run(arch: &str, out: &Path, more: &[&str]) -> (i32, String, String) {
    let base = ["train", arch, "--data", "synthetic:64,15,5", "--batch", "8", "--epochs", "1", "--limit-val", "8", "--threads", "1", "--quiet"];
    incc(&args(&[&base, &["--out", path(out)], more]))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn args<'a>(parts: &[&[&'a str]]) -> Vec<&'a str> {
    parts.concat()
}

/// The long run, trained once without a stop: what every stopped and resumed twin must equal.
fn uninterrupted() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = fresh_folder("uninterrupted").join("run");
        let (code, out, err) = incc(&args(&[&LONG_RUN, &["--out", path(&run)]]));
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("done: 300 steps"), "{out}");
        run
    })
}

fn last(run: &Path) -> Checkpoint {
    checkpoint::load(&run.join("last.safetensors")).unwrap_or_else(|e| panic!("{e}"))
}

/// The same parameters, optimizer state, averages and position as the uninterrupted run, and
/// metrics with each step once and the same epoch figures.
fn assert_same_as_uninterrupted(run: &Path) {
    let (a, b) = (last(uninterrupted()), last(run));
    assert_eq!(a.position, b.position);
    assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
    for (name, t) in &a.tensors {
        assert!(*t == b.tensors[name], "`{name}` differs from the uninterrupted run's");
    }
    let lines = |run: &Path, kind: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole JSON lines")).filter(|v| v["kind"] == kind).collect()
    };
    let steps: Vec<u64> = lines(run, "step").iter().map(|v| v["step"].as_u64().expect("step")).collect();
    assert_eq!(steps, (1..=300).collect::<Vec<_>>(), "each step once, in order");
    let figures = |v: &serde_json::Value| ["epoch", "step", "train_loss", "train_top1", "val_loss", "val_top1"].map(|k| v[k].clone());
    let (want, got) = (lines(uninterrupted(), "epoch"), lines(run, "epoch"));
    assert_eq!(want.iter().map(figures).collect::<Vec<_>>(), got.iter().map(figures).collect::<Vec<_>>());
}

/// A child `incc` that is killed if the test ends before it does.
struct Child(std::process::Child);

impl Child {
    fn spawn(args: &[&str]) -> Child {
        let child = Command::new(env!("CARGO_BIN_EXE_incc")).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("incc starts");
        Child(child)
    }

    fn signal(&self, name: &str) {
        // The shell's own `kill`: there wherever a shell is.
        let sent = Command::new("sh").args(["-c", &format!("kill -{name} {}", self.0.id())]).status().expect("sh runs");
        assert!(sent.success(), "kill -{name} failed");
    }

    /// Its exit, if it comes within `timeout`.
    fn exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.0.try_wait().expect("waits") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        std::io::Read::read_to_string(self.0.stderr.as_mut().expect("piped"), &mut text).expect("stderr");
        text
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to a minute) until `done` says so.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "waited a minute for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn step_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.matches("\"kind\":\"step\"").count())
}

#[test]
fn a_new_run_refuses_a_folder_that_holds_one_unless_forced() {
    if !ort_ready() {
        return;
    }
    let run = fresh_folder("refuse").join("run");
    let train = |more: &[&str]| short_run(TINY, &run, more);
    let (code, _, err) = train(&[]);
    assert_eq!(code, 0, "{err}");
    let kept = [std::fs::read(run.join("metrics.jsonl")).expect("metrics"), std::fs::read(run.join("last.safetensors")).expect("checkpoint")];
    let (code, _, err) = train(&["--lr", "0.01"]);
    assert_eq!(code, 1, "{err}");
    let dir = path(&run);
    assert!(err.contains(&format!("error: `{dir}` is not empty")), "{err}");
    assert!(err.contains(&format!("--resume {dir}")) && err.contains("--force") && err.contains("a fresh --out folder"), "{err}");
    assert_eq!(kept, [std::fs::read(run.join("metrics.jsonl")).expect("metrics"), std::fs::read(run.join("last.safetensors")).expect("checkpoint")]);
    // --force starts over: the old run's files go (its best checkpoint too), others stay.
    std::fs::write(run.join("notes.txt"), "mine").expect("write");
    let (code, _, err) = train(&["--force", "--max-steps", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(step_lines(&run), 3);
    assert!(!run.join("best.safetensors").exists(), "the old run's best checkpoint is left");
    assert!(run.join("notes.txt").exists());
    let (code, _, err) = incc(&["train", "--resume", dir, "--force"]);
    assert_eq!(code, 2, "{err}");
}

/// As root, renaming a temporary file over `/dev/null` would replace the device by a regular
/// file (as anyone else, it fails): files the tool writes go through devices instead.
#[cfg(unix)]
#[test]
fn writing_to_a_device_writes_through_it() {
    use std::os::unix::fs::FileTypeExt;
    let is_device = || std::fs::symlink_metadata("/dev/null").is_ok_and(|m| m.file_type().is_char_device());
    assert!(is_device());
    for output in [["-o", "/dev/null"], ["--save-weights", "/dev/null"]] {
        let (code, _, err) = incc(&args(&[&["compile", TINY], &output]));
        assert_eq!(code, 0, "{output:?}: {err}");
        assert!(is_device(), "{output:?} replaced /dev/null");
    }
    if ort_ready() {
        let (code, _, err) = incc(&["run", TINY, "--save-output", "/dev/null"]);
        assert_eq!(code, 0, "{err}");
        assert!(is_device());
    }
}

/// The first Ctrl-C finishes the step, writes a checkpoint there and says how to resume; the run
/// resumed from it ends where an uninterrupted one does, bit for bit.
#[test]
fn an_interrupted_run_resumes_to_the_uninterrupted_one() {
    if !ort_ready() {
        return;
    }
    let run = fresh_folder("interrupted").join("run");
    let mut child = Child::spawn(&args(&[&LONG_RUN, &["--out", path(&run)]]));
    wait_until("three steps", || step_lines(&run) >= 3);
    child.signal("INT");
    let status = child.exit(Duration::from_secs(60)).expect("the run stops");
    let err = child.stderr();
    assert_eq!(status.code(), Some(130), "{err}");
    let stopped = last(&run).position;
    assert!(stopped.step < 300, "the run finished before the signal: make it longer");
    let said = format!(
        "interrupted: `{}` holds the run at step {} (epoch {}, batch {}); resume it with --resume {}",
        path(&run.join("last.safetensors")),
        stopped.step,
        stopped.epoch + 1,
        stopped.batch_in_epoch,
        path(&run)
    );
    assert!(err.contains(&said) && !err.contains("error:"), "{err}");
    let (code, out, err) = incc(&["train", "--resume", path(&run), "--threads", "1", "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("done: 300 steps"), "{out}");
    assert_same_as_uninterrupted(&run);
}

/// A second Ctrl-C stops at once, even where the first cannot be acted on: here the run is
/// stuck writing its profile into a FIFO that nobody reads.
#[cfg(unix)]
#[test]
fn a_second_interrupt_stops_at_once() {
    if !ort_ready() {
        return;
    }
    let dir = fresh_folder("second-interrupt");
    let fifo = dir.join("p.json");
    if !Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
        eprintln!("skipped: no mkfifo");
        return;
    }
    let base = ["train", TINY, "--data", "synthetic:64,15,5", "--batch", "8", "--max-steps", "2", "--threads", "1", "--quiet"];
    let mut child = Child::spawn(&args(&[&base, &["--out", path(&dir.join("run")), "--profile", path(&fifo)]]));
    wait_until("the profile's trace", || dir.join("p.trace.json").exists());
    std::thread::sleep(Duration::from_millis(200));
    child.signal("INT");
    assert_eq!(child.exit(Duration::from_millis(500)), None, "the first interrupt waits for a safe point");
    child.signal("INT");
    let status = child.exit(Duration::from_secs(10)).expect("the second interrupt stops the run");
    assert_eq!(status.code(), Some(130));
}

/// `--checkpoint-every`: a run killed (no chance to save anything) resumes from its last
/// checkpoint inside an epoch and ends where an uninterrupted one does; the step lines written
/// after that checkpoint are not repeated, and the temporary file of a killed write goes.
#[test]
fn a_killed_run_resumes_exactly_from_its_last_checkpoint_inside_an_epoch() {
    if !ort_ready() {
        return;
    }
    let run = fresh_folder("killed").join("run");
    let mut child = Child::spawn(&args(&[&LONG_RUN, &["--out", path(&run), "--checkpoint-every", "7"]]));
    wait_until("a checkpoint inside the second epoch", || checkpoint::load(&run.join("last.safetensors")).is_ok_and(|c| c.position.step > 105));
    child.signal("KILL");
    child.exit(Duration::from_secs(60)).expect("killed");
    let at = last(&run).position;
    assert!(at.step.is_multiple_of(7) && at.batch_in_epoch > 0, "{at:?}");
    let stale = run.join(format!(".last.safetensors.tmp-{}", 4_999_999));
    std::fs::write(&stale, b"half a checkpoint").expect("write");
    let (code, _, err) = incc(&["train", "--resume", path(&run), "--threads", "1", "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(!stale.exists(), "a dead process's temporary file is left");
    assert_same_as_uninterrupted(&run);
}

/// `--resume` with options: those that can change apply from the resumed step on and are
/// recorded; those that cannot are refused, naming the option and why.
#[test]
fn resuming_with_options_applies_them_or_refuses_them() {
    if !ort_ready() {
        return;
    }
    let run = fresh_folder("overrides").join("run");
    let dir = path(&run);
    let (code, _, err) = short_run(TINY, &run, &["--max-steps", "4"]);
    assert_eq!(code, 0, "{err}");
    let resume = |more: &[&str]| incc(&args(&[&["train", "--resume", dir, "--threads", "1", "--quiet"], more]));
    let refused = [
        (&["--batch", "16"][..], "--batch cannot change when a run is resumed (8 -> 16): the checkpoint is inside an epoch"),
        (&["--seed", "5"], "--seed cannot change when a run is resumed (0 -> 5)"),
        (&["--optimizer", "adam"], "--optimizer cannot change when a run is resumed"),
        (&["--lr", "nan"], "--lr must be a finite number above 0, not NaN"),
        (&[TINY], "--resume trains the network its checkpoint stores"),
    ];
    for (more, want) in refused {
        let (code, _, err) = resume(more);
        assert_eq!(code, 2, "{more:?}: {err}");
        assert!(err.contains(want), "{more:?}: {err}");
    }
    assert_eq!(last(&run).position.step, 4, "a refused resumption trains nothing");
    let (code, _, err) = resume(&["--lr", "0.01", "--clip-norm", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming at step 4 with --lr 0.01 (was 0.045), --clip-norm 1.0 (was null)"), "{err}");
    let settings: incc::trainer::RunConfig = serde_json::from_str(&last(&run).settings).expect("settings");
    assert_eq!((settings.lr, settings.train.clip_norm), (0.01, Some(1.0)));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
    let resumed: serde_json::Value = serde_json::from_str(metrics.lines().find(|l| l.contains("\"kind\":\"resume\"")).expect("a resume line")).expect("json");
    assert_eq!(resumed["step"], 4);
    assert_eq!(resumed["changed"]["--lr"], serde_json::json!({"from": 0.045, "to": 0.01}));
    let step5: serde_json::Value =
        serde_json::from_str(metrics.lines().find(|l| l.contains("\"kind\":\"step\"") && l.contains("\"step\":5}")).expect("step 5")).expect("json");
    assert!((step5["lr"].as_f64().expect("lr") - 0.01).abs() < 1e-9, "{step5}");
    // At an epoch's end, the batch size may change too.
    let (code, out, err) = resume(&["--epochs", "2", "--batch", "16"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("done: 12 steps"), "{out}");
    let (code, _, err) = resume(&["--epochs", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--epochs 1: the run has trained 2 epochs"), "{err}");
}

/// Every numeric option is checked, with a message naming it, before anything runs.
#[test]
fn numeric_options_are_checked_and_named() {
    let never = fresh_folder("options").join("run");
    let train = ["train", TINY, "--data", "synthetic:64,15,5", "--out", path(&never)];
    let cases: [(Vec<&str>, &str); 22] = [
        (args(&[&train, &["--batch", "0"]]), "invalid value '0' for '--batch <BATCH>': must be at least 1"),
        (args(&[&train, &["--epochs", "0"]]), "'--epochs <EPOCHS>': must be at least 1"),
        (args(&[&train, &["--lr", "nan"]]), "--lr must be a finite number above 0, not NaN"),
        (args(&[&train, &["--lr", "inf"]]), "--lr must be a finite number above 0, not inf"),
        (args(&[&train, &["--lr=-1"]]), "--lr must be a finite number above 0, not -1"),
        (args(&[&train, &["--warmup=-1"]]), "--warmup must be a finite number at least 0, not -1"),
        (args(&[&train, &["--ema", "1"]]), "--ema must be a decay between 0 and 1"),
        (args(&[&train, &["--momentum", "1.5"]]), "--momentum must be at least 0 and below 1, not 1.5"),
        (args(&[&train, &["--label-smoothing", "1"]]), "--label-smoothing must be at least 0 and below 1, not 1"),
        (args(&[&train, &["--weight-decay", "nan"]]), "--weight-decay must be a finite number at least 0, not NaN"),
        (args(&[&train, &["--clip-norm", "0"]]), "--clip-norm must be a finite number above 0, not 0"),
        (args(&[&train, &["--schedule", "exponential:0:2"]]), "--schedule: factor 0: expected a finite number above 0"),
        (args(&[&train, &["--schedule", "step:0.1:3,inf"]]), "--schedule: epoch inf: expected a finite number at least 0"),
        (args(&[&train, &["--workers", "0"]]), "'--workers <WORKERS>': must be at least 1"),
        (args(&[&train, &["--limit-val", "0"]]), "'--limit-val <LIMIT_VAL>': must be at least 1"),
        (args(&[&train, &["--checkpoint-every", "0"]]), "'--checkpoint-every <STEPS>': must be at least 1"),
        (vec!["compile", TINY, "--train", "--momentum=-0.5", "-o", "target/cli-test/never.onnx"], "--momentum must be at least 0 and below 1, not -0.5"),
        (vec!["compile", TINY, "--batch", "0", "-o", "target/cli-test/never.onnx"], "'--batch <BATCH>': must be at least 1"),
        (vec!["run", TINY, "--batch", "0"], "'--batch <BATCH>': must be at least 1"),
        (vec!["run", TINY, "--top", "0"], "'--top <TOP>': must be at least 1"),
        (vec!["bench", TINY, "--min-time", "inf"], "'--min-time <MIN_TIME>': must be a finite number of seconds"),
        (vec!["flops", TINY, "--batch", "0"], "'--batch <BATCH>': must be at least 1"),
    ];
    for (args, want) in cases {
        let (code, _, err) = incc(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{args:?}: {err}");
    }
    assert!(!never.exists(), "a refused run made its folder");
}

/// Sizes no machine can hold are refused, naming the size, before anything is allocated (never
/// "memory allocation failed").
#[test]
fn absurd_sizes_are_refused_naming_the_size() {
    let cases: [(&[&str], &str); 3] = [
        (&["run", TINY, "--batch", "100000000000"], "a synthetic batch of 100000000000 x 3 x 15 x 15 would hold 67500000000000 values"),
        (&["train", TINY, "--data", "synthetic:10,100000", "--out", "target/cli-test/never"], "an image of 3 x 100000 x 100000 would hold 30000000000 values"),
        (&["bench", TINY, "--batch", "1,100000000000", "--min-time", "0", "--iterations", "1"], "a synthetic batch of 100000000000 x 3 x 15 x 15"),
    ];
    for (args, want) in cases {
        if args[0] != "train" && !ort_ready() {
            continue;
        }
        let (code, _, err) = incc(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// A small trained run for the checkpoint tests: 8 steps, validated.
fn trained(name: &str) -> PathBuf {
    let run = fresh_folder(name).join("run");
    let (code, _, err) = short_run(TINY, &run, &[]);
    assert_eq!(code, 0, "{err}");
    run
}

/// Where a safetensors file's data starts, and its header.
fn header(bytes: &[u8]) -> (usize, &[u8]) {
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    (8 + len, &bytes[8..8 + len])
}

/// A bit flipped anywhere in a checkpoint (a tensor, the stored source) is an error naming the
/// file and what is corrupt; one written before checksums still loads; NaN values are refused.
#[test]
fn a_corrupt_checkpoint_is_found_by_its_checksums() {
    if !ort_ready() {
        return;
    }
    let run = trained("checksum");
    let file = run.join("last.safetensors");
    let good = std::fs::read(&file).expect("checkpoint");
    let eval = || incc(&["eval", path(&file), "--data", "synthetic:16,15,5", "--threads", "1"]);
    let (start, head) = header(&good);
    let source_at = head.windows(21).position(|w| w == b"network tiny_residual").expect("the source is in the header") + 8;
    for (at, what) in [
        (start + 100, "does not match its checksum"),
        (good.len() - 1, "does not match its checksum"),
        (source_at, "`__metadata__/incc.sources` does not match"),
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        std::fs::write(&file, &bad).expect("write");
        let (code, _, err) = eval();
        assert_eq!(code, 1, "byte {at}: {err}");
        assert!(err.contains(&format!("error: checkpoint `{}`", path(&file))) && err.contains(what), "byte {at}: {err}");
    }
    // Written before checksums: the same file without them loads.
    let st = safetensors::SafeTensors::deserialize(&good).expect("valid");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&good).expect("valid");
    let mut metadata = meta.metadata().clone().expect("metadata");
    metadata.remove(incc::weights::CHECKSUMS);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    std::fs::write(&file, safetensors::serialize(views, Some(metadata)).expect("serialises")).expect("write");
    let (code, _, err) = eval();
    assert_eq!(code, 0, "{err}");
    assert_eq!(last(&run).tensors.len(), st.len());
    // A NaN in a checkpoint, or in weights given to --weights.
    std::fs::write(&file, &good).expect("write");
    let mut c = last(&run);
    c.tensors.get_mut("stem.conv.weight").expect("a weight").data[3] = f32::NAN;
    checkpoint::save(&file, &c).expect("save");
    let (code, _, err) = eval();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`stem.conv.weight` holds NaN at index 3"), "{err}");
    let weights = run.join("w.safetensors");
    let graph = crate::common::compile_with(Path::new(TINY), &Default::default(), &Default::default(), None).expect("compiles").graph;
    let names: Vec<String> = incc::report::params::param_list(&graph).into_iter().map(|(n, _)| n).collect();
    let params = c.tensors.into_iter().filter(|(n, _)| names.contains(n)).collect();
    incc::weights::save(&weights, &incc::weights::Weights { tensors: params }).expect("save");
    let (code, _, err) = incc(&["run", TINY, "--weights", path(&weights)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`stem.conv.weight` holds NaN at index 3"), "{err}");
}

/// `incc eval` evaluates the network the checkpoint stores: an edit to the file after training
/// changes nothing but a note, and it works from any folder; `--limit` is eval's own.
#[test]
fn eval_uses_the_stored_network_from_anywhere() {
    if !ort_ready() {
        return;
    }
    let dir = fresh_folder("stored-source");
    let arch = dir.join("net.inc");
    std::fs::copy(TINY, &arch).expect("copy");
    let run = dir.join("run");
    let (code, _, err) = short_run(path(&arch), &run, &[]);
    assert_eq!(code, 0, "{err}");
    let checkpoint = std::fs::canonicalize(run.join("last.safetensors")).expect("absolute");
    let eval = |cwd: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_incc"))
            .args(["eval", path(&checkpoint), "--data", "synthetic:64,15,5", "--threads", "1"])
            .current_dir(cwd)
            .output()
            .expect("incc runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (stdout.split_once(": ").expect("a result").1.to_string(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (before, note) = eval(Path::new("."));
    assert!(before.starts_with("64 examples"), "all examples, not the run's --limit-val: {before}");
    assert!(!note.contains("note:"), "{note}");
    // The residual scale has no parameters: the edited file would load the checkpoint and answer otherwise.
    let text = std::fs::read_to_string(&arch).expect("read");
    std::fs::write(&arch, text.replace("block_a(scale = 0.2)", "block_a(scale = 0.9)")).expect("edit");
    let (after, note) = eval(Path::new("."));
    assert_eq!(after, before);
    assert!(note.contains(&format!("note: `{}` has changed since", path(&arch))) && note.contains("using the network stored in the checkpoint"), "{note}");
    let elsewhere = std::env::temp_dir();
    let (there, note) = eval(&elsewhere);
    assert_eq!(there, before);
    assert!(note.contains("is not here"), "{note}");
    let (code, out, err) = incc(&["eval", path(&checkpoint), "--data", "synthetic:64,15,5", "--limit", "10"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": 10 examples"), "{out}");
    // Data with more classes than the network has is an error, not an index past the logits.
    let (code, _, err) = incc(&["eval", path(&checkpoint), "--data", "synthetic:64,15,12"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("error: the data has 12 classes but the network outputs 5"), "{err}");
}

/// An image folder of 15 x 15 JPEGs, two classes: 8 training images each, 2 validation ones.
fn image_folder(dir: &Path) -> PathBuf {
    for (split, n) in [("train", 8), ("val", 2)] {
        for class in ["a", "b"] {
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).expect("folder");
            for i in 0..n {
                let image = image::RgbImage::from_fn(15, 15, |x, y| image::Rgb([(x * 17) as u8, (y * 13 + i * 7) as u8, if class == "a" { 40 } else { 200 }]));
                image.save(folder.join(format!("{i}.jpg"))).expect("jpeg");
            }
        }
    }
    dir.to_path_buf()
}

/// A corrupt validation image is found before training when its header shows it; one that only
/// decoding finds (a JPEG cut in half, an error) stops the run after the epoch, which is kept:
/// fixed, the run resumes with the validation.
#[test]
fn a_bad_validation_image_never_loses_the_trained_epoch() {
    if !ort_ready() {
        return;
    }
    let dir = fresh_folder("bad-validation");
    let data = image_folder(&dir.join("data"));
    let spec = format!("imagefolder:{}", path(&data));
    let run = dir.join("run");
    let bad = data.join("val/b/1.jpg");
    let good = std::fs::read(&bad).expect("jpeg");
    let train = |more: &[&str]| {
        let base = ["train", TINY, "--set", "classes=2", "--data", &spec, "--batch", "4", "--epochs", "1", "--threads", "1", "--quiet"];
        incc(&args(&[&base, &["--out", path(&run)], more]))
    };
    std::fs::write(&bad, b"\xff\xd8\xff garbage").expect("write");
    let (code, _, err) = train(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(path(&bad)) && !run.join("last.safetensors").exists() && step_lines(&run) == 0, "found before training: {err}");
    // Its end cut off: the header is whole.
    std::fs::write(&bad, &good[..good.len() - 4]).expect("write");
    let (code, _, err) = train(&["--force"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(path(&bad)) && err.contains("truncated"), "{err}");
    let kept = format!("`{}` holds the run at step 4 (epoch 1, batch 4); resume it with --resume {}", path(&run.join("last.safetensors")), path(&run));
    assert!(err.contains(&kept), "{err}");
    std::fs::write(&bad, &good).expect("write");
    let (code, out, err) = incc(&["train", "--resume", path(&run), "--threads", "1", "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("done: 4 steps, ") && out.contains("validation top-1"), "{out}");
    assert_eq!(step_lines(&run), 4);
}
