//! Processes that train together (data parallelism): who this process is among them, and the
//! collectives they run — on MPI for processes and host buffers (cargo feature `mpi`), and on
//! NCCL for GPU buffers (feature `cuda`). A process started without a launcher is a [`Single`]
//! world, in which every collective is the identity.
//!
//! Every collective either completes on every process or the launcher ends the whole job: MPI's
//! errors are fatal, and a process that fails on its own calls [`World::abort`] (see
//! `cli/train.rs`) so that no other waits for it in the next collective.

mod launcher;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "cuda")]
mod nccl;

pub use launcher::{detect, Launch};
#[cfg(feature = "cuda")]
pub use nccl::Nccl;

use std::fmt;
use std::rc::Rc;

/// The processes of a job, and the collectives among them. Each collective must be called by
/// every process, in the same order.
pub trait World: fmt::Debug {
    /// This process's number, from 0.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// This process's number among those on its machine (which GPU it takes).
    fn local_rank(&self) -> usize;
    /// Sums `values` element by element over the processes, in place, on every process.
    fn all_reduce_sum_f32(&self, values: &mut [f32]);
    fn all_reduce_sum_f64(&self, values: &mut [f64]);
    fn all_reduce_sum_u64(&self, values: &mut [u64]);
    /// Gives every process `root`'s bytes.
    fn broadcast_bytes(&self, root: usize, bytes: &mut Vec<u8>);
    fn barrier(&self);
    /// Ends every process of the job with exit status `code`.
    fn abort(&self, code: i32) -> !;
}

/// A world of one process.
#[derive(Debug)]
pub struct Single;

impl World for Single {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn local_rank(&self) -> usize {
        0
    }

    fn all_reduce_sum_f32(&self, _: &mut [f32]) {}

    fn all_reduce_sum_f64(&self, _: &mut [f64]) {}

    fn all_reduce_sum_u64(&self, _: &mut [u64]) {}

    fn broadcast_bytes(&self, _: usize, _: &mut Vec<u8>) {}

    fn barrier(&self) {}

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The most bytes one all-reduce call carries: PyTorch DDP's `bucket_cap_mb` (25 MB). A
/// gradient bucket larger than this goes in pieces, so no call needs a buffer the size of the
/// whole gradient.
pub const BUCKET_CAP_BYTES: usize = 25 * 1024 * 1024;

/// Replaces `values` by their mean over the processes (the sum over the world, divided by its
/// size), [`BUCKET_CAP_BYTES`] at a time.
pub fn average(world: &dyn World, values: &mut [f32]) {
    if world.size() == 1 {
        return;
    }
    for piece in values.chunks_mut(BUCKET_CAP_BYTES / std::mem::size_of::<f32>()) {
        world.all_reduce_sum_f32(piece);
    }
    let n = world.size() as f32;
    values.iter_mut().for_each(|v| *v /= n);
}

/// Why the processes could not be set up.
#[derive(Debug)]
pub enum DistError {
    /// Started as one of several processes by a build without the `mpi` feature: each process
    /// would train alone.
    NotBuilt(Launch),
    /// MPI sees another number of processes than the launcher described.
    SizeMismatch { launch: Launch, mpi: usize },
    /// MPI could not be initialised.
    Init(String),
    /// The NCCL all-reduce of GPU buffers: no NCCL or CUDA library, or a failing NCCL call.
    Nccl(String),
}

impl fmt::Display for DistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistError::NotBuilt(l) => write!(
                f,
                "this is process {} of {} started by {} ({}), but incc was built without MPI, so each process would train alone. \
                 Build it with the `mpi` feature: install Open MPI and libclang (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev), \
                 then `cargo build --release --features mpi` (with `--features mpi,cuda` for GPUs)",
                l.rank, l.size, l.launcher, l.evidence
            ),
            DistError::SizeMismatch { launch, mpi } => write!(
                f,
                "{} describes {} processes ({}) but MPI sees {mpi}: start incc through the launcher (mpirun or srun), or give it the matching MPI",
                launch.launcher, launch.size, launch.evidence
            ),
            DistError::Init(why) => write!(f, "MPI could not be initialised: {why}"),
            DistError::Nccl(why) => write!(f, "NCCL: {why}"),
        }
    }
}

impl std::error::Error for DistError {}

/// The world this process belongs to: MPI's when a launcher started it (in a build with the
/// `mpi` feature), else a [`Single`] one. Call it once per process (MPI initialises once).
pub fn init() -> Result<Rc<dyn World>, DistError> {
    let launch = detect(|name| std::env::var(name).ok());
    #[cfg(feature = "mpi")]
    if let Some(launch) = launch {
        return Ok(Rc::new(mpi::Mpi::init(launch)?));
    }
    #[cfg(not(feature = "mpi"))]
    if let Some(launch) = launch.filter(|l| l.size > 1) {
        return Err(DistError::NotBuilt(launch));
    }
    Ok(Rc::new(Single))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_of_one_leaves_values_as_they_are() {
        let mut values = vec![1.5f32, -2.0, 3.25];
        average(&Single, &mut values);
        assert_eq!(values, [1.5, -2.0, 3.25]);
        let mut bytes = vec![1u8, 2];
        Single.broadcast_bytes(0, &mut bytes);
        assert_eq!(bytes, [1, 2]);
        assert_eq!((Single.rank(), Single.size(), Single.local_rank()), (0, 1, 0));
    }

    #[test]
    fn launched_without_mpi_says_how_to_build_with_it() {
        let launch = Launch { launcher: "Open MPI", evidence: "OMPI_COMM_WORLD_SIZE=2, OMPI_COMM_WORLD_RANK=1".into(), size: 2, rank: 1 };
        let message = DistError::NotBuilt(launch).to_string();
        assert!(message.starts_with("this is process 1 of 2 started by Open MPI (OMPI_COMM_WORLD_SIZE=2, OMPI_COMM_WORLD_RANK=1)"), "{message}");
        assert!(message.contains("cargo build --release --features mpi") && message.contains("libopenmpi-dev openmpi-bin libclang-dev"), "{message}");
    }
}
