//! Multi-crop and ensemble evaluation (`incc eval CKPT... --crops N`, docs/experiments.md): the
//! crops the loader makes against crops cut here by hand; an ensemble's scores against those
//! computed from its members' saved probabilities; the errors of bad members.

use crate::common::{fresh_folder, incc, ort_ready};
use incc::data::{batches, Crops, DataError, LoaderConfig, RawImage, Source, TrainCrop, Transform};
use incc::runtime::images::Interpolation;
use std::path::Path;
use std::sync::Arc;

/// One grey image whose pixels all differ: 10 wide, 8 high.
const W: usize = 10;
const H: usize = 8;
fn pixel(x: usize, y: usize) -> u8 {
    (x + W * y) as u8
}

struct OneImage(RawImage);

impl Source for OneImage {
    fn len(&self) -> usize {
        1
    }
    fn classes(&self) -> usize {
        1
    }
    fn get(&self, _: usize) -> Result<(RawImage, u32), DataError> {
        Ok((self.0.clone(), 0))
    }
    fn describe(&self) -> String {
        "one image".into()
    }
}

/// The loader's crops of the image (mean 0.5, std 0.25 so that 0 -> -2 and 255 -> 2 exactly).
fn loaded(crops: Crops, size: usize, crop_pct: f32, width: usize, height: usize) -> Vec<f32> {
    let pixels = (0..height).flat_map(|y| (0..width).map(move |x| pixel(x, y))).collect();
    let image = RawImage { width, height, channels: 1, pixels };
    let t = Transform {
        channels: 1,
        height: size,
        width: size,
        train: false,
        crop: TrainCrop::Pad(0),
        flip: false,
        crop_pct,
        interpolation: Interpolation::Bicubic,
        crops,
        mean: vec![0.5],
        std: vec![0.25],
    };
    let cfg = LoaderConfig { batch: 1, ..LoaderConfig::default() };
    let batch = batches(Arc::new(OneImage(image)), Arc::new(t), &cfg).next().expect("a batch").expect("loads");
    assert_eq!(batch.images.len(), crops.count() * size * size);
    batch.images
}

/// The `size` x `size` crop at (left, top) of the image as it is (no resize), mirrored or not.
fn by_hand(left: usize, top: usize, size: usize, mirror: bool) -> Vec<f32> {
    let mut out = vec![];
    for y in 0..size {
        for x in 0..size {
            let sx = if mirror { left + size - 1 - x } else { left + x };
            out.push((f32::from(pixel(sx, top + y)) / 255.0 - 0.5) / 0.25);
        }
    }
    out
}

#[test]
fn ten_and_twelve_crops_are_the_corners_the_centre_and_their_mirrors() {
    // crop 0.5 of a 4x4 input: the shorter side becomes 8, which it is: no resize, so every crop
    // is a window of the image. Centre: torchvision's offsets, round((10-4)/2) = 3, round((8-4)/2) = 2.
    let size = 4;
    let positions = [(0, 0), (W - size, 0), (0, H - size), (W - size, H - size), (3, 2)];
    let ten = loaded(Crops::Ten, size, 0.5, W, H);
    let view = |all: &[f32], i: usize| all[i * size * size..(i + 1) * size * size].to_vec();
    for (i, &(left, top)) in positions.iter().enumerate() {
        assert_eq!(view(&ten, i), by_hand(left, top, size, false), "crop {i} at ({left}, {top})");
        assert_eq!(view(&ten, 5 + i), by_hand(left, top, size, true), "mirror of crop {i}");
    }
    assert_eq!(view(&ten, 4), loaded(Crops::One, size, 0.5, W, H), "the centre crop is the single crop");
    // 12: the same five, the whole image resized to the input; then the six mirrored.
    let twelve = loaded(Crops::Twelve, size, 0.5, W, H);
    for i in 0..5 {
        assert_eq!(view(&twelve, i), view(&ten, i));
        assert_eq!(view(&twelve, 6 + i), view(&ten, 5 + i));
    }
    let whole = view(&twelve, 5);
    let mirrored: Vec<f32> = whole.chunks(size).flat_map(|row| row.iter().rev().copied()).collect();
    assert_eq!(view(&twelve, 11), mirrored);
}

