//! Helpers shared by the test modules.

use incc::driver::{compile, compile_text, Compiled, Failure};
use incc::elab::Settings;
use incc::passes::PassOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `archs/NAME.inc`, relative to the crate root (where cargo runs tests), so that the paths in
/// rendered messages are the same on every machine.
pub fn arch(name: &str) -> PathBuf {
    PathBuf::from(format!("archs/{name}.inc"))
}

/// Runs `f` with insta writing to the top-level `snapshots/` folder.
pub fn snapshots<R>(f: impl FnOnce() -> R) -> R {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(f)
}

pub fn compile_arch(name: &str) -> Compiled {
    compile(&arch(name), &Settings::default(), &PassOptions::default(), None).unwrap_or_else(|f| panic!("{}", f.render()))
}

pub fn compile_with(path: &Path, settings: &Settings, passes: &PassOptions, stop_after: Option<&str>) -> Result<Compiled, Failure> {
    compile(path, settings, passes, stop_after)
}

/// Compiles source text as if it were the file `archs/test.inc` (so `import "lib/..."` works).
/// The path is relative (cargo runs tests in the crate root) so that snapshots do not depend on
/// where the checkout is.
pub fn compile_src(text: &str, passes: &PassOptions, stop_after: Option<&str>) -> Result<Compiled, Failure> {
    assert_eq!(std::env::current_dir().expect("cwd"), root(), "tests run in the crate root");
    compile_text(Path::new("archs/test.inc"), text, &Settings::default(), passes, stop_after)
}

/// The IR dump without source locations: equal for equal graphs built from different sources.
pub fn structure(c: &Compiled) -> String {
    incc::ir::text::dump(&c.graph, None)
}

/// Initialises ONNX Runtime; `false` (after printing why) when there is none and `CI` is unset.
/// In CI (`CI` set) a missing ONNX Runtime fails the test.
pub fn ort_ready() -> bool {
    match incc::runtime::ortlib::init(None) {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_some() => panic!("CI is set, so ONNX Runtime is required: {e}"),
        Err(e) => {
            eprintln!("skipped: no ONNX Runtime ({})", e.to_string().lines().next().unwrap_or_default());
            false
        }
    }
}

/// Runs `python3 scripts/SCRIPT ARGS`. Exit status 3 (a Python package missing) or no python3
/// skips, saying `needs`, unless `CI` is set; any other failure panics with `refused`.
pub fn python_check(script: &str, args: &[std::ffi::OsString], needs: &str, refused: &str) {
    let status = std::process::Command::new("python3").arg(root().join("scripts").join(script)).args(args).status();
    match status.map(|s| s.code()) {
        Ok(Some(0)) => {}
        Ok(Some(3)) | Err(_) if std::env::var_os("CI").is_none() => eprintln!("skipped: python3 with {needs} is not available (CI installs it)"),
        other => panic!("{refused} (or python3 with {needs} is missing in CI): {other:?}"),
    }
}

/// Runs the `incc` binary: its exit status (-1 when a signal ended it), stdout and stderr.
pub fn incc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_incc")).args(args).output().expect("incc runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A fresh folder for one test's files, under `target/cli-test`.
pub fn fresh_folder(name: &str) -> PathBuf {
    let dir = Path::new("target/cli-test").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("folder");
    dir
}
