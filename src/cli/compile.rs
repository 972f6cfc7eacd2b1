//! `incc compile`: an ONNX inference model with seeded or loaded weights, or (`--train`) the
//! training-step graph and its evaluation graph.

use super::options::{print_warnings, Common};
use super::train::TrainingArgs;
use incc::driver::{build_onnx, Failure, Options, WeightsSource};
use incc::onnx::emit::{emit_eval, write, EXTERNAL_DATA_THRESHOLD};
use incc::onnx::proto::ModelProto;
use incc::weights::Weights;
use incc::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
#[command(mut_arg("file", |file| file.required(false)))]
pub struct CompileArgs {
    #[command(flatten)]
    common: Common,
    /// Compile ONE model whose output `probabilities` averages these networks' softmax
    /// probabilities: `ARCH.inc:WEIGHTS.safetensors` each (a checkpoint of `incc train`, whose
    /// moving averages are taken where it has them, or a state dict); see docs/onnx.md.
    #[arg(long, num_args = 1.., value_name = "ARCH.inc:WEIGHTS", conflicts_with_all = ["train", "weights", "save_weights"])]
    ensemble: Vec<String>,
    /// Where to write the model (atomically; `<file>.data` beside it for models over 1 GiB of weights).
    #[arg(short, long, value_name = "FILE.onnx")]
    output: Option<PathBuf>,
    /// Load parameters by name from a safetensors checkpoint (timm's state dict for archs/ networks).
    #[arg(long, value_name = "FILE.safetensors")]
    weights: Option<PathBuf>,
    /// Seed of the initialisation when no --weights are given.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fix the batch size (default: symbolic `N`).
    #[arg(long, value_parser = super::options::count::<usize>)]
    batch: Option<usize>,
    /// Also write the weights of the emitted graph as safetensors.
    #[arg(long, value_name = "FILE.safetensors")]
    save_weights: Option<PathBuf>,
    /// Print the model in readable ONNX text form (weights elided).
    #[arg(long)]
    text: bool,
    /// Emit ONE graph that performs a whole training step (and `<output>.eval.onnx`, the
    /// evaluation graph with the same parameter names, as inputs).
    #[arg(long)]
    train: bool,
    #[command(flatten)]
    training: TrainingArgs,
}

pub fn compile_command(a: &CompileArgs) -> Result<(), Error> {
    if a.output.is_none() && !a.text && a.save_weights.is_none() {
        return Err(Error::Usage("nothing to do: give -o FILE.onnx, --text or --save-weights".into()));
    }
    if !a.ensemble.is_empty() {
        if a.common.file.is_some() {
            return Err(Error::Usage("--ensemble compiles the networks it names: give no network file".into()));
        }
        return ensemble(a);
    }
    let common = &a.common;
    let options = common.options()?;
    if a.train {
        return training_graphs(a, common, &options);
    }
    let source = match &a.weights {
        Some(path) => WeightsSource::File(path),
        None => WeightsSource::Seed(a.seed),
    };
    let start = Instant::now();
    let artifact = build_onnx(common.file()?, &options.settings(), &options.passes()?, source, a.batch)?;
    print_warnings(&artifact.compiled);
    if let Some(path) = &a.save_weights {
        incc::weights::save(path, &artifact.weights).map_err(Error::file("write", path))?;
    }
    if let Some(path) = &a.output {
        write_model(&artifact.model, Some(&artifact.weights), path)?;
        eprintln!(
            "wrote {} ({} nodes, {} initializers) in {:.2} s",
            path.display(),
            artifact.model.graph.as_ref().map_or(0, |g| g.node.len()),
            artifact.model.graph.as_ref().map_or(0, |g| g.initializer.len()),
            start.elapsed().as_secs_f64()
        );
    }
    if a.text {
        print!("{}", incc::onnx::text::render(&artifact.model));
    }
    Ok(())
}

/// `incc compile --train`: the training-step graph and its evaluation graph.
fn training_graphs(a: &CompileArgs, common: &Common, options: &Options) -> Result<(), Error> {
    if options.fold_bn {
        return Err(Error::Invalid("--fold-bn is for inference; a training step needs its batch norms".into()));
    }
    let config = a.training.overlay(incc::train::TrainConfig::default());
    config.check().map_err(Error::Usage)?;
    let compiled = options.compile(common.file()?, None)?;
    let start = Instant::now();
    let model = match incc::train::emit_training(&compiled.graph, &compiled.sources, &config, a.batch) {
        Ok(model) => model,
        Err(diagnostic) => return Err(Failure::of(compiled.sources, diagnostic).into()),
    };
    let eval = emit_eval(&compiled.graph, &compiled.sources, a.batch).map_err(Error::Lowering)?;
    if let Some(path) = &a.output {
        let eval_path = path.with_extension("eval.onnx");
        write_model(&model, None, path)?;
        write_model(&eval, None, &eval_path)?;
        eprintln!(
            "wrote {} (training step, {} nodes) and {} (evaluation) in {:.2} s",
            path.display(),
            model.graph.as_ref().map_or(0, |g| g.node.len()),
            eval_path.display(),
            start.elapsed().as_secs_f64()
        );
    }
    if a.text {
        print!("{}", incc::onnx::text::render(&model));
    }
    Ok(())
}

/// `incc compile --ensemble ARCH:WEIGHTS...`: each member's inference model, then one model of them all.
fn ensemble(a: &CompileArgs) -> Result<(), Error> {
    let start = Instant::now();
    // --set, --input, --fold-bn, ... apply to every member.
    let options = a.common.options()?;
    let mut members = vec![];
    for member in &a.ensemble {
        let (arch, weights) = member
            .rsplit_once(':')
            .map(|(arch, weights)| (Path::new(arch), Path::new(weights)))
            .ok_or_else(|| Error::Usage(format!("--ensemble {member}: expected ARCH.inc:WEIGHTS.safetensors")))?;
        let compiled = options.compile(arch, None)?;
        let values = incc::trainer::checkpoint_weights(weights, &compiled.graph)?;
        members.push(build_onnx(arch, &options.settings(), &options.passes()?, WeightsSource::Values(values), a.batch)?.standalone()?);
    }
    let model = incc::onnx::ensemble::ensemble(&members).map_err(Error::Invalid)?;
    if let Some(path) = &a.output {
        write_model(&model, None, path)?;
        eprintln!(
            "wrote {} (an ensemble of {} networks, {} nodes) in {:.2} s",
            path.display(),
            members.len(),
            model.graph.as_ref().map_or(0, |g| g.node.len()),
            start.elapsed().as_secs_f64()
        );
    }
    if a.text {
        print!("{}", incc::onnx::text::render(&model));
    }
    Ok(())
}

fn write_model(model: &ModelProto, weights: Option<&Weights>, path: &Path) -> Result<(), Error> {
    write(model, weights, path, EXTERNAL_DATA_THRESHOLD).map_err(Error::file("write", path))
}
