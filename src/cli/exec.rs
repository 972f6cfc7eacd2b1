//! `incc run` and `incc bench`: a `.inc` (compiled in memory) or any `.onnx`, on ONNX Runtime, and
//! the runtime options every command that runs a model shares.

use super::options::{count, write_npy};
use incc::dist::World;
use incc::driver::{build_onnx, WeightsSource};
use incc::runtime::bench::{bench, bench_interleaved, profile, render_table, BenchConfig};
use incc::runtime::images::{load_image, synthetic_batch, Preprocess};
use incc::runtime::profile::ProfileFiles;
use incc::runtime::providers::{describe_providers, providers_used};
use incc::runtime::session::{Dim, Model, Provider, SessionConfig};
use incc::runtime::tensor::run;
use incc::runtime::topk::{class_name, read_labels, top_k};
use incc::runtime::{ortlib, session};
use incc::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the model comes from and how it runs: shared by `run` and `bench`.
#[derive(clap::Args)]
pub struct ModelArgs {
    #[command(flatten)]
    pub common: super::options::Common,
    /// Load parameters by name from a safetensors checkpoint (for a `.inc`).
    #[arg(long, value_name = "FILE.safetensors")]
    pub weights: Option<PathBuf>,
    /// Seed of the initialisation when no --weights are given (for a `.inc`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Where and how ONNX Runtime runs: shared by run, bench, train and eval.
#[derive(clap::Args)]
pub struct RuntimeArgs {
    /// Execution provider: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`). Each
    /// process of a data-parallel job takes GPU `local rank` for `cuda`, GPU N for `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub provider: ProviderArg,
    /// Intra-op threads (default: ONNX Runtime's, one per core).
    #[arg(long, value_parser = count::<usize>)]
    pub threads: Option<usize>,
    /// The ONNX Runtime library (file or folder); else ORT_DYLIB_PATH, .ort/lib, Python's onnxruntime.
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// An option of ONNX Runtime's CUDA provider, by its own name, passed through (repeatable):
    /// `--cuda-option prefer_nhwc=1`, `arena_extend_strategy=kSameAsRequested`,
    /// `cudnn_conv_algo_search=HEURISTIC`, `use_tf32=0`.
    #[arg(long = "cuda-option", value_name = "KEY=VALUE", value_parser = super::options::parse_key_value)]
    pub cuda_options: Vec<(String, String)>,
    /// CPU: take memory from the system as values are made and give it back as they are freed,
    /// instead of keeping it in ONNX Runtime's arena: less memory (inception_resnet_v2's training
    /// step: 0.8x PyTorch's at batch 8, against 1.2x), about a third more time per step.
    #[arg(long)]
    pub lean_memory: bool,
}

/// `--provider` as written: `cuda` without a device is each process's own GPU.
#[derive(Clone, Copy, Debug)]
pub struct ProviderArg {
    provider: Provider,
    device_given: bool,
}

impl std::str::FromStr for ProviderArg {
    type Err = String;

    fn from_str(s: &str) -> Result<ProviderArg, String> {
        Ok(ProviderArg { provider: s.parse()?, device_given: s.contains(':') })
    }
}

impl ProviderArg {
    /// The provider of the process with `local_rank` on its machine.
    fn for_local_rank(self, local_rank: usize) -> Provider {
        match self.provider {
            Provider::Cuda { .. } if !self.device_given => Provider::Cuda { device: local_rank as i32 },
            other => other,
        }
    }
}

impl RuntimeArgs {
    /// Loads ONNX Runtime (once per process) and says which library.
    pub fn init(&self) -> Result<SessionConfig, Error> {
        self.init_in(&incc::dist::Single)
    }

