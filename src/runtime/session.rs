//! Loading a model into an ONNX Runtime session on a chosen execution provider, and what the
//! model says about itself (inputs, outputs, custom metadata).
//!
//! CUDA is always requested with `error_on_failure`: when it cannot be used the load fails with
//! a [`RuntimeError::CudaNotBuilt`] or [`RuntimeError::CudaUnavailable`] instead of quietly
//! running on the CPU.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::value::{Outlet, TensorElementType, ValueType};

use super::error::RuntimeError;
use super::ortlib;

/// The execution provider a model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// ONNX Runtime's CPU provider.
    #[default]
    Cpu,
    /// The CUDA provider on GPU `device` (needs the `cuda` feature and a GPU build of ONNX Runtime).
    Cuda {
        /// CUDA device ordinal.
        device: i32,
    },
}

impl FromStr for Provider {
    type Err = String;

    /// Parses `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("unknown execution provider `{s}` (expected cpu, cuda or cuda:N)");
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda { device: 0 }),
            other => match other.strip_prefix("cuda:").map(str::parse::<i32>) {
                Some(Ok(device)) if device >= 0 => Ok(Self::Cuda { device }),
                _ => Err(bad()),
            },
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { device } => write!(f, "cuda:{device}"),
        }
    }
}

/// How to build a session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionConfig {
    /// Where the model runs.
    pub provider: Provider,
    /// Intra-op threads; `None` leaves ONNX Runtime's default (one per physical core).
    pub threads: Option<usize>,
    /// ONNX Runtime's CUDA provider options by their own names (`prefer_nhwc` = `1`,
    /// `arena_extend_strategy` = `kSameAsRequested`, `cudnn_conv_algo_search` = `HEURISTIC`, ...),
    /// passed through as given; ONNX Runtime rejects unknown ones when the session is created.
    pub cuda_options: Vec<(String, String)>,
    /// CPU memory is taken from the system as each value is made and given back as it is freed,
    /// instead of from ONNX Runtime's arena, which keeps what it took (see [`lean_memory`]).
    pub lean_memory: bool,
}

/// What a session runs; sessions are set up for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Workload {
    /// ONNX Runtime's defaults.
    #[default]
    Inference,
    /// One of incc's training steps: 10-14k nodes, shapes fixed, the state bound (see
    /// [`Model::training_step`]).
    TrainingStep,
}

/// The graph transformer that would undo the order a training step's nodes are written in
/// (`train::memory`): it replaces each weight gradient's two Reshapes (to the parameter's shape,
/// then to its piece of the packed row) by a new node, numbered after every other, and ONNX
/// Runtime's execution order, which follows node numbers, then ran every weight gradient after
/// the whole backward pass: each layer's input and output gradient stayed alive until then
/// (inception_resnet_v2 at batch 8: 1.86 instead of 1.46 GiB of values alive at the peak, from
/// the profile). A Reshape costs nothing on its own: the transformer saves no time.
pub const REORDERING_ON_TRAINING_STEPS: &str = "ReshapeFusion";

/// ONNX Runtime's CPU graph transformers that change nothing in incc's training steps
/// (inception_resnet_v2's, at level ALL, ONNX Runtime 1.31): each still walks the 13k-node graph
/// once or twice, and together they were 80% of the session's creation (51 -> 10 CPU seconds
/// without them). Those that do change it stay on: constant folding, common subexpressions,
/// constant sharing, the level-1 rules, MatMul+Transpose fusion, Conv+Add+activation fusion, the
/// NCHWc layout (Reshape fusion is off for another reason: [`REORDERING_ON_TRAINING_STEPS`]).
pub const IDLE_ON_TRAINING_STEPS: [&str; 41] = [
    "AttentionFusion",
    "BiasDropoutFusion",
    "BiasGeluFusion",
    "BiasSkipLayerNormFusion",
    "BiasSoftmaxFusion",
    "ConvActivationFusion",
    "DoubleQDQPairsRemover",
    "DynamicQuantizeMatMulFusion",
    "EmbedLayerNormFusion",
    "EnsureUniqueDQForNodeUnit",
    "FastGeluFusion",
    "FreeDimensionOverrideTransformer",
    "FuseFp16InitializerToFp32NodeTransformer",
    "GatherSliceToSplitFusion",
    "GatherToSliceFusion",
    "GeluFusionL1",
    "GeluFusionL2",
    "GemmActivationFusion",
    "GroupQueryAttentionFusion",
    "GroupQueryAttentionPreNormFusion",
    "LayerNormFusionL1",
    "LayerNormFusionL2",
    "Level2_RuleBasedTransformer",
    "MatMulActivationFusion",
    "MatMulAddFusion",
    "MatMulIntegerToFloatFusion",
    "MatMulNBitsFusion",
    "MatMulScaleFusion",
    "NhwcTransformer",
    "QDQFinalCleanupTransformer",
    "QDQPropagationTransformer",
    "QDQS8ToU8Transformer",
    "QDQSelectorActionTransformer",
    "QuickGeluFusion",
    "SimplifiedLayerNormFusion",
    "SkipLayerNormFusion",
    "SliceConcatToSpaceToDepthFusion",
    "TransposeOptimizer",
    "TransposeOptimizer_CPUExecutionProvider",
    "WeightBiasQuantization",
    "WhereDummyDq",
];

