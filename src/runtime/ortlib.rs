//! Finding and loading the ONNX Runtime shared library.
//!
//! incc links ONNX Runtime dynamically (`ort` with `load-dynamic`, `api-31`), so at run time it
//! needs `libonnxruntime.so` version 1.31 or newer. [`locate`] looks for one, in this order:
//!
//! 1. the path given explicitly (the `--ort-lib` flag);
//! 2. the `ORT_DYLIB_PATH` environment variable;
//! 3. a project-local copy in `.ort/lib/` (what `scripts/fetch-ort.sh` writes), searched for in
//!    the current directory and its parents, then next to the executable and its parents
//!    (`target/{debug,release}/incc` → `../../.ort/lib`);
//! 4. the library inside a Python `onnxruntime` installation (`<package>/capi/`).
//!
//! A path given explicitly (1 or 2) is authoritative: if it is wrong, that is an error and the
//! later places are not tried. Either may name the library file or a directory holding it.
//!
//! [`init`] locates the library and initialises `ort` with it once per process. It never panics
//! on a missing, broken or too-old library: it returns an [`OrtLibError`] that names the path and
//! the reason. [`environment`] then hands out the process-wide `ort` environment that sessions are
//! built in (`ort::session::Session::builder(&env)`).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::environment::Environment;

/// Name of the environment variable that may point at the library (the same one `ort` uses).
pub const ENV_VAR: &str = "ORT_DYLIB_PATH";

/// The ONNX Runtime version `scripts/fetch-ort.sh` fetches and the error messages recommend.
pub const RECOMMENDED_VERSION: &str = "1.31.1";

/// Where the project-local copy lives, relative to the project root.
const PROJECT_LIB_DIR: [&str; 2] = [".ort", "lib"];

/// Python one-liner printing the directory of the `onnxruntime` package. It uses `find_spec`
/// rather than importing the package: that is faster, has no side effects (no CUDA probing by
/// `onnxruntime-gpu`) and still works when the package's Python dependencies are broken.
const PYTHON_PROBE: &str = "import importlib.util, os\n\
s = importlib.util.find_spec('onnxruntime')\n\
print(os.path.dirname(s.origin) if s is not None and s.origin else '')";

/// How an ONNX Runtime library was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrtLibSource {
    /// Given explicitly (`--ort-lib`).
    Flag,
    /// From the `ORT_DYLIB_PATH` environment variable.
    EnvVar,
    /// The project-local copy in `.ort/lib/` (see `scripts/fetch-ort.sh`).
    ProjectLocal,
    /// Inside a Python `onnxruntime` installation.
    PythonPackage,
}

impl fmt::Display for OrtLibSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "--ort-lib",
            Self::EnvVar => ENV_VAR,
            Self::ProjectLocal => "project-local .ort/lib",
            Self::PythonPackage => "Python onnxruntime package",
        })
    }
}

/// An ONNX Runtime shared library: its absolute path and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtLib {
    /// Absolute path of the library file.
    pub path: PathBuf,
    /// How it was found.
    pub source: OrtLibSource,
}

impl fmt::Display for OrtLib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.path.display(), self.source)
    }
}

/// What went wrong, for callers that want to react differently (e.g. exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrtLibErrorKind {
    /// No library was found anywhere.
    NotFound,
    /// `--ort-lib` or `ORT_DYLIB_PATH` names something that is not a usable library file.
    BadPath,
    /// The library was found but could not be loaded (not a shared library, not ONNX Runtime,
    /// too old, missing dependencies).
    LoadFailed,
    /// The library loaded but creating the ONNX Runtime environment failed.
    EnvironmentFailed,
}

