//! Feeding one NCHW f32 batch to a model and reading every output back.

use ort::session::Session;
use ort::value::Tensor;

use super::error::RuntimeError;
use super::session::{Dim, Model, TensorInfo};

/// The most values incc makes one tensor of: 2^31 (8 GiB of f32), far past any network's batch,
/// and where 32-bit indexing in kernels ends. Larger sizes are refused before anything is
/// allocated, naming the size.
pub const MAX_VALUES: usize = 1 << 31;

/// The number of values of `what`, a tensor of `shape`: an error (naming both) when it overflows
/// or is past [`MAX_VALUES`].
///
/// # Errors
/// As said.
pub fn checked_len(what: &str, shape: &[usize]) -> Result<usize, RuntimeError> {
    let dims = shape.iter().map(ToString::to_string).collect::<Vec<_>>().join(" x ");
    match shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
        Some(n) if n <= MAX_VALUES => Ok(n),
        Some(n) => Err(RuntimeError::Input(format!("{what} of {dims} would hold {n} values, more than the {MAX_VALUES} incc allocates for one tensor"))),
        None => Err(RuntimeError::Input(format!("{what} of {dims} would hold more values than this machine can count"))),
    }
}

/// A zero-filled `what` of `shape` (see [`checked_len`]); memory that is not there is an error,
/// not an abort.
///
/// # Errors
/// As [`checked_len`], or the allocation failed.
pub fn zeros<T: Clone + Default>(what: &str, shape: &[usize]) -> Result<Vec<T>, RuntimeError> {
    let len = checked_len(what, shape)?;
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|_| RuntimeError::Input(format!("cannot allocate {} bytes for {what}", len.saturating_mul(std::mem::size_of::<T>()))))?;
    out.resize(len, T::default());
    Ok(out)
}

/// One model output: its name, shape and values (row-major).
pub type Output = (String, Vec<usize>, Vec<f32>);

/// Runs `model` on `images`, an NCHW batch of the given `shape`, and returns every output by name,
/// in the model's output order.
///
/// # Errors
/// The model does not have exactly one f32 input, `shape` does not fit it (the message names the
/// dimension), `images` has the wrong length, an output is not f32, or ONNX Runtime fails.
pub fn run(model: &mut Model, images: &[f32], shape: [usize; 4]) -> Result<Vec<Output>, RuntimeError> {
    let input = input_tensor(model.image_input()?, images.to_vec(), shape)?;
    run_tensor(&mut model.session, &input)
}

/// Checks `shape` and the data length against the model's input and makes the input tensor.
pub(crate) fn input_tensor(input: &TensorInfo, data: Vec<f32>, shape: [usize; 4]) -> Result<(String, Tensor<f32>), RuntimeError> {
    check_shape(input, shape)?;
    let expected: usize = shape.iter().product();
    if data.len() != expected {
        return Err(RuntimeError::Input(format!("input `{}`: shape {shape:?} needs {expected} values, but {} were given", input.name, data.len())));
    }
    let tensor = Tensor::from_array((shape, data)).map_err(RuntimeError::ort("creating the input tensor"))?;
    Ok((input.name.clone(), tensor))
}

/// Fixed dimensions must match; symbolic ones accept any size of at least 1.
fn check_shape(input: &TensorInfo, shape: [usize; 4]) -> Result<(), RuntimeError> {
    let given = format!("[{}]", shape.map(|d| d.to_string()).join(", "));
    let mismatch = |detail: String| {
        RuntimeError::Input(format!("input `{}` expects shape {}, but the given batch has shape {given}: {detail}", input.name, input.shape_text()))
    };
    if input.dims.len() != shape.len() {
        return Err(mismatch(format!("the model's input has rank {}, not 4 (NCHW)", input.dims.len())));
    }
    const NAMES: [&str; 4] = ["batch", "channels", "height", "width"];
    for (i, (want, &got)) in input.dims.iter().zip(&shape).enumerate() {
        match want {
            Dim::Fixed(n) if *n != got => {
                return Err(mismatch(format!("dim {i} ({}) must be {n}, got {got}", NAMES[i])));
            }
            _ if got == 0 => return Err(mismatch(format!("dim {i} ({}) is 0", NAMES[i]))),
            _ => {}
        }
    }
    Ok(())
}

