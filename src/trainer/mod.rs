//! `incc train` and `incc eval`: training a compiled network on real data with ONNX Runtime.
//!
//! One training-step graph (see `train`) runs in a `StepEngine` that keeps the state on the
//! device; the evaluation graph measures top-1 / top-5 on the validation split after every epoch.
//! Every random choice (data order, crops, flips, dropout masks) derives from (seed, position), so
//! a checkpoint's tensors plus its position resume a run exactly.

pub mod checkpoint;
pub mod engine;
pub mod schedule;

use crate::data::{batches, loader_throughput, open, DataSpec, LoaderConfig, Source, Split, Transform};
use crate::driver::Compiled;
use crate::ir::{Graph, ParamRole};
use crate::runtime::session::{Model, Provider, SessionConfig};
use crate::runtime::tensor::{BoundRun, Feed};
use crate::train::update::{pack_all, packed_state, unpack_all, Packed};
use crate::train::{emit_training, logits_node, TrainConfig};
use crate::weights::{Tensor, Weights};
use checkpoint::{Checkpoint, Position};
use engine::{StepEngine, StepInputs};
use schedule::Schedule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Everything a run is started with; saved in every checkpoint, so `--resume` needs nothing else.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub arch: PathBuf,
    pub set: Vec<(String, String)>,
    pub input: Option<Vec<usize>>,
    pub residualize: Option<String>,
    pub data: String,
    pub epochs: u64,
    pub batch: usize,
    pub train: TrainConfig,
    pub lr: f64,
    pub schedule: Schedule,
    pub warmup_epochs: f64,
    /// Decay of the exponential moving average of the parameters used for evaluation.
    pub ema: Option<f64>,
    pub seed: u64,
    /// At most this many training / validation examples (quick runs, tests).
    pub limit_train: Option<usize>,
    pub limit_val: Option<usize>,
}

/// How this process runs it (not part of the run: a resumed run may use other values).
#[derive(Clone, Debug)]
pub struct Runner {
    /// Sessions (the step's and the evaluation's): provider, threads, CUDA options.
    pub session: SessionConfig,
    pub workers: usize,
    pub out: PathBuf,
    /// Stop after this many steps in all (a checkpoint is written): for tests and smoke runs.
    pub max_steps: Option<u64>,
    pub progress: bool,
    /// Profile the training steps run in this process into this summary (and its trace beside it).
    pub profile: Option<PathBuf>,
}

pub struct Summary {
    pub steps: u64,
    pub last_loss: f32,
    pub val_top1: Option<f64>,
    pub val_top5: Option<f64>,
    pub step_images_per_s: f64,
    pub loader_images_per_s: f64,
    /// Where the steps' time went, with `Runner::profile`.
    pub profile: Option<crate::runtime::profile::Profile>,
}

fn compile(cfg: &RunConfig) -> Result<Compiled, String> {
    let settings = crate::elab::Settings { network: None, set: cfg.set.clone(), input: cfg.input.clone() };
    let residualize = cfg.residualize.as_deref().map(crate::passes::ResidualizeSpec::parse).transpose()?;
    let passes = crate::passes::PassOptions { residualize, fold_bn: false };
    crate::driver::compile(&cfg.arch, &settings, &passes, None).map_err(|f| f.render())
}

/// The data set's standard transform, to the network's input size.
fn transform(spec: &DataSpec, graph: &Graph, train: bool) -> Transform {
    let shape = &graph.shape(graph.input).0;
    spec.default_transform(shape[0], shape[1], shape[2], train)
}

