//! Training data: the readers on generated files (and on the real Fashion-MNIST where installed),
//! the transforms with exact values, the loader's determinism, resumption and shutdown.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{GrayImage, Luma, Rgb, RgbImage};
use incc::data::{self, batches, Batch, DataError, DataSpec, LoaderConfig, RawImage, Shard, Source, Split, TrainCrop, Transform};
use incc::rng::Rng;

/// A fresh folder under the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("incc-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `bytes` at `name` (creating folders), returning the path.
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(data);
    bytes
}

fn err_text<T>(result: Result<T, DataError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn mnist(dir: &Path, split: Split) -> Result<Box<dyn Source>, DataError> {
    data::open(&DataSpec::Mnist(dir.to_path_buf()), split)
}

/// Three 2x3 images (pixel = 10 * image + position) and their labels.
fn write_idx_pair(dir: &Scratch, prefix: &str, compress: bool) {
    let images: Vec<u8> = (0..3u8).flat_map(|i| (0..6u8).map(move |p| 10 * i + p)).collect();
    let (images, labels) = (idx(&[3, 2, 3], &images), idx(&[3], &[0, 9, 4]));
    let pack = |bytes: Vec<u8>| if compress { gzip(&bytes) } else { bytes };
    let ext = if compress { ".gz" } else { "" };
    dir.write(&format!("{prefix}-images-idx3-ubyte{ext}"), &pack(images));
    dir.write(&format!("{prefix}-labels-idx1-ubyte{ext}"), &pack(labels));
}

#[test]
fn idx_raw_and_gzip_round_trip() {
    let dir = Scratch::new("idx");
    write_idx_pair(&dir, "train", false);
    write_idx_pair(&dir, "t10k", true);
    for split in [Split::Train, Split::Validation] {
        let source = mnist(&dir.0, split).unwrap();
        assert_eq!((source.len(), source.classes()), (3, 10));
        let (image, label) = source.get(1).unwrap();
        assert_eq!(image, RawImage { width: 3, height: 2, channels: 1, pixels: vec![10, 11, 12, 13, 14, 15] });
        assert_eq!(label, 9);
        assert_eq!(source.get(2).unwrap().1, 4);
        assert!(err_text(source.get(3)).contains("example 3 is out of range"));
    }
    let description = mnist(&dir.0, Split::Validation).unwrap().describe();
    assert!(
        description.starts_with("MNIST validation: 3 grey images of 2x3, 10 classes") && description.ends_with("t10k-images-idx3-ubyte.gz)"),
        "{description}"
    );
}

#[test]
fn idx_errors_name_the_file_and_the_fault() {
    let dir = Scratch::new("idx-errors");
    let missing = err_text(mnist(&dir.0, Split::Train));
    assert!(missing.contains("train-images-idx3-ubyte: not found (nor train-images-idx3-ubyte.gz, train-images.idx3-ubyte"), "{missing}");

    let images = idx(&[3, 2, 3], &[7; 18]);
    let labels_path = dir.write("train-labels-idx1-ubyte", &idx(&[3], &[1, 2, 3]));
    let images_path = dir.write("train-images-idx3-ubyte", &images[..images.len() - 5]);
    let truncated = err_text(mnist(&dir.0, Split::Train));
    assert_eq!(truncated, format!("{}: truncated: the header promises 3 x 2 x 3 = 18 bytes of data, the file has 13", images_path.display()));

    std::fs::write(&images_path, &gzip(&images)[..20]).unwrap();
    let cut_gzip = err_text(mnist(&dir.0, Split::Train));
    assert!(cut_gzip.starts_with(&format!("{}: truncated or corrupt gzip data", images_path.display())), "{cut_gzip}");

    std::fs::write(&images_path, idx(&[18], &[7; 18])).unwrap();
    let magic = err_text(mnist(&dir.0, Split::Train));
    assert!(magic.contains("train-images-idx3-ubyte: wrong magic number 0x00000801"), "{magic}");

    std::fs::write(&images_path, &images).unwrap();
    std::fs::write(&labels_path, idx(&[2], &[1, 2])).unwrap();
    let count = err_text(mnist(&dir.0, Split::Train));
    assert_eq!(count, format!("{}: 2 labels, but {} has 3 images", labels_path.display(), images_path.display()));

    std::fs::write(&labels_path, idx(&[3], &[1, 10, 3])).unwrap();
    let label = err_text(mnist(&dir.0, Split::Train));
    assert!(label.ends_with("train-labels-idx1-ubyte: label 10 of example 1 is not below 10, the number of classes"), "{label}");
}

/// CIFAR records: label bytes, then CHW pixels `channel * 50 + position + record` (mod 256).
fn cifar_records(labels: &[&[u8]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (r, label) in labels.iter().enumerate() {
        bytes.extend(*label);
        bytes.extend((0..3 * 1024).map(|i| ((i / 1024) * 50 + i % 1024 + r) as u8));
    }
    bytes
}

fn check_cifar_pixels(image: &RawImage, record: usize) {
    assert_eq!((image.width, image.height, image.channels), (32, 32, 3));
    for (p, c) in [(0, 0), (0, 2), (33, 1), (1023, 2)] {
        assert_eq!(image.pixels[p * 3 + c], (c * 50 + p + record) as u8, "pixel {p}, channel {c}");
    }
}

#[test]
fn cifar10_reads_batches_in_either_folder() {
    let dir = Scratch::new("cifar10");
    for i in 1..=5 {
        dir.write(&format!("cifar-10-batches-bin/data_batch_{i}.bin"), &cifar_records(&[&[i], &[9]]));
    }
    dir.write("cifar-10-batches-bin/test_batch.bin", &cifar_records(&[&[3], &[4], &[5]]));
    let spec: DataSpec = format!("cifar10:{}", dir.0.display()).parse().unwrap();
    let train = data::open(&spec, Split::Train).unwrap();
    assert_eq!((train.len(), train.classes()), (10, 10));
    let (image, label) = train.get(4).unwrap();
    assert_eq!(label, 3); // data_batch_3, first record
    check_cifar_pixels(&image, 0);
    let validation = data::open(&DataSpec::Cifar10(dir.0.join("cifar-10-batches-bin")), Split::Validation).unwrap();
    assert_eq!(validation.len(), 3);
    let (image, label) = validation.get(2).unwrap();
    assert_eq!(label, 5);
    check_cifar_pixels(&image, 2);
    assert!(validation.describe().starts_with("CIFAR-10 validation: 3 RGB images of 32x32, 10 classes"));

    let path = dir.write("cifar-10-batches-bin/test_batch.bin", &cifar_records(&[&[3]])[..3000]);
    let truncated = err_text(data::open(&spec, Split::Validation));
    assert_eq!(truncated, format!("{}: 3000 bytes, not a whole number of 3073-byte records: truncated or not a CIFAR-10 file", path.display()));
    dir.write("cifar-10-batches-bin/test_batch.bin", &cifar_records(&[&[3], &[10]]));
    let label = err_text(data::open(&spec, Split::Validation));
    assert!(label.ends_with("test_batch.bin: label 10 of record 1 is not below 10: corrupt or not a CIFAR-10 file"), "{label}");
    std::fs::remove_file(dir.0.join("cifar-10-batches-bin/data_batch_4.bin")).unwrap();
    let missing = err_text(data::open(&spec, Split::Train));
    assert!(missing.contains("data_batch_4.bin: not found (the CIFAR-10 binary version has data_batch_1.bin,"), "{missing}");
}

#[test]
fn cifar100_uses_the_fine_label() {
    let dir = Scratch::new("cifar100");
    dir.write("train.bin", &cifar_records(&[&[19, 99], &[0, 7]]));
    dir.write("test.bin", &cifar_records(&[&[1, 2]]));
    let spec = DataSpec::Cifar100(dir.0.clone());
    let train = data::open(&spec, Split::Train).unwrap();
    assert_eq!((train.len(), train.classes()), (2, 100));
    assert_eq!(train.get(0).unwrap().1, 99);
    let (image, label) = train.get(1).unwrap();
    assert_eq!(label, 7);
    check_cifar_pixels(&image, 1);
    assert_eq!(data::open(&spec, Split::Validation).unwrap().len(), 1);
    dir.write("test.bin", &cifar_records(&[&[20, 2]]));
    assert!(err_text(data::open(&spec, Split::Validation)).ends_with("label 20 of record 0 is not below 20: corrupt or not a CIFAR-100 file"));
}

fn png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

/// A 3x2 RGB image whose red channel is `tag` everywhere.
fn tagged(tag: u8) -> Vec<u8> {
    png(&RgbImage::from_fn(3, 2, |x, y| Rgb([tag, x as u8, y as u8])))
}

#[test]
fn image_folder_with_train_and_val() {
    let dir = Scratch::new("folder");
    dir.write("train/dog/b.png", &tagged(11));
    dir.write("train/dog/a.PNG", &tagged(10));
    dir.write("train/cat/z.jpeg", &{
        let mut bytes = Vec::new();
        GrayImage::from_pixel(4, 4, Luma([200])).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
        bytes
    });
    dir.write("train/cat/notes.txt", b"not an image");
    dir.write("train/.hidden/x.png", &tagged(0));
    dir.write("val/dog/v.png", &tagged(12));
    let spec: DataSpec = format!("imagefolder:{}", dir.0.display()).parse().unwrap();
    let train = data::open(&spec, Split::Train).unwrap();
    assert_eq!((train.len(), train.classes()), (3, 2));
    let (grey, label) = train.get(0).unwrap();
    assert_eq!((grey.width, grey.height, grey.channels, label), (4, 4, 1, 0));
    assert!(grey.pixels.iter().all(|&v| v.abs_diff(200) <= 1), "{:?}", grey.pixels);
    let (first_dog, label) = train.get(1).unwrap();
    assert_eq!(label, 1);
    assert_eq!(first_dog.pixels, RgbImage::from_fn(3, 2, |x, y| Rgb([10, x as u8, y as u8])).into_raw());
    let validation = data::open(&spec, Split::Validation).unwrap();
    assert_eq!((validation.len(), validation.classes()), (1, 2));
    assert_eq!(validation.get(0).unwrap().0.pixels[0], 12);

    let bad = dir.write("train/cat/broken.png", b"\x89PNG\r\n\x1a\nnot really");
    let train = data::open(&spec, Split::Train).unwrap();
    let corrupt = err_text(train.get(0));
    assert!(corrupt.starts_with(&format!("{}: corrupt or truncated image", bad.display())), "{corrupt}");

    let stray = dir.write("val/bird/x.png", &tagged(1));
    std::fs::rename(dir.0.join("val"), dir.0.join("validation")).unwrap();
    let no_val = err_text(data::open(&spec, Split::Validation));
    assert_eq!(no_val, format!("{}: not found: an image folder with train/ has its validation split in val/", dir.0.join("val").display()));
    std::fs::rename(dir.0.join("validation"), dir.0.join("val")).unwrap();
    let unknown = err_text(data::open(&spec, Split::Validation));
    assert!(unknown.starts_with(&format!("{}: is not a class of the train split", stray.parent().unwrap().display())), "{unknown}");
}

#[test]
fn image_folder_without_train_holds_out_every_tenth_file() {
    let dir = Scratch::new("folder-flat");
    for i in 0..12u8 {
        dir.write(&format!("ant/{i:02}.png"), &tagged(i));
    }
    for i in 0..10u8 {
        dir.write(&format!("bee/{i:02}.png"), &tagged(100 + i));
    }
    let spec = DataSpec::ImageFolder(dir.0.clone());
    let train = data::open(&spec, Split::Train).unwrap();
    let validation = data::open(&spec, Split::Validation).unwrap();
    assert_eq!((train.len(), validation.len(), validation.classes()), (20, 2, 2));
    let tags = |source: &dyn Source| (0..source.len()).map(|i| source.get(i).unwrap().0.pixels[0]).collect::<Vec<_>>();
    assert_eq!(tags(&*validation), [9, 109]);
    assert!(!tags(&*train).contains(&9) && tags(&*train).contains(&11));
    assert!(validation.describe().contains("every 10th file of each class held out for validation"));

    dir.write("cow/readme.txt", b"");
    let empty = err_text(data::open(&spec, Split::Train));
    assert!(empty.ends_with("cow: has no .jpg, .jpeg or .png files"), "{empty}");
}

#[test]
fn spec_parses_and_prints() {
    let spec: DataSpec = "fashion-mnist:/usr/share/datasets/fashion-mnist".parse().unwrap();
    assert_eq!(spec, DataSpec::FashionMnist("/usr/share/datasets/fashion-mnist".into()));
    let synthetic: DataSpec = "synthetic:64,32,10".parse().expect("parses");
    assert_eq!(synthetic, DataSpec::Synthetic { count: 64, size: 32, classes: 10 });
    assert_eq!(synthetic.to_string(), "synthetic:64,32,10");
    assert!("synthetic:0".parse::<DataSpec>().is_err());
    let source = data::open(&synthetic, Split::Train).expect("opens");
    let (a, label) = source.get(3).expect("example");
    assert_eq!((a.width, a.height, a.channels, a.pixels.len()), (32, 32, 3, 32 * 32 * 3));
    assert!(label < 10);
    assert_eq!(source.get(3).expect("again").0, a, "a seeded function of the index");
    assert_eq!(spec.to_string(), "fashion-mnist:/usr/share/datasets/fashion-mnist");
    let kinds = "KIND one of mnist, fashion-mnist, cifar10, cifar100, imagefolder";
    for bad in ["svhn:/data", "/data/mnist", "mnist:"] {
        let e = err_text(bad.parse::<DataSpec>());
        assert!(e.contains(kinds) && e.contains(&format!("`{bad}`")), "{e}");
    }
}

/// Mean 0.5 and std 0.25: 0 -> -2, 255 -> 2 exactly.
fn transform(channels: usize, height: usize, width: usize) -> Transform {
    Transform {
        channels,
        height,
        width,
        train: false,
        crop: TrainCrop::Pad(0),
        flip: false,
        crop_pct: 1.0,
        mean: vec![0.5; channels],
        std: vec![0.25; channels],
    }
}

fn grey(width: usize, height: usize, pixel: impl Fn(usize, usize) -> u8) -> RawImage {
    let pixels = (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).map(|(x, y)| pixel(x, y)).collect();
    RawImage { width, height, channels: 1, pixels }
}

fn value(v: u8) -> f32 {
    (f32::from(v) / 255.0 - 0.5) / 0.25
}

#[test]
fn eval_transform_crops_the_center_and_normalises() {
    let mut rng = Rng::new(0);
    // 6x2 at crop_pct 1: the shorter side is already 2, so no resize; columns 2..4 are kept.
    let wide = grey(6, 2, |x, y| (x * 40 + y) as u8);
    let out = transform(1, 2, 2).apply(&wide, &mut rng).unwrap();
    assert_eq!(out, [80, 120, 81, 121].map(value));
    // 4x4 at crop_pct 0.5: resized to 2 / 0.5 = 4 (unchanged), center 2x2.
    let square = grey(4, 4, |x, y| if (1..3).contains(&x) && (1..3).contains(&y) { 255 } else { 0 });
    let out = Transform { crop_pct: 0.5, ..transform(1, 2, 2) }.apply(&square, &mut rng).unwrap();
    assert_eq!(out, [2.0; 4]);
}

#[test]
fn grey_repeats_into_rgb_and_rgb_becomes_luminance() {
    let mut rng = Rng::new(0);
    let image = grey(2, 1, |x, _| if x == 0 { 0 } else { 255 });
    let t = Transform { mean: vec![0.5, 0.0, 1.0], std: vec![0.5, 1.0, 0.5], ..transform(3, 1, 2) };
    assert_eq!(t.apply(&image, &mut rng).unwrap(), [-1.0, 1.0, 0.0, 1.0, -2.0, 0.0]);
    // PIL's convert("L"): pure red is 76, pure green 150.
    let rgb = RawImage { width: 2, height: 1, channels: 3, pixels: vec![255, 0, 0, 0, 255, 0] };
    assert_eq!(transform(1, 1, 2).apply(&rgb, &mut rng).unwrap(), [value(76), value(150)]);
}

#[test]
fn pad_crop_and_flip_shift_the_image_with_black_borders() {
    // 3x3 with distinct values; padding 1 allows 9 shifts, flips double them.
    let image = grey(3, 3, |x, y| (1 + x + 3 * y) as u8 * 20);
    let t = Transform { train: true, crop: TrainCrop::Pad(1), flip: true, ..transform(1, 3, 3) };
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..400 {
        let out = t.apply(&image, &mut Rng::new(seed)).unwrap();
        let found = (-1..=1).flat_map(|dy| (-1..=1).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)])).find(|&(dy, dx, flip)| {
            let expected = (0..9).map(|i| {
                let (y, x) = (i / 3, if flip { 2 - i % 3 } else { i % 3 });
                let (sy, sx) = (y + dy, x + dx);
                if (0..3).contains(&sy) && (0..3).contains(&sx) {
                    value(image.pixels[(sy * 3 + sx) as usize])
                } else {
                    -2.0
                }
            });
            expected.eq(out.iter().copied())
        });
        seen.insert(found.expect("every output is a shift of the image, maybe flipped"));
    }
    assert_eq!(seen.len(), 18);
}

