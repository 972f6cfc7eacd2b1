//! The one error type of the runtime API. Every message names what it concerns (file, input,
//! dimension, library) so that the CLI can print it as is.

use std::fmt;
use std::path::PathBuf;

/// Why loading, feeding or running a model failed.
#[derive(Debug)]
pub enum RuntimeError {
    /// `ortlib::init` has not succeeded in this process (any `ort` call would panic).
    NotInitialised,
    /// `Provider::Cuda` was asked for, but this incc was built without the `cuda` feature.
    CudaNotBuilt,
    /// The CUDA execution provider could not be used with the library at `library`.
    CudaUnavailable {
        /// The ONNX Runtime library in use.
        library: PathBuf,
        /// What went wrong, in words, with ONNX Runtime's own message.
        reason: String,
    },
    /// The model could not be loaded (`what` is its path or `model bytes`).
    Load {
        /// The model's path, or `model bytes` when it came from memory.
        what: String,
        /// ONNX Runtime's message.
        reason: String,
    },
    /// The model or the data given to it does not fit what this API supports or what the model
    /// expects (wrong shape, wrong element type, several inputs, ...).
    Input(String),
    /// ONNX Runtime failed while doing `context`.
    Ort {
        /// What was being done.
        context: String,
        /// ONNX Runtime's error.
        source: ort::Error,
    },
    /// An image file could not be read or decoded.
    Image {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// Any other file (labels, the profile) could not be read or parsed.
    File {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
}

impl RuntimeError {
    /// Wraps an `ort` error with what was being done.
    pub(crate) fn ort(context: impl Into<String>) -> impl FnOnce(ort::Error) -> Self {
        let context = context.into();
        move |source| Self::Ort { context, source }
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInitialised => f.write_str("ONNX Runtime is not initialised: call runtime::ortlib::init before loading a model"),
            Self::CudaNotBuilt => f.write_str(
                "CUDA was requested, but this incc was built without CUDA support; \
                 rebuild it with `cargo build --release --features cuda` (or use --provider cpu)",
            ),
            Self::CudaUnavailable { library, reason } => {
                write!(f, "CUDA was requested but cannot be used with ONNX Runtime library {}: {reason}", library.display())
            }
            Self::Load { what, reason } => write!(f, "cannot load the model {what}: {reason}"),
            Self::Input(message) => f.write_str(message),
            Self::Ort { context, source } => write!(f, "ONNX Runtime failed while {context}: {source}"),
            Self::Image { path, reason } => write!(f, "image {}: {reason}", path.display()),
            Self::File { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Ort { source, .. } => Some(source),
            _ => None,
        }
    }
}
