//! Batches of transformed examples, made by worker threads ahead of the consumer and delivered
//! in order. What a batch holds depends only on the source, the transform, the seed, the epoch
//! and the batch number: the order of an epoch on (seed, epoch), each example's augmentation on
//! (seed, epoch, example index); never on the number of workers or their timing, so a run
//! resumed at batch k (`start_batch`) sees exactly the batches of an uninterrupted one. With a
//! `shard` (data-parallel training), a process takes its part of each of those batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::{DataError, Source, Transform};
use crate::rng::Rng;

/// Stream names, so that the order and the augmentation never share random numbers.
const ORDER_STREAM: u64 = 1;
const AUGMENT_STREAM: u64 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Examples per batch.
    pub batch: usize,
    /// A new order every epoch (else source order).
    pub shuffle: bool,
    pub seed: u64,
    pub epoch: u64,
    /// Threads that read and transform (0 counts as 1).
    pub workers: usize,
    /// Leave out a last, short batch.
    pub drop_last: bool,
    /// Finished batches kept waiting for the consumer (rounded up to a multiple of `workers`);
    /// each worker also has one in progress.
    pub prefetch: usize,
    /// At most this many examples, spread evenly over the source (so that a folder sorted by
    /// class still gives every class), the same ones every epoch.
    pub limit: Option<usize>,
    /// The first batch to deliver: a run resumed mid-epoch starts at the batch it had reached.
    pub start_batch: usize,
    /// Which part of each batch to deliver (the whole batch by default).
    pub shard: Shard,
}

/// Part `index` of `count` equal, contiguous parts of every batch: the examples of a batch of
/// `len` at positions `index * len / count .. (index + 1) * len / count` (rounded down). The
/// parts of the processes of a data-parallel job are disjoint and cover the batch, and which
/// examples a batch holds does not depend on how it is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole batch.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// This part's positions in a batch of `len`.
    #[must_use]
    pub fn range(&self, len: usize) -> std::ops::Range<usize> {
        self.index * len / self.count..(self.index + 1) * len / self.count
    }
}

impl Default for LoaderConfig {
    fn default() -> LoaderConfig {
        LoaderConfig {
            batch: 32,
            shuffle: false,
            seed: 0,
            epoch: 0,
            workers: 1,
            drop_last: false,
            prefetch: 2,
            limit: None,
            start_batch: 0,
            shard: Shard::WHOLE,
        }
    }
}

/// Consecutive transformed examples.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `len` x channels x height x width.
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    pub len: usize,
    /// The batch's number in the epoch, from 0.
    pub index: usize,
}

/// The number of batches in a whole epoch of a source of `examples` examples (`start_batch`
/// aside).
#[must_use]
pub fn batch_count(examples: usize, cfg: &LoaderConfig) -> usize {
    let n = cfg.limit.map_or(examples, |limit| limit.min(examples));
    let batch = cfg.batch.max(1);
    if cfg.drop_last {
        n / batch
    } else {
        n.div_ceil(batch)
    }
}

/// The source indices of an epoch, in the order they are delivered.
fn epoch_order(examples: usize, cfg: &LoaderConfig) -> Vec<usize> {
    let mut order: Vec<usize> = match cfg.limit {
        Some(limit) if limit < examples => (0..limit).map(|i| (i as u128 * examples as u128 / limit as u128) as usize).collect(),
        _ => (0..examples).collect(),
    };
    if cfg.shuffle {
        Rng::keyed(&[cfg.seed, cfg.epoch, ORDER_STREAM]).shuffle(&mut order);
    }
    order
}

/// The batches of one epoch from `cfg.start_batch` on, as an iterator. Settings that cannot work
/// (a zero batch, an invalid transform) come out as its only item, an error; an error while
/// reading comes out in its batch's place and ends the epoch. Dropping the loader stops its
/// threads (each finishes at most the example it is on).
#[must_use]
pub fn batches(source: Arc<dyn Source>, transform: Arc<Transform>, cfg: &LoaderConfig) -> Loader {
    let mut loader = Loader {
        receivers: Vec::new(),
        threads: Vec::new(),
        stop: Arc::new(AtomicBool::new(false)),
        first: cfg.start_batch,
        next: cfg.start_batch,
        end: 0,
        error: None,
    };
    if cfg.batch == 0 {
        loader.error = Some(DataError::Invalid("loader: the batch size is 0".to_owned()));
        return loader;
    }
    if let Err(e) = transform.check() {
        loader.error = Some(e);
        return loader;
    }
    loader.end = batch_count(source.len(), cfg);
    let plan = Arc::new(Plan { order: epoch_order(source.len(), cfg), batch: cfg.batch, shard: cfg.shard, seed: cfg.seed, epoch: cfg.epoch });
    let workers = cfg.workers.max(1).min(loader.end.saturating_sub(cfg.start_batch));
    let depth = cfg.prefetch.div_ceil(workers.max(1));
    for w in 0..workers {
        let (tx, rx) = sync_channel(depth);
        let (source, transform, plan, stop) = (Arc::clone(&source), Arc::clone(&transform), Arc::clone(&plan), Arc::clone(&loader.stop));
        let (first, end) = (cfg.start_batch + w, loader.end);
        loader.threads.push(std::thread::spawn(move || work(&*source, &transform, &plan, &stop, (first..end).step_by(workers), &tx)));
        loader.receivers.push(rx);
    }
    loader
}