/// Why no ONNX Runtime library could be located or loaded. Its `Display` is a multi-line message
/// that says what was tried and how to fix it.
#[derive(Debug)]
pub struct OrtLibError {
    kind: OrtLibErrorKind,
    /// The library or explicit path concerned, if any.
    path: Option<PathBuf>,
    /// How `path` was chosen, if there is one.
    source: Option<OrtLibSource>,
    /// One-line reason.
    reason: String,
    /// Every place looked at, with what was found there (for `NotFound`).
    looked_at: Vec<String>,
}

impl OrtLibError {
    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> OrtLibErrorKind {
        self.kind
    }

    /// The library path (or explicit path) concerned, if any.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Every place looked at, as `"<place>: <what was found>"` lines (empty unless `NotFound`).
    #[must_use]
    pub fn looked_at(&self) -> &[String] {
        &self.looked_at
    }

    fn load(lib: &OrtLib, kind: OrtLibErrorKind, reason: String) -> Self {
        Self { kind, path: Some(lib.path.clone()), source: Some(lib.source), reason, looked_at: Vec::new() }
    }
}

fn how_to_get_one(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "To get one (ONNX Runtime >= 1.{}), do one of:", ort::MINOR_VERSION)?;
    writeln!(
        f,
        "  - run scripts/fetch-ort.sh in the incc repository: it downloads the CPU library \
         {RECOMMENDED_VERSION} from PyPI into .ort/lib/, where incc finds it;"
    )?;
    writeln!(f, "  - pip install onnxruntime=={RECOMMENDED_VERSION}  (incc finds the library inside the Python package);")?;
    write!(
        f,
        "  - pass --ort-lib /path/to/libonnxruntime.so.{RECOMMENDED_VERSION}, or set \
         {ENV_VAR}=/path/to/libonnxruntime.so.{RECOMMENDED_VERSION}."
    )
}

impl fmt::Display for OrtLibError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            OrtLibErrorKind::NotFound => {
                writeln!(f, "no ONNX Runtime library (libonnxruntime.so) found.")?;
                writeln!(f, "Looked at:")?;
                for place in &self.looked_at {
                    writeln!(f, "  - {place}")?;
                }
                how_to_get_one(f)
            }
            OrtLibErrorKind::BadPath => {
                let path = self.path.as_deref().unwrap_or(Path::new(""));
                let source = self.source.unwrap_or(OrtLibSource::Flag);
                writeln!(f, "the ONNX Runtime library given by {source} cannot be used: {}: {}", path.display(), self.reason)?;
                writeln!(
                    f,
                    "A path given by --ort-lib or {ENV_VAR} is used as is; fix or remove it, \
                     or let incc search (.ort/lib, Python onnxruntime)."
                )?;
                how_to_get_one(f)
            }
            OrtLibErrorKind::LoadFailed | OrtLibErrorKind::EnvironmentFailed => {
                let path = self.path.as_deref().unwrap_or(Path::new(""));
                let what = if self.kind == OrtLibErrorKind::LoadFailed {
                    "failed to load the ONNX Runtime library"
                } else {
                    "loaded the ONNX Runtime library but could not create its environment"
                };
                match self.source {
                    Some(source) => writeln!(f, "{what} {} (found via {source}):", path.display())?,
                    None => writeln!(f, "{what} {}:", path.display())?,
                }
                writeln!(f, "  {}", self.reason)?;
                writeln!(
                    f,
                    "incc needs the ONNX Runtime shared library (libonnxruntime.so), version 1.{} or newer, \
                     for this machine.",
                    ort::MINOR_VERSION
                )?;
                how_to_get_one(f)
            }
        }
    }
}

impl std::error::Error for OrtLibError {}

/// Finds an ONNX Runtime library without loading it. See the [module docs](self) for the order.
///
/// # Errors
/// If `explicit` or `ORT_DYLIB_PATH` names nothing usable, or nothing was found anywhere; the
/// message lists every place looked at and how to get a library.
pub fn locate(explicit: Option<&Path>) -> Result<OrtLib, OrtLibError> {
    let probe = SearchInputs {
        explicit,
        env_value: std::env::var_os(ENV_VAR),
        cwd: std::env::current_dir().ok(),
        exe: std::env::current_exe().ok(),
        python: &python_package_dir,
    };
    locate_with(&probe)
}

