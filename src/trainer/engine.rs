//! Runs training steps with the state (parameters, optimizer slots, running statistics) kept on
//! the session's device between steps (IoBinding). A state value the compiler found safe to update
//! in place (`train::IN_PLACE`: every reader of the old value runs before its new value is
//! written) is read and written in one buffer; any other has two, swapped each step. Only the
//! batch goes in and the loss and logits come out.
//!
//! A step is one graph, or two (data-parallel training, see `train::SplitStep`): the gradients,
//! then the update, with the gradient buckets handed to the caller in between, where they stay
//! on the device (the all-reduce). A state value `x` is read as input `x` from the current set and
//! written as output `x__new` to the other; a graph that takes `x__new` as input (the update
//! reading the running statistics the gradients graph wrote) reads it from the other set.

use crate::error::Error;
use crate::runtime::error::RuntimeError;
use crate::runtime::profile::{Profile, ProfileFiles};
use crate::runtime::session::{Model, Provider, SessionConfig};
use crate::train::IN_PLACE;
use crate::weights::TensorRef;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::IoBinding;
use ort::value::{DynTensor, DynValue, Tensor};
use std::collections::HashSet;
use std::path::Path;

/// Why gradient accumulation is refused on a GPU: the buckets are summed on the host.
pub const ACCUMULATE_ON_CPU: &str = "--accumulate sums the micro-batches' gradients on the host: it runs on the CPU provider";