#[test]
fn random_resized_crop_of_the_whole_square_is_the_image() {
    let image = grey(4, 4, |x, y| (x * 60 + y) as u8);
    let full = Transform { train: true, crop: TrainCrop::RandomResized { scale: (1.0, 1.0), ratio: (1.0, 1.0) }, ..transform(1, 4, 4) };
    assert_eq!(full.apply(&image, &mut Rng::new(3)).unwrap(), transform(1, 4, 4).apply(&image, &mut Rng::new(3)).unwrap());
    let usual = Transform { crop: TrainCrop::RandomResized { scale: (0.08, 1.0), ratio: (0.75, 4.0 / 3.0) }, height: 3, width: 2, ..full };
    for seed in 0..50 {
        let out = usual.apply(&grey(40, 30, |x, y| (x + y) as u8), &mut Rng::new(seed)).unwrap();
        assert_eq!(out.len(), 6);
        assert!(out.iter().all(|&v| (value(0)..=value(68)).contains(&v)), "{out:?}");
    }
}

#[test]
fn transform_settings_and_image_sizes_are_checked() {
    let mut rng = Rng::new(0);
    let image = grey(2, 2, |_, _| 0);
    let bad_mean = Transform { mean: vec![0.5; 3], ..transform(1, 2, 2) };
    assert_eq!(err_text(bad_mean.apply(&image, &mut rng)), "transform: 3 means and 1 stds for 1 channels");
    let zero_std = Transform { std: vec![0.0], ..transform(1, 2, 2) };
    assert!(err_text(zero_std.apply(&image, &mut rng)).contains("std must be finite and non-zero"));
    let short = RawImage { pixels: vec![0; 3], ..image };
    assert_eq!(err_text(transform(1, 2, 2).apply(&short, &mut rng)), "a 2x2 image with 1 channels cannot have 3 bytes");
}