/// The process-wide state once `init` succeeded.
struct Initialised {
    lib: OrtLib,
    env: Environment,
}

static INITIALISED: OnceLock<Initialised> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Locates the library (see [`locate`]) and initialises `ort` with it, once per process, with an
/// environment named `incc`.
///
/// A later call returns the library of the first successful call and ignores `explicit` (ONNX
/// Runtime cannot be unloaded or loaded twice in one process). A failed call leaves nothing
/// behind, so it may be retried with another path.
///
/// # Errors
/// Everything [`locate`] reports, plus: the library cannot be loaded (not a shared library,
/// missing dependencies, no `OrtGetApiBase`), it is older than the API version `ort` needs, or
/// the ONNX Runtime environment cannot be created. The message names the path and the reason.
pub fn init(explicit: Option<&Path>) -> Result<OrtLib, OrtLibError> {
    if let Some(done) = INITIALISED.get() {
        return Ok(done.lib.clone());
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(done) = INITIALISED.get() {
        return Ok(done.lib.clone());
    }
    let lib = locate(explicit)?;
    let env = load(&lib)?;
    let done = INITIALISED.get_or_init(|| Initialised { lib, env });
    Ok(done.lib.clone())
}

/// The library `init` loaded, if it has succeeded in this process.
#[must_use]
pub fn initialised() -> Option<&'static OrtLib> {
    INITIALISED.get().map(|done| &done.lib)
}

/// The process-wide `ort` environment created by [`init`] (`None` before a successful `init`).
/// Sessions are built in it: `ort::session::Session::builder(env)`.
///
/// `ort` allows one environment per process, and not a second one even after the first was
/// dropped, so this one is kept for the life of the process.
#[must_use]
pub fn environment() -> Option<&'static Environment> {
    INITIALISED.get().map(|done| &done.env)
}

/// Loads `lib` into `ort` and creates the environment. `ort` code paths that could panic (a
/// malformed library) are caught and turned into errors.
fn load(lib: &OrtLib) -> Result<Environment, OrtLibError> {
    let attempt = std::panic::catch_unwind(|| {
        let builder = ort::init_from(&lib.path).map_err(|e| OrtLibError::load(lib, OrtLibErrorKind::LoadFailed, load_error_reason(&e)))?;
        builder.with_name("incc").build().map_err(|e| OrtLibError::load(lib, OrtLibErrorKind::EnvironmentFailed, e.to_string()))
    });
    match attempt {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(OrtLibError::load(lib, OrtLibErrorKind::LoadFailed, format!("ort panicked: {msg}")))
        }
    }
}

/// `ort`'s message for a failed load, plus the `dlerror()` text it leaves out (its `Dlopen`
/// variant prints only "failed to load from `PATH`: dlopen failed"; the reason, e.g. "invalid
/// ELF header" or a missing dependency, is in the libloading error's `source()`).
fn load_error_reason(e: &ort::LoadDynamicError) -> String {
    let mut reason = e.to_string();
    if let ort::LoadDynamicError::Dlopen { error, .. } = e {
        let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
        while let Some(c) = cause {
            let text = c.to_string();
            if !reason.contains(&text) {
                reason.push_str(": ");
                reason.push_str(&text);
            }
            cause = c.source();
        }
    }
    reason
}

// ---------------------------------------------------------------------------------------------
// Search logic, separated from the process environment so it can be tested without races.

/// What the Python probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PythonProbe {
    /// The `onnxruntime` package directory.
    Package(PathBuf),
    /// Python ran, but has no `onnxruntime`.
    NotInstalled,
    /// Python could not be run or failed.
    Unavailable(String),
}