    /// As [`RuntimeArgs::init`], for a process of `world`: it takes the GPU of its local rank
    /// (unless `--provider cuda:N`), and only process 0 says which library.
    pub fn init_in(&self, world: &dyn World) -> Result<SessionConfig, Error> {
        let provider = self.provider.for_local_rank(world.local_rank());
        if !self.cuda_options.is_empty() && provider == Provider::Cpu {
            return Err(Error::Invalid("--cuda-option configures the CUDA provider; add --provider cuda".into()));
        }
        if self.lean_memory && provider != Provider::Cpu {
            return Err(Error::Invalid("--lean-memory concerns the CPU's memory; on CUDA, see --cuda-option arena_extend_strategy=kSameAsRequested".into()));
        }
        let lib = ortlib::init(self.ort_lib.as_deref())?;
        if world.rank() == 0 {
            eprintln!("ONNX Runtime: {lib}");
        }
        Ok(SessionConfig { provider, threads: self.threads, cuda_options: self.cuda_options.clone(), lean_memory: self.lean_memory })
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// More images to classify (PNG or JPEG), resized and center-cropped as the model's metadata
    /// says; `--input FILE` names the first.
    #[arg(long = "image", value_name = "FILE")]
    pub images: Vec<PathBuf>,
    /// Synthetic batch size when no image is given.
    #[arg(long, default_value_t = 1, value_parser = count::<usize>)]
    pub batch: usize,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5, value_parser = count::<usize>)]
    pub top: usize,
    /// Class names, one per line (ImageNet's are not shipped).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Write the first output (the logits) as a NumPy .npy file.
    #[arg(long, value_name = "FILE.npy")]
    pub save_output: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = count::<usize>)]
    pub batch: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed runs at least (and at least --min-time seconds of them).
    #[arg(long, default_value_t = 10, value_parser = count::<usize>)]
    pub iterations: usize,
    #[arg(long, default_value_t = 2.0, value_parser = super::options::seconds)]
    pub min_time: f64,
    /// Also measure this model (e.g. the same network exported from PyTorch) in the same run, runs
    /// alternating with incc's, and report incc's figures as ratios against it.
    #[arg(long, value_name = "MODEL.onnx")]
    pub baseline: Option<PathBuf>,
    /// After the timed runs, profile --profile-runs runs of the first batch size (after --warmup
    /// runs left out) with ONNX Runtime's profiler: print where the time goes (per op type, the
    /// slowest nodes), write that summary as JSON to FILE.json and keep ONNX Runtime's trace as
    /// FILE.trace.json (chrome://tracing, Perfetto). On CUDA, kernel times are launch times.
    #[arg(long, value_name = "FILE.json")]
    pub profile: Option<PathBuf>,
    /// Runs to profile with --profile.
    #[arg(long, default_value_t = 5, value_parser = count::<usize>, requires = "profile")]
    pub profile_runs: usize,
    #[arg(long)]
    pub json: bool,
}

fn is_source(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "inc")
}

/// Initialises ONNX Runtime and loads the model, compiling a `.inc` in memory.
fn load(args: &ModelArgs) -> Result<Model, Error> {
    let file = args.common.file()?;
    if is_source(file) {
        let options = args.common.options()?;
        let passes = options.passes()?;
        let config = args.runtime.init()?;
        let weights = match &args.weights {
            Some(w) => WeightsSource::File(w),
            None => WeightsSource::Seed(args.seed),
        };
        let artifact = build_onnx(file, &options.settings(), &passes, weights, None)?;
        let bytes = incc::onnx::emit::encode(&artifact.model, Some(&artifact.weights)).map_err(|e| Error::Lowering(e.to_string()))?;
        Ok(Model::from_bytes(bytes, config)?)
    } else {
        let c = &args.common;
        if !c.set.is_empty() || c.input.is_some() || c.residualize.is_some() || c.fold_bn || args.weights.is_some() {
            return Err(Error::Invalid(format!(
                "`{}` is a compiled model: --set, --input, --residualize, --fold-bn and --weights apply to .inc files",
                file.display()
            )));
        }
        Ok(Model::from_path(file, args.runtime.init()?)?)
    }
}

/// C, H, W of the model's image input (fixed dims required past the batch).
fn chw(model: &Model) -> Result<[usize; 3], Error> {
    let input = model.image_input()?;
    match input.dims.as_slice() {
        [_, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)] => Ok([*c, *h, *w]),
        _ => Err(Error::Invalid(format!("the model's input `{}` is {}, not [N, C, H, W] with fixed C, H, W", input.name, input.shape_text()))),
    }
}

/// Which execution providers ran the model's nodes, as one line.
fn providers(model: &Model, shape: [usize; 4]) -> Result<String, Error> {
    let used = providers_used(model, shape)?;
    Ok(describe_providers(&used))
}