/// Example `i` is a 4x4 grey image of value `i` (mod 256) labelled `i`; one example may fail,
/// each `get` may sleep.
struct Numbered {
    len: usize,
    fail_at: Option<usize>,
    delay: Duration,
    reads: AtomicUsize,
}

impl Numbered {
    fn new(len: usize) -> Numbered {
        Numbered { len, fail_at: None, delay: Duration::ZERO, reads: AtomicUsize::new(0) }
    }
}

impl Source for Numbered {
    fn len(&self) -> usize {
        self.len
    }

    fn classes(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<(RawImage, u32), DataError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(self.delay);
        if Some(index) == self.fail_at {
            return Err(DataError::File { path: format!("example-{index}.png").into(), reason: "corrupt".to_owned() });
        }
        Ok((grey(4, 4, |_, _| index as u8), index as u32))
    }

    fn describe(&self) -> String {
        format!("{} numbered images", self.len)
    }
}

/// Training transform: random crop and flip, so that augmentation shows in the batches.
fn augmenting() -> Arc<Transform> {
    Arc::new(Transform { train: true, crop: TrainCrop::Pad(1), flip: true, ..transform(1, 4, 4) })
}

fn collect(source: Numbered, cfg: &LoaderConfig) -> Vec<Batch> {
    batches(Arc::new(source), augmenting(), cfg).collect::<Result<_, _>>().unwrap()
}

