//! Image folders, one subfolder per class: `DIR/train/<class>/*` and `DIR/val/<class>/*` (the
//! ImageNet layout), or `DIR/<class>/*` with every tenth file of each class held out. Images are
//! decoded when asked for.

use std::path::{Path, PathBuf};

use super::{out_of_range, DataError, RawImage, Source, Split};
use crate::runtime::images;

/// The file types read (compared without case); other files are left alone.
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Without `train/`, the validation split is every `HOLD_OUT`th file of each class.
const HOLD_OUT: usize = 10;

pub(super) struct Folder {
    split: Split,
    /// Where the split's class folders are.
    dir: PathBuf,
    classes: usize,
    /// Each file and its class.
    items: Vec<(PathBuf, u32)>,
    held_out: bool,
}

impl Folder {
    pub(super) fn open(root: &Path, split: Split) -> Result<Folder, DataError> {
        if !root.is_dir() {
            return Err(DataError::file(root, "not found, or not a folder"));
        }
        let train = root.join("train");
        let held_out = !train.is_dir();
        let train = if held_out { root.to_path_buf() } else { train };
        let classes = subfolders(&train)?;
        if classes.is_empty() {
            return Err(DataError::file(&train, "no class folders (expected <class>/*.jpg, *.jpeg or *.png)"));
        }
        let dir = match split {
            Split::Validation if !held_out => root.join("val"),
            _ => train.clone(),
        };
        if !dir.is_dir() {
            return Err(DataError::file(&dir, "not found: an image folder with train/ has its validation split in val/"));
        }
        let mut items = Vec::new();
        for (name, class_dir) in subfolders(&dir)? {
            let class = classes
                .iter()
                .position(|(n, _)| *n == name)
                .ok_or_else(|| DataError::file(&class_dir, format!("is not a class of the train split (no folder {name} in {})", train.display())))?;
            let files = image_files(&class_dir)?;
            if files.is_empty() && dir == train {
                return Err(DataError::file(&class_dir, "has no .jpg, .jpeg or .png files"));
            }
            let class = class as u32;
            let kept = files.into_iter().enumerate().filter(|(i, _)| !held_out || ((i + 1) % HOLD_OUT == 0) == (split == Split::Validation));
            items.extend(kept.map(|(_, path)| (path, class)));
        }
        if items.is_empty() {
            return Err(DataError::file(&dir, format!("no images for the {split} split")));
        }
        Ok(Folder { split, dir, classes: classes.len(), items, held_out })
    }
}

impl Source for Folder {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn get(&self, index: usize) -> Result<(RawImage, u32), DataError> {
        let (path, class) = self.items.get(index).ok_or_else(|| out_of_range(index, self.len()))?;
        let image = images::decode(path)?;
        let (width, height) = (image.width() as usize, image.height() as usize);
        let (channels, pixels) = if image.color().has_color() { (3, image.into_rgb8().into_raw()) } else { (1, image.into_luma8().into_raw()) };
        Ok((RawImage { width, height, channels, pixels }, *class))
    }

    fn check(&self) -> Result<(), DataError> {
        for (path, _) in &self.items {
            images::check_header(path)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let (split, n, classes, dir) = (self.split, self.len(), self.classes, self.dir.display());
        let held = if self.held_out { format!(", every {HOLD_OUT}th file of each class held out for validation") } else { String::new() };
        format!("image folder {split}: {n} images, {classes} classes ({dir}{held})")
    }
}

/// The visible subfolders of `dir`, by name.
fn subfolders(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut found: Vec<_> = entries(dir)?
        .into_iter()
        .filter(|path| path.is_dir())
        .filter_map(|path| Some((path.file_name()?.to_string_lossy().into_owned(), path)))
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    found.sort();
    Ok(found)
}

/// The image files in `dir`, by name.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let is_image = |path: &Path| path.extension().is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)));
    let mut found: Vec<_> = entries(dir)?.into_iter().filter(|path| is_image(path) && path.is_file()).collect();
    found.sort();
    Ok(found)
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let fail = |e: std::io::Error| DataError::file(dir, format!("cannot list it: {e}"));
    std::fs::read_dir(dir).map_err(fail)?.map(|entry| entry.map(|e| e.path()).map_err(fail)).collect()
}
