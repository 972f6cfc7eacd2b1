//! Top-1, top-5 and the cross-entropy of the evaluation graph over a data split.

use crate::data::{batches, open, DataError, DataSpec, LoaderConfig, Shard, Source, Split, Transform};
use crate::dist::World;
use crate::driver::Compiled;
use crate::error::Error;
use crate::interrupt::Interrupt;
use crate::ir::preprocessing::{per_channel, Interpolation, Preprocessing};
use crate::ir::{Graph, ParamRole};
use crate::runtime::images;
use crate::runtime::session::{Model, SessionConfig};
use crate::runtime::tensor::{BoundRun, Feed};
use crate::weights::Tensor;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One split of a data set with its standard transform, as the loader reads it.
#[derive(Clone)]
pub struct Examples {
    pub source: Arc<dyn Source>,
    pub transform: Arc<Transform>,
    /// At most this many examples (quick runs, tests).
    pub limit: Option<usize>,
}

impl Examples {
    /// `split` of `spec`, transformed (augmented for training) to the network's input size.
    pub fn open(spec: &DataSpec, split: Split, graph: &Graph, limit: Option<usize>) -> Result<Examples, Error> {
        let shape = &graph.shape(graph.input).0;
        let transform = declared(spec.default_transform(shape[0], shape[1], shape[2], split == Split::Train), &graph.preprocessing);
        Ok(Examples { source: Arc::from(open(spec, split)?), transform: Arc::new(transform), limit })
    }

    /// The examples an epoch reads.
    pub fn per_epoch(&self) -> usize {
        self.limit.map_or(self.source.len(), |l| l.min(self.source.len()))
    }
}

/// The data set's transform with what the network's `input` line declares in its place.
fn declared(transform: Transform, pre: &Preprocessing) -> Transform {
    let floats = |v: &Vec<f64>| per_channel(v, transform.channels).into_iter().map(|x| x as f32).collect();
    Transform {
        mean: pre.mean.as_ref().map_or(transform.mean.clone(), floats),
        std: pre.std.as_ref().map_or(transform.std.clone(), floats),
        crop_pct: pre.crop.map_or(transform.crop_pct, |c| c as f32),
        interpolation: match pre.interpolation {
            Some(Interpolation::Bilinear) => images::Interpolation::Bilinear,
            Some(Interpolation::Bicubic) => images::Interpolation::Bicubic,
            None => transform.interpolation,
        },
        ..transform
    }
}

pub struct Evaluation {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub examples: usize,
}

/// The evaluation graph in a session, and the names and shapes it is fed.
pub struct Evaluator {
    model: Model,
    /// The parameters and running statistics the graph takes as inputs.
    params: Vec<(String, Vec<usize>)>,
    input: Vec<usize>,
    classes: usize,
    /// Stops an evaluation between batches with `Error::Interrupted` (no run to name).
    interrupt: Interrupt,
}

impl Evaluator {
    pub fn new(compiled: &Compiled, session: SessionConfig) -> Result<Evaluator, Error> {
        let graph = &compiled.graph;
        let model = crate::onnx::emit::emit_eval(graph, &compiled.sources, None).map_err(Error::Lowering)?;
        let model = Model::from_bytes(prost::Message::encode_to_vec(&model), session)?;
        let params = crate::report::params::param_list(graph)
            .into_iter()
            .filter(|(_, p)| p.role.is_trainable() || matches!(p.role, ParamRole::RunningMean | ParamRole::RunningVar))
            .map(|(name, spec)| (name, spec.shape))
            .collect();
        Ok(Evaluator { model, params, input: graph.shape(graph.input).0.clone(), classes: super::classes(graph), interrupt: Interrupt::default() })
    }

    /// Evaluations stop between batches when `interrupt` is asked.
    #[must_use]
    pub fn stopping_on(self, interrupt: &Interrupt) -> Evaluator {
        Evaluator { interrupt: interrupt.clone(), ..self }
    }

