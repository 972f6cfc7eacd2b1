//! Checkpoints: safetensors holding every parameter, running statistic, optimizer slot and EMA
//! value by name, with the run's position, seed, settings and the network's source files in the
//! metadata, and a checksum of each (see `weights::CHECKSUMS`). Written atomically; a corrupt,
//! truncated or mismatched file is a clear error naming it.

use crate::driver::SourceText;
use crate::error::Error;
use crate::weights::{Tensor, TensorRef};
use std::collections::BTreeMap;
use std::path::Path;

/// Where a run stands, and what it was started with: enough to resume it exactly.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Steps done.
    pub step: u64,
    /// The epoch being trained, and how many of its batches are done (all of them: the epoch is
    /// trained but not yet validated).
    pub epoch: u64,
    pub batch_in_epoch: u64,
    /// Every random choice of the run (data order, crops, dropout masks) derives from this seed
    /// and the position: there is no other random state to save.
    pub seed: u64,
    pub best_top1: Option<f64>,
    /// What the epoch's steps so far add up to, so that a run resumed inside an epoch reports
    /// the epoch's training loss and accuracy as an uninterrupted run does.
    #[serde(default)]
    pub totals: EpochTotals,
}

/// What an epoch's steps add up to.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochTotals {
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
}

pub struct Checkpoint {
    pub tensors: BTreeMap<String, Tensor>,
    pub position: Position,
    /// The run's settings (`incc.run` metadata, JSON).
    pub settings: String,
    /// The network's source files as the run compiled them, the root first (`incc.sources`; a
    /// checkpoint written before has only the root's, `incc.source`).
    pub sources: Vec<SourceText>,
}

const POSITION: &str = "incc.position";
const RUN: &str = "incc.run";
const SOURCES: &str = "incc.sources";
/// The root file's text alone: what checkpoints held before `incc.sources`.
const OLD_SOURCE: &str = "incc.source";

pub fn save(path: &Path, c: &Checkpoint) -> std::io::Result<()> {
    let tensors: Vec<TensorRef<'_>> = c.tensors.iter().map(TensorRef::of).collect();
    save_views(path, &tensors, &c.position, &c.settings, &c.sources)
}

/// Writes a checkpoint of `tensors` from where they are (the step's buffers: no copy).
pub fn save_views(path: &Path, tensors: &[TensorRef<'_>], position: &Position, settings: &str, sources: &[SourceText]) -> std::io::Result<()> {
    let metadata = BTreeMap::from([
        (POSITION.to_string(), serde_json::to_string(position).expect("serialisable")),
        (RUN.to_string(), settings.to_string()),
        (SOURCES.to_string(), serde_json::to_string(sources).expect("serialisable")),
        ("incc.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ]);
    crate::fsutil::write_atomic_with(path, |w| crate::weights::write_safetensors(w, tensors, metadata))
}

pub fn load(path: &Path) -> Result<Checkpoint, Error> {
    let bad = |what: String| Error::checkpoint(path, what);
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let invalid = |e: safetensors::SafeTensorError| bad(format!("not a valid safetensors file ({e}); it may be truncated or corrupt"));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(invalid)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(invalid)?;
    let fields = meta.metadata().clone().unwrap_or_default();
    crate::weights::verify(&st, &fields).map_err(bad)?;
    let field = |k: &str| fields.get(k).cloned().ok_or_else(|| bad(format!("no `{k}` in its metadata: it was not written by incc train")));
    let position: Position = serde_json::from_str(&field(POSITION)?).map_err(|e| bad(format!("unreadable position: {e}")))?;
    let sources = match fields.get(SOURCES) {
        Some(json) => serde_json::from_str(json).map_err(|e| bad(format!("unreadable sources: {e}")))?,
        None => vec![SourceText { name: String::new(), text: field(OLD_SOURCE)? }],
    };
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!("`{name}` is {:?}, not F32", view.dtype())));
        }
        let data: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if let Some(problem) = crate::weights::not_finite(&name, &data) {
            return Err(bad(problem));
        }
        tensors.insert(name, Tensor { shape: view.shape().to_vec(), data });
    }
    Ok(Checkpoint { tensors, position, settings: field(RUN)?, sources })
}

/// The settings a checkpoint records, read from its header alone (not its tensors).
pub fn settings(path: &Path) -> Result<String, Error> {
    use std::io::Read;
    let bad = |what: String| Error::checkpoint(path, what);
    let mut file = std::fs::File::open(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| bad(format!("cannot read its header: {e}")))?;
    // safetensors' own bound on a header (100 MB): a corrupt length is not an allocation.
    let len = usize::try_from(u64::from_le_bytes(len)).ok().filter(|&n| n <= 100_000_000).ok_or_else(|| bad("a corrupt header length".into()))?;
    let mut header = vec![0u8; len];
    file.read_exact(&mut header).map_err(|e| bad(format!("truncated inside its header: {e}")))?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|e| bad(format!("an unreadable header ({e}); it may be corrupt")))?;
    header["__metadata__"][RUN].as_str().map(str::to_string).ok_or_else(|| bad(format!("no `{RUN}` in its metadata: it was not written by incc train")))
}
