//! What a run folder and a checkpoint must say before a run starts or goes on: a new run never
//! overwrites another (unless told to), a resumed run trains the network its checkpoint stores,
//! and the settings a resumption changes are ones that can change at its position.

use super::checkpoint::{Checkpoint, Position};
use super::RunConfig;
use crate::driver::{compile_texts, Compiled};
use crate::error::Error;
use crate::train::TrainConfig;
use serde::Serialize;
use std::path::Path;

/// The files a run writes in its folder (besides temporary ones).
const RUN_FILES: [&str; 3] = ["metrics.jsonl", "last.safetensors", "best.safetensors"];

/// Makes `out` ready for a new run: created, or empty. A folder that holds anything is refused
/// (it may hold another run), unless `force`: then that run's files are removed.
pub(super) fn new_run_folder(out: &Path, force: bool) -> Result<(), Error> {
    std::fs::create_dir_all(out).map_err(Error::file("create", out))?;
    crate::fsutil::remove_stale_temporaries(out, None);
    let mut held: Vec<String> =
        std::fs::read_dir(out).map_err(Error::file("list", out))?.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned())).collect();
    if held.is_empty() {
        return Ok(());
    }
    if force {
        for name in RUN_FILES {
            let path = out.join(name);
            if path.exists() {
                std::fs::remove_file(&path).map_err(Error::file("remove", &path))?;
            }
        }
        return Ok(());
    }
    held.sort();
    let more = if held.len() > 3 { format!(" and {} more", held.len() - 3) } else { String::new() };
    Err(Error::Invalid(format!(
        "`{dir}` is not empty (it holds {}{more}): a new run would overwrite what is there. Continue the run there with --resume {dir}, \
         start over in it with --force (its checkpoints and metrics are deleted), or give a fresh --out folder",
        held.iter().take(3).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
        dir = out.display()
    )))
}

/// The network a checkpoint trained, compiled from the source files it stores (never from the
/// files on disk, which may have changed or be elsewhere); a note on stderr says when the files
/// here differ. A checkpoint written before the sources were stored has only its root file's:
/// its imports are read from disk.
pub(super) fn stored_network(c: &Checkpoint, cfg: &RunConfig, path: &Path) -> Result<Compiled, Error> {
    let options = cfg.options();
    let compiled = match c.sources.as_slice() {
        [root] if root.name.is_empty() => crate::driver::compile_text(&cfg.arch, &root.text, &options.settings(), &options.passes()?, None)?,
        texts => compile_texts(texts, &options.settings(), &options.passes()?)?,
    };
    let differ: Vec<String> = compiled
        .texts()
        .iter()
        .filter(|t| std::fs::read_to_string(&t.name).ok().as_ref() != Some(&t.text))
        .map(|t| if Path::new(&t.name).exists() { format!("`{}` has changed", t.name) } else { format!("`{}` is not here", t.name) })
        .collect();
    if !differ.is_empty() {
        eprintln!("note: {} since `{}` was written; using the network stored in the checkpoint", differ.join(", "), path.display());
    }
    Ok(compiled)
}

/// A setting that a resumed run changes: the option that sets it, and its values before and
/// after (as the settings record them). Each is written to the metrics when the run resumes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub option: &'static str,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

/// When a setting may change on resumption.
#[derive(Clone, Copy, PartialEq)]
enum When {
    /// It defines the network or the run's random choices.
    Never,
    /// It decides what a position inside an epoch means (which examples its batches held).
    AtEpochEnd,
    /// From the next step on.
    Always,
}

/// The changes from the settings `saved` to `wanted` for a run resumed at `position`, or an error
/// naming the first option that cannot change there.
pub(super) fn changes(saved: &RunConfig, wanted: &RunConfig, position: &Position) -> Result<Vec<Change>, Error> {
    use When::*;
    // Destructured, so that a new setting cannot be left out here.
    let RunConfig { arch, set, input, residualize, data, epochs, batch, train, lr, schedule, warmup_epochs, ema, seed, limit_train, limit_val } = wanted;
    // `target`, `ema` and `recompute` are set by each process (from --provider, --ema and
    // --recompute); recomputing changes what a step keeps in memory, not what it computes.
    let TrainConfig { optimizer, label_smoothing, weight_decay, decay_all, clip_norm, target: _, ema: _, recompute: _, debug_outputs } = train;
    let same_optimizer = std::mem::discriminant(&saved.train.optimizer) == std::mem::discriminant(optimizer);
    let compared = [
        ("the network file", Never, value(&saved.arch), value(arch)),
        ("--set", Never, value(&saved.set), value(set)),
        ("--input", Never, value(&saved.input), value(input)),
        ("--residualize", Never, value(&saved.residualize), value(residualize)),
        ("--seed", Never, value(&saved.seed), value(seed)),
        ("--optimizer", Never, value(&saved.train.optimizer), if same_optimizer { value(&saved.train.optimizer) } else { value(optimizer) }),
        ("--data", AtEpochEnd, value(&saved.data), value(data)),
        ("--batch", AtEpochEnd, value(&saved.batch), value(batch)),
        ("--limit-train", AtEpochEnd, value(&saved.limit_train), value(limit_train)),
        ("--epochs", Always, value(&saved.epochs), value(epochs)),
        ("--lr", Always, value(&saved.lr), value(lr)),
        ("--schedule", Always, value(&saved.schedule), value(schedule)),
        ("--warmup", Always, value(&saved.warmup_epochs), value(warmup_epochs)),
        ("--ema", Always, value(&saved.ema), value(ema)),
        ("--limit-val", Always, value(&saved.limit_val), value(limit_val)),
        ("--momentum, --nesterov", Always, value(&saved.train.optimizer), value(optimizer)),
        ("--label-smoothing", Always, value(&saved.train.label_smoothing), value(label_smoothing)),
        ("--weight-decay", Always, value(&saved.train.weight_decay), value(weight_decay)),
        ("--decay-all", Always, value(&saved.train.decay_all), value(decay_all)),
        ("--clip-norm", Always, value(&saved.train.clip_norm), value(clip_norm)),
        ("--debug-outputs", Always, value(&saved.train.debug_outputs), value(debug_outputs)),
    ];
    let mid_epoch = position.batch_in_epoch > 0;
    let mut found = vec![];
    for (option, when, from, to) in compared {
        if from == to {
            continue;
        }
        let refused = match when {
            Never => Some("it is the run's (its network, or its random choices); start a new run for another"),
            AtEpochEnd if mid_epoch => {
                Some("the checkpoint is inside an epoch, whose position counts batches of the run's data and size; resume from an epoch's end")
            }
            _ => None,
        };
        if let Some(why) = refused {
            return Err(Error::Usage(format!("{option} cannot change when a run is resumed ({from} -> {to}): {why}")));
        }
        found.push(Change { option, from, to });
    }
    if *epochs < position.epoch + u64::from(mid_epoch) {
        let part = if mid_epoch { " and part of another" } else { "" };
        return Err(Error::Usage(format!("--epochs {epochs}: the run has trained {} epochs{part}", position.epoch)));
    }
    Ok(found)
}

fn value(v: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(v).expect("settings serialise")
}