    /// The parameters `weights` (by name) bound to the graph: they go to the device once per
    /// evaluation, not once per batch.
    fn bind(&mut self, weights: &BTreeMap<String, Tensor>) -> Result<BoundRun<'_>, Error> {
        let params = self
            .params
            .iter()
            .map(|(name, shape)| {
                let t = weights.get(name).ok_or_else(|| Error::Invalid(format!("no value for `{name}` (parameters of another network?)")))?;
                Ok((name.clone(), Feed::F32(shape.clone(), t.data.clone())))
            })
            .collect::<Result<_, Error>>()?;
        Ok(BoundRun::new(&mut self.model, params, &["logits"])?)
    }

    /// The classes the network outputs.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Evaluates the parameters `weights` (by name) on `examples`, `batch` at a time; each
    /// process of `world` evaluates its part of every batch, and the counts are summed.
    pub fn evaluate(
        &mut self,
        weights: &BTreeMap<String, Tensor>,
        examples: &Examples,
        batch: usize,
        workers: usize,
        world: &dyn World,
    ) -> Result<Evaluation, Error> {
        let shard = Shard { index: world.rank(), count: world.size() };
        let cfg = LoaderConfig { shard, ..loader_config(batch, workers, examples.limit) };
        let (input, classes, interrupt) = (self.input.clone(), self.classes, self.interrupt.clone());
        let mut bound = self.bind(weights)?;
        let (mut loss, mut top1, mut top5, mut n) = (0.0f64, 0usize, 0usize, 0usize);
        for b in batches(examples.source.clone(), examples.transform.clone(), &cfg) {
            if interrupt.requested() {
                return Err(Error::Interrupted(None));
            }
            let b = b?;
            if b.len == 0 {
                continue; // this process's part of a last batch smaller than the world
            }
            let outputs = bound.run(vec![("images".to_string(), Feed::F32([vec![b.len], input.clone()].concat(), b.images))])?;
            let logits = &outputs.iter().find(|o| o.0 == "logits").ok_or_else(|| Error::Lowering("the evaluation graph has no logits".into()))?.2;
            for (row, label) in rows(logits, &b.labels, classes)? {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let lse = f64::from(m) + row.iter().map(|&v| f64::from(v - m).exp()).sum::<f64>().ln();
                loss += lse - f64::from(row[label]);
            }
            top1 += top_k_hits(logits, &b.labels, classes, 1)?;
            top5 += top_k_hits(logits, &b.labels, classes, 5.min(classes))?;
            n += b.len;
        }
        // data parallel: the counts of every process.
        let mut sum = [loss];
        world.all_reduce_sum_f64(&mut sum);
        let mut counts = [top1 as u64, top5 as u64, n as u64];
        world.all_reduce_sum_u64(&mut counts);
        let (loss, [top1, top5, n]) = (sum[0], counts.map(|c| c as usize));
        if n == 0 {
            return Err(DataError::Invalid("the validation split is empty".into()).into());
        }
        Ok(Evaluation { loss: loss / n as f64, top1: top1 as f64 / n as f64, top5: top5 as f64 / n as f64, examples: n })
    }
}

/// One loader pass over an evaluation split, in source order.
fn loader_config(batch: usize, workers: usize, limit: Option<usize>) -> LoaderConfig {
    LoaderConfig { batch, shuffle: false, seed: 0, epoch: 0, workers, drop_last: false, prefetch: 4, limit, start_batch: 0, shard: Shard::WHOLE }
}

/// Each example's class probabilities (the softmax averaged over its crops) and its label.
pub struct Probabilities {
    /// `labels.len()` x `classes`.
    pub values: Vec<f32>,
    pub labels: Vec<i64>,
    pub classes: usize,
}

impl Probabilities {
    /// Top-1, top-5 and the cross-entropy (-ln of the label's probability) of these probabilities.
    ///
    /// # Errors
    /// No examples, or a label that is not a class.
    pub fn scores(&self) -> Result<Evaluation, Error> {
        let n = self.labels.len();
        if n == 0 {
            return Err(DataError::Invalid("the validation split is empty".into()).into());
        }
        let loss = rows(&self.values, &self.labels, self.classes)?.map(|(row, label)| -f64::from(row[label]).max(f64::MIN_POSITIVE).ln()).sum::<f64>();
        let top1 = top_k_hits(&self.values, &self.labels, self.classes, 1)?;
        let top5 = top_k_hits(&self.values, &self.labels, self.classes, 5.min(self.classes))?;
        Ok(Evaluation { loss: loss / n as f64, top1: top1 as f64 / n as f64, top5: top5 as f64 / n as f64, examples: n })
    }

