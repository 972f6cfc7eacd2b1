//! The all-reduce of GPU buffers with NCCL (through `cudarc`, which loads the CUDA driver and
//! NCCL at run time, so that building needs no CUDA). The communicator's id is made by process
//! 0 and sent to the others over the [`World`] (MPI).

use super::{DistError, World};
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaContext, CudaStream, DevicePtrMut, DeviceSlice, SyncOnDrop};
use cudarc::nccl::{group_end, group_start, Comm, Id, ReduceOp};
use std::sync::Arc;

/// A communicator of every process of the world, each on its own GPU.
pub struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NCCL communicator, rank {} of {}", self.comm.rank(), self.comm.world_size())
    }
}

/// f32 values in device memory that someone else (ONNX Runtime) allocated and owns.
struct Borrowed<'a> {
    ptr: CUdeviceptr,
    len: usize,
    stream: &'a Arc<CudaStream>,
}

impl DeviceSlice<f32> for Borrowed<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn stream(&self) -> &Arc<CudaStream> {
        self.stream
    }
}

impl DevicePtrMut<f32> for Borrowed<'_> {
    fn device_ptr_mut<'a>(&'a mut self, _: &'a CudaStream) -> (CUdeviceptr, SyncOnDrop<'a>) {
        // The owner's writes are complete: ONNX Runtime synchronises its stream when a run ends.
        (self.ptr, SyncOnDrop::Sync(None))
    }
}

fn nccl_error(what: &'static str) -> impl FnOnce(cudarc::nccl::result::NcclError) -> DistError {
    move |e| DistError::Nccl(format!("{what}: {e:?}"))
}

fn cuda_error(what: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> DistError {
    move |e| DistError::Nccl(format!("{what}: {e}"))
}

impl Nccl {
    /// Joins every process of `world` in one communicator, this one on GPU `device`.
    pub fn new(world: &dyn World, device: usize) -> Result<Nccl, DistError> {
        // Loading a missing library would panic: look for both first.
        // SAFETY: these only try to open the libraries (dlopen), calling nothing in them.
        let (cuda, nccl) = unsafe { (cudarc::driver::sys::is_culib_present(), cudarc::nccl::sys::is_culib_present()) };
        if !cuda {
            return Err(DistError::Nccl("no CUDA driver library (libcuda.so.1) on this machine: the GPU path needs an NVIDIA driver".into()));
        }
        if !nccl {
            return Err(DistError::Nccl(
                "no NCCL library (libnccl.so) on the library path: install NCCL (`pip install nvidia-nccl-cu13` ships \
                 nvidia/nccl/lib/libnccl.so.2: link it as libnccl.so in a folder on LD_LIBRARY_PATH)"
                    .into(),
            ));
        }
        let context = CudaContext::new(device).map_err(cuda_error("opening the GPU"))?;
        let stream = context.new_stream().map_err(cuda_error("creating a stream"))?;
        let mut id: Vec<u8> = match world.rank() {
            0 => Id::new().map_err(nccl_error("making the communicator's id"))?.internal().iter().map(|&c| c as u8).collect(),
            _ => vec![],
        };
        world.broadcast_bytes(0, &mut id);
        let internal: [std::ffi::c_char; 128] = std::array::from_fn(|i| id.get(i).copied().unwrap_or_default() as std::ffi::c_char);
        let comm = Comm::from_rank(Arc::clone(&stream), world.rank(), world.size(), Id::uninit(internal)).map_err(nccl_error("joining the communicator"))?;
        Ok(Nccl { comm, stream })
    }

    /// Replaces each buffer `(device pointer, f32 count)` by its mean over the processes, in one
    /// NCCL group; returns when it is done.
    pub fn average(&self, buffers: &[(u64, usize)]) -> Result<(), DistError> {
        group_start().map_err(nccl_error("starting a group"))?;
        for &(ptr, len) in buffers {
            let mut values = Borrowed { ptr, len, stream: &self.stream };
            self.comm.all_reduce_in_place(&mut values, &ReduceOp::Avg).map_err(nccl_error("all-reduce"))?;
        }
        group_end().map_err(nccl_error("ending a group"))?;
        self.stream.synchronize().map_err(cuda_error("waiting for the all-reduce"))
    }
}