fn labels(batches: &[Batch]) -> Vec<Vec<i64>> {
    batches.iter().map(|b| b.labels.clone()).collect()
}

fn shuffled(epoch: u64, workers: usize) -> LoaderConfig {
    LoaderConfig { batch: 8, shuffle: true, seed: 7, epoch, workers, prefetch: 3, ..LoaderConfig::default() }
}

#[test]
fn loader_batches_do_not_depend_on_workers() {
    let one = collect(Numbered::new(50), &shuffled(0, 1));
    let four = collect(Numbered::new(50), &shuffled(0, 4));
    assert_eq!(one, four);
    assert_eq!(
        one.iter().map(|b| (b.index, b.len, b.images.len())).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5, 6].map(|i| (i, if i < 6 { 8 } else { 2 }, if i < 6 { 128 } else { 32 }))
    );
    let mut all: Vec<i64> = labels(&one).concat();
    assert_ne!(all, (0..50).collect::<Vec<_>>(), "shuffled");
    all.sort_unstable();
    assert_eq!(all, (0..50).collect::<Vec<_>>(), "every example once");
    let next_epoch = collect(Numbered::new(50), &shuffled(1, 2));
    assert_ne!(labels(&next_epoch), labels(&one));
}

#[test]
fn loader_resumes_mid_epoch_with_the_same_batches() {
    let whole = collect(Numbered::new(50), &shuffled(3, 2));
    for start in [0, 2, 6, 7, 9] {
        let tail = collect(Numbered::new(50), &LoaderConfig { start_batch: start, ..shuffled(3, 3) });
        assert_eq!(tail, whole[start.min(whole.len())..], "start at batch {start}");
    }
}