    /// The ensemble of `members` (the same examples, in the same order): their probabilities
    /// averaged (in f64, rounded to f32).
    ///
    /// # Errors
    /// Members of different class counts or examples.
    pub fn average(members: &[&Probabilities]) -> Result<Probabilities, Error> {
        let first = members.first().ok_or_else(|| Error::Invalid("an ensemble of no members".into()))?;
        if let Some(other) = members.iter().find(|m| m.classes != first.classes || m.labels != first.labels) {
            return Err(Error::Invalid(format!(
                "the members do not agree: {} classes and {} examples against {} classes and {} examples",
                first.classes,
                first.labels.len(),
                other.classes,
                other.labels.len()
            )));
        }
        let k = members.len() as f64;
        let values = (0..first.values.len()).map(|i| (members.iter().map(|m| f64::from(m.values[i])).sum::<f64>() / k) as f32).collect();
        Ok(Probabilities { values, labels: first.labels.clone(), classes: first.classes })
    }
}

impl Evaluator {
    /// The probabilities of the parameters `weights` on `examples` (whose transform may make
    /// several crops of each image: their softmax is averaged), `batch` images at a time (each
    /// with all its crops); `progress` is told each batch's images.
    pub fn probabilities(
        &mut self,
        weights: &BTreeMap<String, Tensor>,
        examples: &Examples,
        batch: usize,
        workers: usize,
        progress: &dyn Fn(usize),
    ) -> Result<Probabilities, Error> {
        let cfg = loader_config(batch, workers, examples.limit);
        let crops = examples.transform.crops.count();
        let (input, classes, interrupt) = (self.input.clone(), self.classes, self.interrupt.clone());
        let mut bound = self.bind(weights)?;
        let (mut values, mut labels) = (Vec::new(), Vec::new());
        for b in batches(examples.source.clone(), examples.transform.clone(), &cfg) {
            if interrupt.requested() {
                return Err(Error::Interrupted(None));
            }
            let b = b?;
            let outputs = bound.run(vec![("images".to_string(), Feed::F32([vec![b.len * crops], input.clone()].concat(), b.images))])?;
            let logits = &outputs.iter().find(|o| o.0 == "logits").ok_or_else(|| Error::Lowering("the evaluation graph has no logits".into()))?.2;
            if logits.len() != b.len * crops * classes {
                return Err(Error::Invalid(format!("{} logits are not {} crops of {classes} classes", logits.len(), b.len * crops)));
            }
            for image in logits.chunks(crops * classes) {
                let mut mean = vec![0.0f64; classes];
                for row in image.chunks(classes) {
                    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let exp: Vec<f64> = row.iter().map(|&v| f64::from(v - m).exp()).collect();
                    let sum: f64 = exp.iter().sum();
                    for (acc, e) in mean.iter_mut().zip(exp) {
                        *acc += e / sum / crops as f64;
                    }
                }
                values.extend(mean.into_iter().map(|p| p as f32));
            }
            labels.extend(b.labels);
            progress(b.len);
        }
        Ok(Probabilities { values, labels, classes })
    }
}

/// How many of the examples have their label among the `k` highest logits.
///
/// # Errors
/// As [`rows`].
pub fn top_k_hits(logits: &[f32], labels: &[i64], classes: usize, k: usize) -> Result<usize, Error> {
    Ok(rows(logits, labels, classes)?
        .filter(|&(row, label)| {
            let target = row[label];
            // Ties count against the example: any other class with a logit at least as high ranks above it.
            row.iter().enumerate().filter(|&(j, &v)| j != label && v >= target).count() < k
        })
        .count())
}

/// Each example's row of `classes` logits with its label, checked: one row per label, every
/// label a class of the rows.
///
/// # Errors
/// Logits that are not one row per label, or a label that is not below `classes` (data with more
/// classes than the network has).
fn rows<'a>(logits: &'a [f32], labels: &'a [i64], classes: usize) -> Result<impl Iterator<Item = (&'a [f32], usize)>, Error> {
    if classes == 0 || Some(logits.len()) != labels.len().checked_mul(classes) {
        return Err(Error::Invalid(format!("{} logits are not {} examples of {classes} classes", logits.len(), labels.len())));
    }
    if let Some(&label) = labels.iter().find(|&&l| !(0..classes as i64).contains(&l)) {
        return Err(Error::Invalid(format!("label {label} is not a class of a network with {classes} classes")));
    }
    Ok(logits.chunks(classes).zip(labels).map(|(row, &label)| (row, label as usize)))
}