/// Runs one prepared input and copies every output out.
pub(crate) fn run_tensor(session: &mut Session, (name, tensor): &(String, Tensor<f32>)) -> Result<Vec<Output>, RuntimeError> {
    let outputs = session.run(ort::inputs![name.as_str() => tensor]).map_err(RuntimeError::ort("running the model"))?;
    copy_outputs(&outputs)
}

/// Every output as (name, shape, values); all of incc's outputs are f32.
fn copy_outputs(outputs: &ort::session::SessionOutputs<'_>) -> Result<Vec<Output>, RuntimeError> {
    let mut result = Vec::with_capacity(outputs.len());
    for (out_name, value) in outputs.iter() {
        let (shape, data) =
            value.try_extract_tensor::<f32>().map_err(|e| RuntimeError::Input(format!("output `{out_name}` is {}, not an f32 tensor: {e}", value.dtype())))?;
        // ONNX Runtime reports concrete (non-negative) dims for values it produced.
        let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
        result.push((out_name.to_owned(), shape, data.to_vec()));
    }
    Ok(result)
}

/// A named input of any of the element types incc's graphs take.
#[derive(Clone, Debug)]
pub enum Feed {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
}

impl Feed {
    fn value(self, name: &str) -> Result<ort::value::DynValue, RuntimeError> {
        match self {
            Feed::F32(shape, data) => Tensor::from_array((shape, data)).map(|t| t.into_dyn()),
            Feed::I64(shape, data) => Tensor::from_array((shape, data)).map(|t| t.into_dyn()),
        }
        .map_err(RuntimeError::ort(&format!("creating the input tensor `{name}`")))
    }
}

/// Runs `model` with inputs by name (a training step's parameters, state, labels, ...) and copies
/// every f32 output out, by name.
pub fn run_named(model: &mut Model, feeds: Vec<(String, Feed)>) -> Result<Vec<Output>, RuntimeError> {
    let values = feeds.into_iter().map(|(name, feed)| Ok((name.clone(), feed.value(&name)?))).collect::<Result<Vec<_>, RuntimeError>>()?;
    let outputs = model.session.run(values).map_err(RuntimeError::ort("running the model"))?;
    copy_outputs(&outputs)
}

/// A model run many times with some inputs that stay (an evaluation's parameters): they are
/// bound once, which copies them to the session's device once, not at every run.
pub struct BoundRun<'m> {
    model: &'m mut Model,
    binding: ort::session::IoBinding,
    outputs: Vec<String>,
}

impl<'m> BoundRun<'m> {
    /// Binds `fixed`; each run returns `outputs`.
    pub fn new(model: &'m mut Model, fixed: Vec<(String, Feed)>, outputs: &[&str]) -> Result<Self, RuntimeError> {
        let mut binding = model.session.create_binding().map_err(RuntimeError::ort("creating an IoBinding"))?;
        for (name, feed) in fixed {
            let value = feed.value(&name)?;
            binding.bind_input(name.as_str(), &value).map_err(RuntimeError::ort(&format!("binding `{name}`")))?;
        }
        Ok(Self { model, binding, outputs: outputs.iter().map(|o| o.to_string()).collect() })
    }

    /// Runs with `feeds` besides the fixed inputs; the outputs, by name.
    pub fn run(&mut self, feeds: Vec<(String, Feed)>) -> Result<Vec<Output>, RuntimeError> {
        use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
        for (name, feed) in feeds {
            let value = feed.value(&name)?;
            self.binding.bind_input(name.as_str(), &value).map_err(RuntimeError::ort(&format!("binding `{name}`")))?;
        }
        // Bound afresh each run: an output kept from the last run would fix its shape (a last,
        // smaller batch would not fit).
        let host =
            MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::CPUOutput).map_err(RuntimeError::ort("describing host memory"))?;
        for name in &self.outputs {
            self.binding.bind_output_to_device(name.as_str(), &host).map_err(RuntimeError::ort(&format!("binding the output `{name}`")))?;
        }
        let outputs = self.model.session.run_binding(&self.binding).map_err(RuntimeError::ort("running the model"))?;
        copy_outputs(&outputs)
    }
}
