//! `incc eval CKPT... --crops N`: each checkpoint's probabilities on the validation split,
//! averaged over the crops of each image, and the ensemble that averages the members'
//! (docs/experiments.md).

use super::evaluate::{Evaluation, Evaluator, Examples, Probabilities};
use super::{check_classes, checkpoint, classes, resume, settings, use_average, Runner};
use crate::data::{Crops, DataSpec, Split, Transform};
use crate::driver::Compiled;
use crate::error::Error;
use crate::weights::{Tensor, Weights};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A checkpoint's network and the parameters `incc eval` evaluates.
pub(super) struct Member {
    pub compiled: Compiled,
    pub tensors: BTreeMap<String, Tensor>,
    /// The moving averages replaced the parameters.
    pub averaged: bool,
    /// The run's batch size.
    pub batch: usize,
}

impl Member {
    /// The checkpoint at `path`, of the network it stores (or the file `arch`), with its
    /// averaged parameters when it has them and `use_ema`.
    pub fn load(path: &Path, arch: Option<&Path>, use_ema: bool) -> Result<Member, Error> {
        let c = checkpoint::load(path)?;
        let cfg = settings(&c.settings, path)?;
        let compiled = match arch {
            Some(a) => cfg.options().compile(a, None)?,
            None => resume::stored_network(&c, &cfg, path)?,
        };
        let mut tensors = c.tensors;
        let averaged = use_ema && tensors.keys().any(|k| k.starts_with("ema/"));
        if averaged {
            use_average(&mut tensors);
        }
        Ok(Member { compiled, tensors, averaged, batch: cfg.batch })
    }
}

/// The parameters of `graph` in the file `path`: a checkpoint of `incc train` (its moving
/// averages where it has them, as `incc eval` takes them), else a state dict by name.
pub fn checkpoint_weights(path: &Path, graph: &crate::ir::Graph) -> Result<Weights, Error> {
    let Ok(c) = checkpoint::load(path) else { return Ok(crate::weights::load(path, graph)?) };
    let mut tensors = c.tensors;
    use_average(&mut tensors);
    let tensors = crate::report::params::param_list(graph)
        .into_iter()
        .map(|(name, _)| {
            let t = tensors.remove(&name).ok_or_else(|| Error::checkpoint(path, format!("no value for `{name}` (a checkpoint of another network?)")))?;
            Ok((name, t))
        })
        .collect::<Result<_, Error>>()?;
    Ok(Weights { tensors })
}

/// One member's evaluation.
pub struct MemberReport {
    pub checkpoint: PathBuf,
    pub network: String,
    pub averaged: bool,
    pub evaluation: Evaluation,
    pub probabilities: Probabilities,
}

/// What `incc eval` measured: each member, and their ensemble when there are several.
pub struct EnsembleReport {
    pub crops: Crops,
    pub members: Vec<MemberReport>,
    pub ensemble: Option<(Evaluation, Probabilities)>,
}

/// Evaluates the checkpoints `paths` (see [`Member::load`]; `arch` only for one) on the
/// validation split of `data` with `crops` crops of each image, and their ensemble. Every
/// checkpoint is read and its classes checked before any is evaluated.
pub fn eval_ensemble(
    paths: &[PathBuf],
    arch: Option<&Path>,
    data: &str,
    runner: &Runner,
    use_ema: bool,
    limit: Option<usize>,
    crops: Crops,
) -> Result<EnsembleReport, Error> {
    if paths.is_empty() {
        return Err(Error::Usage("give at least one checkpoint".into()));
    }
    if arch.is_some() && paths.len() > 1 {
        return Err(Error::Usage("--arch names the network of one checkpoint: give one, or none to use the networks the checkpoints store".into()));
    }
    let spec: DataSpec = data.parse()?;
    let members = paths.iter().map(|p| Member::load(p, arch, use_ema)).collect::<Result<Vec<_>, _>>()?;
    let first = classes(&members[0].compiled.graph);
    if let Some((path, m)) = paths.iter().zip(&members).find(|(_, m)| classes(&m.compiled.graph) != first) {
        return Err(Error::Invalid(format!(
            "{} outputs {} classes but {} outputs {first}: the members of an ensemble must share their classes",
            path.display(),
            classes(&m.compiled.graph),
            paths[0].display()
        )));
    }
    let mut reports = Vec::with_capacity(members.len());
    for (path, m) in paths.iter().zip(members) {
        let graph = &m.compiled.graph;
        let val = Examples::open(&spec, Split::Validation, graph, limit)?;
        check_classes(&val, graph)?;
        let val = Examples { transform: Arc::new(Transform { crops, ..(*val.transform).clone() }), ..val };
        let bar = progress_bar(runner.progress, val.per_epoch(), &format!("{} ({} crops)", path.display(), crops.count()));
        // The crops of one image run in one batch: as many images as fit the run's batch.
        let images = (m.batch / crops.count()).max(1);
        let probabilities = Evaluator::new(&m.compiled, runner.session.clone())?.stopping_on(&runner.interrupt).probabilities(
            &m.tensors,
            &val,
            images,
            runner.workers,
            &|n| bar.inc(n as u64),
        )?;
        bar.finish_and_clear();
        let evaluation = probabilities.scores()?;
        reports.push(MemberReport { checkpoint: path.clone(), network: graph.name.clone(), averaged: m.averaged, evaluation, probabilities });
    }
    let ensemble = if reports.len() > 1 {
        let p = Probabilities::average(&reports.iter().map(|r| &r.probabilities).collect::<Vec<_>>())?;
        Some((p.scores()?, p))
    } else {
        None
    };
    Ok(EnsembleReport { crops, members: reports, ensemble })
}

fn progress_bar(show: bool, len: usize, prefix: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} images, {per_sec} eta {eta}").expect("valid template").progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_owned());
    bar
}