/// What every worker needs to make any batch.
struct Plan {
    order: Vec<usize>,
    batch: usize,
    shard: Shard,
    seed: u64,
    epoch: u64,
}

/// One worker: its batches in turn, until the last, an error, or the loader is dropped.
fn work(
    source: &dyn Source,
    transform: &Transform,
    plan: &Plan,
    stop: &AtomicBool,
    mine: impl Iterator<Item = usize>,
    tx: &SyncSender<Result<Batch, DataError>>,
) {
    for index in mine {
        let Some(result) = make_batch(source, transform, plan, stop, index) else { return };
        let failed = result.is_err();
        if tx.send(result).is_err() || failed {
            return;
        }
    }
}

/// Batch `index`, or `None` when stopped half-way.
fn make_batch(source: &dyn Source, transform: &Transform, plan: &Plan, stop: &AtomicBool, index: usize) -> Option<Result<Batch, DataError>> {
    let start = index.saturating_mul(plan.batch).min(plan.order.len());
    let whole = &plan.order[start..start.saturating_add(plan.batch).min(plan.order.len())];
    let examples = &whole[plan.shard.range(whole.len())];
    let size = transform.example_len();
    let mut images = match crate::runtime::tensor::zeros("a batch of images", &[examples.len(), transform.channels, transform.height, transform.width]) {
        Ok(images) => images,
        Err(e) => return Some(Err(e.into())),
    };
    let mut labels = Vec::with_capacity(examples.len());
    for (&example, out) in examples.iter().zip(images.chunks_exact_mut(size)) {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let mut rng = Rng::keyed(&[plan.seed, plan.epoch, example as u64, AUGMENT_STREAM]);
        let made = source.get(example).and_then(|(image, label)| transform.apply_into(&image, &mut rng, out).map(|()| label));
        match made {
            Ok(label) => labels.push(i64::from(label)),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(Batch { images, labels, len: examples.len(), index }))
}

/// The iterator of [`batches`].
pub struct Loader {
    /// One per worker; batch `k` comes from worker `(k - start_batch) % workers`.
    receivers: Vec<Receiver<Result<Batch, DataError>>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// `start_batch`.
    first: usize,
    next: usize,
    end: usize,
    /// A settings error, delivered first.
    error: Option<DataError>,
}

impl Loader {
    /// Stops the workers and waits for them: each notices between examples, or when it finds
    /// its channel closed.
    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.receivers.clear();
        for thread in self.threads.drain(..) {
            // A panicked worker has already been reported as an error item (its channel closed).
            let _ = thread.join();
        }
        self.next = self.end;
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        if self.next >= self.end {
            return None;
        }
        let worker = (self.next - self.first) % self.receivers.len();
        let item = match self.receivers[worker].recv() {
            Ok(Ok(batch)) => {
                self.next += 1;
                return Some(Ok(batch));
            }
            Ok(Err(e)) => e,
            Err(_) => DataError::Invalid(format!("loader: the worker making batch {} stopped (it panicked)", self.next)),
        };
        self.shut_down();
        Some(Err(item))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.saturating_sub(self.next) + usize::from(self.error.is_some());
        (0, Some(n))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Images per second of the loader alone (threads, reading, transforming) over at most
/// `batches` batches, for comparison with the training step.
///
/// # Errors
/// The loader's errors.
pub fn loader_throughput(source: Arc<dyn Source>, transform: Arc<Transform>, cfg: &LoaderConfig, batches: usize) -> Result<f64, DataError> {
    let start = Instant::now();
    let mut images = 0;
    for batch in self::batches(source, transform, cfg).take(batches) {
        images += batch?.len;
    }
    Ok(images as f64 / start.elapsed().as_secs_f64())
}
