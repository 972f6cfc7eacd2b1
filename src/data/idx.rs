//! MNIST's IDX files (Fashion-MNIST's too): a big-endian header, the magic number `0x0000_08NN`
//! (unsigned bytes, NN dimensions) then NN sizes as u32, followed by the bytes themselves.

use std::path::{Path, PathBuf};

use super::{out_of_range, read_file, DataError, RawImage, Source, Split};

/// MNIST and Fashion-MNIST both have ten classes.
const CLASSES: usize = 10;

/// One split, held in memory (47 MB for the train split).
pub(super) struct Idx {
    name: &'static str,
    split: Split,
    images_path: PathBuf,
    rows: usize,
    cols: usize,
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl Idx {
    pub(super) fn open(dir: &Path, name: &'static str, split: Split) -> Result<Idx, DataError> {
        let prefix = match split {
            Split::Train => "train",
            Split::Validation => "t10k",
        };
        let images_path = find(dir, prefix, "images", 3)?;
        let labels_path = find(dir, prefix, "labels", 1)?;
        let (dims, images) = parse(&images_path, read_file(&images_path)?, 3)?;
        let (label_dims, labels) = parse(&labels_path, read_file(&labels_path)?, 1)?;
        let (count, rows, cols) = (dims[0], dims[1], dims[2]);
        if rows == 0 || cols == 0 {
            return Err(DataError::file(&images_path, format!("the images are empty ({rows}x{cols})")));
        }
        if label_dims[0] != count {
            let reason = format!("{} labels, but {} has {count} images", label_dims[0], images_path.display());
            return Err(DataError::file(&labels_path, reason));
        }
        if let Some(at) = labels.iter().position(|&l| usize::from(l) >= CLASSES) {
            let reason = format!("label {} of example {at} is not below {CLASSES}, the number of classes", labels[at]);
            return Err(DataError::file(&labels_path, reason));
        }
        Ok(Idx { name, split, images_path, rows, cols, images, labels })
    }
}

impl Source for Idx {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn classes(&self) -> usize {
        CLASSES
    }

    fn get(&self, index: usize) -> Result<(RawImage, u32), DataError> {
        let &label = self.labels.get(index).ok_or_else(|| out_of_range(index, self.len()))?;
        let size = self.rows * self.cols;
        let pixels = self.images[index * size..(index + 1) * size].to_vec();
        Ok((RawImage { width: self.cols, height: self.rows, channels: 1, pixels }, u32::from(label)))
    }

    fn describe(&self) -> String {
        let (name, split, n, rows, cols) = (self.name, self.split, self.len(), self.rows, self.cols);
        format!("{name} {split}: {n} grey images of {rows}x{cols}, {CLASSES} classes ({})", self.images_path.display())
    }
}

/// The file of `prefix` (train, t10k) and `what` (images, labels): named as distributed
/// (`train-images-idx3-ubyte`) or as some mirrors do (`train-images.idx3-ubyte`), raw or `.gz`.
fn find(dir: &Path, prefix: &str, what: &str, dims: usize) -> Result<PathBuf, DataError> {
    let names = [format!("{prefix}-{what}-idx{dims}-ubyte"), format!("{prefix}-{what}.idx{dims}-ubyte")];
    let candidates = names.iter().flat_map(|name| [name.clone(), format!("{name}.gz")]);
    if let Some(found) = candidates.map(|name| dir.join(name)).find(|path| path.is_file()) {
        return Ok(found);
    }
    let [usual, other] = &names;
    Err(DataError::file(&dir.join(usual), format!("not found (nor {usual}.gz, {other} or {other}.gz)")))
}

/// The sizes and the data of an IDX file of unsigned bytes with `dims` dimensions.
fn parse(path: &Path, mut bytes: Vec<u8>, dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let fail = |reason: String| DataError::file(path, reason);
    let header = 4 + 4 * dims;
    let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let want = 0x0800 | dims as u32;
    let magic = word(0).ok_or_else(|| fail(format!("truncated: {} bytes, not even an IDX magic number", bytes.len())))?;
    if magic != want {
        return Err(fail(format!("wrong magic number 0x{magic:08x}: an IDX file of bytes with {dims} dimensions starts with 0x{want:08x}")));
    }
    let sizes: Vec<usize> = (0..dims)
        .map(|d| word(4 + 4 * d).map(|s| s as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| fail(format!("truncated inside the header ({} bytes)", bytes.len())))?;
    let shape = sizes.iter().map(ToString::to_string).collect::<Vec<_>>().join(" x ");
    let promised = sizes.iter().try_fold(1usize, |n, &s| n.checked_mul(s)).ok_or_else(|| fail(format!("impossible sizes {shape}")))?;
    let found = bytes.len() - header;
    if found < promised {
        return Err(fail(format!("truncated: the header promises {shape} = {promised} bytes of data, the file has {found}")));
    }
    if found > promised {
        return Err(fail(format!("{} bytes after the {shape} the header promises: corrupt, or not an IDX file", found - promised)));
    }
    bytes.drain(..header);
    Ok((sizes, bytes))
}
