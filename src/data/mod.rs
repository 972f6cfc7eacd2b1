//! Training data: readers of the usual image-classification sets (IDX for MNIST and
//! Fashion-MNIST, the CIFAR binary batches, image folders in the ImageNet layout), the train and
//! evaluation transforms, and a parallel loader whose batches depend only on (seed, epoch).
//!
//! Every error names the file (or folder) it concerns and what is wrong with it.

mod cifar;
mod folder;
mod idx;
mod loader;
mod transform;

pub use loader::{batch_count, batches, loader_throughput, Batch, Loader, LoaderConfig, Shard};
pub use transform::{TrainCrop, Transform};

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::runtime::error::RuntimeError;
use crate::runtime::images::{DEFAULT_CROP_PCT, INCEPTION_MEAN_STD};

/// Why data could not be read or prepared.
#[derive(Debug)]
pub enum DataError {
    /// A file or folder of a data set is missing, unreadable or not what it should be.
    File {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// A data spec, transform or loader setting that cannot work, or an index out of range.
    Invalid(String),
}

impl DataError {
    pub(crate) fn file(path: &Path, reason: impl Into<String>) -> DataError {
        DataError::File { path: path.to_path_buf(), reason: reason.into() }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::File { path, reason } => write!(f, "{}: {reason}", path.display()),
            DataError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DataError {}

impl From<RuntimeError> for DataError {
    fn from(e: RuntimeError) -> DataError {
        match e {
            RuntimeError::Image { path, reason } | RuntimeError::File { path, reason } => DataError::File { path, reason },
            other => DataError::Invalid(other.to_string()),
        }
    }
}

/// Which data set, and the folder it is in: `KIND:DIR` on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSpec {
    /// MNIST's IDX files.
    Mnist(PathBuf),
    /// Fashion-MNIST: the same IDX layout as MNIST.
    FashionMnist(PathBuf),
    /// CIFAR-10's binary batches.
    Cifar10(PathBuf),
    /// CIFAR-100's binary files (fine labels).
    Cifar100(PathBuf),
    /// One folder per class (the ImageNet layout).
    ImageFolder(PathBuf),
    /// Seeded random images, generated on the fly: benchmarks that must not wait for disks
    /// (`synthetic:COUNT[,SIZE[,CLASSES]]`, default 299 x 299 RGB and 1000 classes).
    Synthetic { count: usize, size: usize, classes: usize },
}

/// The kinds of [`DataSpec`], as written before the colon.
pub const KINDS: [&str; 6] = ["mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic"];

impl DataSpec {
    /// The kind, as written before the colon.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            DataSpec::Mnist(_) => KINDS[0],
            DataSpec::FashionMnist(_) => KINDS[1],
            DataSpec::Cifar10(_) => KINDS[2],
            DataSpec::Cifar100(_) => KINDS[3],
            DataSpec::ImageFolder(_) => KINDS[4],
            DataSpec::Synthetic { .. } => KINDS[5],
        }
    }

    /// The usual transform of this kind of data for a `channels` x `height` x `width` input,
    /// Inception normalisation (mean = std = 0.5):
    /// - MNIST-like: random crop with padding `size / 14` (2 for 28), no flip (digits and
    ///   garments have a handedness);
    /// - CIFAR: random crop with padding `size / 8` (4 for 32) and horizontal flip;
    /// - image folders: random-resized crop (scale 0.08..1, aspect 3/4..4/3) and flip for
    ///   training, timm's resize to `size / 0.875` and center crop for evaluation.
    ///
    /// The small sets are resized to the input size first when it differs (e.g. 28 -> 32).
    #[must_use]
    pub fn default_transform(&self, channels: usize, height: usize, width: usize, train: bool) -> Transform {
        let size = height.min(width);
        let (crop, flip, crop_pct) = match self {
            DataSpec::Mnist(_) | DataSpec::FashionMnist(_) => (TrainCrop::Pad((size / 14).max(1)), false, 1.0),
            DataSpec::Cifar10(_) | DataSpec::Cifar100(_) => (TrainCrop::Pad((size / 8).max(1)), true, 1.0),
            DataSpec::ImageFolder(_) => (TrainCrop::RandomResized { scale: (0.08, 1.0), ratio: (0.75, 4.0 / 3.0) }, true, DEFAULT_CROP_PCT),
            // Noise needs no augmentation, and its cost should be the loader's floor.
            DataSpec::Synthetic { .. } => (TrainCrop::Pad(0), false, 1.0),
        };
        Transform {
            channels,
            height,
            width,
            train,
            crop,
            flip,
            crop_pct,
            mean: vec![INCEPTION_MEAN_STD[0]; channels],
            std: vec![INCEPTION_MEAN_STD[0]; channels],
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Mnist(dir) | DataSpec::FashionMnist(dir) | DataSpec::Cifar10(dir) | DataSpec::Cifar100(dir) | DataSpec::ImageFolder(dir) => {
                write!(f, "{}:{}", self.kind(), dir.display())
            }
            DataSpec::Synthetic { count, size, classes } => write!(f, "synthetic:{count},{size},{classes}"),
        }
    }
}