/// Everything `locate` depends on.
struct SearchInputs<'a> {
    explicit: Option<&'a Path>,
    env_value: Option<OsString>,
    cwd: Option<PathBuf>,
    exe: Option<PathBuf>,
    python: &'a dyn Fn() -> PythonProbe,
}

fn locate_with(inputs: &SearchInputs<'_>) -> Result<OrtLib, OrtLibError> {
    let mut looked_at = Vec::new();

    // 1. --ort-lib; 2. ORT_DYLIB_PATH. Both authoritative.
    if let Some(path) = inputs.explicit {
        return explicit_lib(path, OrtLibSource::Flag, inputs.cwd.as_deref());
    }
    looked_at.push("--ort-lib: not given".to_owned());
    match inputs.env_value.as_deref() {
        Some(v) if !v.is_empty() => {
            return explicit_lib(Path::new(v), OrtLibSource::EnvVar, inputs.cwd.as_deref());
        }
        Some(_) => looked_at.push(format!("{ENV_VAR}: set but empty")),
        None => looked_at.push(format!("{ENV_VAR}: not set")),
    }

    // 3. Project-local .ort/lib above the current directory, then above the executable.
    let mut seen_dirs: Vec<PathBuf> = Vec::new();
    let starts = [(inputs.cwd.clone(), "the current directory"), (inputs.exe.as_deref().and_then(Path::parent).map(Path::to_path_buf), "the executable")];
    for (start, what) in starts {
        let Some(start) = start else {
            looked_at.push(format!(".ort/lib above {what}: its location is unknown"));
            continue;
        };
        let mut found_dir = false;
        for dir in start.ancestors() {
            let lib_dir = PROJECT_LIB_DIR.iter().fold(dir.to_path_buf(), |p, c| p.join(c));
            if !lib_dir.is_dir() {
                continue;
            }
            found_dir = true;
            if seen_dirs.contains(&lib_dir) {
                continue;
            }
            seen_dirs.push(lib_dir.clone());
            if let Some(path) = best_lib_in(&lib_dir) {
                return Ok(OrtLib { path, source: OrtLibSource::ProjectLocal });
            }
            looked_at.push(format!("{}: no libonnxruntime.so* in it", lib_dir.display()));
        }
        if !found_dir {
            looked_at.push(format!("{} and every parent's .ort/lib (above {what}): none exists", start.join(".ort").join("lib").display()));
        }
    }

    // 4. Python onnxruntime.
    match (inputs.python)() {
        PythonProbe::Package(pkg) => {
            let capi = pkg.join("capi");
            if let Some(path) = best_lib_in(&capi) {
                return Ok(OrtLib { path, source: OrtLibSource::PythonPackage });
            }
            looked_at.push(format!("Python onnxruntime package: {}: no libonnxruntime.so* in it", capi.display()));
        }
        PythonProbe::NotInstalled => looked_at.push("Python onnxruntime package: python3 has no module 'onnxruntime'".to_owned()),
        PythonProbe::Unavailable(why) => {
            looked_at.push(format!("Python onnxruntime package: {why}"));
        }
    }

    Err(OrtLibError { kind: OrtLibErrorKind::NotFound, path: None, source: None, reason: "not found".to_owned(), looked_at })
}

/// Resolves an explicit `--ort-lib` / `ORT_DYLIB_PATH` value: a library file, or a directory
/// holding one. Relative paths are taken from the current directory.
fn explicit_lib(path: &Path, source: OrtLibSource, cwd: Option<&Path>) -> Result<OrtLib, OrtLibError> {
    let abs = match (path.is_absolute(), cwd) {
        (false, Some(cwd)) => cwd.join(path),
        _ => path.to_path_buf(),
    };
    let bad = |reason: &str| OrtLibError {
        kind: OrtLibErrorKind::BadPath,
        path: Some(abs.clone()),
        source: Some(source),
        reason: reason.to_owned(),
        looked_at: Vec::new(),
    };
    match std::fs::metadata(&abs) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(bad("no such file or directory")),
        Err(e) => Err(bad(&e.to_string())),
        Ok(meta) if meta.is_dir() => match best_lib_in(&abs) {
            Some(path) => Ok(OrtLib { path, source }),
            None => Err(bad("a directory with no libonnxruntime.so* in it")),
        },
        Ok(_) => Ok(OrtLib { path: abs, source }),
    }
}

