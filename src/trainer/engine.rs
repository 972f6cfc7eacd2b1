//! Runs training steps with the state (parameters, optimizer slots, running statistics) kept on
//! the session's device between steps: IoBinding with two buffer sets, A and B, swapped each step
//! (binding one buffer as both input and output is unsafe: ONNX Runtime may write a new value
//! before an old one is read). Only the batch goes in and the loss and logits come out.

use crate::runtime::error::RuntimeError;
use crate::runtime::profile::{Profile, ProfileFiles};
use crate::runtime::session::{Model, Provider, SessionConfig};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::IoBinding;
use ort::value::{DynTensor, DynValue, Tensor};
use std::path::Path;

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

/// A named host tensor: (name, shape, values).
pub type NamedValues = (String, Vec<usize>, Vec<f32>);

pub struct StepEngine {
    model: Model,
    binding: IoBinding,
    /// Graph inputs that the step also outputs as `<name>__new`, in one fixed order.
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    /// The state before the first step (host tensors); afterwards the device buffers.
    initial: Option<Vec<DynValue>>,
    buffers: [Vec<DynTensor>; 2],
    /// Which buffer set holds the current state.
    current: usize,
    on_host: bool,
    /// Where the steps' profile goes, until it is written.
    profile: Option<ProfileFiles>,
    /// Steps run by this engine.
    steps: usize,
}

fn ort_err(context: &str) -> impl FnOnce(ort::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::Ort { context: context.to_string(), source: e }
}

impl StepEngine {
    /// Loads the training graph and puts `state` (every `(name, shape, values)` the graph updates)
    /// in place. With `profile` (the summary's path, see [`ProfileFiles`]), ONNX Runtime profiles
    /// every step until [`StepEngine::end_profiling`].
    pub fn new(
        model_bytes: Vec<u8>,
        config: SessionConfig,
        state: Vec<(String, Vec<usize>, Vec<f32>)>,
        profile: Option<&Path>,
    ) -> Result<StepEngine, RuntimeError> {
        let profile = profile.map(ProfileFiles::new).transpose()?;
        let provider = config.provider;
        let model = Model::training_step(model_bytes, config, profile.as_ref().map(ProfileFiles::ort_prefix).as_deref())?;
        let allocator = match provider {
            Provider::Cpu => Allocator::default(),
            Provider::Cuda { device } => {
                let memory =
                    MemoryInfo::new(AllocationDevice::CUDA, device, AllocatorType::Device, MemoryType::Default).map_err(ort_err("describing device memory"))?;
                Allocator::new(&model.session, memory).map_err(ort_err("creating the device allocator"))?
            }
        };
        let mut names = vec![];
        let mut shapes = vec![];
        let mut initial = vec![];
        let mut buffers: [Vec<DynTensor>; 2] = [vec![], vec![]];
        for (name, shape, values) in state {
            initial.push(Tensor::from_array((shape.clone(), values)).map_err(ort_err("creating a state tensor"))?.into_dyn());
            for set in &mut buffers {
                set.push(Tensor::<f32>::new(&allocator, shape.clone()).map_err(ort_err("allocating state on the device"))?.upcast());
            }
            names.push(name);
            shapes.push(shape);
        }
        let binding = model.session.create_binding().map_err(ort_err("creating the IoBinding"))?;
        Ok(StepEngine { model, binding, names, shapes, initial: Some(initial), buffers, current: 0, on_host: provider == Provider::Cpu, profile, steps: 0 })
    }

