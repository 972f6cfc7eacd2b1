//! Data parallelism in the training loop: the processes of the [`World`] each train a replica on
//! their part of every global batch, and meet at a few points, all here:
//! - the step splits into the gradients and the update graphs (`train::SplitStep`) when there is
//!   more than one process, and the gradient buckets are averaged between the two (MPI on the
//!   host; NCCL on the GPU);
//! - each step's loss and top-1 hits are summed, and whether any process was asked to stop, so
//!   that every process sees the loss of the whole batch and takes the same decisions (a loss
//!   that is not finite stops every process; an interrupt stops every process at the same step);
//! - the running statistics (batch statistics are per replica) are averaged before every
//!   evaluation and checkpoint, and every replica goes on from that average;
//! - the evaluation's counts are summed.
//!
//! Process 0 alone prints and writes; the data, masks and random choices of a step depend on the
//! global position only, never on the number of processes.

use super::checkpoint::EpochTotals;
use super::engine::{Buckets, StepEngine};
use crate::data::Shard;
use crate::dist::World;
use crate::error::Error;
use crate::runtime::session::Provider;
use crate::train::update::RUNNING;
use std::rc::Rc;
use std::time::Instant;

/// This process's place among the replicas, and the collectives the loop runs.
pub(super) struct Replicas {
    pub world: Rc<dyn World>,
    /// The GPU all-reduce, when the step runs split on CUDA.
    #[cfg(feature = "cuda")]
    nccl: Option<crate::dist::Nccl>,
    /// Seconds spent averaging gradients, and the steps that did.
    pub reduce_s: f64,
    pub reduced: u64,
}

impl Replicas {
    /// The replicas of `world`; with `split`, the step runs as two graphs on `provider` (a GPU
    /// then averages with NCCL).
    pub fn new(world: Rc<dyn World>, split: bool, provider: Provider) -> Result<Replicas, Error> {
        #[cfg(feature = "cuda")]
        let nccl = match provider {
            Provider::Cuda { device } if split => Some(crate::dist::Nccl::new(&*world, device as usize)?),
            _ => None,
        };
        #[cfg(not(feature = "cuda"))]
        let _ = (split, provider);
        Ok(Replicas {
            world,
            #[cfg(feature = "cuda")]
            nccl,
            reduce_s: 0.0,
            reduced: 0,
        })
    }

    /// Whether this process prints and writes (process 0).
    pub fn leads(&self) -> bool {
        self.world.rank() == 0
    }

    /// This process's part of every batch.
    pub fn shard(&self) -> Shard {
        Shard { index: self.world.rank(), count: self.world.size() }
    }

    /// The examples of a global batch of `batch` that each process takes.
    pub fn local_batch(&self, batch: usize) -> Result<usize, Error> {
        let size = self.world.size();
        if !batch.is_multiple_of(size) {
            return Err(Error::Invalid(format!(
                "--batch {batch} is the batch of the whole job, split evenly across its {size} processes: give a multiple of {size}"
            )));
        }
        Ok(batch / size)
    }

    /// Replaces the gradient buckets by their average over the processes.
    pub fn average_gradients(&mut self, buckets: Buckets<'_>) -> Result<(), Error> {
        let started = Instant::now();
        match buckets {
            Buckets::Host(buckets) => buckets.into_iter().for_each(|b| crate::dist::average(&*self.world, b)),
            #[cfg(feature = "cuda")]
            Buckets::Device(buckets) => self.nccl.as_ref().expect("a split step on a GPU has NCCL").average(&buckets)?,
            #[cfg(not(feature = "cuda"))]
            Buckets::Device(_) => unreachable!("a build without CUDA keeps buckets on the host"),
        }
        self.reduce_s += started.elapsed().as_secs_f64();
        self.reduced += 1;
        Ok(())
    }

    /// A step's totals of the whole batch from this process's `local` ones, and whether any
    /// process was asked to stop (`stop` here): one all-reduce, so that every process sees the
    /// loss of the whole batch and takes the same decisions (a loss that is not finite stops
    /// every process; an interrupt stops every process at the same step).
    pub fn tally(&self, local: EpochTotals, stop: bool) -> (EpochTotals, bool) {
        if self.world.size() == 1 {
            return (local, stop);
        }
        // Counts are exact in f64 up to 2^53.
        let mut sums = [local.loss_sum, local.correct as f64, local.seen as f64, f64::from(u8::from(stop))];
        self.world.all_reduce_sum_f64(&mut sums);
        (EpochTotals { loss_sum: sums[0], correct: sums[1] as usize, seen: sums[2] as usize }, sums[3] > 0.0)
    }

    /// Whether any process says `yes`.
    pub fn anyone(&self, yes: bool) -> bool {
        let mut count = [u64::from(yes)];
        self.world.all_reduce_sum_u64(&mut count);
        count[0] > 0
    }

    /// Averages the engine's running statistics (packed as `running`) over the processes and puts
    /// them back, so that every replica evaluates, saves and goes on with the same.
    pub fn sync_running(&self, engine: &mut StepEngine) -> Result<(), Error> {
        if self.world.size() > 1 {
            let running = engine.with_state(|state| state.iter().find(|t| t.name == RUNNING).map(|t| t.data.to_vec()))?;
            if let Some(mut values) = running {
                crate::dist::average(&*self.world, &mut values);
                engine.set_state(RUNNING, values)?;
            }
        }
        Ok(())
    }

    /// The share of the job's steps' time spent averaging gradients, per step: (seconds, share).
    pub fn reduce_per_step(&self, step_s: f64) -> (f64, f64) {
        let per_step = self.reduce_s / self.reduced.max(1) as f64;
        (per_step, self.reduce_s / step_s.max(1e-9))
    }
}
