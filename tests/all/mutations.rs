//! Bytes flipped, cut out, cut off and grown in every kind of file incc reads besides `.inc`
//! sources (those are mutated in `errors.rs`): ONNX models (`incc run model.onnx`), safetensors
//! (`--weights`, checkpoints for `incc eval`) and data sets (IDX raw and gzipped, CIFAR, JPEG and
//! PNG in an image folder, for `incc train`). The binary runs each case, as a user would: it
//! must finish, or fail with status 1 or 2 and an `error:` line; never a panic (status 101), an
//! abort or a signal. A failing case's files are kept under `target/cli-test/mutations/`.

use crate::common::{fresh_folder, incc, ort_ready};
use incc::rng::Rng;
use std::path::{Path, PathBuf};

const TINY: &str = "tests/fixtures/tiny_residual.inc";

/// `bytes` changed in one to three places: bits flipped, a byte set, a range cut out, the end cut
/// off, bytes inserted or appended. Half the places are in the first 256 bytes, where the
/// headers are.
fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = out.len().max(1);
        let at = if rng.below(2) == 0 { rng.below(len.min(256)) } else { rng.below(len) }.min(out.len());
        match rng.below(6) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = [0x00, 0xff, 0x7f, 0x80][rng.below(4)],
            2 => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                out.drain(at..end);
            }
            3 => out.truncate(at),
            4 => {
                let grown: Vec<u8> = (0..1 + rng.below(64)).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, grown);
            }
            _ => out.extend((0..1 + rng.below(4096)).map(|_| rng.next_u64() as u8)),
        }
    }
    out
}

/// One mutated case: the files to write and the command that reads them.
struct Case {
    name: String,
    files: Vec<(PathBuf, Vec<u8>)>,
    args: Vec<String>,
}

/// `rounds` cases, each the folder `base` copied to `<dir>/<kind>-<round>` with one of its files
/// (the ones `pick` keeps) mutated; `args` makes the command for a case's folder.
fn cases(dir: &Path, kind: &str, base: &Path, rounds: usize, rng: &mut Rng, pick: impl Fn(&Path) -> bool, args: impl Fn(&Path) -> Vec<String>) -> Vec<Case> {
    let files: Vec<PathBuf> = walk(base).into_iter().filter(|f| pick(f)).collect();
    assert!(!files.is_empty(), "no files to mutate in {}", base.display());
    (0..rounds)
        .map(|round| {
            let folder = dir.join(format!("{kind}-{round}"));
            let chosen = &files[rng.below(files.len())];
            let written = walk(base)
                .into_iter()
                .map(|f| {
                    let bytes = std::fs::read(&f).expect("readable");
                    let bytes = if f == *chosen { mutate(&bytes, rng) } else { bytes };
                    (folder.join(f.strip_prefix(base).expect("inside")), bytes)
                })
                .collect();
            Case { name: format!("{kind}-{round} ({} mutated)", chosen.strip_prefix(base).expect("inside").display()), files: written, args: args(&folder) }
        })
        .collect()
}

/// Every file below `dir`, in name order.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).expect("listable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn text(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_string()
}

/// An IDX file of unsigned bytes.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = (0x0800 | dims.len() as u32).to_be_bytes().to_vec();
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("in memory");
    encoder.finish().expect("in memory")
}

/// Small data sets in `dir`: MNIST's layout (the training images gzipped), CIFAR-10's, and an
/// image folder of JPEGs and PNGs.
fn data_sets(dir: &Path, rng: &mut Rng) -> [PathBuf; 3] {
    let mut noise = |n: usize| (0..n).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>();
    let mnist = dir.join("mnist");
    std::fs::create_dir_all(&mnist).expect("folder");
    for (prefix, n) in [("train", 32u32), ("t10k", 8)] {
        let images = idx(&[n, 28, 28], &noise(n as usize * 784));
        let labels = idx(&[n], &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>());
        let (name, images) = if prefix == "train" { ("train-images-idx3-ubyte.gz", gzip(&images)) } else { ("t10k-images-idx3-ubyte", images) };
        std::fs::write(mnist.join(name), images).expect("write");
        std::fs::write(mnist.join(format!("{prefix}-labels-idx1-ubyte")), labels).expect("write");
    }
    let cifar = dir.join("cifar");
    std::fs::create_dir_all(&cifar).expect("folder");
    for name in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        let records: Vec<u8> = (0..8u8).flat_map(|i| [vec![i % 10], noise(3072)].concat()).collect();
        std::fs::write(cifar.join(name), records).expect("write");
    }
    let folder = dir.join("images");
    for (split, n) in [("train", 4u8), ("val", 2)] {
        for (class, format) in [("a", image::ImageFormat::Jpeg), ("b", image::ImageFormat::Png)] {
            let at = folder.join(split).join(class);
            std::fs::create_dir_all(&at).expect("folder");
            for i in 0..n {
                let pixels = noise(16 * 12 * 3);
                let image = image::RgbImage::from_raw(16, 12, pixels).expect("sized");
                image.save_with_format(at.join(format!("{i}.{}", format.extensions_str()[0])), format).expect("image");
            }
        }
    }
    [mnist, cifar, folder]
}

