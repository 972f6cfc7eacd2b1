//! Checkpoints: safetensors holding every parameter, running statistic, optimizer slot and EMA
//! value by name, with the run's position, seed, settings and the architecture's source in the
//! metadata. Written atomically; a corrupt or mismatched file is a clear error naming it.

use crate::error::Error;
use crate::weights::Tensor;
use std::collections::BTreeMap;
use std::path::Path;

/// Where a run stands, and what it was started with: enough to resume it exactly.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Steps done.
    pub step: u64,
    /// The epoch being trained, and how many of its batches are done.
    pub epoch: u64,
    pub batch_in_epoch: u64,
    /// Every random choice of the run (data order, crops, dropout masks) derives from this seed
    /// and the position: there is no other random state to save.
    pub seed: u64,
    pub best_top1: Option<f64>,
}

pub struct Checkpoint {
    pub tensors: BTreeMap<String, Tensor>,
    pub position: Position,
    /// The run's settings (`incc.run` metadata, JSON) and the architecture's source text.
    pub settings: String,
    pub source: String,
}

pub fn save(path: &Path, c: &Checkpoint) -> std::io::Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = c
        .tensors
        .iter()
        .map(|(name, t)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), crate::weights::bytemuck_f32(&t.data))
                .map_err(|e| std::io::Error::other(format!("tensor `{name}`: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<std::io::Result<_>>()?;
    let metadata = std::collections::HashMap::from([
        ("incc.position".to_string(), serde_json::to_string(&c.position).expect("serialisable")),
        ("incc.run".to_string(), c.settings.clone()),
        ("incc.source".to_string(), c.source.clone()),
        ("incc.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| std::io::Error::other(e.to_string()))?;
    crate::fsutil::write_atomic(path, &bytes)
}

pub fn load(path: &Path) -> Result<Checkpoint, Error> {
    let bad = |what: String| Error::checkpoint(path, what);
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a valid safetensors file ({e}); it may be truncated or corrupt")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a valid safetensors file ({e}); it may be truncated or corrupt")))?;
    let fields = meta.metadata().clone().unwrap_or_default();
    let field = |k: &str| fields.get(k).cloned().ok_or_else(|| bad(format!("no `{k}` in its metadata: it was not written by incc train")));
    let position: Position = serde_json::from_str(&field("incc.position")?).map_err(|e| bad(format!("unreadable position: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!("`{name}` is {:?}, not F32", view.dtype())));
        }
        let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        tensors.insert(name, Tensor { shape: view.shape().to_vec(), data });
    }
    Ok(Checkpoint { tensors, position, settings: field("incc.run")?, source: field("incc.source")? })
}
