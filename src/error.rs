//! The one error type where the pieces meet: what a command (or a library user driving several
//! modules, such as the trainer) can fail with. Each module keeps its own error type; this wraps
//! them as sources instead of flattening them into strings, and `main.rs` prints it once, with a
//! single `error:` prefix (compile diagnostics keep their own rendering, which has its own).

use crate::data::DataError;
use crate::diag::Failure;
use crate::dist::DistError;
use crate::plot::PlotError;
use crate::runtime::error::RuntimeError;
use crate::runtime::ortlib::OrtLibError;
use crate::weights::WeightsError;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    /// The source did not compile (or a compiled graph could not be lowered): located
    /// diagnostics, rendered by codespan-reporting, each with its own `error:` header.
    Compile(Box<Failure>),
    /// A command-line value that means nothing, or a command that asks for nothing (exit status
    /// 2, as clap's own usage errors).
    Usage(String),
    /// Options or inputs that cannot be carried out together (a data set with more classes than
    /// the network outputs, CUDA options for the CPU, too few examples for one batch).
    Invalid(String),
    /// No usable ONNX Runtime library.
    OrtLib(OrtLibError),
    /// Loading, feeding or running a model in ONNX Runtime.
    Runtime(RuntimeError),
    /// Reading or preparing data.
    Data(DataError),
    /// The processes of a data-parallel job could not be set up.
    Dist(DistError),
    /// A safetensors file whose tensors do not fit the network.
    Weights(WeightsError),
    /// Reading a run's metrics or drawing its curves.
    Plot(PlotError),
    /// The ONNX back end could not emit the model.
    Lowering(String),
    /// A file could not be read, written or created; `action` says which, as in "cannot {action}".
    File { action: &'static str, path: PathBuf, source: std::io::Error },
    /// A checkpoint that cannot be read or does not belong to the run or network it is used for.
    Checkpoint { path: PathBuf, reason: String },
    /// The loss stopped being finite: the run stopped, keeping its last good checkpoint.
    Diverged {
        loss: f32,
        /// The step that produced it (from 1), and where it stood in its epoch.
        step: u64,
        epoch: u64,
        batch: u64,
        /// The checkpoint kept, and the step it holds (`None`: none written yet).
        checkpoint: PathBuf,
        checkpoint_step: Option<u64>,
    },
    /// The first Ctrl-C (SIGINT) or SIGTERM stopped the work at a safe point; a run says where
    /// its checkpoint holds it.
    Interrupted(Option<Saved>),
    /// A run failed after it had started (unreadable data, a failed validation); its work up to
    /// the failure is in a checkpoint.
    Kept { source: Box<Error>, at: Saved },
}

/// Where a stopped run is kept: the checkpoint, the position it holds, the run's folder.
#[derive(Debug)]
pub struct Saved {
    pub step: u64,
    /// The epoch being trained (from 0) and the batches of it done.
    pub epoch: u64,
    pub batch: u64,
    pub checkpoint: PathBuf,
    pub run: PathBuf,
}

impl fmt::Display for Saved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Saved { step, epoch, batch, checkpoint, run } = self;
        write!(f, "`{}` holds the run at step {step} (epoch {}, batch {batch}); resume it with --resume {}", checkpoint.display(), epoch + 1, run.display())
    }
}

impl Error {
    /// The process's exit status for this error: 2 for usage, 130 for an interrupt (as a shell
    /// reports a Ctrl-C), 1 for everything else.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Interrupted(_) => 130,
            Error::Kept { source, .. } => source.exit_code(),
            _ => 1,
        }
    }

    /// Wraps an I/O error with the file and what was being done to it (`"read"`, `"write"`, ...).
    pub fn file(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::File { action, path, source }
    }

    /// A checkpoint problem, with the checkpoint's path.
    pub fn checkpoint(path: &Path, reason: impl Into<String>) -> Error {
        Error::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Compile(failure) => f.write_str(failure.render().trim_end()),
            Error::Usage(message) | Error::Invalid(message) | Error::Lowering(message) => f.write_str(message),
            Error::OrtLib(e) => e.fmt(f),
            Error::Runtime(e) => e.fmt(f),
            Error::Data(e) => e.fmt(f),
            Error::Dist(e) => e.fmt(f),
            Error::Weights(e) => e.fmt(f),
            Error::Plot(e) => e.fmt(f),
            Error::File { action, path, source } => write!(f, "cannot {action} `{}`: {source}", path.display()),
            Error::Checkpoint { path, reason } => write!(f, "checkpoint `{}`: {reason}", path.display()),
            Error::Diverged { loss, step, epoch, batch, checkpoint, checkpoint_step } => write!(
                f,
                "the loss became {loss} at step {step} (epoch {epoch}, batch {batch}): training stopped. The last good checkpoint is `{}` ({}); \
                 lower the learning rate or clip gradients (--clip-norm) and resume from it.",
                checkpoint.display(),
                checkpoint_step.map_or_else(|| "none written yet".to_string(), |s| format!("step {s}"))
            ),
            Error::Interrupted(None) => f.write_str("interrupted"),
            Error::Interrupted(Some(at)) => write!(f, "interrupted: {at}"),
            Error::Kept { source, at } => write!(f, "{source}\n{at}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::OrtLib(e) => Some(e),
            Error::Runtime(e) => Some(e),
            Error::Data(e) => Some(e),
            Error::Dist(e) => Some(e),
            Error::Weights(e) => Some(e),
            Error::Plot(e) => Some(e),
            Error::File { source, .. } => Some(source),
            Error::Kept { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        Error::Compile(Box::new(f))
    }
}

/// `From` for each module error that `Error` wraps as it is.
macro_rules! wraps {
    ($($variant:ident($source:ty)),* $(,)?) => {
        $(impl From<$source> for Error {
            fn from(e: $source) -> Error {
                Error::$variant(e)
            }
        })*
    };
}

wraps!(OrtLib(OrtLibError), Runtime(RuntimeError), Data(DataError), Dist(DistError), Weights(WeightsError), Plot(PlotError));