/// Parses a library file name: `Some(version components)` for `libonnxruntime.so`,
/// `libonnxruntime.so.1`, `libonnxruntime.so.1.31.1` (and the macOS `.dylib` forms);
/// unversioned names give an empty vector. Other files (providers, temporaries) give `None`.
fn lib_version(name: &str) -> Option<Vec<u32>> {
    let parse = |v: &str| -> Option<Vec<u32>> {
        if v.is_empty() {
            return Some(Vec::new());
        }
        v.split('.').map(|c| c.parse::<u32>().ok()).collect()
    };
    if let Some(rest) = name.strip_prefix("libonnxruntime.so") {
        return if rest.is_empty() { Some(Vec::new()) } else { parse(rest.strip_prefix('.')?) };
    }
    let rest = name.strip_prefix("libonnxruntime")?.strip_suffix(".dylib")?;
    if rest.is_empty() {
        Some(Vec::new())
    } else {
        parse(rest.strip_prefix('.')?)
    }
}

/// The best library file in `dir`: the highest version, a fully versioned name preferred to an
/// unversioned one.
fn best_lib_in(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = lib_version(&name)?;
            let path = e.path();
            // Follows symlinks: a dangling link is skipped.
            path.is_file().then_some((version, path))
        })
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
        .map(|(_, path)| path)
}

