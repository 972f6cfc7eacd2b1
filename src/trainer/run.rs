//! A run in progress, in the phases of the training loop: build the engine (`Run::build`), train
//! an epoch (`Run::epoch`, a `Run::step` per batch), checkpoint, validate and checkpoint
//! (`Run::validate_and_checkpoint`), finish (`Run::finish`). Where the processes of a
//! data-parallel job meet is marked `// data parallel:` and done by `parallel::Replicas`.

use super::checkpoint::{self, EpochTotals, Position};
use super::engine::{StepEngine, StepInputs, StepModels};
use super::evaluate::{top_k_hits, Evaluator, Examples};
use super::metrics::Metrics;
use super::parallel::Replicas;
use super::{check_classes, saved_at, use_average, Begin, RunConfig, Runner, Summary};
use crate::data::{batches, loader_throughput, Batch, DataError, DataSpec, LoaderConfig, Split};
use crate::driver::{Compiled, Failure, SourceText};
use crate::error::{Error, Saved};
use crate::ir::Graph;
use crate::runtime::session::Provider;
use crate::runtime::tensor::checked_len;
use crate::train::update::{pack_all, packed_state, unpacked_views, Packed};
use crate::train::Target;
use crate::train::{emit_split_training, emit_training, TrainConfig};
use crate::weights::{Tensor, TensorRef};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

pub(super) struct Run<'r> {
    cfg: RunConfig,
    runner: &'r Runner,
    compiled: Compiled,
    train: Examples,
    val: Examples,
    engine: StepEngine,
    evaluator: Evaluator,
    /// The processes training together.
    replicas: Replicas,
    /// How the step packs optimizer slots and averages (checkpoints keep them per parameter).
    packed: Vec<Packed>,
    dropouts: Vec<Dropout>,
    position: Position,
    steps_per_epoch: u64,
    classes: usize,
    /// `last.safetensors`, and what every checkpoint records besides the tensors.
    last: PathBuf,
    settings_json: String,
    sources: Vec<SourceText>,
    /// Written by process 0 only.
    metrics: Option<Metrics>,
    clock: Clock,
    last_loss: f32,
    last_val: Option<(f64, f64)>,
}

/// Where `Run::epoch` stopped.
pub(super) enum Reached {
    /// The epoch's last batch: it is to be validated.
    EpochEnd,
    /// `Runner::max_steps`.
    MaxSteps,
    /// `Runner::interrupt`, after the step it was asked in.
    Interrupt,
}

/// Where the time goes, over the steps run by this process.
struct Clock {
    started: Instant,
    /// Seconds inside training steps, and the images they took (in the whole job).
    step_s: f64,
    stepped: usize,
    /// Seconds spent waiting for the loader.
    wait_s: f64,
}

impl Clock {
    fn images_per_s(&self) -> f64 {
        self.stepped as f64 / self.step_s.max(1e-9)
    }
}

/// A dropout's mask input, fed from the host each step.
struct Dropout {
    input: String,
    shape: Vec<usize>,
    p: f64,
}

/// The dropouts of `graph`, in order (their index keys their masks' random streams).
fn dropouts(graph: &Graph) -> Vec<Dropout> {
    graph
        .order()
        .into_iter()
        .flat_map(|n| {
            let name = &graph.node(n).name;
            graph.node(n).op.rule().step_inputs(graph.shape(n)).into_iter().map(move |s| Dropout {
                input: crate::ir::param_name(name, s.suffix),
                shape: s.shape,
                p: s.drop,
            })
        })
        .collect()
}

/// A dropout mask for one step: keep with probability 1 - p, scaled by 1 / (1 - p). It depends on
/// (seed, step, the dropout's index) only, so a resumed run draws the masks it would have drawn.
fn mask(seed: u64, step: u64, which: usize, p: f64, len: usize) -> Vec<f32> {
    let mut rng = crate::rng::Rng::keyed(&[seed, step, which as u64, 0x6d61_736b]);
    let keep = (1.0 / (1.0 - p)) as f32;
    (0..len).map(|_| if rng.uniform() >= p { keep } else { 0.0 }).collect()
}