impl FromStr for DataSpec {
    type Err = DataError;

    fn from_str(s: &str) -> Result<DataSpec, DataError> {
        let expected = || format!("expected KIND:DIR with KIND one of {}", KINDS.join(", "));
        let Some((kind, dir)) = s.split_once(':') else {
            return Err(DataError::Invalid(format!("data `{s}`: {}", expected())));
        };
        if dir.is_empty() {
            return Err(DataError::Invalid(format!("data `{s}` names no folder: {}", expected())));
        }
        if kind == "synthetic" {
            let numbers: Result<Vec<usize>, _> = dir.split(',').map(|n| n.trim().parse::<usize>()).collect();
            let (count, size, classes) = match numbers.as_deref() {
                Ok([count, rest @ ..]) if *count > 0 && rest.len() <= 2 && rest.iter().all(|&n| n > 0) => {
                    (*count, rest.first().copied().unwrap_or(299), rest.get(1).copied().unwrap_or(1000))
                }
                _ => return Err(DataError::Invalid(format!("data `{s}`: expected synthetic:COUNT[,SIZE[,CLASSES]] with positive numbers"))),
            };
            // Each example is made whole in memory: a size past what can be is refused here.
            crate::runtime::tensor::checked_len(&format!("data `{s}`: an image"), &[3, size, size])?;
            return Ok(DataSpec::Synthetic { count, size, classes });
        }
        let dir = PathBuf::from(dir);
        Ok(match kind {
            "mnist" => DataSpec::Mnist(dir),
            "fashion-mnist" => DataSpec::FashionMnist(dir),
            "cifar10" => DataSpec::Cifar10(dir),
            "cifar100" => DataSpec::Cifar100(dir),
            "imagefolder" => DataSpec::ImageFolder(dir),
            _ => return Err(DataError::Invalid(format!("unknown data kind `{kind}` in `{s}`: {}", expected()))),
        })
    }
}

/// Which part of a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Validation,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Validation => "validation",
        })
    }
}

/// An undecoded-to-float image: 8-bit, `height` x `width` x `channels` (HWC), grey or RGB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawImage {
    pub width: usize,
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub pixels: Vec<u8>,
}

/// Labelled examples, indexed `0..len()`. Shared by the loader's threads.
pub trait Source: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of classes; every label is below it.
    fn classes(&self) -> usize;

    /// Example `index`: its image and its label.
    ///
    /// # Errors
    /// `index` out of range, or an image that cannot be read (the error names its file).
    fn get(&self, index: usize) -> Result<(RawImage, u32), DataError>;

    /// One line for logs: what, which split, how many, from where.
    fn describe(&self) -> String;

    /// Checks what can be checked without reading every example whole (each image file's header,
    /// where examples are files): a run checks its validation split before it trains an epoch.
    ///
    /// # Errors
    /// The first example that cannot be read, naming its file.
    fn check(&self) -> Result<(), DataError> {
        Ok(())
    }
}

