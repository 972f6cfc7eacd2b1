//! Parameter values: deterministic seeded initialisation, safetensors in and out (by name, in
//! timm's layout), and the value side of batch-norm folding.

use crate::ir::{Graph, ParamRole, ParamSpec};
use crate::rng::Rng;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn filled(shape: Vec<usize>, value: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor { shape, data: vec![value; n] }
    }
}

/// Every parameter and buffer of a graph, by its hierarchical name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    pub tensors: BTreeMap<String, Tensor>,
}

/// Why a checkpoint does not fit a network: everything wrong, listed at once.
#[derive(Debug)]
pub struct WeightsError {
    pub path: String,
    pub problems: Vec<String>,
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the weights in `{}` do not fit this network:", self.path)?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WeightsError {}

/// The generator of one tensor, so that weights are the same on every machine for a given seed and
/// parameter name.
fn tensor_rng(seed: u64, name: &str) -> Rng {
    // FNV-1a of the name, mixed with the seed: each tensor's stream is independent of the others.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Rng::new(h)
}

/// Fills `out` with standard normals truncated to [-2, 2] (as TF's truncated_normal and timm's
/// trunc_normal_), times `std`: inverse-CDF sampling through a quantile table, which is exact up
/// to the table's interpolation (< 1e-6) and an order of magnitude faster than Box-Muller.
fn fill_truncated_normal(rng: &mut Rng, out: &mut [f32], std: f64) {
    let table = truncated_normal_quantiles();
    let steps = (table.len() - 1) as f64;
    for x in out {
        let pos = rng.uniform() * steps;
        let i = pos as usize;
        let frac = pos - i as f64;
        *x = ((table[i] + (table[i + 1] - table[i]) * frac) * std) as f32;
    }
}

/// Quantiles of the standard normal truncated to [-2, 2], at 4096 equal steps of probability.
fn truncated_normal_quantiles() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let (lo, hi) = (normal_cdf(-2.0), normal_cdf(2.0));
        (0..=4096).map(|i| normal_quantile(lo + (hi - lo) * i as f64 / 4096.0).clamp(-2.0, 2.0)).collect()
    })
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' erfcc, relative error < 1.2e-7), refined below.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06 + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Inverse of `normal_cdf` by bisection (run 4097 times, once per process).
fn normal_quantile(p: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The initial value of one parameter: He-style truncated normal for conv and fc weights
/// (std = sqrt(2 / fan_in), which keeps activations stable through ReLU), zero biases, and the
/// identity batch norm (scale 1, shift 0, mean 0, variance 1).
pub fn init_tensor(name: &str, spec: &ParamSpec, seed: u64) -> Tensor {
    match spec.role {
        ParamRole::Weight => {
            let fan_in: usize = spec.shape[1..].iter().product();
            let std = (2.0 / fan_in.max(1) as f64).sqrt();
            let mut t = Tensor::filled(spec.shape.clone(), 0.0);
            fill_truncated_normal(&mut tensor_rng(seed, name), &mut t.data, std);
            t
        }
        ParamRole::Bias | ParamRole::BnShift | ParamRole::RunningMean => Tensor::filled(spec.shape.clone(), 0.0),
        ParamRole::BnScale | ParamRole::RunningVar => Tensor::filled(spec.shape.clone(), 1.0),
    }
}

/// Seeded values for every parameter of `graph`, generated in parallel (each thread takes the
/// next tensor, largest first, so the threads finish together).
pub fn init(graph: &Graph, seed: u64) -> Weights {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut params = crate::report::params::param_list(graph);
    params.sort_by_key(|(_, p)| std::cmp::Reverse(p.shape.iter().product::<usize>()));
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tensors = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = vec![];
                    while let Some((name, spec)) = params.get(next.fetch_add(1, Ordering::Relaxed)) {
                        done.push((name.clone(), init_tensor(name, spec, seed)));
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("weight initialisation does not panic")).collect()
    });
    Weights { tensors }
}

