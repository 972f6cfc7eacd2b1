//! The CIFAR binary versions: fixed-size records of label bytes then a 32x32 RGB image, channel
//! by channel (CHW).

use std::path::{Path, PathBuf};

use super::{out_of_range, read_file, DataError, RawImage, Source, Split};

const SIDE: usize = 32;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

/// What differs between CIFAR-10 and CIFAR-100.
pub(super) struct Layout {
    name: &'static str,
    /// The folder the archive unpacks to, looked for inside the given one.
    folder: &'static str,
    train: &'static [&'static str],
    validation: &'static str,
    /// The class count of each label byte; the last label is the one used.
    labels: &'static [usize],
}

pub(super) const CIFAR10: Layout = Layout {
    name: "CIFAR-10",
    folder: "cifar-10-batches-bin",
    train: &["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"],
    validation: "test_batch.bin",
    labels: &[10],
};

/// Coarse (20 superclasses), then fine (100 classes) label.
pub(super) const CIFAR100: Layout = Layout { name: "CIFAR-100", folder: "cifar-100-binary", train: &["train.bin"], validation: "test.bin", labels: &[20, 100] };

/// One split, held in memory (150 MB for a train split).
pub(super) struct Cifar {
    layout: &'static Layout,
    split: Split,
    dir: PathBuf,
    records: Vec<u8>,
}

impl Cifar {
    pub(super) fn open(dir: &Path, layout: &'static Layout, split: Split) -> Result<Cifar, DataError> {
        let nested = dir.join(layout.folder);
        let dir = if nested.is_dir() { nested } else { dir.to_path_buf() };
        let names = match split {
            Split::Train => layout.train,
            Split::Validation => std::slice::from_ref(&layout.validation),
        };
        let record = layout.record();
        let mut records = Vec::new();
        for name in names {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(DataError::file(&path, format!("not found (the {} binary version has {})", layout.name, layout.files())));
            }
            let mut bytes = read_file(&path)?;
            if bytes.is_empty() || bytes.len() % record != 0 {
                let reason = format!("{} bytes, not a whole number of {record}-byte records: truncated or not a {} file", bytes.len(), layout.name);
                return Err(DataError::file(&path, reason));
            }
            for (at, r) in bytes.chunks_exact(record).enumerate() {
                if let Some((&label, &classes)) = r.iter().zip(layout.labels).find(|&(&label, &classes)| usize::from(label) >= classes) {
                    return Err(DataError::file(&path, format!("label {label} of record {at} is not below {classes}: corrupt or not a {} file", layout.name)));
                }
            }
            records.append(&mut bytes);
        }
        Ok(Cifar { layout, split, dir, records })
    }
}

impl Layout {
    fn record(&self) -> usize {
        self.labels.len() + IMAGE_BYTES
    }

    fn files(&self) -> String {
        let train = self.train.join(", ");
        format!("{train} and {}, in the given folder or its {}/", self.validation, self.folder)
    }
}

impl Source for Cifar {
    fn len(&self) -> usize {
        self.records.len() / self.layout.record()
    }

    fn classes(&self) -> usize {
        self.layout.labels[self.layout.labels.len() - 1]
    }

    fn get(&self, index: usize) -> Result<(RawImage, u32), DataError> {
        let size = self.layout.record();
        let record = self.records.get(index * size..(index + 1) * size).ok_or_else(|| out_of_range(index, self.len()))?;
        let (labels, chw) = record.split_at(self.layout.labels.len());
        let plane = SIDE * SIDE;
        let pixels = (0..IMAGE_BYTES).map(|i| chw[(i % 3) * plane + i / 3]).collect();
        Ok((RawImage { width: SIDE, height: SIDE, channels: 3, pixels }, u32::from(labels[labels.len() - 1])))
    }

    fn describe(&self) -> String {
        let (name, split, n, classes) = (self.layout.name, self.split, self.len(), self.classes());
        format!("{name} {split}: {n} RGB images of {SIDE}x{SIDE}, {classes} classes ({})", self.dir.display())
    }
}