#[test]
fn the_144_crops_are_googlenets_squares_corners_and_mirrors() {
    // A 7x7 input: the four scales are 256, 288, 320, 352 x 7 / 224 = 8, 9, 10, 11. A 12x8 image is
    // at the first scale already: its squares are the columns 0..8, 2..10 and 4..12; from each,
    // the 7x7 corners and centre (round((8-7)/2) = 0), then the whole square resized.
    let (size, width) = (7, 12);
    let all = loaded(Crops::Dense, size, 0.875, width, H);
    let view = |i: usize| all[i * size * size..(i + 1) * size * size].to_vec();
    for (s, left) in [0, 2, 4].into_iter().enumerate() {
        for (k, (dx, dy)) in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 0)].into_iter().enumerate() {
            let i = 6 * s + k;
            assert_eq!(view(i), by_hand(left + dx, dy, size, false), "square {s}, crop {k}");
            assert_eq!(view(72 + i), by_hand(left + dx, dy, size, true), "its mirror");
        }
    }
}

/// A .npy file of little-endian 4- or 8-byte values: its values as f64.
fn read_npy(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]).into_owned();
    let data = &bytes[10 + header_len..];
    if header.contains("'<f4'") {
        data.chunks_exact(4).map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap()))).collect()
    } else {
        assert!(header.contains("'<i8'"), "{header}");
        data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect()
    }
}

/// Top-1 and top-5 of probability rows (ties count against the example, as incc counts them).
fn top_k(p: &[f64], labels: &[f64], classes: usize) -> (f64, f64) {
    let (mut top1, mut top5) = (0, 0);
    for (row, &label) in p.chunks(classes).zip(labels) {
        let target = row[label as usize];
        let above = row.iter().enumerate().filter(|&(j, &v)| j != label as usize && v >= target).count();
        top1 += usize::from(above < 1);
        top5 += usize::from(above < 5);
    }
    (top1 as f64 / labels.len() as f64, top5 as f64 / labels.len() as f64)
}

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Two Fashion-MNIST mini networks trained briefly (a dozen steps each), once for the tests below.
fn two_members() -> Option<[String; 2]> {
    if !Path::new(FMNIST).join("train-images-idx3-ubyte.gz").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must install the Debian package dataset-fashion-mnist");
        eprintln!("skipped: no Fashion-MNIST in {FMNIST}");
        return None;
    }
    if !ort_ready() {
        return None;
    }
    static MEMBERS: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    Some(
        MEMBERS
            .get_or_init(|| {
                let dir = fresh_folder("ensemble-members");
                ["inception_fmnist", "inception_resnet_fmnist"].map(|name| {
                    let out = dir.join(name).display().to_string();
                    let data = format!("fashion-mnist:{FMNIST}");
                    let arch = format!("archs/mini/{name}.inc");
                    let args = ["train", &arch, "--data", &data, "--out", &out, "--epochs", "1", "--batch", "32", "--limit-train", "384", "--limit-val", "32"];
                    let (code, _, err) = incc(&[&args[..], &["--quiet", "--threads", "1"]].concat());
                    assert_eq!(code, 0, "{err}");
                    format!("{out}/last.safetensors")
                })
            })
            .clone(),
    )
}