/// The values a run starts from: seeded parameters, identity running statistics, optimizer slots
/// at their starting values.
fn initial_tensors(graph: &Graph, cfg: &RunConfig) -> BTreeMap<String, Tensor> {
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

/// A dropout mask for one step: keep with probability 1 - p, scaled by 1 / (1 - p). It depends on
/// (seed, step, the dropout's index) only, so a resumed run draws the masks it would have drawn.
fn mask(seed: u64, step: u64, which: usize, p: f64, len: usize) -> Vec<f32> {
    let mut rng = crate::rng::Rng::keyed(&[seed, step, which as u64, 0x6d61_736b]);
    let keep = (1.0 / (1.0 - p)) as f32;
    (0..len).map(|_| if rng.uniform() >= p { keep } else { 0.0 }).collect()
}

/// How a run starts.
#[allow(clippy::large_enum_variant)] // made once per run
pub enum Start {
    New(RunConfig),
    /// From `<out>/last.safetensors`, with the settings it records; `epochs` extends the run.
    Resume {
        epochs: Option<u64>,
    },
}

/// Trains a new run, or resumes one.
pub fn train(start: &Start, runner: &Runner) -> Result<Summary, String> {
    std::fs::create_dir_all(&runner.out).map_err(|e| format!("cannot create `{}`: {e}", runner.out.display()))?;
    let last_path = runner.out.join("last.safetensors");
    let (cfg, mut tensors, mut position) = match start {
        Start::Resume { epochs } => {
            let c = checkpoint::load(&last_path)?;
            let saved: RunConfig = serde_json::from_str(&c.settings).map_err(|e| format!("checkpoint `{}`: unreadable settings: {e}", last_path.display()))?;
            let source = std::fs::read_to_string(&saved.arch).map_err(|e| format!("cannot read `{}`: {e}", saved.arch.display()))?;
            if source != c.source {
                return Err(format!("`{}` changed since the checkpoint was written; resuming would train another network", saved.arch.display()));
            }
            let saved = RunConfig { epochs: epochs.unwrap_or(saved.epochs).max(saved.epochs), ..saved };
            (saved, c.tensors, c.position)
        }
        Start::New(cfg) => {
            let position = Position { step: 0, epoch: 0, batch_in_epoch: 0, seed: cfg.seed, best_top1: None };
            (cfg.clone(), BTreeMap::new(), position)
        }
    };
    let compiled = compile(&cfg)?;
    let graph = &compiled.graph;
    if tensors.is_empty() {
        tensors = initial_tensors(graph, &cfg);
    }
    let source = compiled.sources.files().next().map(|(_, f)| f.text.clone()).unwrap_or_default();
    let settings_json = serde_json::to_string(&cfg).expect("serialisable");

    let spec: DataSpec = cfg.data.parse().map_err(|e: crate::data::DataError| e.to_string())?;
    let train_data: Arc<dyn Source> = Arc::from(open(&spec, Split::Train).map_err(|e| e.to_string())?);
    let val_data: Arc<dyn Source> = Arc::from(open(&spec, Split::Validation).map_err(|e| e.to_string())?);
    let classes = graph.shape(logits_node(graph)).0[0];
    if train_data.classes() > classes {
        return Err(format!(
            "the data has {} classes but the network outputs {classes}: set its class count (e.g. --set classes={})",
            train_data.classes(),
            train_data.classes()
        ));
    }

    // The step graph, compiled for the device that runs it; its state is every input it also
    // outputs as `__new`.
    let target = match runner.session.provider {
        Provider::Cpu => crate::train::Target::Cpu,
        Provider::Cuda { .. } => crate::train::Target::Gpu,
    };
    let step_config = TrainConfig { target, ema: cfg.ema.is_some(), ..cfg.train.clone() };
    let model = emit_training(graph, &compiled.sources, &step_config, Some(cfg.batch)).map_err(|d| d.render(&compiled.sources))?;
    // The step keeps slots and the average packed; checkpoints keep them per parameter.
    let packed = packed_state(graph, &step_config);
    if cfg.ema.is_some() {
        for (n, _) in crate::report::params::param_list(graph) {
            let start = tensors[&n].clone();
            tensors.entry(format!("ema/{n}")).or_insert(start);
        }
    }
    pack_all(&packed, &mut tensors)?;
    let state_names: Vec<String> =
        model.graph.as_ref().expect("graph").output.iter().filter_map(|o| o.name.strip_suffix("__new").map(str::to_string)).collect();
    // Moved out, not copied: the per-parameter tensors left behind are dropped here (the state of
    // inception_resnet_v2 with its optimizer slots is about 0.7 GB).
    let state = state_names
        .into_iter()
        .map(|n| tensors.remove(&n).map(|t| (n.clone(), t.shape, t.data)).ok_or_else(|| format!("no value for `{n}` (checkpoint of another network?)")))
        .collect::<Result<Vec<_>, String>>()?;
    drop(tensors);
    let mut engine =
        StepEngine::new(prost::Message::encode_to_vec(&model), runner.session.clone(), state, runner.profile.as_deref()).map_err(|e| e.to_string())?;
    let eval_model = crate::onnx::emit::emit_eval(graph, &compiled.sources, None)?;
    let mut evaluator = Model::from_bytes(prost::Message::encode_to_vec(&eval_model), runner.session.clone()).map_err(|e| e.to_string())?;

    let dropouts: Vec<(String, Vec<usize>, f64)> = graph
        .order()
        .into_iter()
        .filter_map(|n| match &graph.node(n).op {
            crate::ir::ops::Op::Dropout(d) => Some((format!("{}.mask", graph.node(n).name), graph.shape(n).0.clone(), d.p)),
            _ => None,
        })
        .collect();
    let input_shape = graph.shape(graph.input).0.clone();
    let train_transform = Arc::new(transform(&spec, graph, true));
    let val_transform = Arc::new(transform(&spec, graph, false));
    let examples = cfg.limit_train.map_or(train_data.len(), |l| l.min(train_data.len()));
    let steps_per_epoch = (examples / cfg.batch) as u64;
    if steps_per_epoch == 0 {
        return Err(format!("{} training examples do not make one batch of {}", examples, cfg.batch));
    }
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(runner.out.join("metrics.jsonl"))
        .map_err(|e| format!("cannot write metrics in `{}`: {e}", runner.out.display()))?;

    let mut summary =
        Summary { steps: position.step, last_loss: f32::NAN, val_top1: None, val_top5: None, step_images_per_s: 0.0, loader_images_per_s: 0.0, profile: None };
    let run_start = Instant::now();
    let mut step_time = 0.0f64;
    let mut stepped_images = 0usize;
    let mut wait_time = 0.0f64;
    while position.epoch < cfg.epochs {
        let epoch = position.epoch;
        let loader_cfg = LoaderConfig {
            batch: cfg.batch,
            shuffle: true,
            seed: cfg.seed,
            epoch,
            workers: runner.workers,
            drop_last: true,
            prefetch: 4,
            limit: cfg.limit_train,
            start_batch: position.batch_in_epoch as usize,
        };
        let bar = progress_bar(runner.progress, steps_per_epoch, position.batch_in_epoch, epoch, cfg.epochs);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut waited = Instant::now();
        for batch in batches(train_data.clone(), train_transform.clone(), &loader_cfg) {
            let batch = batch.map_err(|e| e.to_string())?;
            wait_time += waited.elapsed().as_secs_f64();
            let n = batch.len;
            let epoch_f = epoch as f64 + position.batch_in_epoch as f64 / steps_per_epoch as f64;
            let lr = cfg.schedule.lr(cfg.lr, epoch_f, cfg.epochs as f64, cfg.warmup_epochs) as f32;
            let masks = dropouts
                .iter()
                .enumerate()
                .map(|(i, (name, shape, p))| {
                    let len = n * shape.iter().product::<usize>();
                    (name.clone(), [vec![n], shape.clone()].concat(), mask(cfg.seed, position.step, i, *p, len))
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
            let started = Instant::now();
            let (loss, logits) = engine
                .step(&StepInputs {
                    images: &batch.images,
                    image_shape: [n, input_shape[0], input_shape[1], input_shape[2]],
                    labels: &batch.labels,
                    scalars,
                    masks,
                })
                .map_err(|e| e.to_string())?;
            step_time += started.elapsed().as_secs_f64();
            stepped_images += n;
            if !loss.is_finite() {
                bar.finish_and_clear();
                return Err(format!(
                    "the loss became {loss} at step {} (epoch {epoch}, batch {}): training stopped. The last good checkpoint is `{}` (step {}); lower the learning rate or clip gradients (--clip-norm) and resume from it.",
                    position.step + 1,
                    position.batch_in_epoch,
                    last_path.display(),
                    checkpoint::load(&last_path).map(|c| c.position.step.to_string()).unwrap_or_else(|_| "none written yet".into())
                ));
            }
            loss_sum += f64::from(loss) * n as f64;
            correct += top_k_hits(&logits, &batch.labels, classes, 1);
            seen += n;
            position.step += 1;
            position.batch_in_epoch += 1;
            summary.last_loss = loss;
            let line = serde_json::json!({"kind": "step", "epoch": epoch, "step": position.step, "loss": loss, "lr": lr, "elapsed_s": run_start.elapsed().as_secs_f64()});
            writeln!(metrics, "{line}").map_err(|e| e.to_string())?;
            bar.set_position(position.batch_in_epoch);
            bar.set_message(format!("loss {loss:.4}  {:.0} img/s", stepped_images as f64 / step_time.max(1e-9)));
            if runner.max_steps.is_some_and(|m| position.step >= m) {
                bar.finish_and_clear();
                save(&last_path, &engine, &packed, &position, &settings_json, &source)?;
                break;
            }
            waited = Instant::now();
        }
        bar.finish_and_clear();
        if runner.max_steps.is_some_and(|m| position.step >= m) {
            break;
        }
        position.epoch += 1;
        position.batch_in_epoch = 0;

        // Validation with the averaged parameters, if any.
        let mut eval_weights = Weights { tensors: current_state(&engine, &packed)? };
        if cfg.ema.is_some() {
            use_average(&mut eval_weights.tensors);
        }
        let val = evaluate(&mut evaluator, graph, &eval_weights, val_data.clone(), val_transform.clone(), cfg.batch, runner.workers, cfg.limit_val)?;
        let train_loss = loss_sum / seen.max(1) as f64;
        let line = serde_json::json!({
            "kind": "epoch", "epoch": position.epoch, "step": position.step,
            "train_loss": train_loss, "train_top1": correct as f64 / seen.max(1) as f64,
            "val_loss": val.loss, "val_top1": val.top1, "val_top5": val.top5,
            "lr": cfg.schedule.lr(cfg.lr, position.epoch as f64, cfg.epochs as f64, cfg.warmup_epochs),
            "images_per_s": stepped_images as f64 / step_time.max(1e-9),
            "loader_wait_s": wait_time,
        });
        writeln!(metrics, "{line}").map_err(|e| e.to_string())?;
        if runner.progress {
            eprintln!(
                "epoch {}/{}: train loss {train_loss:.4}, val loss {:.4}, top-1 {:.2}%, top-5 {:.2}%",
                position.epoch,
                cfg.epochs,
                val.loss,
                100.0 * val.top1,
                100.0 * val.top5
            );
        }
        let best = position.best_top1.is_none_or(|b| val.top1 > b);
        if best {
            position.best_top1 = Some(val.top1);
        }
        save(&last_path, &engine, &packed, &position, &settings_json, &source)?;
        if best {
            std::fs::copy(&last_path, runner.out.join("best.tmp"))
                .and_then(|_| std::fs::rename(runner.out.join("best.tmp"), runner.out.join("best.safetensors")))
                .map_err(|e| e.to_string())?;
        }
        summary.val_top1 = Some(val.top1);
        summary.val_top5 = Some(val.top5);
    }
    summary.steps = position.step;
    summary.profile = engine.end_profiling().map_err(|e| e.to_string())?;
    summary.step_images_per_s = stepped_images as f64 / step_time.max(1e-9);
    let probe = LoaderConfig {
        batch: cfg.batch,
        shuffle: true,
        seed: cfg.seed,
        epoch: 0,
        workers: runner.workers,
        drop_last: true,
        prefetch: 4,
        limit: cfg.limit_train,
        start_batch: 0,
    };
    summary.loader_images_per_s = loader_throughput(train_data, train_transform, &probe, 20).map_err(|e| e.to_string())?;
    Ok(summary)
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

/// The engine's state copied to the host, per parameter (as checkpoints keep it).
fn current_state(engine: &StepEngine, packed: &[Packed]) -> Result<BTreeMap<String, Tensor>, String> {
    let state = engine.state().map_err(|e| e.to_string())?;
    Ok(unpack_all(packed, state.into_iter().map(|(n, shape, data)| (n, Tensor { shape, data }))))
}

/// Replaces each parameter by its moving average `ema/<param>`, where there is one.
fn use_average(tensors: &mut BTreeMap<String, Tensor>) {
    let averages: Vec<(String, Tensor)> = tensors.iter().filter_map(|(k, t)| k.strip_prefix("ema/").map(|n| (n.to_string(), t.clone()))).collect();
    tensors.extend(averages);
}

fn save(path: &Path, engine: &StepEngine, packed: &[Packed], position: &Position, settings: &str, source: &str) -> Result<(), String> {
    let tensors = current_state(engine, packed)?;
    let c = Checkpoint { tensors, position: position.clone(), settings: settings.to_string(), source: source.to_string() };
    checkpoint::save(path, &c).map_err(|e| format!("cannot write the checkpoint `{}`: {e}", path.display()))
}

/// How many of the examples have their label among the `k` highest logits.
pub fn top_k_hits(logits: &[f32], labels: &[i64], classes: usize, k: usize) -> usize {
    logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let target = row[label as usize];
            // Ties count against the example: any other class with a logit at least as high ranks above it.
            row.iter().enumerate().filter(|&(j, &v)| j != label as usize && v >= target).count() < k
        })
        .count()
}

pub struct Evaluation {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub examples: usize,
}

/// Top-1, top-5 and the cross-entropy of the evaluation graph over a split.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &mut Model,
    graph: &Graph,
    weights: &Weights,
    data: Arc<dyn Source>,
    transform: Arc<Transform>,
    batch: usize,
    workers: usize,
    limit: Option<usize>,
) -> Result<Evaluation, String> {
    let classes = graph.shape(logits_node(graph)).0[0];
    let input = graph.shape(graph.input).0.clone();
    let cfg = LoaderConfig { batch, shuffle: false, seed: 0, epoch: 0, workers, drop_last: false, prefetch: 4, limit, start_batch: 0 };
    let (mut loss, mut top1, mut top5, mut n) = (0.0f64, 0usize, 0usize, 0usize);
    let params: Vec<(String, Feed)> = crate::report::params::param_list(graph)
        .into_iter()
        .filter(|(_, p)| p.role.is_trainable() || matches!(p.role, ParamRole::RunningMean | ParamRole::RunningVar))
        .map(|(name, spec)| {
            let t = weights.tensors.get(&name).ok_or_else(|| format!("no value for `{name}`"))?;
            Ok((name, Feed::F32(spec.shape, t.data.clone())))
        })
        .collect::<Result<_, String>>()?;
    // The parameters go to the device once per evaluation, not once per batch.
    let mut bound = BoundRun::new(model, params, &["logits"]).map_err(|e| e.to_string())?;
    for b in batches(data, transform, &cfg) {
        let b = b.map_err(|e| e.to_string())?;
        let outputs = bound.run(vec![("images".to_string(), Feed::F32([vec![b.len], input.clone()].concat(), b.images))]).map_err(|e| e.to_string())?;
        let logits = &outputs.iter().find(|o| o.0 == "logits").ok_or("the evaluation graph has no logits")?.2;
        for (row, &label) in logits.chunks(classes).zip(&b.labels) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = f64::from(m) + row.iter().map(|&v| f64::from(v - m).exp()).sum::<f64>().ln();
            loss += lse - f64::from(row[label as usize]);
        }
        top1 += top_k_hits(logits, &b.labels, classes, 1);
        top5 += top_k_hits(logits, &b.labels, classes, 5.min(classes));
        n += b.len;
    }
    if n == 0 {
        return Err("the validation split is empty".into());
    }
    Ok(Evaluation { loss: loss / n as f64, top1: top1 as f64 / n as f64, top5: top5 as f64 / n as f64, examples: n })
}