/// Loads a safetensors checkpoint by name: every parameter of `graph` must be there with its
/// shape and finite values; `num_batches_tracked` (PyTorch's BN counter) is ignored; anything else
/// is reported. A file incc wrote has its checksums checked (one written elsewhere has none).
pub fn load(path: &Path, graph: &Graph) -> Result<Weights, WeightsError> {
    let err = |problems: Vec<String>| WeightsError { path: path.display().to_string(), problems };
    let bytes = std::fs::read(path).map_err(|e| err(vec![format!("cannot read the file: {e}")]))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(vec![format!("not a valid safetensors file: {e}")]))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(vec![format!("not a valid safetensors file: {e}")]))?;
    verify(&st, &meta.metadata().clone().unwrap_or_default()).map_err(|e| err(vec![e]))?;
    let expected = crate::report::params::param_list(graph);
    let mut problems = vec![];
    let mut tensors = BTreeMap::new();
    for (name, spec) in &expected {
        match st.tensor(name) {
            Ok(view) => {
                if view.shape() != spec.shape.as_slice() {
                    problems.push(format!("`{name}` has shape {:?}, the network needs {:?}", view.shape(), spec.shape));
                    continue;
                }
                match to_f32(view.dtype(), view.data()) {
                    Some(data) => match not_finite(name, &data) {
                        Some(problem) => problems.push(problem),
                        None => {
                            tensors.insert(name.clone(), Tensor { shape: spec.shape.clone(), data });
                        }
                    },
                    None => problems.push(format!("`{name}` has dtype {:?}; expected F32, F16, BF16 or F64", view.dtype())),
                }
            }
            Err(_) => problems.push(format!("missing `{name}` (shape {:?})", spec.shape)),
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let mut unexpected: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !known.contains(&**n) && !n.ends_with("num_batches_tracked"))
        .map(|n| format!("unexpected `{n}` (not a parameter of this network)"))
        .collect();
    unexpected.sort();
    problems.extend(unexpected);
    if problems.is_empty() {
        Ok(Weights { tensors })
    } else {
        Err(err(problems))
    }
}

/// Says where `data`, the values of `name`, first holds a NaN or an infinity; `None` if nowhere.
pub fn not_finite(name: &str, data: &[f32]) -> Option<String> {
    let at = data.iter().position(|v| !v.is_finite())?;
    Some(format!("`{name}` holds {} at index {at}: a diverged or corrupt tensor", data[at]))
}