/// The values a run starts from: seeded parameters, identity running statistics, optimizer slots
/// at their starting values.
pub fn initial_tensors(graph: &Graph, cfg: &RunConfig) -> BTreeMap<String, Tensor> {
    let weights = crate::weights::init(graph, cfg.seed);
    let mut tensors = weights.tensors;
    for (name, spec) in crate::report::params::param_list(graph) {
        if spec.role.is_trainable() {
            for (slot, value) in cfg.train.optimizer.slots() {
                tensors.insert(format!("{name}.{slot}"), Tensor::filled(spec.shape.clone(), *value));
            }
        }
    }
    tensors
}

/// The examples each micro-batch of a process's `batch` takes (`--accumulate k`).
fn micro_batch(batch: usize, k: usize) -> Result<usize, Error> {
    match k {
        0 => Err(Error::Invalid("--accumulate must be at least 1".into())),
        _ if !batch.is_multiple_of(k) => Err(Error::Invalid(format!("--accumulate {k} must divide each process's batch of {batch} examples"))),
        _ => Ok(batch / k),
    }
}

/// The device's kernels the step is compiled for.
fn target(provider: Provider) -> Target {
    match provider {
        Provider::Cpu => Target::Cpu,
        Provider::Cuda { .. } => Target::Gpu,
    }
}

/// The step graph, compiled for the device that runs it and for this process's `batch`, in an
/// engine that holds `tensors` (the start state, per parameter) on that device; and how the step
/// packs them. With `split`, the step is two graphs with the gradients averaged between them.
fn step_engine(
    compiled: Compiled,
    cfg: &RunConfig,
    mut tensors: BTreeMap<String, Tensor>,
    runner: &Runner,
    batch: usize,
    split: bool,
) -> Result<(Compiled, StepEngine, Vec<Packed>), Error> {
    let graph = &compiled.graph;
    let step_config = TrainConfig { target: target(runner.session.provider), ema: cfg.ema.is_some(), ..cfg.train.clone() };
    let encode = |model| prost::Message::encode_to_vec(&model);
    let emitted = if split {
        emit_split_training(graph, &compiled.sources, &step_config, Some(batch)).map(|s| StepModels::Split {
            gradients: encode(s.gradients),
            update: encode(s.update),
            buckets: s.buckets.into_iter().map(|b| (b.name, b.len)).collect(),
        })
    } else {
        emit_training(graph, &compiled.sources, &step_config, Some(batch)).map(|m| StepModels::Single(encode(m)))
    };
    let models = match emitted {
        Ok(models) => models,
        Err(diagnostic) => return Err(Failure::of(compiled.sources, diagnostic).into()),
    };
    let packed = packed_state(graph, &step_config);
    let unfit = |e: String| Error::Invalid(format!("the start state does not fit the training step: {e} (a checkpoint of another network?)"));
    if cfg.ema.is_some() {
        for (n, _) in crate::report::params::param_list(graph) {
            let start = tensors.get(&n).cloned().ok_or_else(|| unfit(format!("no value for `{n}`")))?;
            tensors.entry(format!("ema/{n}")).or_insert(start);
        }
    }
    pack_all(&packed, &mut tensors).map_err(unfit)?;
    // The state is every value the step updates: the packed values and the parameters. Moved
    // out, not copied: the per-parameter tensors left behind are dropped here (the state of
    // inception_resnet_v2 with its optimizer slots is about 0.7 GB).
    let trainable = crate::report::params::param_list(graph).into_iter().filter(|(_, p)| p.role.is_trainable()).map(|(n, _)| n);
    let state = trainable
        .chain(packed.iter().map(|p| p.name.clone()))
        .map(|n| tensors.remove(&n).map(|t| (n.clone(), t.shape, t.data)).ok_or_else(|| unfit(format!("no value for `{n}`"))))
        .collect::<Result<Vec<_>, Error>>()?;
    drop(tensors);
    let engine = StepEngine::new(models, runner.session.clone(), state, runner.profile.as_deref())?;
    Ok((compiled, engine, packed))
}