    /// One training step: returns the loss and the logits.
    pub fn step(&mut self, inputs: &StepInputs<'_>) -> Result<(f32, Vec<f32>), RuntimeError> {
        let bind = |binding: &mut IoBinding, name: &str, value: DynValue| binding.bind_input(name, &value).map_err(ort_err("binding an input"));
        let host = |shape: Vec<usize>, data: Vec<f32>| Tensor::from_array((shape, data)).map(Tensor::into_dyn).map_err(ort_err("creating an input tensor"));
        bind(&mut self.binding, "images", host(inputs.image_shape.to_vec(), inputs.images.to_vec())?)?;
        let labels = Tensor::from_array((vec![inputs.labels.len()], inputs.labels.to_vec())).map_err(ort_err("creating the labels"))?.into_dyn();
        bind(&mut self.binding, "labels", labels)?;
        for &(name, value) in &inputs.scalars {
            bind(&mut self.binding, name, host(vec![], vec![value])?)?;
        }
        for (name, shape, values) in &inputs.masks {
            bind(&mut self.binding, name, host(shape.clone(), values.clone())?)?;
        }
        let next = 1 - self.current;
        match &self.initial {
            Some(initial) => {
                for (name, value) in self.names.iter().zip(initial) {
                    self.binding.bind_input(name.as_str(), value).map_err(ort_err("binding the state"))?;
                }
            }
            None => {
                for (name, value) in self.names.iter().zip(&self.buffers[self.current]) {
                    self.binding.bind_input(name.as_str(), value).map_err(ort_err("binding the state"))?;
                }
            }
        }
        for (name, value) in self.names.iter().zip(&mut self.buffers[next]) {
            self.binding.bind_output(format!("{name}__new"), &mut *value).map_err(ort_err("binding the new state"))?;
        }
        let cpu = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::CPUOutput).map_err(ort_err("describing host memory"))?;
        for out in ["loss", "logits"] {
            self.binding.bind_output_to_device(out, &cpu).map_err(ort_err("binding an output"))?;
        }
        let outputs = self.model.session.run_binding(&self.binding).map_err(ort_err("running the training step"))?;
        let loss = outputs["loss"].try_extract_tensor::<f32>().map_err(ort_err("reading the loss"))?.1[0];
        let logits = outputs["logits"].try_extract_tensor::<f32>().map_err(ort_err("reading the logits"))?.1.to_vec();
        drop(outputs);
        self.initial = None;
        self.current = next;
        self.steps += 1;
        Ok((loss, logits))
    }

    /// Ends the profile of the steps run so far, writes its summary and ONNX Runtime's trace (see
    /// [`ProfileFiles`]) and returns the summary; `None` when the steps are not profiled. The
    /// first step (memory planning and allocation, the state's first upload) is left out when
    /// more steps ran.
    pub fn end_profiling(&mut self) -> Result<Option<Profile>, RuntimeError> {
        let Some(files) = self.profile.take() else { return Ok(None) };
        let written = self.model.end_profiling()?;
        files.finish(&written, usize::from(self.steps > 1)).map(Some)
    }

    /// The current state, copied to the host, by name.
    pub fn state(&self) -> Result<Vec<NamedValues>, RuntimeError> {
        let mut out = Vec::with_capacity(self.names.len());
        for (i, name) in self.names.iter().enumerate() {
            let values = match &self.initial {
                Some(initial) => initial[i].try_extract_tensor::<f32>().map_err(ort_err("reading the state"))?.1.to_vec(),
                None => {
                    let value = &self.buffers[self.current][i];
                    if self.on_host {
                        value.try_extract_tensor::<f32>().map_err(ort_err("reading the state"))?.1.to_vec()
                    } else {
                        let host = value.to(AllocationDevice::CPU, 0).map_err(ort_err("copying the state to the host"))?;
                        host.try_extract_tensor::<f32>().map_err(ort_err("reading the state"))?.1.to_vec()
                    }
                }
            };
            out.push((name.clone(), self.shapes[i].clone(), values));
        }
        Ok(out)
    }
}

impl Drop for StepEngine {
    /// A run that stops early (an error, a NaN loss) leaves no half profile behind: ONNX Runtime
    /// would write one when the session is dropped.
    fn drop(&mut self) {
        if self.profile.take().is_some() {
            if let Ok(written) = self.model.end_profiling() {
                let _ = std::fs::remove_file(written);
            }
        }
    }
}