/// Opens one split of a data set. The layouts, in `DIR`:
/// - MNIST, Fashion-MNIST: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` (train) and
///   `t10k-*` (validation), each raw or gzipped (with or without `.gz` in the name);
/// - CIFAR-10: `data_batch_1.bin` .. `data_batch_5.bin` (train), `test_batch.bin` (validation),
///   in `DIR` or `DIR/cifar-10-batches-bin`;
/// - CIFAR-100: `train.bin`, `test.bin`, in `DIR` or `DIR/cifar-100-binary`;
/// - image folder: `DIR/train/<class>/*.{jpg,jpeg,png}` and `DIR/val/<class>/*`, or without
///   `train/`, `DIR/<class>/*` with every tenth file of each class (in name order: the 10th,
///   20th, ...) held out as the validation split.
///
/// # Errors
/// A missing, truncated or corrupt file, wrong magic numbers, counts that do not match, labels
/// out of range; each names its file.
pub fn open(spec: &DataSpec, split: Split) -> Result<Box<dyn Source>, DataError> {
    Ok(match spec {
        DataSpec::Mnist(dir) => Box::new(idx::Idx::open(dir, "MNIST", split)?),
        DataSpec::FashionMnist(dir) => Box::new(idx::Idx::open(dir, "Fashion-MNIST", split)?),
        DataSpec::Cifar10(dir) => Box::new(cifar::Cifar::open(dir, &cifar::CIFAR10, split)?),
        DataSpec::Cifar100(dir) => Box::new(cifar::Cifar::open(dir, &cifar::CIFAR100, split)?),
        DataSpec::ImageFolder(dir) => Box::new(folder::Folder::open(dir, split)?),
        DataSpec::Synthetic { count, size, classes } => Box::new(Synthetic { count: *count, size: *size, classes: *classes, split }),
    })
}

/// `synthetic:`: example i of a split is a seeded function of (split, i).
struct Synthetic {
    count: usize,
    size: usize,
    classes: usize,
    split: Split,
}

impl Source for Synthetic {
    fn len(&self) -> usize {
        self.count
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn get(&self, index: usize) -> Result<(RawImage, u32), DataError> {
        if index >= self.count {
            return Err(DataError::Invalid(format!("synthetic example {index} of {}", self.count)));
        }
        let mut rng = crate::rng::Rng::keyed(&[index as u64, self.split as u64, 0x7379_6e74]);
        let pixels = (0..self.size * self.size * 3).map(|_| (rng.next_u64() >> 56) as u8).collect();
        let label = rng.below(self.classes) as u32;
        Ok((RawImage { width: self.size, height: self.size, channels: 3, pixels }, label))
    }

    fn describe(&self) -> String {
        format!("{} synthetic {}x{} RGB images, {} classes ({})", self.count, self.size, self.size, self.classes, self.split)
    }
}

/// The most bytes a gzipped data file may unpack to (4 GiB: CIFAR-100's train split is 150 MB).
const MAX_UNPACKED: u64 = 1 << 32;

/// A whole file, gunzipped when it starts with gzip's magic bytes.
fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::file(path, format!("cannot read it: {e}")))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    // gzip ends with the unpacked size (mod 2^32): a capacity hint, capped against corrupt ones.
    let hint = bytes.len().checked_sub(4).map_or(0, |at| u32::from_le_bytes(bytes[at..].try_into().unwrap_or_default()) as usize);
    let mut out = Vec::with_capacity(hint.min(1 << 30));
    // One byte past the bound tells a file that unpacks to more than it.
    let mut unpacking = flate2::read::GzDecoder::new(&bytes[..]).take(MAX_UNPACKED + 1);
    unpacking.read_to_end(&mut out).map_err(|e| DataError::file(path, format!("truncated or corrupt gzip data: {e}")))?;
    if out.len() as u64 > MAX_UNPACKED {
        return Err(DataError::file(path, format!("unpacks to more than {MAX_UNPACKED} bytes: not a data set incc reads (or a gzip bomb)")));
    }
    Ok(out)
}

/// The error of `Source::get` for an index past the end.
fn out_of_range(index: usize, len: usize) -> DataError {
    DataError::Invalid(format!("example {index} is out of range: the source has {len}"))
}