fn eval_json(args: &[&str]) -> serde_json::Value {
    let data = format!("fashion-mnist:{FMNIST}");
    let (code, out, err) = incc(&[&["eval"], args, &["--data", &data, "--limit", "40", "--json", "--threads", "1"]].concat());
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn an_ensembles_scores_are_those_of_its_members_averaged_probabilities() {
    let Some([a, b]) = two_members() else { return };
    let dir = fresh_folder("ensemble-eval");
    let (pa, pb, pe) = (dir.join("a"), dir.join("b"), dir.join("ensemble"));
    for crops in ["1", "10"] {
        let one = eval_json(&[&a, "--crops", crops, "--save-probabilities", &pa.display().to_string()]);
        eval_json(&[&b, "--crops", crops, "--save-probabilities", &pb.display().to_string()]);
        let both = eval_json(&[&a, &b, "--crops", crops, "--save-probabilities", &pe.display().to_string()]);
        assert_eq!(both["crops"], crops.parse::<u64>().unwrap());
        assert_eq!(both["members"][0]["scores"], one["members"][0]["scores"], "a member's scores alone and in the ensemble");
        let (p, q, labels) = (read_npy(&pa.join("probabilities.npy")), read_npy(&pb.join("probabilities.npy")), read_npy(&pa.join("labels.npy")));
        assert_eq!(labels.len(), 40);
        assert_eq!(read_npy(&pe.join("member1.npy")), q, "the members' probabilities are those each gives alone");
        let mean: Vec<f64> = p.iter().zip(&q).map(|(x, y)| f64::from(((x + y) / 2.0) as f32)).collect();
        assert_eq!(read_npy(&pe.join("probabilities.npy")), mean);
        for row in mean.chunks(10) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5, "probabilities sum to 1: {row:?}");
        }
        let (top1, top5) = top_k(&mean, &labels, 10);
        let e = &both["ensemble"];
        assert_eq!((e["top1"].as_f64(), e["top5"].as_f64(), e["examples"].as_u64()), (Some(top1), Some(top5), Some(40)), "crops {crops}");
        let loss = labels.iter().enumerate().map(|(i, &l)| -mean[i * 10 + l as usize].ln()).sum::<f64>() / 40.0;
        assert!((e["loss"].as_f64().unwrap() - loss).abs() < 1e-9);
    }
}

#[test]
fn bad_members_are_clear_errors() {
    let Some([a, _]) = two_members() else { return };
    let data = format!("fashion-mnist:{FMNIST}");
    let (code, _, err) = incc(&["eval", &a, "target/cli-test/no-such.safetensors", "--data", &data]);
    assert_eq!(code, 1);
    assert!(err.contains("error: checkpoint `target/cli-test/no-such.safetensors`: cannot read it"), "{err}");
    // A member of 5 classes: the same network trained with --set classes=5 on 5-class noise.
    let dir = fresh_folder("ensemble-five");
    let out = dir.join("five").display().to_string();
    let args =
        ["train", "archs/mini/inception_fmnist.inc", "--set", "classes=5", "--data", "synthetic:16,28,5", "--out", &out, "--epochs", "1", "--batch", "8"];
    let (code, _, err) = incc(&[&args[..], &["--quiet", "--threads", "1"]].concat());
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = incc(&["eval", &a, &format!("{out}/last.safetensors"), "--data", &data]);
    assert_eq!(code, 1);
    assert!(err.contains("outputs 5 classes but") && err.contains("must share their classes"), "{err}");
    let (code, _, err) = incc(&["eval", &a, "--crops", "7", "--data", &data]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("1, 10, 12 or 144"), "{err}");
}

#[test]
fn the_onnx_ensemble_gives_the_probabilities_of_incc_eval() {
    let Some([a, b]) = two_members() else { return };
    let dir = fresh_folder("ensemble-onnx");
    let onnx = dir.join("ensemble.onnx").display().to_string();
    let members = [format!("archs/mini/inception_fmnist.inc:{a}"), format!("archs/mini/inception_resnet_fmnist.inc:{b}")];
    let (code, _, err) = incc(&["compile", "--ensemble", &members[0], &members[1], "-o", &onnx]);
    assert_eq!(code, 0, "{err}");
    let saved = dir.join("eval");
    eval_json(&[&a, &b, "--save-probabilities", &saved.display().to_string()]);
    let want = read_npy(&saved.join("probabilities.npy"));

    // The same 40 images, as `incc eval` feeds them (both members take 1x28x28 alike: one input).
    let graph = crate::common::compile_arch("mini/inception_fmnist").graph;
    let spec: incc::data::DataSpec = format!("fashion-mnist:{FMNIST}").parse().unwrap();
    let val = incc::trainer::Examples::open(&spec, incc::data::Split::Validation, &graph, Some(40)).expect("opens");
    let cfg = LoaderConfig { batch: 40, limit: Some(40), ..LoaderConfig::default() };
    let batch = batches(val.source, val.transform, &cfg).next().expect("a batch").expect("loads");
    let config = incc::runtime::session::SessionConfig { threads: Some(1), ..Default::default() };
    let mut model = incc::runtime::session::Model::from_bytes(std::fs::read(&onnx).unwrap(), config).expect("loads");
    let outputs = incc::runtime::tensor::run(&mut model, &batch.images, [40, 1, 28, 28]).expect("runs");
    let (name, shape, got) = &outputs[0];
    assert_eq!((name.as_str(), shape.as_slice()), ("probabilities", &[40, 10][..]));
    let worst = got.iter().zip(&want).map(|(&g, &w)| (f64::from(g) - w).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-5, "the ONNX ensemble differs from incc eval by {worst}");
}