/// Asks `python3` where its `onnxruntime` package is.
fn python_package_dir() -> PythonProbe {
    let output = Command::new("python3").args(["-c", PYTHON_PROBE]).stdin(Stdio::null()).stderr(Stdio::null()).output();
    match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PythonProbe::Unavailable("python3 not found on PATH".to_owned()),
        Err(e) => PythonProbe::Unavailable(format!("could not run python3: {e}")),
        Ok(out) if !out.status.success() => PythonProbe::Unavailable(format!("python3 failed ({})", out.status)),
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) {
                Some(dir) => PythonProbe::Package(PathBuf::from(dir)),
                None => PythonProbe::NotInstalled,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!("incc-ortlib-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            // Canonical, so comparisons with paths built from it are exact.
            Self(dir.canonicalize().unwrap())
        }

        fn touch(&self, rel: &str) -> PathBuf {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"not really a library").unwrap();
            p
        }

        fn mkdir(&self, rel: &str) -> PathBuf {
            let p = self.0.join(rel);
            std::fs::create_dir_all(&p).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn no_python() -> PythonProbe {
        PythonProbe::NotInstalled
    }

    fn inputs<'a>(
        explicit: Option<&'a Path>,
        env_value: Option<&str>,
        cwd: Option<&Path>,
        exe: Option<&Path>,
        python: &'a dyn Fn() -> PythonProbe,
    ) -> SearchInputs<'a> {
        SearchInputs { explicit, env_value: env_value.map(OsString::from), cwd: cwd.map(Path::to_path_buf), exe: exe.map(Path::to_path_buf), python }
    }

    #[test]
    fn explicit_missing_path_is_an_error_naming_it() {
        let t = TempDir::new();
        let missing = t.0.join("nope/libonnxruntime.so.1.31.1");
        // Even with a valid env var and project copy, the flag wins and its error is reported.
        let good = t.touch("good/libonnxruntime.so.1.31.1");
        t.touch("proj/.ort/lib/libonnxruntime.so.1.31.1");
        let cwd = t.0.join("proj");
        let err = locate_with(&inputs(Some(&missing), Some(good.to_str().unwrap()), Some(&cwd), None, &no_python)).unwrap_err();
        assert_eq!(err.kind(), OrtLibErrorKind::BadPath);
        assert_eq!(err.path(), Some(missing.as_path()));
        let msg = err.to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(msg.contains("--ort-lib"), "{msg}");
        assert!(msg.contains("no such file or directory"), "{msg}");
        assert!(msg.contains("scripts/fetch-ort.sh"), "{msg}");
    }

    #[test]
    fn explicit_file_and_directory_and_relative() {
        let t = TempDir::new();
        let lib = t.touch("dir/libonnxruntime.so.1.31.1");
        let got = locate_with(&inputs(Some(&lib), None, None, None, &no_python)).unwrap();
        assert_eq!(got, OrtLib { path: lib.clone(), source: OrtLibSource::Flag });

        let dir = t.0.join("dir");
        let got = locate_with(&inputs(Some(&dir), None, None, None, &no_python)).unwrap();
        assert_eq!(got.path, lib);

        let rel = Path::new("dir/libonnxruntime.so.1.31.1");
        let got = locate_with(&inputs(Some(rel), None, Some(&t.0), None, &no_python)).unwrap();
        assert_eq!(got.path, lib);

        let empty = t.mkdir("empty");
        let err = locate_with(&inputs(Some(&empty), None, None, None, &no_python)).unwrap_err();
        assert_eq!(err.kind(), OrtLibErrorKind::BadPath);
        assert!(err.to_string().contains("no libonnxruntime.so*"), "{err}");
    }

    #[test]
    fn flag_beats_env_var_beats_project_local() {
        let t = TempDir::new();
        let flag = t.touch("a/libonnxruntime.so.1.31.1");
        let env = t.touch("b/libonnxruntime.so.1.32.0");
        let local = t.touch("proj/.ort/lib/libonnxruntime.so.1.31.1");
        let cwd = t.mkdir("proj/src/deep");
        let env_s = env.to_str().unwrap();

        let got = locate_with(&inputs(Some(&flag), Some(env_s), Some(&cwd), None, &no_python)).unwrap();
        assert_eq!((got.path, got.source), (flag, OrtLibSource::Flag));

        let got = locate_with(&inputs(None, Some(env_s), Some(&cwd), None, &no_python)).unwrap();
        assert_eq!((got.path, got.source), (env.clone(), OrtLibSource::EnvVar));

        // An empty variable counts as unset.
        let got = locate_with(&inputs(None, Some(""), Some(&cwd), None, &no_python)).unwrap();
        assert_eq!((got.path, got.source), (local, OrtLibSource::ProjectLocal));
    }

    #[test]
    fn env_var_pointing_nowhere_is_an_error_not_a_fallback() {
        let t = TempDir::new();
        t.touch("proj/.ort/lib/libonnxruntime.so.1.31.1");
        let cwd = t.0.join("proj");
        let missing = t.0.join("gone.so");
        let err = locate_with(&inputs(None, Some(missing.to_str().unwrap()), Some(&cwd), None, &no_python)).unwrap_err();
        assert_eq!(err.kind(), OrtLibErrorKind::BadPath);
        let msg = err.to_string();
        assert!(msg.contains(ENV_VAR) && msg.contains(&missing.display().to_string()), "{msg}");
    }

    #[test]
    fn project_local_from_cwd_parents_and_from_exe() {
        let t = TempDir::new();
        let lib = t.touch("repo/.ort/lib/libonnxruntime.so.1.31.1");
        let cwd = t.mkdir("repo/src/runtime");
        let got = locate_with(&inputs(None, None, Some(&cwd), None, &no_python)).unwrap();
        assert_eq!((got.path, got.source), (lib.clone(), OrtLibSource::ProjectLocal));

        // Run from elsewhere: found relative to target/debug/incc.
        let elsewhere = t.mkdir("elsewhere");
        let exe = t.touch("repo/target/debug/incc");
        let got = locate_with(&inputs(None, None, Some(&elsewhere), Some(&exe), &no_python)).unwrap();
        assert_eq!(got.path, lib);

        // And from target/debug/deps/<test binary>.
        let exe = t.touch("repo/target/debug/deps/incc-0123abcd");
        let got = locate_with(&inputs(None, None, Some(&elsewhere), Some(&exe), &no_python)).unwrap();
        assert_eq!(got.path, lib);
    }

    #[test]
    fn project_local_picks_highest_version_and_skips_empty_dirs() {
        let t = TempDir::new();
        // The nearest .ort/lib is empty: keep walking up.
        t.mkdir("outer/inner/.ort/lib");
        t.touch("outer/.ort/lib/libonnxruntime.so");
        t.touch("outer/.ort/lib/libonnxruntime.so.1.31.1");
        let best = t.touch("outer/.ort/lib/libonnxruntime.so.1.32.0");
        t.touch("outer/.ort/lib/libonnxruntime_providers_shared.so");
        t.touch("outer/.ort/lib/libonnxruntime.so.1.99.0.tmp");
        let cwd = t.0.join("outer/inner");
        let got = locate_with(&inputs(None, None, Some(&cwd), None, &no_python)).unwrap();
        assert_eq!(got.path, best);
    }

    #[test]
    fn python_package_is_last() {
        let t = TempDir::new();
        let pkg = t.mkdir("site-packages/onnxruntime");
        let lib = t.touch("site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1");
        let cwd = t.mkdir("nowhere");
        let pkg2 = pkg.clone();
        let python = move || PythonProbe::Package(pkg2.clone());
        let got = locate_with(&inputs(None, None, Some(&cwd), None, &python)).unwrap();
        assert_eq!((got.path, got.source), (lib, OrtLibSource::PythonPackage));

        // A project-local copy wins over it.
        let local = t.touch("nowhere/.ort/lib/libonnxruntime.so.1.31.1");
        let got = locate_with(&inputs(None, None, Some(&cwd), None, &python)).unwrap();
        assert_eq!((got.path, got.source), (local, OrtLibSource::ProjectLocal));
    }

    #[test]
    fn not_found_lists_every_place_and_the_remedies() {
        let t = TempDir::new();
        let cwd = t.mkdir("a/b");
        t.mkdir("a/.ort/lib"); // exists but empty
        let exe = t.touch("bin/incc");
        let python = || PythonProbe::Unavailable("python3 not found on PATH".to_owned());
        let err = locate_with(&inputs(None, None, Some(&cwd), Some(&exe), &python)).unwrap_err();
        assert_eq!(err.kind(), OrtLibErrorKind::NotFound);
        let msg = err.to_string();
        for needle in [
            "--ort-lib: not given",
            "ORT_DYLIB_PATH: not set",
            &format!("{}: no libonnxruntime.so* in it", t.0.join("a/.ort/lib").display()),
            &format!("{}/.ort/lib and every parent", t.0.join("bin").display()),
            "python3 not found on PATH",
            "scripts/fetch-ort.sh",
            "pip install onnxruntime==1.31.1",
            "ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.31.1",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
        assert_eq!(err.looked_at().len(), 5, "{msg}");
    }

    #[test]
    fn lib_names() {
        assert_eq!(lib_version("libonnxruntime.so"), Some(vec![]));
        assert_eq!(lib_version("libonnxruntime.so.1"), Some(vec![1]));
        assert_eq!(lib_version("libonnxruntime.so.1.31.1"), Some(vec![1, 31, 1]));
        assert_eq!(lib_version("libonnxruntime.1.31.1.dylib"), Some(vec![1, 31, 1]));
        assert_eq!(lib_version("libonnxruntime_providers_cuda.so"), None);
        assert_eq!(lib_version("libonnxruntime.so.1.31.1.tmp"), None);
        assert_eq!(lib_version("libonnxruntime.soX"), None);
        assert_eq!(lib_version("onnxruntime.so"), None);
    }
}