/// One dimension of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A dynamic size, by its symbolic name (empty when the model gives it no name).
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Symbolic(name) if name.is_empty() => f.write_str("?"),
            Self::Symbolic(name) => f.write_str(name),
        }
    }
}

/// A model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name in the graph.
    pub name: String,
    /// Element type as ONNX Runtime names it (`f32`, `i64`, ...); for a non-tensor value, its
    /// whole type.
    pub element_type: String,
    /// The shape (empty for scalars and non-tensor values).
    pub dims: Vec<Dim>,
}

impl TensorInfo {
    fn from_outlet(outlet: &Outlet) -> Self {
        let (element_type, dims) = match outlet.dtype() {
            ValueType::Tensor { ty, shape, dimension_symbols } => {
                let dims = shape
                    .iter()
                    .zip(dimension_symbols.iter())
                    .map(|(&n, sym)| usize::try_from(n).map_or_else(|_| Dim::Symbolic(sym.clone()), Dim::Fixed))
                    .collect();
                (ty.to_string(), dims)
            }
            other => (other.to_string(), Vec::new()),
        };
        Self { name: outlet.name().to_owned(), element_type, dims }
    }

    /// Whether this is a 32-bit float tensor (the only element type `run` feeds and reads).
    #[must_use]
    pub fn is_f32(&self) -> bool {
        self.element_type == TensorElementType::Float32.to_string()
    }

    /// The shape as text, e.g. `[N, 3, 299, 299]`.
    #[must_use]
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(ToString::to_string).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// What a loaded model says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Graph inputs (initialisers excluded).
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs, in order.
    pub outputs: Vec<TensorInfo>,
    /// The model's `metadata_props` (incc writes `incc.mean`, `incc.std`, `incc.input`, ...).
    pub metadata: BTreeMap<String, String>,
}

/// Where a model came from; kept so that a second session (with profiling) can be built.
#[derive(Debug)]
pub(crate) enum Source {
    Bytes(Vec<u8>),
    Path(PathBuf),
}

/// A model loaded into an ONNX Runtime session.
#[derive(Debug)]
pub struct Model {
    pub(crate) session: Session,
    pub(crate) source: Source,
    config: SessionConfig,
    workload: Workload,
    info: ModelInfo,
}

impl Model {
    /// Loads a serialised `ModelProto`. The bytes are kept (for [`super::providers::providers_used`]); the
    /// model must not refer to external data files.
    ///
    /// # Errors
    /// ONNX Runtime not initialised, an invalid model, or CUDA unavailable (see the module docs).
    pub fn from_bytes(bytes: Vec<u8>, config: SessionConfig) -> Result<Self, RuntimeError> {
        Self::load(Source::Bytes(bytes), config, Workload::Inference, None)
    }

    /// Loads one of incc's training steps. Its session differs from ONNX Runtime's defaults in
    /// three ways, each measured on inception_resnet_v2 (2-core CPU): no Reshape fusion
    /// ([`REORDERING_ON_TRAINING_STEPS`]), and
    /// - no memory pattern: the pattern is planned from the first run and then allocated as one
    ///   more block beside what the first run left in the arena (peak at batch 8 6.1 -> 4.6 GiB,
    ///   at batch 2 4.2 -> 3.0 GiB; the step time does not change measurably);
    /// - on the CPU, the graph transformers that change nothing in these graphs are skipped
    ///   ([`IDLE_ON_TRAINING_STEPS`]; session creation 47-51 -> 10 CPU seconds, the same graph).
    ///
    /// With `profile`, ONNX Runtime profiles every run into `<profile>_<date>_<time>.json`,
    /// written by [`Model::end_profiling`] (or when the model is dropped).
    ///
    /// # Errors
    /// As [`Model::from_bytes`].
    pub fn training_step(bytes: Vec<u8>, config: SessionConfig, profile: Option<&Path>) -> Result<Self, RuntimeError> {
        Self::load(Source::Bytes(bytes), config, Workload::TrainingStep, profile)
    }

    /// Loads a model file; external data (e.g. `model.onnx.data`) is found next to it.
    ///
    /// # Errors
    /// As [`Model::from_bytes`], and a missing or unreadable file.
    pub fn from_path(path: impl AsRef<Path>, config: SessionConfig) -> Result<Self, RuntimeError> {
        Self::load(Source::Path(path.as_ref().to_path_buf()), config, Workload::Inference, None)
    }