impl<'r> Run<'r> {
    /// Opens the data (checking what can be checked before training: headers, counts, classes,
    /// sizes), puts the state (`None`: seeded) on the device, and opens the metrics.
    pub(super) fn build(begin: Begin, runner: &'r Runner) -> Result<Run<'r>, Error> {
        let Begin { cfg, compiled, state, position, resumed } = begin;
        let sources = compiled.texts();
        let settings_json = serde_json::to_string(&cfg).expect("serialisable");
        let spec: DataSpec = cfg.data.parse()?;
        let train = Examples::open(&spec, Split::Train, &compiled.graph, cfg.limit_train)?;
        let val = Examples::open(&spec, Split::Validation, &compiled.graph, cfg.limit_val)?;
        for split in [&train, &val] {
            check_classes(split, &compiled.graph)?;
        }
        // The validation split is read only after a whole epoch: what can fail early does.
        val.source.check()?;
        let input = &compiled.graph.shape(compiled.graph.input).0;
        checked_len("a batch of images (--batch)", &[cfg.batch, input[0], input[1], input[2]])?;
        let classes = super::classes(&compiled.graph);
        let steps_per_epoch = (train.per_epoch() / cfg.batch) as u64;
        if steps_per_epoch == 0 {
            return Err(DataError::Invalid(format!("{} training examples do not make one batch of {}", train.per_epoch(), cfg.batch)).into());
        }
        if position.batch_in_epoch > steps_per_epoch {
            let (at, n) = (position.batch_in_epoch, steps_per_epoch);
            return Err(Error::Invalid(format!("the checkpoint is at batch {at} of an epoch, but an epoch of this data has {n} batches")));
        }
        let state = state.unwrap_or_else(|| initial_tensors(&compiled.graph, &cfg));
        // data parallel: this process's replica trains on its part of each global batch.
        let split = runner.world.size() > 1 || runner.split || runner.accumulate > 1;
        if runner.accumulate > 1 && runner.session.provider != Provider::Cpu {
            return Err(Error::Invalid(crate::trainer::engine::ACCUMULATE_ON_CPU.into()));
        }
        let replicas = Replicas::new(runner.world.clone(), split, runner.session.provider)?;
        let local_batch = replicas.local_batch(cfg.batch)?;
        let micro_batch = micro_batch(local_batch, runner.accumulate)?;
        let (compiled, engine, packed) = step_engine(compiled, &cfg, state, runner, micro_batch, split)?;
        let evaluator = Evaluator::new(&compiled, runner.session.clone())?.stopping_on(&runner.interrupt);
        // data parallel: every process has read the run folder before process 0 writes to it.
        runner.world.barrier();
        let path = runner.out.join("metrics.jsonl");
        let metrics = match (&resumed, replicas.leads()) {
            (_, false) => None,
            (None, true) => Some(Metrics::create(&path)?),
            (Some(_), true) => Some(Metrics::resume(&path, &position)?),
        };
        let mut run = Run {
            dropouts: dropouts(&compiled.graph),
            cfg,
            runner,
            compiled,
            train,
            val,
            engine,
            evaluator,
            replicas,
            packed,
            position,
            steps_per_epoch,
            classes,
            last: runner.out.join(super::LAST),
            settings_json,
            sources,
            metrics,
            clock: Clock { started: Instant::now(), step_s: 0.0, stepped: 0, wait_s: 0.0 },
            last_loss: f32::NAN,
            last_val: None,
        };
        if let Some(changes) = resumed {
            run.resumed(&changes)?;
        }
        Ok(run)
    }

    /// Records a resumption in the metrics, with the settings it changed (also said on stderr).
    fn resumed(&mut self, changes: &[super::Change]) -> Result<(), Error> {
        let p = &self.position;
        if !changes.is_empty() && self.replicas.leads() {
            let said: Vec<String> = changes.iter().map(|c| format!("{} {} (was {})", c.option, c.to, c.from)).collect();
            eprintln!("resuming at step {} with {}", p.step, said.join(", "));
        }
        let changed: serde_json::Map<String, serde_json::Value> =
            changes.iter().map(|c| (c.option.to_string(), serde_json::json!({"from": c.from, "to": c.to}))).collect();
        let line = serde_json::json!({"kind": "resume", "epoch": p.epoch, "step": p.step, "batch_in_epoch": p.batch_in_epoch, "changed": changed});
        self.log(line)
    }

    /// Whether the run has trained all its epochs.
    pub(super) fn finished(&self) -> bool {
        self.position.epoch >= self.cfg.epochs
    }

    /// Whether `Runner::max_steps` says to stop here.
    pub(super) fn at_max_steps(&self) -> bool {
        self.runner.max_steps.is_some_and(|m| self.position.step >= m)
    }

    /// The training loader of `epoch`, from its batch `start_batch`.
    fn loader(&self, epoch: u64, start_batch: usize) -> LoaderConfig {
        LoaderConfig {
            batch: self.cfg.batch,
            shuffle: true,
            seed: self.cfg.seed,
            epoch,
            workers: self.runner.workers,
            drop_last: true,
            prefetch: 4,
            limit: self.cfg.limit_train,
            start_batch,
            shard: self.replicas.shard(),
        }
    }

    /// Trains the rest of the current epoch, a step per batch (its totals kept in the position);
    /// stops early at `max_steps` or an interrupt, and writes a checkpoint every
    /// `Runner::checkpoint_every` steps. A failure to read the data keeps the steps done: a
    /// checkpoint is written at the last of them (by one process; a data-parallel job keeps its
    /// last checkpoint).
    pub(super) fn epoch(&mut self) -> Result<Reached, Error> {
        let loader = self.loader(self.position.epoch, self.position.batch_in_epoch as usize);
        let bar = progress_bar(
            self.runner.progress && self.replicas.leads(),
            self.steps_per_epoch,
            self.position.batch_in_epoch,
            self.position.epoch,
            self.cfg.epochs,
        );
        let mut waited = Instant::now();
        // data parallel: every process stops at the same step, when any was asked to.
        if self.replicas.anyone(self.runner.interrupt.requested()) {
            return Ok(Reached::Interrupt);
        }
        let mut reached = Reached::EpochEnd;
        for batch in batches(self.train.source.clone(), self.train.transform.clone(), &loader) {
            let outcome = batch.map_err(Error::from).and_then(|batch| {
                self.clock.wait_s += waited.elapsed().as_secs_f64();
                self.step(&batch)
            });
            let (loss, interrupted) = match outcome {
                Ok(stepped) => stepped,
                Err(e @ Error::Data(_)) => {
                    bar.finish_and_clear();
                    return Err(self.kept(e));
                }
                Err(e) => {
                    bar.finish_and_clear();
                    return Err(e);
                }
            };
            bar.set_position(self.position.batch_in_epoch);
            bar.set_message(format!("loss {loss:.4}  {:.0} img/s{}", self.clock.images_per_s(), self.reduce_note()));
            if self.at_max_steps() {
                reached = Reached::MaxSteps;
            } else if interrupted {
                reached = Reached::Interrupt;
            } else if self.position.batch_in_epoch < self.steps_per_epoch && self.runner.checkpoint_every.is_some_and(|n| self.position.step.is_multiple_of(n))
            {
                self.checkpoint()?;
            }
            if !matches!(reached, Reached::EpochEnd) {
                break;
            }
            waited = Instant::now();
        }
        bar.finish_and_clear();
        Ok(reached)
    }

    /// `error`, after a checkpoint of the steps done (when it can be written): the run is kept.
    /// A process of a data-parallel job fails alone: the others are in a collective that a
    /// checkpoint would not match, so the job ends and its last checkpoint stays.
    fn kept(&mut self, error: Error) -> Error {
        if self.runner.world.size() > 1 {
            return error;
        }
        match self.checkpoint() {
            Ok(()) => Error::Kept { source: Box::new(error), at: self.saved() },
            Err(_) => error,
        }
    }

    /// Where the last checkpoint holds the run.
    pub(super) fn saved(&self) -> Saved {
        saved_at(&self.position, &self.runner.out)
    }

    /// One training step on `batch` (this process's part of the global batch), its totals added
    /// to the epoch's: returns the loss of the whole batch, and whether the run was asked to stop
    /// (by any process). A loss that is not finite stops the run, keeping the last checkpoint.
    fn step(&mut self, batch: &Batch) -> Result<(f32, bool), Error> {
        let (cfg, position, n) = (&self.cfg, &self.position, batch.len);
        let epoch_f = position.epoch as f64 + position.batch_in_epoch as f64 / self.steps_per_epoch as f64;
        let lr = cfg.schedule.lr(cfg.lr, epoch_f, cfg.epochs as f64, cfg.warmup_epochs) as f32;
        // data parallel: the masks of the whole batch, of which this process takes its examples'.
        let rows = self.replicas.shard().range(cfg.batch);
        let masks: Vec<(String, Vec<usize>, Vec<f32>)> = self
            .dropouts
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let per_example = d.shape.iter().product::<usize>();
                let whole = mask(cfg.seed, position.step, i, d.p, cfg.batch * per_example);
                (d.input.clone(), [vec![n], d.shape.clone()].concat(), whole[rows.start * per_example..rows.end * per_example].to_vec())
            })
            .collect();
        let mut scalars = vec![("learning_rate", lr)];
        if cfg.train.optimizer.needs_step() {
            scalars.push(("step", position.step as f32 + 1.0));
        }
        if let Some(decay) = cfg.ema {
            // The average starts fast (TensorFlow's `num_updates`): its decay ramps up to `decay`.
            let done = (position.step + 1) as f64;
            scalars.push(("ema_decay", decay.min((1.0 + done) / (10.0 + done)) as f32));
        }
        let input = &self.compiled.graph.shape(self.compiled.graph.input).0;
        let started = Instant::now();
        // --accumulate: the process's batch in micro-batches of consecutive examples.
        let k = self.runner.accumulate;
        let (m, pixels) = (n / k, input.iter().product::<usize>());
        let micro: Vec<StepInputs<'_>> = (0..k)
            .map(|i| StepInputs {
                images: &batch.images[i * m * pixels..(i + 1) * m * pixels],
                image_shape: [m, input[0], input[1], input[2]],
                labels: &batch.labels[i * m..(i + 1) * m],
                scalars: scalars.clone(),
                masks: masks
                    .iter()
                    .map(|(name, shape, values)| {
                        let per = values.len() / n;
                        (name.clone(), [&[m], &shape[1..]].concat(), values[i * m * per..(i + 1) * m * per].to_vec())
                    })
                    .collect(),
            })
            .collect();
        // data parallel: the gradients are averaged between the step's two graphs.
        let replicas = &mut self.replicas;
        let (local_loss, logits) = self.engine.step(&micro, &mut |buckets| replicas.average_gradients(buckets))?;
        self.clock.step_s += started.elapsed().as_secs_f64();
        self.clock.stepped += cfg.batch;
        let local = EpochTotals { loss_sum: f64::from(local_loss) * n as f64, correct: top_k_hits(&logits, &batch.labels, self.classes, 1)?, seen: n };
        // data parallel: the step's totals of the whole batch, and whether any process was asked to stop.
        let (step, interrupted) = self.replicas.tally(local, self.runner.interrupt.requested());
        let loss = (step.loss_sum / step.seen.max(1) as f64) as f32;
        if !loss.is_finite() {
            return Err(Error::Diverged {
                loss,
                step: position.step + 1,
                epoch: position.epoch,
                batch: position.batch_in_epoch,
                checkpoint: self.last.clone(),
                checkpoint_step: checkpoint::load(&self.last).ok().map(|c| c.position.step),
            });
        }
        self.position.step += 1;
        self.position.batch_in_epoch += 1;
        let totals = &mut self.position.totals;
        totals.loss_sum += step.loss_sum;
        totals.correct += step.correct;
        totals.seen += step.seen;
        self.last_loss = loss;
        let line = serde_json::json!({
            "kind": "step", "epoch": self.position.epoch, "step": self.position.step, "loss": loss, "lr": lr,
            "elapsed_s": self.clock.started.elapsed().as_secs_f64(),
        });
        self.log(line)?;
        Ok((loss, interrupted))
    }

    /// A line of `metrics.jsonl` (process 0 writes it).
    fn log(&mut self, line: serde_json::Value) -> Result<(), Error> {
        self.metrics.as_mut().map_or(Ok(()), |m| m.line(line))
    }

    /// The time spent averaging gradients per step, when the step does.
    fn reduce_note(&self) -> String {
        match self.replicas.reduced {
            0 => String::new(),
            _ => format!("  all-reduce {:.1} ms/step", 1e3 * self.replicas.reduce_per_step(self.clock.step_s).0),
        }
    }

    /// Closes the epoch: writes the checkpoint (so that no failure or interrupt in the validation
    /// loses the epoch: a resumed run validates it), validates (with the averaged parameters, if
    /// any), logs, and writes the checkpoint of the next epoch's start, copied to
    /// `best.safetensors` when its top-1 is the best so far.
    pub(super) fn validate_and_checkpoint(&mut self) -> Result<(), Error> {
        self.checkpoint()?;
        let mut weights = self.current_state()?;
        if self.cfg.ema.is_some() {
            use_average(&mut weights);
        }
        let val = match self.evaluator.evaluate(&weights, &self.val, self.cfg.batch, self.runner.workers, &*self.runner.world) {
            Ok(val) => val,
            Err(Error::Interrupted(_)) => return Err(Error::Interrupted(Some(self.saved()))),
            Err(e) => return Err(Error::Kept { source: Box::new(e), at: self.saved() }),
        };
        let totals = std::mem::take(&mut self.position.totals);
        self.position.epoch += 1;
        self.position.batch_in_epoch = 0;
        let (cfg, position) = (&self.cfg, &self.position);
        let train_loss = totals.loss_sum / totals.seen.max(1) as f64;
        let (reduce_s, reduce_share) = self.replicas.reduce_per_step(self.clock.step_s);
        let line = serde_json::json!({
            "kind": "epoch", "epoch": position.epoch, "step": position.step,
            "train_loss": train_loss, "train_top1": totals.correct as f64 / totals.seen.max(1) as f64,
            "val_loss": val.loss, "val_top1": val.top1, "val_top5": val.top5,
            "lr": cfg.schedule.lr(cfg.lr, position.epoch as f64, cfg.epochs as f64, cfg.warmup_epochs),
            "images_per_s": self.clock.images_per_s(),
            "loader_wait_s": self.clock.wait_s,
            "processes": self.runner.world.size(),
            "allreduce_s_per_step": reduce_s, "allreduce_share": reduce_share,
        });
        if self.runner.progress && self.replicas.leads() {
            eprintln!(
                "epoch {}/{}: train loss {train_loss:.4}, val loss {:.4}, top-1 {:.2}%, top-5 {:.2}%",
                position.epoch,
                cfg.epochs,
                val.loss,
                100.0 * val.top1,
                100.0 * val.top5
            );
        }
        self.log(line)?;
        let best = self.position.best_top1.is_none_or(|b| val.top1 > b);
        if best {
            self.position.best_top1 = Some(val.top1);
        }
        self.checkpoint()?;
        if best && self.replicas.leads() {
            let best = self.runner.out.join("best.safetensors");
            crate::fsutil::copy_atomic(&self.last, &best).map_err(Error::file("write", &best))?;
        }
        self.last_val = Some((val.top1, val.top5));
        Ok(())
    }

    /// The engine's state copied to the host, per parameter (as checkpoints keep it). Data
    /// parallel: read after [`Run::checkpoint`], which averaged the replicas' running statistics.
    fn current_state(&self) -> Result<BTreeMap<String, Tensor>, Error> {
        Ok(self.engine.with_state(|state| unpacked_views(&self.packed, state).iter().map(TensorRef::to_owned).collect())?)
    }

    /// Writes `last.safetensors`: the state, the position, the settings and the source (every
    /// process takes part; process 0 writes: every process has the same). The state is written
    /// from the step's buffers, not copied first.
    pub(super) fn checkpoint(&mut self) -> Result<(), Error> {
        self.replicas.sync_running(&mut self.engine)?;
        if self.replicas.leads() {
            let (packed, position, settings, sources) = (&self.packed, &self.position, &self.settings_json, &self.sources);
            self.engine
                .with_state(|state| checkpoint::save_views(&self.last, &unpacked_views(packed, state), position, settings, sources))?
                .map_err(Error::file("write the checkpoint", &self.last))?;
        }
        // data parallel: no process goes on, or ends the job (an interrupt), while process 0 writes.
        self.runner.world.barrier();
        Ok(())
    }

    /// What the run did: steps, the last loss and validation, and the speed of the step and of
    /// the loader alone.
    pub(super) fn finish(mut self) -> Result<Summary, Error> {
        let profile = self.engine.end_profiling()?;
        let loader_images_per_s = loader_throughput(self.train.source.clone(), self.train.transform.clone(), &self.loader(0, 0), 20)?;
        Ok(Summary {
            steps: self.position.step,
            last_loss: self.last_loss,
            val_top1: self.last_val.map(|v| v.0),
            val_top5: self.last_val.map(|v| v.1),
            step_images_per_s: self.clock.images_per_s(),
            loader_images_per_s,
            processes: self.runner.world.size(),
            allreduce: (self.replicas.reduced > 0).then(|| self.replicas.reduce_per_step(self.clock.step_s)),
            profile,
        })
    }
}

fn progress_bar(show: bool, len: u64, pos: u64, epoch: u64, epochs: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}").expect("valid template").progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    bar.set_position(pos);
    bar
}