/// The processes of a data-parallel job each take a contiguous part of every batch: the parts
/// are the whole batch, in order, with the same augmented images (an example's augmentation
/// depends on the example, not on who reads it); a short last batch is cut as evenly as it goes.
#[test]
fn the_shards_of_a_batch_are_its_parts_in_order() {
    let whole = collect(Numbered::new(50), &shuffled(2, 2));
    for count in [2, 3] {
        let parts: Vec<Vec<Batch>> =
            (0..count).map(|index| collect(Numbered::new(50), &LoaderConfig { shard: Shard { index, count }, ..shuffled(2, 3) })).collect();
        for (b, batch) in whole.iter().enumerate() {
            let labels: Vec<i64> = parts.iter().flat_map(|p| p[b].labels.clone()).collect();
            let images: Vec<f32> = parts.iter().flat_map(|p| p[b].images.clone()).collect();
            assert_eq!(labels, batch.labels, "batch {b} in {count} parts");
            assert!(images == batch.images, "batch {b} in {count} parts: other images");
        }
        let last: Vec<usize> = parts.iter().map(|p| p[6].len).collect();
        assert_eq!(last, if count == 2 { vec![1, 1] } else { vec![0, 1, 1] });
    }
    assert_eq!(Shard { index: 1, count: 3 }.range(8), 2..5);
    assert_eq!(Shard::WHOLE.range(8), 0..8);
}