/// `incc eval`: a checkpoint's evaluation on a split (the EMA parameters when it has them).
pub fn eval_checkpoint(path: &Path, arch: Option<&Path>, data: &str, runner: &Runner, use_ema: bool) -> Result<(Evaluation, bool), String> {
    let c = checkpoint::load(path)?;
    let mut cfg: RunConfig = serde_json::from_str(&c.settings).map_err(|e| format!("checkpoint `{}`: unreadable settings: {e}", path.display()))?;
    if let Some(a) = arch {
        cfg.arch = a.to_path_buf();
    }
    let compiled = compile(&cfg)?;
    let graph = &compiled.graph;
    let mut weights = Weights { tensors: c.tensors };
    let with_ema = use_ema && weights.tensors.keys().any(|k| k.starts_with("ema/"));
    if with_ema {
        use_average(&mut weights.tensors);
    }
    let spec: DataSpec = data.parse().map_err(|e: crate::data::DataError| e.to_string())?;
    let val: Arc<dyn Source> = Arc::from(open(&spec, Split::Validation).map_err(|e| e.to_string())?);
    let model = crate::onnx::emit::emit_eval(graph, &compiled.sources, None)?;
    let mut evaluator = Model::from_bytes(prost::Message::encode_to_vec(&model), runner.session.clone()).map_err(|e| e.to_string())?;
    let e = evaluate(&mut evaluator, graph, &weights, val, Arc::new(transform(&spec, graph, false)), cfg.batch, runner.workers, cfg.limit_val)?;
    Ok((e, with_ema))
}