pub fn run_command(mut a: RunArgs) -> Result<(), Error> {
    if let Some(super::options::InputArg::Image(first)) = &a.model.common.input {
        a.images.insert(0, first.clone());
        a.model.common.input = None;
    }
    let mut model = load(&a.model)?;
    let [c, h, w] = chw(&model)?;
    let (data, n, names) = if a.images.is_empty() {
        let shape = [a.batch, c, h, w];
        (synthetic_batch(shape, 0)?, shape[0], (0..shape[0]).map(|i| format!("synthetic #{i}")).collect::<Vec<_>>())
    } else {
        let pre = Preprocess::new(h, w).with_metadata(&model.info().metadata)?;
        let mut data = Vec::with_capacity(a.images.len() * c * h * w);
        for path in &a.images {
            data.extend(load_image(path, &pre)?);
        }
        (data, a.images.len(), a.images.iter().map(|p| p.display().to_string()).collect())
    };
    let shape = [n, c, h, w];
    println!("provider: {}", providers(&model, shape)?);
    run(&mut model, &data, shape)?; // warm-up
    let start = Instant::now();
    let outputs = run(&mut model, &data, shape)?;
    let elapsed = start.elapsed();
    println!("batch {n}: {:.2} ms ({:.1} images/s, after one warm-up run)", elapsed.as_secs_f64() * 1e3, n as f64 / elapsed.as_secs_f64());
    let (name, out_shape, logits) = outputs.first().ok_or_else(|| Error::Invalid("the model has no outputs".into()))?;
    let labels = a.labels.as_deref().map(|p| read_labels(p, out_shape.last().copied().unwrap_or(0))).transpose()?;
    // A model whose only output is `probabilities` (an ensemble of `incc compile --ensemble`):
    // their logarithms are logits whose softmax gives them back.
    let ranked = if name == incc::onnx::forward::PROBABILITIES {
        top_k(&logits.iter().map(|p| p.ln()).collect::<Vec<_>>(), out_shape, a.top)?
    } else {
        top_k(logits, out_shape, a.top)?
    };
    for (image, classes) in names.iter().zip(&ranked) {
        println!("{image}:");
        for (class, p) in classes {
            println!("  {:>6.2}%  {}", p * 100.0, class_name(labels.as_deref(), *class));
        }
    }
    if let Some(path) = &a.save_output {
        write_npy(path, "<f4", out_shape, incc::weights::bytemuck_f32(logits)).map_err(Error::file("write", path))?;
        eprintln!("wrote output `{name}` {out_shape:?} to {}", path.display());
    }
    Ok(())
}

pub fn bench_command(a: &BenchArgs) -> Result<(), Error> {
    let cfg = BenchConfig {
        batches: a.batch.clone(),
        warmup: a.warmup,
        iterations: a.iterations,
        min_time: std::time::Duration::from_secs_f64(a.min_time),
        ..BenchConfig::default()
    };
    let files = a.profile.as_ref().map(ProfileFiles::new).transpose()?;
    let mut model = load(&a.model)?;
    let shape = chw(&model)?;
    let provider_line = providers(&model, [1, shape[0], shape[1], shape[2]])?;
    eprintln!("provider: {provider_line}");
    let (ours, baseline) = match &a.baseline {
        Some(path) => {
            let mut other = session::Model::from_path(path, model.config().clone())?;
            if chw(&other)? != shape {
                return Err(Error::Invalid(format!("the baseline `{}` takes another input size than the model", path.display())));
            }
            let mut both = bench_interleaved(&mut [&mut model, &mut other], shape, &cfg)?;
            let base = both.pop();
            (both.remove(0), base)
        }
        None => (bench(&mut model, shape, &cfg)?, None),
    };
    let profiled = match &files {
        Some(files) => {
            let p = profile(&model, shape, cfg.batches[0], cfg.warmup, a.profile_runs, files)?;
            eprintln!("wrote {} and {}", files.summary().display(), files.trace().display());
            Some(p)
        }
        None => None,
    };
    if a.json {
        let json = serde_json::json!({
            "model": a.model.common.file()?.display().to_string(),
            "provider": a.model.runtime.provider.provider.to_string(),
            "providers_used": provider_line,
            "results": ours,
            "baseline": a.baseline.as_ref().map(|p| p.display().to_string()),
            "baseline_results": baseline,
            "profile": profiled,
        });
        println!("{}", serde_json::to_string_pretty(&json).expect("serialisable"));
        return Ok(());
    }
    println!("{} on {}:", a.model.common.file()?.display(), a.model.runtime.provider.provider);
    println!("{}", render_table(&ours));
    if let (Some(path), Some(base)) = (&a.baseline, &baseline) {
        println!("\nbaseline {}:", path.display());
        println!("{}\n", render_table(base));
        for (o, b) in ours.iter().zip(base) {
            println!(
                "batch {}: incc median latency = {:.3} x the baseline's ({:.2} vs {:.2} ms)",
                o.batch,
                o.median_ms / b.median_ms,
                o.median_ms,
                b.median_ms
            );
        }
    }
    if let Some(p) = &profiled {
        // The profiler's own cost per node is in these times: the unprofiled median is the reference.
        println!("\nwhere the time goes at batch {} (profiled; unprofiled median {:.3} ms per run):", cfg.batches[0], ours[0].median_ms);
        print!("{}", p.render());
    }
    Ok(())
}