#[test]
fn loader_drop_last_and_limit() {
    let ordered = LoaderConfig { batch: 4, workers: 2, ..LoaderConfig::default() };
    assert_eq!(labels(&collect(Numbered::new(10), &ordered)), [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    let dropping = LoaderConfig { drop_last: true, ..ordered.clone() };
    assert_eq!(labels(&collect(Numbered::new(10), &dropping)), [vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    assert_eq!(data::batch_count(10, &dropping), 2);
    // limit 5 of 100: evenly spread, the same examples in every epoch.
    let limited = LoaderConfig { limit: Some(5), ..ordered.clone() };
    assert_eq!(labels(&collect(Numbered::new(100), &limited)), [vec![0, 20, 40, 60], vec![80]]);
    let mut picked = labels(&collect(Numbered::new(100), &LoaderConfig { shuffle: true, epoch: 4, ..limited.clone() })).concat();
    picked.sort_unstable();
    assert_eq!(picked, [0, 20, 40, 60, 80]);
    assert_eq!(data::batch_count(100, &limited), 2);
}

#[test]
fn loader_error_ends_the_epoch_after_the_batches_before_it() {
    let source = Numbered { fail_at: Some(13), ..Numbered::new(40) };
    let cfg = LoaderConfig { batch: 4, workers: 3, ..LoaderConfig::default() };
    let results: Vec<_> = batches(Arc::new(source), augmenting(), &cfg).collect();
    assert_eq!(results.len(), 4);
    assert!(results[..3].iter().all(Result::is_ok));
    assert_eq!(results[3].as_ref().unwrap_err().to_string(), "example-13.png: corrupt");
    let zero = LoaderConfig { batch: 0, ..cfg };
    let results: Vec<_> = batches(Arc::new(Numbered::new(4)), augmenting(), &zero).collect();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].as_ref().unwrap_err().to_string(), "loader: the batch size is 0");
}

#[test]
fn dropping_the_loader_stops_its_workers_promptly() {
    let source = Arc::new(Numbered { delay: Duration::from_millis(2), ..Numbered::new(100_000) });
    let cfg = LoaderConfig { batch: 16, workers: 4, prefetch: 4, ..LoaderConfig::default() };
    let mut loader = batches(source.clone(), augmenting(), &cfg);
    assert_eq!(loader.next().unwrap().unwrap().index, 0);
    let start = Instant::now();
    drop(loader);
    assert!(start.elapsed() < Duration::from_millis(500), "drop took {:?}", start.elapsed());
    let reads = source.reads.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(source.reads.load(Ordering::Relaxed), reads, "no worker is left reading");
    assert!(reads < 16 * 12, "prefetching stays bounded: {reads} reads");
    assert_eq!(Arc::strong_count(&source), 1, "the workers let go of the source");
}

#[test]
fn fashion_mnist_when_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "CI is set, so {} is required (Debian package dataset-fashion-mnist)", dir.display());
        eprintln!("skipped: no {} (Debian package dataset-fashion-mnist)", dir.display());
        return;
    }
    let spec: DataSpec = format!("fashion-mnist:{}", dir.display()).parse().unwrap();
    let train = data::open(&spec, Split::Train).unwrap();
    let validation = data::open(&spec, Split::Validation).unwrap();
    assert_eq!((train.len(), train.classes(), validation.len(), validation.classes()), (60_000, 10, 10_000, 10));
    assert!(train.describe().starts_with("Fashion-MNIST train: 60000 grey images of 28x28, 10 classes"), "{}", train.describe());
    let cfg = LoaderConfig { batch: 64, shuffle: true, workers: 2, ..LoaderConfig::default() };
    let batch = batches(Arc::from(train), Arc::new(spec.default_transform(3, 32, 32, true)), &cfg).next().unwrap().unwrap();
    assert_eq!((batch.len, batch.images.len()), (64, 64 * 3 * 32 * 32));
    assert!(batch.labels.iter().all(|l| (0..10).contains(l)));
    assert!(batch.images.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert!(batch.labels.iter().collect::<std::collections::BTreeSet<_>>().len() >= 5, "a shuffled batch mixes classes");
}