#[test]
fn onnx_members_of_other_input_sizes_get_their_own_inputs_and_other_class_counts_are_refused() {
    use incc::driver::{build_onnx, WeightsSource};
    use incc::elab::Settings;
    use incc::passes::PassOptions;
    let member = |set: &[(&str, &str)], input: Option<Vec<usize>>| {
        let settings = Settings { set: set.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), input, ..Settings::default() };
        build_onnx(Path::new("tests/fixtures/tiny_residual.inc"), &settings, &PassOptions::default(), WeightsSource::Seed(1), None)
            .and_then(|a| a.standalone())
            .expect("builds")
    };
    let (small, large) = (member(&[], None), member(&[], Some(vec![3, 23, 23])));
    let model = incc::onnx::ensemble::ensemble(&[small.clone(), large]).expect("an ensemble");
    let graph = model.graph.as_ref().unwrap();
    let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(inputs, ["m0/images", "m1/images"]);
    assert!(graph.initializer.iter().all(|t| t.name.starts_with("m0/") || t.name.starts_with("m1/")), "every parameter under its member's prefix");
    let says = |key: &str| model.metadata_props.iter().find(|p| p.key == key).map(|p| p.value.clone());
    assert_eq!(says("incc.ensemble.m1.input").as_deref(), Some("3x23x23"));
    assert!(says("incc.ensemble.inputs").is_some_and(|v| v.starts_with("one per member")));
    let err = incc::onnx::ensemble::ensemble(&[small, member(&[("classes", "7")], None)]).expect_err("refused");
    assert!(err.contains("must share their classes"), "{err}");
}

#[test]
fn incc_run_ranks_an_ensembles_probabilities_as_they_are() {
    use incc::driver::{build_onnx, WeightsSource};
    if !ort_ready() {
        return;
    }
    let member = |seed| {
        let settings = incc::elab::Settings::default();
        build_onnx(Path::new("tests/fixtures/tiny_residual.inc"), &settings, &incc::passes::PassOptions::default(), WeightsSource::Seed(seed), None)
            .and_then(|a| a.standalone())
            .unwrap()
    };
    let dir = fresh_folder("ensemble-run");
    let (onnx, png) = (dir.join("ensemble.onnx"), dir.join("image.png"));
    let model = incc::onnx::ensemble::ensemble(&[member(1), member(2)]).expect("an ensemble");
    incc::onnx::emit::write(&model, None, &onnx, usize::MAX).expect("written");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 128])).save(&png).expect("saved");
    let (code, out, err) = incc(&["run", &onnx.display().to_string(), "--input", &png.display().to_string(), "--threads", "1"]);
    assert_eq!(code, 0, "{err}");
    // The percentages printed are the model's probabilities (not a softmax of them).
    let printed: Vec<f64> = out.lines().filter_map(|l| l.trim().split_once('%')).map(|(p, _)| p.trim().parse::<f64>().unwrap()).collect();
    let metadata: std::collections::BTreeMap<String, String> = model.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
    let (h, w) = (15, 15); // tiny_residual: input 3x15x15
    let pre = incc::runtime::images::Preprocess::new(h, w).with_metadata(&metadata).expect("metadata");
    let image = incc::runtime::images::load_image(&png, &pre).expect("loads");
    let config = incc::runtime::session::SessionConfig { threads: Some(1), ..Default::default() };
    let mut session = incc::runtime::session::Model::from_bytes(std::fs::read(&onnx).unwrap(), config).expect("loads");
    let mut p = incc::runtime::tensor::run(&mut session, &image, [1, 3, h, w]).expect("runs").remove(0).2;
    p.sort_by(|a, b| b.total_cmp(a));
    assert_eq!(printed.len(), 5, "{out}");
    for (shown, p) in printed.iter().zip(&p) {
        assert!((shown - 100.0 * f64::from(*p)).abs() < 0.006, "{out} against {p:?}");
    }
}