    fn load(source: Source, config: SessionConfig, workload: Workload, profile: Option<&Path>) -> Result<Self, RuntimeError> {
        let session = build_session(&source, &config, workload, profile)?;
        let info = model_info(&session)?;
        Ok(Self { session, source, config, workload, info })
    }

    /// Inputs, outputs and metadata.
    #[must_use]
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The configuration the session was built with.
    #[must_use]
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// A second session of the same model and configuration that profiles every run into
    /// `<prefix>_<date>_<time>.json` (profiling can only be switched on when a session is
    /// created); it costs one more model load.
    pub(crate) fn profiling_twin(&self, prefix: &Path) -> Result<Session, RuntimeError> {
        build_session(&self.source, &self.config, self.workload, Some(prefix))
    }

    /// Ends the profile of a model loaded with one and returns the file ONNX Runtime wrote.
    ///
    /// # Errors
    /// ONNX Runtime fails to write it.
    pub fn end_profiling(&mut self) -> Result<PathBuf, RuntimeError> {
        end_profiling(&mut self.session)
    }

    /// The model's only input: `run` and `bench` feed exactly one f32 tensor.
    ///
    /// # Errors
    /// If the model has no input, several inputs, or a non-f32 input.
    pub fn image_input(&self) -> Result<&TensorInfo, RuntimeError> {
        match self.info.inputs.as_slice() {
            [input] if input.is_f32() => Ok(input),
            [input] => {
                Err(RuntimeError::Input(format!("the model's input `{}` has element type {}; incc feeds f32 images only", input.name, input.element_type)))
            }
            inputs => Err(RuntimeError::Input(format!(
                "the model has {} inputs ({}); incc feeds models with exactly one image input",
                inputs.len(),
                inputs.iter().map(|i| format!("`{}`", i.name)).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

impl Source {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Bytes(bytes) => format!("({} bytes in memory)", bytes.len()),
            Self::Path(path) => path.display().to_string(),
        }
    }
}

/// Builds a session for `source`; with `profile`, ONNX Runtime profiles every run into
/// `<profile>_<date>_<time>.json`.
pub(crate) fn build_session(source: &Source, config: &SessionConfig, workload: Workload, profile: Option<&Path>) -> Result<Session, RuntimeError> {
    let env = ortlib::environment().ok_or(RuntimeError::NotInitialised)?;
    let builder_err = |what: &str| {
        let what = what.to_owned();
        move |e: ort::Error<SessionBuilder>| RuntimeError::ort(what)(e.into())
    };
    let mut builder = Session::builder(env).map_err(RuntimeError::ort("creating a session builder"))?;
    if let Some(threads) = config.threads {
        builder = builder.with_intra_threads(threads).map_err(builder_err("setting the thread count"))?;
    }
    if let Some(prefix) = profile {
        builder = builder.with_profiling(prefix).map_err(builder_err("enabling profiling"))?;
    }
    if workload == Workload::TrainingStep {
        builder = builder.with_memory_pattern(false).map_err(builder_err("disabling the memory pattern"))?;
        let mut disabled = vec![REORDERING_ON_TRAINING_STEPS];
        if config.provider == Provider::Cpu {
            disabled.extend(IDLE_ON_TRAINING_STEPS);
        }
        builder =
            builder.with_config_entry("optimization.disable_specified_optimizers", disabled.join(";")).map_err(builder_err("disabling graph transformers"))?;
    }
    if let Provider::Cuda { device } = config.provider {
        builder = with_cuda(builder, device, &config.cuda_options)?;
    }
    if config.lean_memory {
        builder = lean_memory(builder)?;
    }
    let committed = match source {
        Source::Bytes(bytes) => builder.commit_from_memory(bytes),
        Source::Path(path) => builder.commit_from_file(path),
    };
    committed.map_err(|e| {
        let reason = e.to_string();
        // With CUDA registered, a missing GPU or CUDA library only shows up when the session is
        // created; say so rather than blame the model.
        if matches!(config.provider, Provider::Cuda { .. }) && mentions_cuda(&reason) {
            cuda_unavailable(format!("{reason}{}", cuda_hint(&reason)))
        } else {
            RuntimeError::Load { what: source.describe(), reason }
        }
    })
}

/// The CPU provider without ONNX Runtime's arena, and the C library told to give every block of
/// 64 KiB or more back to the system when it is freed (glibc keeps freed blocks of up to 32 MiB
/// otherwise, and its threshold grows with use). The process then holds what is alive, not the
/// most it ever held in each size: inception_resnet_v2's training step at batch 8 peaks at 2.5
/// instead of 3.7 GiB (ONNX Runtime 1.31, 2-core CPU), and each step is about a third slower, its
/// memory mapped and faulted in anew.
fn lean_memory(builder: SessionBuilder) -> Result<SessionBuilder, RuntimeError> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of glibc's allocator; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
    }
    let cpu = ort::ep::CPU::default().with_arena_allocator(false).build().error_on_failure();
    builder.with_execution_providers([cpu]).map_err(|e| RuntimeError::ort("turning ONNX Runtime's CPU arena off")(e.into()))
}

/// Ends a session's profile and returns the file ONNX Runtime wrote it to.
pub(crate) fn end_profiling(session: &mut Session) -> Result<PathBuf, RuntimeError> {
    session.end_profiling().map(PathBuf::from).map_err(RuntimeError::ort("ending the profile"))
}

/// What to check, unless ONNX Runtime's message already says (a device ordinal out of range).
fn cuda_hint(message: &str) -> &'static str {
    if message.contains("Invalid device ID") {
        ""
    } else {
        " (is an NVIDIA GPU present and visible (nvidia-smi), and are the CUDA 13 and cuDNN 9 \
         libraries on LD_LIBRARY_PATH?)"
    }
}

fn mentions_cuda(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    ["cuda", "cudnn", "cublas", "gpu"].iter().any(|w| lower.contains(w))
}

fn cuda_unavailable(reason: String) -> RuntimeError {
    let library = ortlib::initialised().map(|lib| lib.path.clone()).unwrap_or_default();
    RuntimeError::CudaUnavailable { library, reason }
}

#[cfg(feature = "cuda")]
fn with_cuda(builder: SessionBuilder, device: i32, options: &[(String, String)]) -> Result<SessionBuilder, RuntimeError> {
    use ort::ep::{self, ArbitrarilyConfigurableExecutionProvider, ExecutionProvider};
    // `is_available` only says whether the library was built with CUDA; checking it first gives
    // the common mistake (the CPU library) its own message.
    match ep::CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => {
            return Err(cuda_unavailable(
                "this library has no CUDA execution provider (it is a CPU-only build of ONNX Runtime); \
                 point --ort-lib or ORT_DYLIB_PATH at the GPU build (libonnxruntime.so from the \
                 onnxruntime-gpu wheel, with libonnxruntime_providers_cuda.so beside it)"
                    .to_owned(),
            ))
        }
        Err(e) => return Err(cuda_unavailable(format!("cannot list its execution providers: {e}"))),
    }
    let cuda = options.iter().fold(ep::CUDA::default().with_device_id(device), |cuda, (key, value)| cuda.with_arbitrary_config(key, value));
    let cuda = cuda.build().error_on_failure();
    builder
        .with_execution_providers([cuda])
        .map_err(|e| cuda_unavailable(format!("the CUDA execution provider failed to start: {e}{}", cuda_hint(&e.to_string()))))
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(_: SessionBuilder, _: i32, _: &[(String, String)]) -> Result<SessionBuilder, RuntimeError> {
    Err(RuntimeError::CudaNotBuilt)
}

fn model_info(session: &Session) -> Result<ModelInfo, RuntimeError> {
    let metadata = session.metadata().map_err(RuntimeError::ort("reading the model metadata"))?;
    let keys = metadata.custom_keys().map_err(RuntimeError::ort("reading the model metadata"))?;
    let metadata = keys.into_iter().filter_map(|key| metadata.custom(&key).map(|value| (key, value))).collect();
    Ok(ModelInfo {
        inputs: session.inputs().iter().map(TensorInfo::from_outlet).collect(),
        outputs: session.outputs().iter().map(TensorInfo::from_outlet).collect(),
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_parses() {
        assert_eq!("cpu".parse(), Ok(Provider::Cpu));
        assert_eq!("CUDA".parse(), Ok(Provider::Cuda { device: 0 }));
        assert_eq!("cuda:1".parse(), Ok(Provider::Cuda { device: 1 }));
        for bad in ["", "gpu", "cuda:", "cuda:-1", "cuda:x", "cpu:0"] {
            let err = bad.parse::<Provider>().unwrap_err();
            assert!(err.contains("expected cpu, cuda or cuda:N"), "{bad}: {err}");
        }
        assert_eq!(Provider::Cuda { device: 2 }.to_string(), "cuda:2");
        assert_eq!(Provider::Cpu.to_string(), "cpu");
    }

    #[test]
    fn shape_text_names_symbolic_dims() {
        let info = TensorInfo {
            name: "images".into(),
            element_type: "f32".into(),
            dims: vec![Dim::Symbolic("N".into()), Dim::Fixed(3), Dim::Symbolic(String::new())],
        };
        assert_eq!(info.shape_text(), "[N, 3, ?]");
        assert!(info.is_f32());
    }
}