/// One step's host inputs besides the state.
pub struct StepInputs<'a> {
    pub images: &'a [f32],
    pub image_shape: [usize; 4],
    pub labels: &'a [i64],
    /// Scalar inputs by name: `learning_rate`, Adam's `step` (from 1), `ema_decay`.
    pub scalars: Vec<(&'static str, f32)>,
    /// (input name, shape, values): dropout masks.
    pub masks: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// The graphs of a step, serialised.
pub enum StepModels {
    /// The whole step in one graph.
    Single(Vec<u8>),
    /// The gradients graph, the update graph, and the buckets between them: (name, length).
    Split { gradients: Vec<u8>, update: Vec<u8>, buckets: Vec<(String, usize)> },
}

/// The gradient buckets of a split step between its two graphs, where the step keeps them.
pub enum Buckets<'a> {
    Host(Vec<&'a mut [f32]>),
    /// GPU memory: (device pointer, f32 count) of each bucket.
    Device(Vec<(u64, usize)>),
}

/// Where one state value lives between steps.
enum StateBuffer {
    /// Read and written in one buffer: the step writes the new value over the old.
    InPlace(DynTensor),
    /// Read from one, written to the other; which is current alternates with the steps.
    Swapped([DynTensor; 2]),
}

impl StateBuffer {
    fn current(&self, parity: usize) -> &DynTensor {
        match self {
            Self::InPlace(value) => value,
            Self::Swapped(sets) => &sets[parity],
        }
    }

    fn current_mut(&mut self, parity: usize) -> &mut DynTensor {
        match self {
            Self::InPlace(value) => value,
            Self::Swapped(sets) => &mut sets[parity],
        }
    }
}

/// One graph of the step, and the names it takes and gives.
struct Part {
    model: Model,
    binding: IoBinding,
    inputs: HashSet<String>,
    outputs: HashSet<String>,
}

pub struct StepEngine {
    parts: Vec<Part>,
    /// The buckets, written by the first part and read by the second (none with one part).
    buckets: Vec<(String, DynTensor)>,
    /// Graph inputs that the step also outputs as `<name>__new`, in one fixed order.
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    buffers: Vec<StateBuffer>,
    /// Which buffer of a swapped pair holds the current value.
    current: usize,
    /// A step failed after it may have started writing the state in place.
    torn: bool,
    provider: Provider,
    /// Where the steps' profile goes, until it is written.
    profile: Option<ProfileFiles>,
    /// Steps run by this engine.
    steps: usize,
}

fn ort_err(context: &str) -> impl FnOnce(ort::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::Ort { context: context.to_string(), source: e }
}

impl StepEngine {
    /// Loads the step's graphs and puts `state` (every `(name, shape, values)` the step updates)
    /// in place. With `profile` (the summary's path, see [`ProfileFiles`]), ONNX Runtime profiles
    /// every step until [`StepEngine::end_profiling`]; only a single-graph step is profiled.
    pub fn new(models: StepModels, config: SessionConfig, state: Vec<(String, Vec<usize>, Vec<f32>)>, profile: Option<&Path>) -> Result<StepEngine, Error> {
        let provider = config.provider;
        let (graphs, bucket_shapes) = match models {
            StepModels::Single(step) => (vec![step], vec![]),
            StepModels::Split { .. } if profile.is_some() => {
                return Err(Error::Invalid(
                    "--profile profiles a step that is one graph: profile a run of one process, without --accumulate or --split-step".into(),
                ));
            }
            StepModels::Split { gradients, update, buckets } => (vec![gradients, update], buckets),
        };
        let profile = profile.map(ProfileFiles::new).transpose()?;
        let mut parts = vec![];
        for bytes in graphs {
            let model = Model::training_step(bytes, config.clone(), profile.as_ref().map(ProfileFiles::ort_prefix).as_deref())?;
            let binding = model.session.create_binding().map_err(ort_err("creating the IoBinding"))?;
            let inputs = model.info().inputs.iter().map(|i| i.name.clone()).collect();
            let outputs = model.info().outputs.iter().map(|o| o.name.clone()).collect();
            parts.push(Part { model, binding, inputs, outputs });
        }
        let allocator = match provider {
            Provider::Cpu => Allocator::default(),
            Provider::Cuda { device } => {
                let memory =
                    MemoryInfo::new(AllocationDevice::CUDA, device, AllocatorType::Device, MemoryType::Default).map_err(ort_err("describing device memory"))?;
                Allocator::new(&parts[0].model.session, memory).map_err(ort_err("creating the device allocator"))?
            }
        };
        let allocate = |shape: Vec<usize>| -> Result<DynTensor, RuntimeError> {
            Ok(Tensor::<f32>::new(&allocator, shape).map_err(ort_err("allocating state on the device"))?.upcast())
        };
        let in_place = in_place(&parts)?;
        let mut names = vec![];
        let mut shapes = vec![];
        let mut buffers = vec![];
        for (name, shape, values) in state {
            // Each value goes to its buffer at once: the host copy is never whole beside it.
            let mut buffer = if in_place.contains(&name) {
                StateBuffer::InPlace(allocate(shape.clone())?)
            } else {
                StateBuffer::Swapped([allocate(shape.clone())?, allocate(shape.clone())?])
            };
            put(buffer.current_mut(0), &shape, values)?;
            buffers.push(buffer);
            names.push(name);
            shapes.push(shape);
        }
        let buckets = bucket_shapes.into_iter().map(|(name, len)| Ok((name, allocate(vec![1, len])?))).collect::<Result<_, RuntimeError>>()?;
        Ok(StepEngine { parts, buckets, names, shapes, buffers, current: 0, torn: false, provider, profile, steps: 0 })
    }

    /// How many state values are updated in place (the others have two buffers).
    pub fn in_place_count(&self) -> usize {
        self.buffers.iter().filter(|b| matches!(b, StateBuffer::InPlace(_))).count()
    }

    /// One training step: returns the loss and the logits. `micro` is the step's batch, whole or
    /// in micro-batches (gradient accumulation: each runs through the gradients graph in turn,
    /// their gradient buckets are averaged, and the update runs once). Between the graphs of a
    /// split step, `reduce` is handed the gradient buckets to average in place.
    pub fn step(&mut self, micro: &[StepInputs<'_>], reduce: &mut dyn FnMut(Buckets<'_>) -> Result<(), Error>) -> Result<(f32, Vec<f32>), Error> {
        assert!(!micro.is_empty() && (micro.len() == 1 || self.parts.len() == 2), "micro-batches need a split step");
        let next = 1 - self.current;
        self.torn = true;
        let (mut loss, mut logits) = (0.0, vec![]);
        let mut sums: Vec<Vec<f32>> = vec![];
        for (k, inputs) in micro.iter().enumerate() {
            let (micro_loss, micro_logits) = self.run_part(0, inputs, next, k > 0)?.expect("the first graph of a step outputs the loss and the logits");
            loss += micro_loss / micro.len() as f32;
            logits.extend(micro_logits);
            if micro.len() > 1 {
                self.add_buckets(&mut sums)?;
            }
        }
        if self.parts.len() > 1 {
            if !sums.is_empty() {
                self.set_buckets(&sums, 1.0 / micro.len() as f32)?;
            }
            reduce(self.bucket_views()?)?;
            self.run_part(1, &micro[micro.len() - 1], next, false)?;
        }
        self.current = next;
        self.torn = false;
        self.steps += 1;
        Ok((loss, logits))
    }

    /// Runs graph `p` of the step on `inputs`, writing new state to the buffers of parity `next`
    /// (after the first micro-batch, the gradients graph reads the state it wrote: the running
    /// statistics move once per micro-batch); returns the loss and logits when the graph gives them.
    fn run_part(&mut self, p: usize, inputs: &StepInputs<'_>, next: usize, after_first: bool) -> Result<Option<(f32, Vec<f32>)>, RuntimeError> {
        let host = |shape: Vec<usize>, data: Vec<f32>| Tensor::from_array((shape, data)).map(Tensor::into_dyn).map_err(ort_err("creating an input tensor"));
        let part = &mut self.parts[p];
        let mut feeds: Vec<(String, DynValue)> = vec![];
        if part.inputs.contains("images") {
            feeds.push(("images".into(), host(inputs.image_shape.to_vec(), inputs.images.to_vec())?));
            let labels = Tensor::from_array((vec![inputs.labels.len()], inputs.labels.to_vec())).map_err(ort_err("creating the labels"))?.into_dyn();
            feeds.push(("labels".into(), labels));
        }
        for &(name, value) in &inputs.scalars {
            feeds.push((name.into(), host(vec![], vec![value])?));
        }
        for (name, shape, values) in &inputs.masks {
            feeds.push((name.clone(), host(shape.clone(), values.clone())?));
        }
        let cpu = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::CPUOutput).map_err(ort_err("describing host memory"))?;
        let binding = &mut part.binding;
        for (name, value) in feeds.iter().filter(|(name, _)| part.inputs.contains(name)) {
            binding.bind_input(name.as_str(), value).map_err(ort_err("binding an input"))?;
        }
        for (name, buffer) in self.names.iter().zip(&mut self.buffers) {
            let new_name = format!("{name}__new");
            let writes = part.outputs.contains(&new_name);
            if part.inputs.contains(name) {
                let from = if after_first && writes { next } else { self.current };
                binding.bind_input(name.as_str(), buffer.current(from)).map_err(ort_err("binding the state"))?;
            }
            if part.inputs.contains(&new_name) {
                binding.bind_input(new_name.as_str(), buffer.current(next)).map_err(ort_err("binding the new state"))?;
            }
            if writes {
                binding.bind_output(new_name, buffer.current_mut(next)).map_err(ort_err("binding the new state"))?;
            }
        }
        for (name, bucket) in &mut self.buckets {
            if part.outputs.contains(name.as_str()) {
                binding.bind_output(name.as_str(), &mut *bucket).map_err(ort_err("binding a gradient bucket"))?;
            } else if part.inputs.contains(name.as_str()) {
                binding.bind_input(name.as_str(), &*bucket).map_err(ort_err("binding a gradient bucket"))?;
            }
        }
        let to_host: Vec<&str> = ["loss", "logits"].into_iter().filter(|o| part.outputs.contains(*o)).collect();
        for out in &to_host {
            binding.bind_output_to_device(*out, &cpu).map_err(ort_err("binding an output"))?;
        }
        let outputs = part.model.session.run_binding(binding).map_err(ort_err("running the training step"))?;
        if to_host.is_empty() {
            return Ok(None);
        }
        let loss = outputs["loss"].try_extract_tensor::<f32>().map_err(ort_err("reading the loss"))?.1[0];
        let logits = outputs["logits"].try_extract_tensor::<f32>().map_err(ort_err("reading the logits"))?.1.to_vec();
        Ok(Some((loss, logits)))
    }

    /// Adds the gradient buckets to `sums` (the first micro-batch's become them). Host buckets
    /// only: accumulation runs on the CPU provider.
    fn add_buckets(&mut self, sums: &mut Vec<Vec<f32>>) -> Result<(), RuntimeError> {
        let Buckets::Host(buckets) = self.bucket_views()? else { return Err(RuntimeError::Input(ACCUMULATE_ON_CPU.into())) };
        if sums.is_empty() {
            *sums = buckets.iter().map(|b| b.to_vec()).collect();
        } else {
            for (sum, bucket) in sums.iter_mut().zip(buckets) {
                sum.iter_mut().zip(bucket.iter()).for_each(|(s, g)| *s += g);
            }
        }
        Ok(())
    }

    /// Writes `sums` times `scale` into the gradient buckets.
    fn set_buckets(&mut self, sums: &[Vec<f32>], scale: f32) -> Result<(), RuntimeError> {
        let Buckets::Host(buckets) = self.bucket_views()? else { return Err(RuntimeError::Input(ACCUMULATE_ON_CPU.into())) };
        for (bucket, sum) in buckets.into_iter().zip(sums) {
            bucket.iter_mut().zip(sum).for_each(|(b, s)| *b = s * scale);
        }
        Ok(())
    }

    /// The gradient buckets, where they are.
    fn bucket_views(&mut self) -> Result<Buckets<'_>, RuntimeError> {
        Ok(match self.provider {
            Provider::Cpu => Buckets::Host(
                self.buckets
                    .iter_mut()
                    .map(|(_, b)| b.try_extract_tensor_mut::<f32>().map(|(_, values)| values).map_err(ort_err("reading a gradient bucket")))
                    .collect::<Result<_, _>>()?,
            ),
            Provider::Cuda { .. } => Buckets::Device(self.buckets.iter_mut().map(|(_, b)| (b.data_ptr_mut() as u64, b.shape().num_elements())).collect()),
        })
    }

    /// Ends the profile of the steps run so far, writes its summary and ONNX Runtime's trace (see
    /// [`ProfileFiles`]) and returns the summary; `None` when the steps are not profiled. The
    /// first step (memory planning and allocation, the state's first upload) is left out when
    /// more steps ran.
    pub fn end_profiling(&mut self) -> Result<Option<Profile>, RuntimeError> {
        let Some(files) = self.profile.take() else { return Ok(None) };
        let written = self.parts[0].model.end_profiling()?;
        files.finish(&written, usize::from(self.steps > 1)).map(Some)
    }

    /// Calls `f` with the current state, by name: on the CPU where the step keeps it (no copy);
    /// from a GPU, copied to the host.
    ///
    /// # Errors
    /// After a step that failed (its state may be half written), or a failed copy.
    pub fn with_state<R>(&self, f: impl FnOnce(&[TensorRef<'_>]) -> R) -> Result<R, RuntimeError> {
        if self.torn {
            return Err(RuntimeError::Input("the state is unknown after a failed step that updates it in place".into()));
        }
        let read = ort_err("reading the state");
        let host: Vec<DynTensor>;
        let buffers = self.buffers.iter().map(|b| b.current(self.current));
        let on_host: Vec<&DynTensor> = if self.provider == Provider::Cpu {
            buffers.collect()
        } else {
            host = buffers.map(|b| b.to(AllocationDevice::CPU, 0)).collect::<Result<_, _>>().map_err(ort_err("copying the state to the host"))?;
            host.iter().collect()
        };
        let data: Vec<&[f32]> = on_host.into_iter().map(|v| v.try_extract_tensor::<f32>().map(|(_, d)| d)).collect::<Result<_, _>>().map_err(read)?;
        let views: Vec<TensorRef<'_>> = self.names.iter().zip(&self.shapes).zip(data).map(|((name, shape), data)| TensorRef { name, shape, data }).collect();
        Ok(f(&views))
    }

    /// Replaces the current value of the state `name` (running statistics averaged across
    /// processes).
    pub fn set_state(&mut self, name: &str, values: Vec<f32>) -> Result<(), RuntimeError> {
        let i = self.names.iter().position(|n| n == name).unwrap_or_else(|| panic!("`{name}` is not state of the step"));
        put(self.buffers[i].current_mut(self.current), &self.shapes[i], values)
    }
}

/// Copies host `values` of `shape` into `buffer` (on the step's device).
fn put(buffer: &mut DynTensor, shape: &[usize], values: Vec<f32>) -> Result<(), RuntimeError> {
    let value = Tensor::from_array((shape.to_vec(), values)).map_err(ort_err("creating a state tensor"))?.upcast();
    value.copy_into(buffer).map_err(ort_err("copying the state to the device"))
}

/// The state every graph of the step may update in place: each graph that writes `x__new` lists
/// `x` in its `train::IN_PLACE` metadata, and no later graph reads `x`.
fn in_place(parts: &[Part]) -> Result<HashSet<String>, RuntimeError> {
    let listed = parts
        .iter()
        .map(|p| match p.model.info().metadata.get(IN_PLACE) {
            Some(json) => serde_json::from_str::<HashSet<String>>(json).map_err(|e| RuntimeError::Input(format!("the step's `{IN_PLACE}` metadata: {e}"))),
            None => Ok(HashSet::new()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let written = |p: &Part, x: &str| p.outputs.contains(&format!("{x}__new"));
    let candidates: HashSet<&String> = listed.iter().flatten().collect();
    Ok(candidates
        .into_iter()
        .filter(|x| {
            let Some(first) = parts.iter().position(|p| written(p, x)) else { return false };
            parts.iter().zip(&listed).all(|(p, l)| !written(p, x) || l.contains(*x)) && parts[first + 1..].iter().all(|p| !p.inputs.contains(*x))
        })
        .cloned()
        .collect())
}

impl Drop for StepEngine {
    /// A run that stops early (an error, a NaN loss) leaves no half profile behind: ONNX Runtime
    /// would write one when the session is dropped.
    fn drop(&mut self) {
        if self.profile.take().is_some() {
            if let Ok(written) = self.parts[0].model.end_profiling() {
                let _ = std::fs::remove_file(written);
            }
        }
    }
}
