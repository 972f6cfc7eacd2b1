//! `metrics.jsonl`: a line per step, per epoch and per resumption. Each line is written whole, in
//! one write; a resumed run first cuts the file back to its checkpoint's position, so the lines
//! of steps it trains again (and a line a crash cut short) never appear twice or glued together.

use super::checkpoint::Position;
use crate::error::Error;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub(super) struct Metrics {
    file: File,
    path: PathBuf,
}

impl Metrics {
    /// A new run's metrics: an empty file.
    pub(super) fn create(path: &Path) -> Result<Metrics, Error> {
        let file = File::create(path).map_err(Error::file("create", path))?;
        Ok(Metrics { file, path: path.to_path_buf() })
    }

    /// A resumed run's metrics: the lines up to `position` kept, every line after it (steps
    /// trained after the checkpoint, before a crash or a stop) and any line that is not whole
    /// JSON dropped.
    pub(super) fn resume(path: &Path, position: &Position) -> Result<Metrics, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::file("read", path)(e)),
        };
        let kept: String = text.lines().filter(|line| before(line, position)).map(|line| format!("{line}\n")).collect();
        if kept.len() != text.len() {
            crate::fsutil::write_atomic(path, kept.as_bytes()).map_err(Error::file("write", path))?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(Error::file("append metrics to", path))?;
        Ok(Metrics { file, path: path.to_path_buf() })
    }

    pub(super) fn line(&mut self, line: serde_json::Value) -> Result<(), Error> {
        self.file.write_all(format!("{line}\n").as_bytes()).map_err(Error::file("append metrics to", &self.path))
    }
}

/// Whether a metrics line is whole and belongs to the run up to `position`: its step is not past
/// the position's, nor (an epoch's line) its epoch, which a checkpoint at an epoch's end that was
/// not validated yet has not closed.
fn before(line: &str, position: &Position) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { return false };
    let number = |key: &str| value.get(key).and_then(serde_json::Value::as_u64);
    let closed_epoch = value.get("kind").and_then(serde_json::Value::as_str) != Some("epoch") || number("epoch").is_some_and(|e| e <= position.epoch);
    number("step").is_some_and(|s| s <= position.step) && closed_epoch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_run_keeps_the_lines_up_to_its_checkpoint() {
        let dir = std::env::temp_dir().join(format!("incc-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let text = [
            r#"{"kind":"step","epoch":0,"step":1,"loss":2.3}"#,
            r#"{"kind":"step","epoch":0,"step":2,"loss":2.2}"#,
            // The epoch was trained to its end (step 2) and validated.
            r#"{"kind":"epoch","epoch":1,"step":2,"train_loss":2.2}"#,
            r#"{"kind":"step","epoch":1,"step":3,"loss":2.1}"#,
            // A crash in the middle of a line.
            r#"{"kind":"step","epoch":1,"step":4,"lo"#,
        ]
        .join("\n");
        std::fs::write(&path, &text).unwrap();
        let at = |step, epoch, batch_in_epoch| Position { step, epoch, batch_in_epoch, seed: 0, best_top1: None, totals: Default::default() };
        // A checkpoint at the end of the first epoch, before its validation: its epoch line goes.
        drop(Metrics::resume(&path, &at(2, 0, 2)).unwrap());
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept.lines().collect::<Vec<_>>(), text.lines().take(2).collect::<Vec<_>>());
        let mut m = Metrics::resume(&path, &at(3, 1, 1)).unwrap();
        m.line(serde_json::json!({"kind": "step", "step": 3})).unwrap();
        let lines = std::fs::read_to_string(&path).unwrap();
        assert_eq!(lines.lines().count(), 3, "{lines}");
        assert!(lines.ends_with("{\"kind\":\"step\",\"step\":3}\n"), "{lines}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