fn to_f32(dtype: safetensors::Dtype, data: &[u8]) -> Option<Vec<f32>> {
    use safetensors::Dtype;
    Some(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
        _ => return None,
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 if frac == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        _ => (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// Writes the weights as safetensors (F32), atomically, with their checksums.
pub fn save(path: &Path, weights: &Weights) -> std::io::Result<()> {
    let views: Vec<TensorRef<'_>> = weights.tensors.iter().map(TensorRef::of).collect();
    crate::fsutil::write_atomic_with(path, |w| write_safetensors(w, &views, BTreeMap::new()))
}

/// The metadata entry of the files incc writes that holds a CRC-32 of each tensor's bytes and of
/// each other metadata entry (JSON, by name; metadata entries as `__metadata__/KEY`).
pub const CHECKSUMS: &str = "incc.crc32";

/// A tensor to write, where it already is.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

impl<'a> TensorRef<'a> {
    pub fn of((name, t): (&'a String, &'a Tensor)) -> Self {
        TensorRef { name, shape: &t.shape, data: &t.data }
    }

    /// A copy, by name.
    pub fn to_owned(&self) -> (String, Tensor) {
        (self.name.to_string(), Tensor { shape: self.shape.to_vec(), data: self.data.to_vec() })
    }
}

/// Writes `tensors` (F32, in their order) and `metadata` as a safetensors file, with their
/// checksums (`CHECKSUMS`), straight from where the tensors are: no copy of their values is made
/// (a checkpoint of inception_resnet_v2's training state is 670 MB). The checksums go in the
/// header, so the values are read twice: once for them, once to write.
pub fn write_safetensors(w: &mut impl std::io::Write, tensors: &[TensorRef<'_>], mut metadata: BTreeMap<String, String>) -> std::io::Result<()> {
    let mut sums: BTreeMap<String, String> = tensors.iter().map(|t| (t.name.to_string(), crc(bytemuck_f32(t.data)))).collect();
    sums.extend(metadata.iter().map(|(key, value)| (format!("{METADATA}{key}"), crc(value.as_bytes()))));
    metadata.insert(CHECKSUMS.to_string(), serde_json::to_string(&sums).expect("serialisable"));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(&metadata).expect("serialisable"));
    let mut offset = 0usize;
    for t in tensors {
        if t.shape.iter().product::<usize>() != t.data.len() {
            return Err(std::io::Error::other(format!("tensor `{}`: shape {:?} does not hold {} values", t.name, t.shape, t.data.len())));
        }
        let end = offset + std::mem::size_of_val(t.data);
        let entry = serde_json::json!({ "dtype": "F32", "shape": t.shape, "data_offsets": [offset, end] });
        if header.insert(t.name.to_string(), entry).is_some() {
            return Err(std::io::Error::other(format!("tensor `{}` is named twice", t.name)));
        }
        offset = end;
    }
    let mut header = serde_json::to_vec(&header).expect("serialisable");
    // The data starts 8-byte aligned, as safetensors' own writer pads it.
    header.resize(header.len().next_multiple_of(8), b' ');
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    for t in tensors {
        w.write_all(bytemuck_f32(t.data))?;
    }
    Ok(())
}

/// How a metadata entry is named among the checksums.
const METADATA: &str = "__metadata__/";

fn crc(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// Checks every tensor and metadata entry of a safetensors file against its checksums (see
/// [`CHECKSUMS`]); a file without them (written by another tool, or by an incc before them) is
/// taken as it is. The error says which tensor or entry is corrupt.
pub fn verify(st: &safetensors::SafeTensors<'_>, metadata: &std::collections::HashMap<String, String>) -> Result<(), String> {
    let Some(sums) = metadata.get(CHECKSUMS) else { return Ok(()) };
    let corrupt = |what: String| format!("{what}: the file is corrupt (a flipped bit, a bad disk or an interrupted copy)");
    let sums: BTreeMap<String, String> = serde_json::from_str(sums).map_err(|_| corrupt("its checksums cannot be read".into()))?;
    let entries = metadata.iter().filter(|(k, _)| *k != CHECKSUMS).map(|(k, v)| (format!("{METADATA}{k}"), v.as_bytes()));
    let tensors = st.tensors().into_iter().map(|(name, view)| (name, view.data()));
    let mut checked = 0;
    for (name, bytes) in tensors.chain(entries) {
        match sums.get(&name) {
            Some(sum) if *sum == crc(bytes) => checked += 1,
            Some(_) => return Err(corrupt(format!("`{name}` does not match its checksum"))),
            None => return Err(corrupt(format!("`{name}` has no checksum"))),
        }
    }
    if checked != sums.len() {
        return Err(corrupt(format!("{} checksums for {checked} entries", sums.len())));
    }
    Ok(())
}

/// The bytes of an f32 slice in memory order (little-endian on every platform incc runs on).
pub fn bytemuck_f32(data: &[f32]) -> &[u8] {
    const { assert!(cfg!(target_endian = "little"), "safetensors and ONNX store little-endian floats") };
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the length is exact.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_safetensors_read_back_with_their_checksums() {
        let (a, b) = (vec![1.0f32, -2.5, 3.0, 0.25, 5.0, 6.0], vec![7.0f32]);
        let tensors = [TensorRef { name: "b.weight", shape: &[2, 3], data: &a }, TensorRef { name: "a", shape: &[1], data: &b }];
        let mut bytes = vec![];
        write_safetensors(&mut bytes, &tensors, BTreeMap::from([("k".to_string(), "v".to_string())])).unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + header) % 8, 0, "the values start 8-byte aligned");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let fields = meta.metadata().clone().unwrap();
        assert_eq!(fields["k"], "v");
        verify(&st, &fields).unwrap();
        let view = st.tensor("b.weight").unwrap();
        assert_eq!((view.shape(), view.data()), (&[2, 3][..], bytemuck_f32(&a)));
        // A flipped bit in a value is caught.
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(verify(&st, &fields).unwrap_err().contains("does not match its checksum"));
        // A shape that does not hold the values, or a name given twice, is refused before writing.
        let wrong = [TensorRef { name: "x", shape: &[4], data: &b }];
        assert!(write_safetensors(&mut vec![], &wrong, BTreeMap::new()).unwrap_err().to_string().contains("shape [4] does not hold 1 values"));
        let twice = [tensors[1], tensors[1]];
        assert!(write_safetensors(&mut vec![], &twice, BTreeMap::new()).unwrap_err().to_string().contains("named twice"));
    }

    #[test]
    fn truncated_normal_has_the_right_moments_and_bounds() {
        let mut data = vec![0f32; 200_000];
        fill_truncated_normal(&mut tensor_rng(7, "w"), &mut data, 1.0);
        let n = data.len() as f64;
        let mean = data.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = data.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
        // A standard normal truncated to [-2, 2] has variance 0.7737.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 0.7737).abs() < 0.01, "variance {var}");
        assert!(data.iter().all(|x| x.abs() <= 2.0));
    }

    #[test]
    fn quantiles_invert_the_cdf() {
        for p in [0.001, 0.1, 0.5, 0.9, 0.999] {
            assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-10, "{p}");
        }
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
    }

    #[test]
    fn the_same_seed_and_name_give_the_same_values() {
        let spec = ParamSpec { suffix: "weight", shape: vec![4, 3, 3, 3], role: ParamRole::Weight };
        assert_eq!(init_tensor("a.weight", &spec, 1), init_tensor("a.weight", &spec, 1));
        assert_ne!(init_tensor("a.weight", &spec, 1), init_tensor("a.weight", &spec, 2));
        assert_ne!(init_tensor("a.weight", &spec, 1), init_tensor("b.weight", &spec, 1));
    }
}