/// Runs every case (a few at a time) and lists those that did not end cleanly.
fn run_all(cases: Vec<Case>) -> Vec<String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let failures = std::sync::Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(case) = cases.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                    for (path, bytes) in &case.files {
                        std::fs::create_dir_all(path.parent().expect("in a folder")).expect("folder");
                        std::fs::write(path, bytes).expect("write");
                    }
                    let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
                    let (code, _, err) = incc(&args);
                    let clean = match code {
                        0 => true,
                        1 | 2 => err.lines().any(|l| l.starts_with("error: ") || l.starts_with("error[")) && !err.contains("panicked"),
                        _ => false,
                    };
                    if clean {
                        let _ = std::fs::remove_dir_all(
                            case.files[0].0.ancestors().find(|a| a.parent().is_some_and(|p| p.ends_with("mutations"))).expect("case folder"),
                        );
                    } else {
                        failures.lock().expect("lock").push(format!("{}: `incc {}` exited {code}:\n{err}", case.name, case.args.join(" ")));
                    }
                }
            });
        }
    });
    failures.into_inner().expect("lock")
}

#[test]
fn mutated_models_weights_checkpoints_and_data_never_panic() {
    if !ort_ready() {
        return;
    }
    let dir = fresh_folder("mutations");
    let bases = dir.join("bases");
    let mut rng = Rng::new(0x6d75_7461_7465);
    // The files as incc writes them.
    let model = bases.join("model");
    let weights = bases.join("weights");
    std::fs::create_dir_all(&model).expect("folder");
    std::fs::create_dir_all(&weights).expect("folder");
    let (code, _, err) = incc(&["compile", TINY, "-o", &text(&model.join("m.onnx")), "--save-weights", &text(&weights.join("w.safetensors"))]);
    assert_eq!(code, 0, "{err}");
    let run = bases.join("run");
    let short =
        ["train", TINY, "--data", "synthetic:32,15,5", "--batch", "8", "--epochs", "1", "--limit-val", "8", "--threads", "1", "--quiet", "--ema", "0.9"];
    let (code, _, err) = incc(&[&short[..], &["--out", &text(&run)]].concat());
    assert_eq!(code, 0, "{err}");
    let checkpoint = bases.join("checkpoint");
    std::fs::create_dir_all(&checkpoint).expect("folder");
    std::fs::copy(run.join("last.safetensors"), checkpoint.join("last.safetensors")).expect("copy");
    let [mnist, cifar, images] = data_sets(&bases.join("data"), &mut rng);

    let any = |_: &Path| true;
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let train = |data: String, more: &[&str], folder: &Path| {
        let base = ["train", TINY, "--batch", "4", "--max-steps", "2", "--limit-val", "4", "--threads", "1", "--quiet", "--workers", "1"];
        [owned(&base), owned(more), vec!["--data".into(), data, "--out".into(), text(&folder.join("out"))]].concat()
    };
    let mut all = vec![];
    all.extend(cases(&dir, "onnx", &model, 30, &mut rng, any, |f| owned(&["run", &text(&f.join("m.onnx")), "--threads", "1"])));
    all.extend(cases(&dir, "weights", &weights, 20, &mut rng, any, |f| owned(&["run", TINY, "--weights", &text(&f.join("w.safetensors")), "--threads", "1"])));
    all.extend(cases(&dir, "checkpoint", &checkpoint, 20, &mut rng, any, |f| {
        owned(&["eval", &text(&f.join("last.safetensors")), "--data", "synthetic:8,15,5", "--threads", "1"])
    }));
    all.extend(cases(&dir, "idx", &mnist, 10, &mut rng, any, |f| train(format!("mnist:{}", text(f)), &["--set", "classes=10"], f)));
    all.extend(cases(&dir, "cifar", &cifar, 8, &mut rng, any, |f| train(format!("cifar10:{}", text(f)), &["--set", "classes=10"], f)));
    all.extend(cases(&dir, "images", &images, 12, &mut rng, any, |f| train(format!("imagefolder:{}", text(f)), &["--set", "classes=2"], f)));
    let failures = run_all(all);
    assert!(failures.is_empty(), "{} cases did not end cleanly:\n\n{}", failures.len(), failures.join("\n\n"));
}
