//! Data parallelism in the training loop: the processes of the [`World`] each train a replica on
//! their part of every global batch, and meet at a few points, all here:
//! - the step splits into the gradients and the update graphs (`train::SplitStep`) when there is
//!   more than one process, and the gradient buckets are averaged between the two (MPI on the
//!   host; NCCL on the GPU);
//! - the loss is averaged each step, so every process sees the loss of the whole batch and takes
//!   the same decisions (a loss that is not finite stops every process);
//! - the running statistics (batch statistics are per replica) are averaged before every
//!   evaluation and checkpoint, and every replica goes on from that average;
//! - an epoch's training totals and the evaluation's counts are summed.
//!
//! Process 0 alone prints and writes; the data, masks and random choices of a step depend on the
//! global position only, never on the number of processes.

use super::engine::{Buckets, NamedValues, StepEngine};
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

    /// The mean loss over the whole batch, from this process's mean `loss` over its `n` examples.
    pub fn global_loss(&self, loss: f32, n: usize, batch: usize) -> f32 {
        if self.world.size() == 1 {
            return loss;
        }
        let mut sum = [f64::from(loss) * n as f64];
        self.world.all_reduce_sum_f64(&mut sum);
        (sum[0] / batch as f64) as f32
    }

    /// An epoch's training totals (loss sum, top-1 hits, examples) summed over the processes.
    pub fn sum_totals(&self, loss_sum: f64, correct: usize, seen: usize) -> (f64, usize, usize) {
        let mut loss = [loss_sum];
        self.world.all_reduce_sum_f64(&mut loss);
        let mut counts = [correct as u64, seen as u64];
        self.world.all_reduce_sum_u64(&mut counts);
        (loss[0], counts[0] as usize, counts[1] as usize)
    }

    /// The engine's state, with the running statistics (packed as `running`) averaged over the
    /// processes and put back, so that every replica evaluates, saves and goes on with the same.
    pub fn synced_state(&self, engine: &mut StepEngine) -> Result<Vec<NamedValues>, Error> {
        let mut state = engine.state()?;
        if self.world.size() > 1 {
            if let Some((name, _, values)) = state.iter_mut().find(|(name, _, _)| name == RUNNING) {
                crate::dist::average(&*self.world, values);
                engine.set_state(name, values.clone())?;
            }
        }
        Ok(state)
    }

    /// The share of the job's steps' time spent averaging gradients, per step: (seconds, share).
    pub fn reduce_per_step(&self, step_s: f64) -> (f64, f64) {
        let per_step = self.reduce_s / self.reduced.max(1) as f64;
        (per_step, self.reduce_s / step_s.max(1e-9))
    }
}
