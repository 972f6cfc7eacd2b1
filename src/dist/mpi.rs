//! The world of an MPI job (the `mpi` crate over Open MPI or MPICH).

use super::{DistError, Launch, World};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;
use std::cell::RefCell;

pub struct Mpi {
    /// MPI is finalised when this is dropped.
    _universe: Universe,
    world: SimpleCommunicator,
    local_rank: usize,
    /// The receive buffer of `all_reduce_sum_f32` (the crate has no in-place all-reduce), kept
    /// between calls.
    scratch: RefCell<Vec<f32>>,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MPI world, rank {} of {}", self.rank(), self.size())
    }
}

impl Mpi {
    /// Initialises MPI (collectives are called from one thread only: `MPI_THREAD_FUNNELED`) and
    /// checks that it sees the processes `launch` describes.
    pub fn init(launch: Launch) -> Result<Mpi, DistError> {
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled).ok_or_else(|| DistError::Init("it was initialised before".into()))?;
        let world = universe.world();
        let size = world.size() as usize;
        if size != launch.size {
            return Err(DistError::SizeMismatch { launch, mpi: size });
        }
        // The processes that share this machine's memory, numbered in the world's order.
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Ok(Mpi { _universe: universe, world, local_rank, scratch: RefCell::new(vec![]) })
    }
}

impl World for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn all_reduce_sum_f32(&self, values: &mut [f32]) {
        let mut scratch = self.scratch.borrow_mut();
        scratch.resize(values.len(), 0.0);
        self.world.all_reduce_into(&values[..], &mut scratch[..], SystemOperation::sum());
        values.copy_from_slice(&scratch);
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) {
        let sent = values.to_vec();
        self.world.all_reduce_into(&sent[..], values, SystemOperation::sum());
    }

    fn all_reduce_sum_u64(&self, values: &mut [u64]) {
        let sent = values.to_vec();
        self.world.all_reduce_into(&sent[..], values, SystemOperation::sum());
    }

    fn broadcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) {
        let root = self.world.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
    }

    fn barrier(&self) {
        self.world.barrier();
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
